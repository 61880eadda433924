"""Throughput of ReRAM write-and-verify programming.

    python benchmarks/bench_reram_program.py [--cells N] [--repeat R] [--seed S]

Programs N cells (1,000,000 by default) of the shipped card
devices/reram_hfox_neurosim.yaml from uniformly random old levels to
uniformly random new levels (a quarter of them unchanged with 4 levels) and
prints the best wall time of R runs, cells per second, and the mean pulses per
changed cell. Target: about 1 s or less for 1e6 cells on 2 cores. The first,
untimed call loads (or compiles) the numba kernel. Each run also checks that a
device rebuilt with the same seed reproduces the first run exactly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from imcsim.config import _read_card
from imcsim.devices.reram import ReRAM, ReRAMCard

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "devices" / "reram_hfox_neurosim.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    body, _ = _read_card(CARD, "device")
    card = ReRAMCard.model_validate(body)
    data = np.random.default_rng(args.seed)
    top = card.cell.levels - 1
    old = data.integers(0, top + 1, args.cells, dtype=np.int32)
    new = data.integers(0, top + 1, args.cells, dtype=np.int32)
    ReRAM.from_card(card, seed=args.seed).program(old[:1000], new[:1000])  # load the kernel

    times = []
    first = None
    for _ in range(args.repeat):
        dev = ReRAM.from_card(card, seed=args.seed)
        t0 = time.perf_counter()
        res = dev.program(old, new)
        times.append(time.perf_counter() - t0)
        if first is None:
            first = res
        elif not (np.array_equal(first.pulses, res.pulses) and first.energy_j == res.energy_j):
            raise SystemExit("not deterministic: the same seed gave different results")
    best = min(times)
    changed = int((old != new).sum())
    print(f"card {CARD.name}: {card.cell.levels} levels, step {card.programming.step:.4g}, "
          f"c2c {card.programming.c2c_sigma:.3g}, {os.cpu_count()} CPUs")
    print(f"cells programmed      {args.cells:,} ({changed:,} changed)")
    print(f"wall time (best of {args.repeat}) {best:.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})")
    print(f"cells per second      {args.cells / best:,.0f}")
    print(f"pulses per second     {first.verify_reads / best:,.0f}")
    print(f"mean pulses per transition (changed cells) {first.verify_reads / max(changed, 1):.2f}")
    print(f"failures {first.failures}, write energy {first.energy_j * 1e6:.3f} uJ "
          f"({first.energy_j / max(changed, 1) * 1e12:.2f} pJ per changed cell)")


if __name__ == "__main__":
    main()
