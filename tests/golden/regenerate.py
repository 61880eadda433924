"""Regenerate the golden files of the shipped configs: python tests/golden/regenerate.py

A golden file holds what a config's hardware derives (device figures, per-action
energies and latencies, macro area), the metrics of a short run (the smoke settings
below) and the environment that made it (Python, torch, numpy, numba, scipy and
pydantic versions, threads, device, processor). The tests compare a cost-only
golden to EXACT (imcsim.metrics); a functional one within the spread measured
across thread counts and the lowest and newest allowed releases, stored per
metric in the file by tests/golden/spread.py (run it after this script).
Review the diff before committing it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SETTINGS = [
    "workload.train.epochs=1",
    "workload.pretrain.epochs=2",
    "workload.baselines=[last_layer]",
]
SMOKE_BY_KIND = {
    "continual_learning": SMOKE_SETTINGS,
    "lora_adaptation": [
        "workload.train.epochs=1", "workload.train.samples=120", "workload.pretrain.epochs=2",
        "workload.pretrain.samples=400", "workload.pool_train.epochs=1", "workload.pool_train.samples=120",
    ],
}


SMOKE_BY_CONFIG = {  # real-size models that take tens of seconds: the same config with 2 + 2 of their 24 + 24 blocks
    name: ["workload.cost_only.model.n_layers=2", "workload.cost_only.model.decoder_layers=2"]
    for name in ("reram_lora_flan_t5_large_cost", "reram_lorafusion_flan_t5_large_cost")
}


def smoke_settings(config: Path) -> list[str]:
    """The short-run overrides of a config: its workload kind's, then its own."""
    from imcsim.config import load_config

    kind = load_config(config).config.workload.kind
    return [*SMOKE_BY_KIND[kind], *SMOKE_BY_CONFIG.get(config.stem, [])]


def derived_for(config: Path) -> dict:
    """What the config's hardware derives (no run): device figures, per-action costs, macro area."""
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    hw = build_hardware(load_config(config, smoke_settings(config)))
    return {
        "device_figures": {k: v for k, (v, _) in hw.device.figures().items()},
        "actions": {f"{c}.{a}": [s.cost.energy_j, s.cost.latency_s] for (c, a), s in hw.macro.actions.items()},
        "area_m2": hw.macro.area_m2(),
    }


def golden_for(config: Path) -> dict:
    from imcsim.api import run
    from imcsim.config import load_config

    smoke = smoke_settings(config)
    loaded = load_config(config, smoke)
    report = run(loaded)
    return {"config": config.name, "smoke_settings": smoke, "mode": loaded.config.run.mode,
            "environment": dict(report.environment), "derived": derived_for(config),
            "metrics": dict(report.metrics)}


def golden_tolerance(golden: dict, metric: str) -> float:
    """How far a rerun's ``metric`` may move from the golden: :data:`imcsim.metrics.EXACT` for a cost-only
    golden; for a functional one the measured spread (tests/golden/spread.py), never below EXACT."""
    from imcsim.metrics import EXACT

    if golden["mode"] == "cost_only":
        return EXACT
    return max(EXACT, golden["tolerance_rel"][metric])


def golden_comparable(golden_env: dict, env: dict) -> str | None:
    """Why a run in ``env`` cannot be compared with a golden made in ``golden_env`` (another torch major
    release trains with other kernels), or None when it can."""
    major = [e["torch"].split(".")[0] for e in (golden_env, env)]
    if major[0] != major[1]:
        return f"golden made with torch {golden_env['torch']}, this run has torch {env['torch']}: not comparable"
    return None


def main() -> int:
    configs = [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "configs").glob("*.yaml"))
    for config in configs:
        out = Path(__file__).parent / f"{config.stem}.json"
        golden = golden_for(config)
        if out.exists() and golden["mode"] == "functional":  # the measured spread stays until measured again
            old = json.loads(out.read_text())
            for key in ("tolerance_rel", "tolerance_measured_over"):
                if key in old:
                    golden[key] = old[key]
        out.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
