"""Regenerate the golden files of the shipped configs: python tests/golden/regenerate.py

A golden file holds what a config's hardware derives (device figures, per-action
energies and latencies, macro area) and the metrics of a short functional run
(the smoke settings in SMOKE_SETTINGS). Review the diff before committing it.
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


def smoke_settings(config: Path) -> list[str]:
    """The short-run overrides for a config's workload kind."""
    from imcsim.config import load_config

    kind = load_config(config).config.workload.kind
    return SMOKE_BY_KIND[kind]


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
    report = run(load_config(config, smoke))
    return {"config": config.name, "smoke_settings": smoke, "derived": derived_for(config),
            "metrics": dict(report.metrics)}


def main() -> int:
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        out = Path(__file__).parent / f"{config.stem}.json"
        out.write_text(json.dumps(golden_for(config), indent=2, sort_keys=True) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
