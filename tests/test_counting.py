"""One counting model: the counts a circuit expects from operand statistics (cost-only mode) equal the counts it
measures on real operands (functional mode), for every circuit, dataflow and phase.

Operands are drawn with independent bits (plane i set with probability p_i); the expectation is taken at the
densities measured on the drawn operand and stored weights. Counts that follow from the densities alone (line
activations, cell reads, buffer traffic, partial sums, conversions, digital MACs) must agree exactly; counts that
depend on how the 1 bits fall (passes holding a 1, the busiest tile's cycles, AND results of 1, cells flipped)
agree within the stated tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MAIN_CONFIG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcsim.api import build_hardware
from imcsim.circuits.activity import plane_ones
from imcsim.config import load_config

XBAR = ["circuit.card=reram_crossbar_isaac_32nm", "device.card=reram_hfox_neurosim"]
M, K, N = 48, 70, 20  # several tiles along the stream and across the outputs of 32 x 64 subarrays
STOCHASTIC_REL = 0.1  # passes, busiest-tile cycles, AND results and flips: sums of many Bernoulli terms
EXACT = {("row_driver", "activate_row"), ("col_driver", "activate_col"), ("input_buffer", "read_bit"),
         ("output_buffer", "write_bit"), ("psum", "add"), ("digital", "mac_int8"), ("dac", "convert"),
         ("adc", "convert"), ("shift_add", "accumulate"), ("latch", "read_bit")}


def _circuit(kind: str, sets: list[str]):
    base = ["circuit.array.rows=32", "circuit.array.cols=64"]
    return build_hardware(load_config(MAIN_CONFIG, [*(XBAR if kind == "crossbar" else []), *base, *sets])).macro


def _operand(rng: np.random.Generator, shape: tuple[int, int], density: list[float]) -> torch.Tensor:
    bits = rng.random((*shape, 8)) < np.asarray(density)
    u = (bits * (1 << np.arange(8))).sum(axis=-1).astype(np.uint8)
    return torch.from_numpy(u.view(np.int8))


def _density(x: torch.Tensor) -> list[float]:
    return list(plane_ones(x) / x.numel())


def _agree(measured, expected, exact_keys=EXACT) -> None:
    assert (measured.phase, measured.kind, measured.region) == (expected.phase, expected.kind, expected.region)
    keys = set(measured.counts) | set(expected.counts)
    for key in keys:
        got, want = expected.counts.get(key, 0), measured.counts.get(key, 0)
        if key in exact_keys:
            assert got == pytest.approx(want, rel=1e-9, abs=1), key
        else:
            assert got == pytest.approx(want, rel=STOCHASTIC_REL, abs=8), key
    assert expected.cycles == pytest.approx(measured.cycles, rel=STOCHASTIC_REL, abs=2)
    assert expected.macs == measured.macs
    assert (measured.macs > 0) == (measured.kind != "write")


densities = st.lists(st.floats(0.1, 0.6), min_size=8, max_size=8)
SETTINGS = settings(max_examples=4, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize(("kind", "flow", "extra"), [
    ("macro", "transposable_read", []),
    ("macro", "transposed_copy", []),
    ("macro", "digital", []),
    ("macro", "transposable_read", ["circuit.array.rows_per_sense=4"]),
    ("macro", "transposable_read", ["circuit.dataflow.skip_zero_planes=false"]),
    ("macro", "transposable_read", ["circuit.dataflow.weight_reuse=latch", "circuit.dataflow.batch_tile=4"]),
    ("macro", "transposed_copy", ["circuit.dataflow.weight_reuse=latch", "circuit.array.rows_per_sense=4"]),
    ("macro", "transposable_read", ["circuit.dataflow.input_encoding=booth_radix4"]),
    ("macro", "transposed_copy", ["circuit.dataflow.weight_reuse=in_cell", "device.card=sram_6t_28nm",
                                  "circuit.dataflow.input_encoding=booth_radix4", "circuit.array.rows_per_sense=4"]),
    ("crossbar", "transposable_read", []),
    ("crossbar", "digital", []),
])
@SETTINGS
@given(dx=densities, de=densities)
def test_expected_counts_equal_measured_counts(kind, flow, extra, dx, de):
    macro = _circuit(kind, [f"circuit.dataflow.input_grad={flow}", *extra])
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (K, N)).astype(np.int8)
    macro.store("w", w)
    q = float(np.unpackbits(w.view(np.uint8)).mean())
    x, dy = _operand(rng, (M, K), dx), _operand(rng, (M, N), de)
    dev = (macro.device.component, "read")
    # crossbar: conversions follow the sign passes (exact), reads the magnitude bits (taken as independent);
    # macro: reads follow the 1 bits (exact), shift-adds the passes that hold a 1 (stochastic)
    exact = EXACT if kind == "crossbar" else (EXACT - {("shift_add", "accumulate")}) | {dev}
    if "circuit.dataflow.weight_reuse=latch" in extra or "circuit.dataflow.input_encoding=booth_radix4" in extra:
        # lines sensed once per vector tile that needs them; or driven by the non-zero Booth digits, whose
        # expectation takes the bits as independent
        exact = exact - {dev, ("row_driver", "activate_row"), ("col_driver", "activate_col")}
    _, fwd = macro.forward(x, "w", samples=4)
    _agree(fwd, macro.expected_forward(M, K, N, 1, 4, _density(x), q, "w"), exact)
    _, back = macro.backward_input(dy, "w", samples=4)
    _agree(back, macro.expected_input_grad(M, K, N, 1, 4, _density(dy), q, "w"), exact)


@pytest.mark.parametrize("device", ["sas_mram_4mtj_zhang_tcad2024", "stt_mram_1t1mtj_nvsim"])
@SETTINGS
@given(dx=densities, de=densities)
def test_in_array_weight_gradient_expected_equals_measured(device, dx, de):
    macro = _circuit("macro", ["circuit.dataflow.weight_grad=in_array", f"device.card={device}"])
    rng = np.random.default_rng(1)
    for _ in range(2):  # the second step rewrites the first step's planes: the steady state cost-only counts
        x, dy = _operand(rng, (M, K), dx), _operand(rng, (M, N), de)
        _, (write, gemm) = macro.weight_grad(x, dy, "w")
    exp_write, exp_gemm = macro.expected_weight_grad(M, K, N, 1, 1, _density(x), _density(dy), "w",
                                                     np.random.default_rng(2))
    # plane pairs that hold a 1 set every count but the buffer traffic and the partial sums
    _agree(gemm, exp_gemm, {("input_buffer", "read_bit"), ("output_buffer", "write_bit"), ("psum", "add")})
    _agree(write, exp_write, set())


def test_digital_weight_gradient_is_the_same_op_in_both_modes():
    macro = _circuit("macro", [])
    rng = np.random.default_rng(3)
    x, dy = _operand(rng, (M, K), [0.3] * 8), _operand(rng, (M, N), [0.2] * 8)
    _, (measured,) = macro.weight_grad(x, dy, "w", samples=4)
    (expected,) = macro.expected_weight_grad(M, K, N, 1, 4, _density(x), _density(dy), "w", rng)
    assert dict(expected.counts) == dict(measured.counts)
    assert expected.cycles == measured.cycles
    assert np.array_equal(expected.chunk_cycles, measured.chunk_cycles)


def test_grouped_layers_count_every_group_once():
    """A depthwise layer packed block-diagonally streams g*k lines into g*n outputs, but performs m*k*n MACs per
    group, not m*(g*k)*(g*n): MAC counts (and TOPS/W) come from the circuit, not from the op's shape."""
    macro = _circuit("macro", [])
    m, k, n, groups = 64, 9, 1, 32
    packed = macro.expected_forward(m, k, n, groups, 4, [0.2] * 8, 0.4, "dw")
    assert packed.shape == (m, groups * k, groups * n)
    assert packed.macs == m * k * n * groups
    assert macro.expected_input_grad(m, k, n, groups, 4, [0.2] * 8, 0.4, "dw").macs == m * k * n * groups
    big = macro.expected_forward(m, 300, 40, 3, 4, [0.2] * 8, 0.4, "g")  # groups too large to pack: 3 copies
    assert big.macs == m * 300 * 40 * 3


