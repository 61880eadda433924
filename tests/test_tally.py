"""Tally of an op stream: write statistics, the pooled hottest-cell write rate, counts and MACs per module."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imcsim.ops import OpRecord
from imcsim.sim.tally import op_macs, tally_ops


def write_op(layer: str, cell_writes: np.ndarray, changed: int, cpw: int, step: int = 0) -> OpRecord:
    k, cols = cell_writes.shape
    return OpRecord(phase="update", layer=layer, kind="write", shape=(k, cols // cpw), cell_writes=cell_writes,
                    changed_weights=changed, step=step, task="t")


@given(st.lists(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 5).map(lambda n: 4 * n)),
                       elements=st.integers(0, 9)), min_size=1, max_size=4), st.integers(0, 30))
@settings(max_examples=60, deadline=None)
def test_write_stats_match_a_direct_count(arrays_, unwritten):
    ops = [write_op(f"l{i}", a, 1, 4) for i, a in enumerate(arrays_)]
    flat = np.concatenate([a.ravel() for a in arrays_]).astype(np.int64)
    ws = tally_ops(ops).write_stats(flat.size + unwritten)
    assert ws.cells_ever_written == int((flat > 0).sum())
    assert ws.max_writes == int(flat.max())
    assert ws.mean_writes == pytest.approx(flat.sum() / (flat.size + unwritten))
    hist = dict(ws.histogram)
    assert sum(hist.values()) == flat.size + unwritten
    assert hist.get(0, 0) == int((flat == 0).sum()) + unwritten


def test_pooled_write_rate_shares_the_per_changed_weight_writes_and_scales_by_the_busiest_layer():
    cpw = 2
    # layer a: 4 weights, 2 changed, writes (3, 1) per changed weight; layer b: 8 weights, 2 changed, (1, 1)
    a = np.array([[3, 1, 3, 1], [0, 0, 0, 0]], dtype=np.uint8)
    b = np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)
    t = tally_ops([write_op("a", a, 2, cpw), write_op("b", b, 2, cpw)])
    # position 0: (3 + 3 + 1 + 1) writes over 4 changed weights = 2 per changed weight; busiest share 2 / 4
    assert t.pooled_max_write_rate(cpw) == pytest.approx(2.0 * 0.5)
    assert tally_ops([]).pooled_max_write_rate(cpw) == 0.0


def test_counts_cycles_and_macs_per_module_and_phase():
    fwd = OpRecord(phase="forward", kind="gemm", layer="conv.g0", module="conv", shape=(8, 9, 4), cycles=5,
                   counts={("sense_amp", "sense"): 3}, task="t", step=0, macs=288)
    dig = OpRecord(phase="weight_grad", kind="digital", layer="conv.g0", module="conv", shape=(9, 8, 4), cycles=2,
                   counts={("digital", "mac_int8"): 288}, task="t", step=0, macs=288)
    upd = OpRecord(phase="update", kind="digital", layer="head", shape=(10,), cycles=1,
                   counts={("digital", "fp32_update"): 10}, task="t", step=0)
    deploy = OpRecord(phase="deploy", kind="write", layer="conv.g0", module="conv", shape=(9, 4), cycles=7)
    t = tally_ops([deploy, fwd, dig, upd])
    assert [op_macs(op) for op in (fwd, dig, upd, deploy)] == [288, 288, 0, 0]  # as the circuit counted them
    assert t.macs_by_phase == {"forward": 288, "weight_grad": 288, "update": 0, "deploy": 0}
    assert t.macs_by_module["conv"]["forward"] == 288
    assert t.counts_by_module["conv"]["forward"] == {("sense_amp", "sense"): 3}
    assert t.cycles_by_module["conv"] == {"deploy": 7, "forward": 5, "weight_grad": 2}
    assert t.cycles_by_module["head"]["update"] == 1  # no module: the layer is its home
    assert t.module_of == {"conv.g0": "conv", "head": "head"}
    assert t.shape_of == {"conv": (8, 9, 4)}
