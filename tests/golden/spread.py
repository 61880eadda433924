"""Measure how far the functional goldens move with the thread count and the installed releases.

    python tests/golden/spread.py measure OUT.json [--threads 1 2 4]   # in each environment to compare
    python tests/golden/spread.py combine OUT.json [MORE.json ...]     # writes each golden's tolerances

``measure`` runs every functional shipped config at its smoke settings once per thread count (a count above
this machine's cores still runs: the order of a sum depends on the thread count, not on the cores) and
writes the metrics with the environment. ``combine`` takes the measurements of several environments (the
newest and the lowest allowed releases), compares each metric with the golden (the newest releases, one
thread: what the tests run) and stores in the golden file, per metric, the largest relative deviation
measured: the tolerance of its golden test, no looser. Review the diff before committing it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent
sys.path.insert(0, str(GOLDEN))


def functional_configs() -> list[Path]:
    from imcsim.config import load_config

    return [c for c in sorted((ROOT / "configs").glob("*.yaml")) if load_config(c).config.run.mode == "functional"]


def measure(out: Path, threads: list[int]) -> None:
    from regenerate import smoke_settings

    import imcsim.config
    from imcsim.api import run
    from imcsim.config import load_config
    from imcsim.environment import versions

    imcsim.config.available_cores = lambda: max(threads)  # measure counts above this machine's cores too
    found: dict = {"environment": versions(), "runs": {}}
    for config in functional_configs():
        for n in threads:
            report = run(load_config(config, [*smoke_settings(config), f"run.threads={n}"]))
            found["runs"].setdefault(config.stem, {})[str(n)] = dict(report.metrics)
            print(f"{config.stem} threads={n}", flush=True)
    out.write_text(json.dumps(found, indent=1, sort_keys=True, default=str) + "\n")


def deviation(value: float, golden: float) -> float:
    """Relative deviation of ``value`` from ``golden`` (an absolute one where the golden is 0)."""
    if isinstance(golden, float) and math.isnan(golden):
        return 0.0 if isinstance(value, float) and math.isnan(value) else math.inf
    if value == golden:
        return 0.0
    return abs(value - golden) / (abs(golden) if golden else 1.0)


def combine(measured: list[Path]) -> None:
    files = [json.loads(p.read_text()) for p in measured]
    for config in functional_configs():
        path = GOLDEN / f"{config.stem}.json"
        golden = json.loads(path.read_text())
        spread: dict[str, float] = {}
        for f in files:
            for metrics in f["runs"].get(config.stem, {}).values():
                for key, g in golden["metrics"].items():
                    v = math.nan if metrics.get(key) is None else metrics[key]
                    spread[key] = max(spread.get(key, 0.0), deviation(v, g))
        golden["tolerance_rel"] = spread
        golden["tolerance_measured_over"] = [
            {"environment": f["environment"], "threads": sorted(int(n) for n in f["runs"].get(config.stem, {}))}
            for f in files]
        path.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        worst = max(spread.items(), key=lambda kv: kv[1])
        print(f"{path.relative_to(ROOT)}: widest {worst[0]} {worst[1]:.3g}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("out", type=Path)
    m.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    c = sub.add_parser("combine")
    c.add_argument("measured", type=Path, nargs="+")
    args = p.parse_args()
    if args.cmd == "measure":
        measure(args.out, args.threads)
    else:
        combine(args.measured)
    return 0


if __name__ == "__main__":
    sys.exit(main())
