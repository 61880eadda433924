"""The benchmarks' set-ups still build and run against the current API (the timings themselves are only run by
hand: these machines are shared and noisy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_accounting_benchmark_reference_step_is_the_counted_step_without_counts():
    """bench_accounting compares a counted INT8 step against the same step uncounted: after one step both arrays
    hold the same trained INT8 weights (the uncounted step trains the array layers too), and only the counted
    one recorded ops."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_accounting

    from imcsim.config import load_config

    loaded = load_config(bench_accounting.CONFIG)
    ref_step, ref_hw, _ = bench_accounting.build(False, loaded)
    acc_step, acc_hw, graphs = bench_accounting.build(True, loaded)
    before = {k: v.values.copy() for k, v in ref_hw.macro.stored.items()}
    ref_step()
    acc_step()
    changed = [k for k, v in ref_hw.macro.stored.items() if not np.array_equal(v.values, before[k])]
    assert changed  # the trained layers were rewritten
    for k, v in ref_hw.macro.stored.items():
        assert np.array_equal(v.values, acc_hw.macro.stored[k].values), k
    assert not ref_hw.ops
    assert acc_hw.ops
    assert graphs["t"].calls
