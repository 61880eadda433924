"""The bit-serial macro: a hand-computed GEMM, conservation, write-back, monotone energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imcsim.cost import cost

MAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sas_mram_repnet.yaml"
W = np.array([[1, 0], [2, -1], [0, 3]], dtype=np.int8)  # K = 3, N = 2


def _energy(macro, counts) -> float:
    return sum(n * macro.actions.energy_j(k) for k, n in counts.items())


def test_hand_computed_forward(small_hardware):
    macro = small_hardware.macro
    macro.store("w", W)
    x = torch.tensor([[1, 2, 0]], dtype=torch.int8)
    y, rec = macro.forward(x, "w")
    assert y.tolist() == [[5, -2]]
    dev = small_hardware.device.component
    expected = {
        ("row_driver", "activate_row"): 2,  # x0 bit 0, x1 bit 1
        (dev, "read"): 2 * 16,  # each active row reads 2 weights x 8 bit cells
        ("sense_amp", "sense"): 2 * 16,
        ("column_counter", "increment"): 1 * 1 + 1 * 9,  # popcount(x_k) * ones in row k
        ("adder_tree", "combine"): 2 * 2,  # 2 active plane passes x 2 outputs
        ("shift_add", "accumulate"): 2 * 2,
        ("input_buffer", "read_bit"): 3 * 8,
        ("output_buffer", "write_bit"): 2 * 32,
    }  # no partial sums (one row tile); an op keeps only the actions it counted
    assert dict(rec.counts) == expected
    assert rec.cycles == 2 + 1
    # energy is exactly counts x per-action energies
    c = cost(rec.counts, macro.actions, {"forward": rec.cycles}, macro.t_cycle_s)
    assert c.total_energy_j == pytest.approx(_energy(macro, expected))
    assert c.total_latency_s == pytest.approx(3 * macro.t_cycle_s)
    a = macro.actions
    by_hand = (
        2 * a.energy_j(("row_driver", "activate_row"))
        + 32 * a.energy_j((dev, "read"))
        + 32 * a.energy_j(("sense_amp", "sense"))
        + 10 * a.energy_j(("column_counter", "increment"))
        + 4 * a.energy_j(("adder_tree", "combine"))
        + 4 * a.energy_j(("shift_add", "accumulate"))
        + 24 * a.energy_j(("input_buffer", "read_bit"))
        + 64 * a.energy_j(("output_buffer", "write_bit"))
    )
    assert c.total_energy_j == pytest.approx(by_hand)


def test_hand_computed_transposed_read(small_hardware):
    macro = small_hardware.macro
    macro.store("w", W)
    dy = torch.tensor([[1, -1]], dtype=torch.int8)
    dx, rec = macro.backward_input(dy, "w")
    assert dx.tolist() == [[1, 3, -3]]
    dev = small_hardware.device.component
    assert rec.counts[("col_driver", "activate_col")] == 9 * 8  # 9 ones, 8 bit-columns each
    assert rec.counts[(dev, "read")] == 72 * 3
    assert rec.counts[("column_counter", "increment")] == 1 * 2 + 8 * 10
    assert rec.counts[("adder_tree", "combine")] == 8 * 3
    assert rec.cycles == 72 + 1


def test_sense_count_conservation(small_hardware):
    """Senses = sum over planes of activated rows x columns, for any operand."""
    macro = small_hardware.macro
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(20, 5), dtype=np.int8)
    macro.store("w", w)
    x = torch.from_numpy(rng.integers(-128, 128, size=(7, 20), dtype=np.int8))
    _, rec = macro.forward(x, "w")
    ones = int(sum(((x.view(torch.uint8) >> i) & 1).sum() for i in range(8)))
    assert rec.counts[("sense_amp", "sense")] == ones * 5 * 8
    rt, ct = macro.tiles_for(20, 5)
    assert (rt, ct) == (3, 3)  # 20 rows / 8, 40 bit-columns / 16
    assert rec.counts[("row_driver", "activate_row")] == ones * ct
    assert rec.counts[("psum", "add")] == 7 * 5 * (rt - 1)


def test_only_changed_cells_are_written(small_hardware):
    macro = small_hardware.macro
    macro.store("w", W)
    new = W.copy()
    new[1, 0] = 3  # 2 -> 3 flips bit 0 of one weight
    rec = macro.write_back("w", new)
    cw = rec.cell_writes
    assert cw.shape == (3, 16)
    written = np.argwhere(cw > 0)
    # only row 1 and the first weight's cells (columns 0..7) can be touched
    assert set(written[:, 0]) == {1}
    assert written[:, 1].max() < 8
    again = macro.write_back("w", new)
    assert not again.cell_writes.any()
    assert sum(again.counts.values()) == 0


@given(
    arrays(np.int8, (4, 10), elements=st.integers(-128, 127)),
    arrays(np.int8, (4, 10), elements=st.integers(-128, 127)),
)
@settings(max_examples=40, deadline=None)
def test_more_activity_never_costs_less(x, extra):
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    hw = build_hardware(load_config(MAIN_CONFIG, ["circuit.array.rows=8", "circuit.array.cols=16"]))
    macro = hw.macro
    macro.store("w", np.arange(30, dtype=np.int8).reshape(10, 3) - 15)
    busier = (x.view(np.uint8) | extra.view(np.uint8)).view(np.int8)  # a superset of the 1 bits
    _, r1 = macro.forward(torch.from_numpy(x), "w")
    _, r2 = macro.forward(torch.from_numpy(busier), "w")
    assert _energy(macro, r2.counts) >= _energy(macro, r1.counts) - 1e-24
    assert r2.cycles >= r1.cycles


def test_weights_that_do_not_fit_are_refused(small_hardware):
    from imcsim.circuits import CapacityError

    macro = small_hardware.macro
    with pytest.raises(CapacityError, match="subarrays"):
        macro.store("big", np.zeros((8 * 300, 2), dtype=np.int8))


def test_transposed_copy_dataflow():
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    hw = build_hardware(load_config(MAIN_CONFIG, ["circuit.array.rows=8", "circuit.array.cols=16",
                                                  "circuit.dataflow.input_grad=transposed_copy"]))
    macro = hw.macro
    deploy = macro.store("w", W)
    assert [(r.layer, r.region) for r in deploy] == [("w", "weights"), ("w", "transposed")]
    assert macro.subarrays_used == 1 + 2  # W: 3 x 16 bit cells; W^T: 2 x 24 bit cells over two 16-column tiles
    dy = torch.tensor([[1, -1]], dtype=torch.int8)
    dx, rec = macro.backward_input(dy, "w")
    assert dx.tolist() == [[1, 3, -3]]
    # forward-style against W^T: 9 active bits, each reading one row of 3 weights x 8 bits
    assert rec.counts[("row_driver", "activate_row")] == 9 * macro.transposed["w"].col_tiles
    assert rec.counts[("sense_amp", "sense")] == 9 * 24
    new = W.copy()
    new[0, 0] = -1
    recs = macro.update_weights("w", new)
    assert len(recs) == 2
    assert all(r.cell_writes.sum() > 0 for r in recs)
    assert np.array_equal(macro.transposed["w"].values, new.T)


def test_in_array_weight_gradient_hand_computed():
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    hw = build_hardware(load_config(MAIN_CONFIG, ["circuit.array.rows=16", "circuit.array.cols=16",
                                                  "circuit.dataflow.weight_grad=in_array"]))
    macro = hw.macro
    dev = hw.device.component
    x = torch.tensor([[1], [3]], dtype=torch.int8)  # M = 2, K = 1
    dy = torch.tensor([[1], [0]], dtype=torch.int8)  # M = 2, N = 1
    dw, (wrec, rec) = macro.weight_grad(x, dy, "w")
    assert dw.tolist() == [[1]]
    # x column has 2 non-zero planes (bits 0 and 1), dy column 1: 2 AND pairs over M = 2 columns
    assert rec.counts[("sense_amp", "sense")] == 2 * 2
    assert rec.counts[(dev, "read")] == 2 * 2 * 2
    assert rec.counts[("row_driver", "activate_row")] == 2 * 2
    assert rec.counts[("popcount_tree", "reduce")] == 2
    assert rec.counts[("shift_add", "accumulate")] == 2
    # operand planes written from empty scratch: x rows [1,1] and [0,1], dy row [1,0]
    assert wrec.counts[(dev, "reset_pulse")] == 3
    assert wrec.counts[(dev, "stt_assist")] == 4
    assert wrec.cell_writes.sum() == 4
    _, (again, _) = macro.weight_grad(x, dy, "w")
    assert again.cell_writes.sum() == 0  # same operands: nothing rewritten


def test_popcount_tree_bit_adds():
    from imcsim.components.blocks import popcount_tree_bit_adds

    assert popcount_tree_bit_adds(2) == 1
    assert popcount_tree_bit_adds(4) == 2 * 1 + 1 * 2
    assert popcount_tree_bit_adds(8) == 4 + 2 * 2 + 1 * 3


@pytest.mark.parametrize("rows_per_sense", [1, 4, 32])
def test_a_column_sensing_several_rows_pays_a_popcount_tree_and_each_output_an_adder_tree(rows_per_sense):
    """Area: a column that senses R rows per cycle holds a popcount tree of R inputs (popcount_tree_bit_adds(R)
    full adders, none for R = 1) beside its counter; each output (8 columns) an adder tree of its combine's full
    adders beside its accumulator; a popcount tree's full-adder operations per input stay under the two per
    increment the energy counts."""
    from imcsim.api import build_hardware
    from imcsim.components.blocks import (
        COUNTER_TOGGLES_PER_INCREMENT,
        counter_bits,
        popcount_tree_bit_adds,
    )
    from imcsim.config import load_config

    macro = build_hardware(load_config(MAIN_CONFIG, [f"circuit.array.rows_per_sense={rows_per_sense}"])).macro
    a, b = macro.card.array, macro.blocks
    fa = b["shift_add"].area_m2 / 32 - b["input_buffer"].area_m2  # one full adder (the accumulator's bit less its register)
    tree = popcount_tree_bit_adds(rows_per_sense) if rows_per_sense > 1 else 0
    assert b["column_counter"].area_m2 == pytest.approx((counter_bits(a.rows) + tree) * fa, rel=1e-9)
    assert b["adder_tree"].area_m2 == pytest.approx(7 * (counter_bits(a.rows) + 8) * fa, rel=1e-9)
    assert tree / rows_per_sense < COUNTER_TOGGLES_PER_INCREMENT
