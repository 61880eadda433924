"""Throughput of the macro's exact INT8 GEMM, as a ratio to torch float32 matmul.

    python benchmarks/bench_int8_gemm.py [--repeat N]

Prints, measured side by side in one run on the same shape (256x1152 @ 1152x128
by default): the exact path alone (int8_matmul), the exact path with action
counting (BitSerialMacro.forward), and float32 matmul. Ratios above 1 would mean
faster than float32; the target for the exact path is >= 0.3.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from imcsim.api import build_hardware
from imcsim.circuits.bitplanes import int8_matmul
from imcsim.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=256)
    ap.add_argument("--k", type=int, default=1152)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(-128, 128, (args.m, args.k), dtype=np.int8))
    b = torch.from_numpy(rng.integers(-128, 128, (args.k, args.n), dtype=np.int8))
    af, bf = a.float(), b.float()
    hw = build_hardware(load_config(ROOT / "configs" / "sas_mram_repnet.yaml", ["circuit.array.n_subarrays=4096"]))
    hw.macro.store("w", b.numpy())
    t_f32, _ = best_of(lambda: af @ bf, args.repeat)
    t_exact, _ = best_of(lambda: int8_matmul(a, b), args.repeat)
    t_counted, _ = best_of(lambda: hw.macro.forward(a, "w"), args.repeat)
    assert torch.equal(int8_matmul(a, b).long(), a.long() @ b.long())
    flops = 2 * args.m * args.k * args.n
    print(f"shape {args.m}x{args.k} @ {args.k}x{args.n}, torch threads {torch.get_num_threads()}")
    print(f"float32 matmul            {t_f32 * 1e3:8.3f} ms  {flops / t_f32 / 1e9:7.1f} GFLOP/s")
    print(f"exact int8 (bit-exact)    {t_exact * 1e3:8.3f} ms  ratio to float32 {t_f32 / t_exact:.2f}  (target >= 0.3)")
    print(f"exact int8 + counting     {t_counted * 1e3:8.3f} ms  ratio to float32 {t_f32 / t_counted:.2f}")


if __name__ == "__main__":
    main()
