"""Wall and CPU time of the functional main config on one thread against one per core, under a concurrent load.

    python benchmarks/bench_threads.py            # the main method alone (workload.baselines=[])
    python benchmarks/bench_threads.py --full     # the README's first command: every baseline too

Runs ``imcsim run configs/sas_mram_repnet.yaml`` in child processes, alternating ``run.threads=1`` (the
default) and ``run.threads=<cores>`` (what torch takes when nothing pins it), while one busy process per core
stands for the other work of a shared machine. Prints each run's wall and CPU seconds, the medians and the
ratios (threads=cores over threads=1). A loaded machine makes threads wait on each other at every parallel
region: one thread does the same work without the waiting.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sas_mram_repnet.yaml"


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1_000_003


def run_once(threads: int, full: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one child run of the main config."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "imcsim.cli", "run", str(CONFIG), "--quiet", "--out", f"{tmp}/out",
               "--set", f"run.threads={threads}", *([] if full else ["--set", "workload.baselines=[]"])]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="every baseline too (the README's first command)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=_busy, args=(stop,), daemon=True) for _ in range(cores)]
    for proc in load:
        proc.start()
    times: dict[int, list[tuple[float, float]]] = {1: [], cores: []}
    try:
        for _ in range(args.repeats):
            for n in times:
                times[n].append(run_once(n, args.full))
                print(f"threads={n}: wall {times[n][-1][0]:.1f} s, CPU {times[n][-1][1]:.1f} s", flush=True)
    finally:
        stop.set()
        for proc in load:
            proc.join()
    med = {n: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for n, t in times.items()}
    print(f"{cores} cores, {cores} busy processes beside the run")
    for n, (w, c) in med.items():
        print(f"median threads={n}: wall {w:.1f} s, CPU {c:.1f} s")
    print(f"ratio threads={cores} / threads=1: wall {med[cores][0] / med[1][0]:.2f}, CPU {med[cores][1] / med[1][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