def test_weight_reuse_senses_each_line_once_per_vector_tile():
    """The latch dataflow on a dense operand (every element non-zero): each stored line is sensed once per tile of
    batch_tile vectors instead of once per active input bit, every active bit reads the latches instead, the
    counter work is unchanged, and the latches cost a register bit of area per cell."""
    rng = np.random.default_rng(1)
    w = rng.integers(-100, 100, (K, N)).astype(np.int8)
    x = torch.from_numpy(rng.integers(1, 127, (M, K)).astype(np.int8))  # no zero element
    ops = {}
    for flow in ("resense", "latch"):
        macro = _circuit("macro", [f"circuit.dataflow.weight_reuse={flow}", "circuit.dataflow.batch_tile=8"])
        macro.store("w", w)
        ops[flow] = (macro, macro.forward(x, "w", samples=4)[1])
    (resense, base), (latch, reuse) = ops["resense"], ops["latch"]
    dev = (resense.device.component, "read")
    lines_on = int(plane_ones(x).sum())
    assert base.counts[dev] == lines_on * N * 8
    assert reuse.counts[dev] == (M // 8) * K * N * 8  # each line once per tile of 8 vectors
    assert reuse.counts[("latch", "read_bit")] == base.counts[dev]
    assert reuse.counts[("latch", "write_bit")] == reuse.counts[dev]
    for key in (("column_counter", "increment"), ("adder_tree", "combine"), ("shift_add", "accumulate")):
        assert reuse.counts[key] == base.counts[key]
    a = latch.card.array
    assert latch.area_m2() - resense.area_m2() == pytest.approx(
        a.n_subarrays * a.rows * a.cols * latch.blocks["latch"].area_m2, rel=1e-9)


def test_in_cell_compute_senses_nothing_and_booth_halves_the_passes():
    """Digital SRAM CIM: with in_cell, no cell is read and no sense amplifier fires to compute; each AND result of
    1 switches its cell's gate instead (as many as the column counters see) and the gates cost area per cell.
    Radix-4 Booth on a dense operand: 4 digit passes instead of 8 plane passes, the lines driven by the non-zero
    digits, the product exact either way; an MRAM cell cannot compute in its cell."""
    rng = np.random.default_rng(2)
    w = rng.integers(-100, 100, (K, N)).astype(np.int8)
    x = torch.from_numpy(rng.integers(-127, 127, (M, K)).astype(np.int8))
    sram = ["device.card=sram_6t_28nm", "circuit.array.rows_per_sense=4"]
    ops = {}
    for name, sets in {"read": [], "in_cell": ["circuit.dataflow.weight_reuse=in_cell"],
                       "booth": ["circuit.dataflow.weight_reuse=in_cell",
                                 "circuit.dataflow.input_encoding=booth_radix4"]}.items():
        macro = _circuit("macro", [*sram, *sets])
        macro.store("w", w)
        y, op = macro.forward(x, "w", samples=4)
        assert torch.equal(y, torch.from_numpy(x.numpy().astype(np.int64) @ w.astype(np.int64)).to(torch.int32))
        ops[name] = (macro, op)
    (plain, read), (cell, gated), (_, booth) = ops["read"], ops["in_cell"], ops["booth"]
    assert read.counts[("sram_cell", "read")] > 0
    assert read.counts[("sense_amp", "sense")] > 0
    assert ("sram_cell", "read") not in gated.counts
    assert ("sense_amp", "sense") not in gated.counts
    assert gated.counts[("cell_gate", "evaluate")] == gated.counts[("column_counter", "increment")] \
        == read.counts[("column_counter", "increment")]
    a = cell.card.array
    assert cell.gates_per_cell == 2  # the transposable read drives the cells from their columns too
    assert cell.area_m2() - plain.area_m2() == pytest.approx(
        2 * a.n_subarrays * a.rows * a.cols * cell.blocks["cell_gate"].area_m2, rel=1e-9)
    from imcsim.circuits.bitplanes import BOOTH_NONZERO
    digits = int(np.unpackbits(BOOTH_NONZERO[x.numpy().view(np.uint8)]).sum())
    geom = plain.stream_geometry("forward", K, N)[0]
    assert booth.counts[("row_driver", "activate_row")] == digits * geom.other_tiles
    tiles = -(-K // a.rows)
    assert booth.counts[("adder_tree", "combine")] == M * tiles * 4 * N  # 4 digits, every one non-zero somewhere
    assert booth.counts[("adder_tree", "combine")] <= 0.51 * gated.counts[("adder_tree", "combine")]
    assert booth.cycles < gated.cycles
    with pytest.raises(Exception, match="latch cell"):
        _circuit("macro", ["circuit.dataflow.weight_reuse=in_cell"])
