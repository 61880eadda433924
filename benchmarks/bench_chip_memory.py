"""Cost of the chip's memory accounting in a cost-only run: placement and traffic against the whole run.

    python benchmarks/bench_chip_memory.py

On the MobileNetV2 224 x 224 cost-only Rep-Net step (batch 8), measured in one process, interleaved:

* fresh run: ``imcsim.api.run`` of the config without baselines, counting the step anew;
* sweep point: the same run with the counted step cached, as a sweep's later points run;
* accounting: what the chip's memory adds to a fresh count: placing the step's tensors
  (:func:`imcsim.workloads.traffic.place`) and adding the buffer, wire and DRAM traffic to its ops
  (:func:`imcsim.workloads.traffic.with_traffic`);
* transfers: what the DRAM transfer tasks add to a sweep point: the step's scheduling
  (:func:`imcsim.sim.timeline.schedule_run`) with them, less without them.

Prints the median times and two ratios, each with its target (at most 0.20: the issue's bound on how much
slower cost-only runs may become).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
REPEATS = 5


def main() -> None:
    from imcsim.api import build_hardware, run
    from imcsim.config import load_config
    from imcsim.sim.timeline import schedule_run
    from imcsim.workloads.traffic import place, with_traffic

    loaded = load_config(CONFIG, ["workload.baselines=[]"])
    run(loaded)  # warm: imports, tracing, the counted step
    hw = build_hardware(loaded)
    from imcsim import api

    result, _, _ = next(iter(api._COUNTED.values()))  # the counted step, its traffic included
    graphs = result.graphs
    raw = [op for op in result.ops if op.kind != "transfer"]  # the step without its DRAM transfers
    api._COUNTED.clear()
    t = time.perf_counter()
    run(loaded)  # counted anew (the trace is cached, as in any process that ran the workload once)
    fresh = time.perf_counter() - t
    times = {"sweep point": [], "accounting": [], "schedule with transfers": [], "schedule without": []}
    for _ in range(REPEATS):
        t = time.perf_counter()
        run(loaded)
        times["sweep point"].append(time.perf_counter() - t)
        t = time.perf_counter()
        placements = {task: place(g, result.memory, hw.macro) for task, g in graphs.items()}
        with_traffic(raw, graphs, placements, hw.macro)
        times["accounting"].append(time.perf_counter() - t)
        t = time.perf_counter()
        schedule_run(result.ops, graphs, hw.macro)
        times["schedule with transfers"].append(time.perf_counter() - t)
        t = time.perf_counter()
        schedule_run(raw, graphs, hw.macro)
        times["schedule without"].append(time.perf_counter() - t)
    med = {"fresh run": fresh, **{k: statistics.median(v) for k, v in times.items()}}
    for k, v in med.items():
        print(f"{k:>24}: {v * 1e3:9.1f} ms")
    extra = med["schedule with transfers"] - med["schedule without"]
    print(f"accounting / fresh run: {med['accounting'] / med['fresh run']:.4f} (target <= 0.20)")
    print(f"transfer scheduling / sweep point: {extra / med['sweep point']:.3f} (target <= 0.20)")


if __name__ == "__main__":
    main()
