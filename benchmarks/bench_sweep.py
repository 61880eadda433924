"""Sweep throughput: a device-parameter sweep of cost-only Rep-Net training steps at 224x224.

    python benchmarks/bench_sweep.py [--points 1000] [--workers 2]

The sweep draws ``--points`` random points over four SAS-MRAM write parameters
(SET and RESET pulse widths and currents) of configs/sas_mram_repnet_mobilenetv2_cost.yaml
(a full Rep-Net training step on MobileNetV2 at 224x224, batch 8, counted in
cost-only mode) and runs the same points twice in one process, side by side:
with 1 local worker process and with ``--workers`` of them. Each time covers
the whole sweep as `imcsim sweep` runs it: starting the workers, every point,
the CSV and Parquet tables. Prints points per second of each and the scaling
ratio (target: at least 1.8 with 2 workers), and checks that both sweeps gave
the same results.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
AXES = ["device.write.t_set=1ns:4ns:2", "device.write.t_reset=0.6ns:2ns:2", "device.write.i_reset=180uA:260uA:2",
        "device.write.i_stt=120uA:160uA:2"]


def sweep_once(points: list[dict[str, str]], workers: int, out: Path) -> tuple[float, list[dict]]:
    from imcsim import sweep

    spec = sweep.SweepSpec(config=str(CONFIG), overrides=[], axes=[f"range:{a}" for a in AXES], random=len(points),
                           sample_seed=0, seed=None, library=None, points=points)
    t0 = time.perf_counter()
    table = sweep.prepare(spec, out, resume=False)
    sweep.run_sweep(spec, sweep.LocalExecutor(workers), table)
    seconds = time.perf_counter() - t0
    with open(out / "results.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["point"]))
    return seconds, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from imcsim import sweep

    points = sweep.points_of([sweep.parse_range(a) for a in AXES], args.points, 0)
    with tempfile.TemporaryDirectory() as tmp:
        t1, rows1 = sweep_once(points, 1, Path(tmp) / "one")
        tn, rows_n = sweep_once(points, args.workers, Path(tmp) / "many")
    failed = sum(r["status"] != "ok" for r in rows1)
    same = [{k: v for k, v in r.items() if k != "seconds"} for r in rows1] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in rows_n]
    ratio = t1 / tn
    print(f"{args.points}-point device sweep, cost-only Rep-Net step (MobileNetV2 224x224, batch 8), {failed} failed")
    print(f"  1 worker:  {t1:8.1f} s  {args.points / t1:6.2f} points/s")
    print(f"  {args.workers} workers: {tn:8.1f} s  {args.points / tn:6.2f} points/s")
    print(f"  scaling ratio {ratio:.2f} (target >= 1.8 with 2 workers); same results: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
