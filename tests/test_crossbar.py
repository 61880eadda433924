"""Analog ReRAM crossbar: exact with a wide ADC, ADC error falls with bits, counts, mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imcsim.api import build_hardware
from imcsim.config import load_config
from imcsim.errors import InputError

MAIN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sas_mram_repnet.yaml"
XBAR = ["circuit.card=reram_crossbar_isaac_32nm", "device.card=reram_hfox_neurosim"]


IDEAL = ["device.read.noise=0", "circuit.analog.wire=null"]  # no read noise, ideal wires
ENCODINGS = [(w, i) for w in ("differential", "subtract", "offset") for i in ("sign_magnitude", "twos_complement")]


def crossbar(*sets: str):
    return build_hardware(load_config(MAIN_CONFIG, [*XBAR, *sets])).macro


def nominal(xb, name: str, w: np.ndarray) -> None:
    """Replace programmed conductances by the exact level values."""
    xb.set_levels(name, xb._levels_of(w))


def rel_err(y, exact) -> float:
    return float((y.double() - exact.double()).norm() / exact.double().norm())


@given(arrays(np.int8, st.tuples(st.integers(1, 40), st.integers(1, 6)), elements=st.integers(-128, 127)),
       st.integers(1, 5), st.sampled_from([1, 2, 4, 8]), st.sampled_from(ENCODINGS),
       st.sampled_from(["unipolar", "bipolar"]))
@settings(max_examples=24, deadline=None)
def test_wide_adc_and_exact_cells_give_the_integer_product(w, m, dac_bits, encoding, drive):
    """Every weight and input encoding computes the exact product with exact cells and a wide ADC."""
    xb = crossbar("circuit.components.adc.bits=16", "circuit.array.rows=16", "circuit.array.cols=32",
                  f"circuit.components.dac.bits={dac_bits}", *IDEAL, f"circuit.analog.column_drive={drive}",
                  f"circuit.analog.weight_encoding={encoding[0]}", f"circuit.analog.input_encoding={encoding[1]}")
    xb.store("w", w)
    nominal(xb, "w", w)
    rng = np.random.default_rng(m)
    x = torch.from_numpy(rng.integers(-128, 128, (m, w.shape[0]), dtype=np.int8))
    y, _ = xb.forward(x, "w")
    assert torch.equal(y.long(), x.long() @ torch.from_numpy(w).long())
    dy = torch.from_numpy(rng.integers(-128, 128, (m, w.shape[1]), dtype=np.int8))
    dx, _ = xb.backward_input(dy, "w")
    assert torch.equal(dx.long(), dy.long() @ torch.from_numpy(w).long().T)


def test_adc_error_falls_with_resolution():
    rng = np.random.default_rng(0)
    w = np.clip(rng.normal(0, 30, (200, 12)), -128, 127).astype(np.int8)
    x = torch.from_numpy(rng.integers(-128, 128, (16, 200), dtype=np.int8))
    exact = x.long() @ torch.from_numpy(w).long()
    errors = []
    for bits in (4, 6, 8, 10):
        xb = crossbar(f"circuit.components.adc.bits={bits}", *IDEAL)
        xb.store("w", w)
        nominal(xb, "w", w)
        y, _ = xb.forward(x, "w")
        errors.append(rel_err(y, exact))
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 0.1
    assert errors[-1] == 0.0  # 10 bits cover the 384-level full scale of a 128-row tile
    assert xb.error.relative_rms == 0.0


def test_programming_error_reaches_the_result():
    rng = np.random.default_rng(1)
    w = np.clip(rng.normal(0, 30, (64, 8)), -128, 127).astype(np.int8)
    xb = crossbar("circuit.components.adc.bits=12", *IDEAL, "device.relaxation=null")
    xb.store("w", w)
    x = torch.from_numpy(rng.integers(-128, 128, (8, 64), dtype=np.int8))
    y, _ = xb.forward(x, "w")
    err = rel_err(y, x.long() @ torch.from_numpy(w).long())
    assert 0.0 < err < 1.0
    assert xb.error.relative_rms == pytest.approx(err, rel=1e-9)


def test_differential_slices():
    xb = crossbar("circuit.analog.weight_encoding=differential")
    levels = xb._levels_of(np.array([[0, 1, -1, 127, -128]], dtype=np.int8))
    assert levels.shape == (1, 5, 8)  # 2-bit cells: 4 slices for W+, 4 for W-
    assert levels[0, 0].tolist() == [0] * 8
    assert levels[0, 1].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert levels[0, 2].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert levels[0, 3].tolist() == [3, 3, 3, 1, 0, 0, 0, 0]  # 127 = 1 3 3 3 in base 4
    assert levels[0, 4].tolist() == [0, 0, 0, 0, 0, 0, 0, 2]  # 128 = 2 0 0 0 in base 4


def test_offset_slices_store_the_biased_code():
    xb = crossbar("circuit.analog.weight_encoding=offset")  # ISAAC's biased encoding: W + 128
    levels = xb._levels_of(np.array([[0, -128, 127, -1]], dtype=np.int8))
    assert levels.shape == (1, 4, 4)  # one magnitude: 4 two-bit cells
    assert levels[0, 0].tolist() == [0, 0, 0, 2]  # 128 = 2 0 0 0 in base 4
    assert levels[0, 1].tolist() == [0, 0, 0, 0]
    assert levels[0, 2].tolist() == [3, 3, 3, 3]  # 255
    assert levels[0, 3].tolist() == [3, 3, 3, 1]  # 127


# conversions of a (5 x 32) @ (32 x 3) product on 16 x 32 crossbars of 2-bit cells with 1-bit DACs, by hand:
# vectors x row tiles x input cycles x sign passes x outputs x conversions per weight
HAND_FORWARD = {
    ("differential", "sign_magnitude"): 5 * 2 * 8 * 2 * 3 * 8,  # W+ and W- columns each converted
    ("subtract", "sign_magnitude"): 5 * 2 * 8 * 2 * 3 * 4,  # W+ - W- in analog: one conversion per slice
    ("offset", "sign_magnitude"): 5 * 2 * 8 * 2 * 3 * 4,  # biased code: one column per slice
    ("differential", "twos_complement"): 5 * 2 * 8 * 1 * 3 * 8,  # one pass: 7 magnitude cycles + the sign cycle
    ("subtract", "twos_complement"): 5 * 2 * 8 * 1 * 3 * 4,
    ("offset", "twos_complement"): 5 * 2 * 8 * 1 * 3 * 4,  # ISAAC's choice
}
# input gradient (3 x 32 product driving the columns): vectors x column tiles (the 3 weights of one slice side fit
# in one crossbar's 16 or 32 columns) x cycles x passes x rows converted (32) x cells per weight, each cell column's
# row sum converted in its side's own pass
HAND_INPUT_GRAD = {
    ("differential", "sign_magnitude"): 5 * 1 * 8 * 2 * 32 * 8,
    ("subtract", "sign_magnitude"): 5 * 1 * 8 * 2 * 32 * 8,
    ("offset", "sign_magnitude"): 5 * 1 * 8 * 2 * 32 * 4,
    ("differential", "twos_complement"): 5 * 1 * 8 * 1 * 32 * 8,
    ("subtract", "twos_complement"): 5 * 1 * 8 * 1 * 32 * 8,
    ("offset", "twos_complement"): 5 * 1 * 8 * 1 * 32 * 4,
}


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: f"{e[0]}-{e[1]}")
def test_conversions_per_mac_follow_the_encoding_counted_by_hand(encoding):
    xb = crossbar("circuit.array.rows=16", "circuit.array.cols=32", *IDEAL,
                  f"circuit.analog.weight_encoding={encoding[0]}", f"circuit.analog.input_encoding={encoding[1]}")
    w = np.ones((32, 3), dtype=np.int8)
    xb.store("w", w)
    x = torch.tensor([[1, -1] * 16] * 5, dtype=torch.int8)  # both signs present
    _, rec = xb.forward(x, "w")
    assert rec.counts[("adc", "convert")] == HAND_FORWARD[encoding]
    assert rec.counts[("shift_add", "accumulate")] == HAND_FORWARD[encoding]
    passes = 2 if encoding[1] == "sign_magnitude" else 1
    # every row, cycle and pass, in each of the 4 crossbars that hold the 4 slices (slice-major)
    assert rec.counts[("dac", "convert")] == 5 * 32 * 8 * passes * 4
    assert xb.stored["w"].col_tiles == 4
    # an input cycle lasts the 128 conversions of the crossbar's one ADC (ISAAC: one per 128 columns), 128
    # cycles of 0.83 ns, longer than the 10 ns cell read
    assert xb.cycles_per_input == 128
    assert rec.cycles == 5 * 8 * passes * 128
    dy = torch.tensor([[1, -1, 1]] * 5, dtype=torch.int8)
    _, rec_t = xb.backward_input(dy, "w")
    assert rec_t.counts[("adc", "convert")] == HAND_INPUT_GRAD[encoding]
    macs = 5 * 32 * 3
    if encoding == ("offset", "twos_complement"):  # 8 cycles x 4 slices / 16 rows; on ISAAC's 128 rows: 0.25
        assert rec.counts[("adc", "convert")] / macs == 8 * 4 / 16
    if encoding == ("differential", "sign_magnitude"):  # four times ISAAC's
        assert HAND_FORWARD[encoding] == 4 * HAND_FORWARD[("offset", "twos_complement")]


def test_bipolar_column_drive_subtracts_in_the_row_sums():
    """With W- columns driven at the opposite polarity, a row sums W+ - W- for one conversion per slice, in one
    pass: half the input gradient's conversions of one-sided passes, the same DAC drives per column."""
    sets = ["circuit.array.rows=16", "circuit.array.cols=32", *IDEAL, "circuit.analog.weight_encoding=subtract",
            "circuit.analog.input_encoding=twos_complement"]
    w = np.ones((32, 3), dtype=np.int8)
    dy = torch.tensor([[1, -1, 1]] * 5, dtype=torch.int8)
    recs = {}
    for drive in ("unipolar", "bipolar"):
        xb = crossbar(*sets, f"circuit.analog.column_drive={drive}")
        xb.store("w", w)
        _, recs[drive] = xb.backward_input(dy, "w")
    assert recs["bipolar"].counts[("adc", "convert")] == 5 * 1 * 8 * 1 * 32 * 4  # vectors x tiles x cycles x rows x S
    assert recs["unipolar"].counts[("adc", "convert")] == 2 * recs["bipolar"].counts[("adc", "convert")]
    assert recs["unipolar"].counts[("dac", "convert")] == recs["bipolar"].counts[("dac", "convert")]
    assert recs["unipolar"].cycles == 2 * recs["bipolar"].cycles  # one pass instead of one per side


def test_only_changed_weights_are_programmed():
    xb = crossbar()
    w = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    xb.store("w", w)
    new = w.copy()
    new[2, 1] += 1
    rec = xb.write_back("w", new)
    pulses = rec.cell_writes.reshape(4, 4, -1)
    assert pulses.sum() > 0
    touched = np.argwhere(pulses.sum(axis=-1) > 0)
    assert touched.tolist() == [[2, 1]]


def test_crossbar_needs_a_conductance_device():
    with pytest.raises(InputError, match=r"circuit.kind: an analog crossbar needs a multi-level"):
        build_hardware(load_config(MAIN_CONFIG, ["circuit.card=reram_crossbar_isaac_32nm"]))


def test_int8_layer_on_the_crossbar_gets_the_analog_result_and_its_counts():
    """Training layers on a crossbar see its ADC error and its conversions, never the bit-serial model's counts."""
    from imcsim.circuits.bitplanes import int8_matmul
    from imcsim.workloads.int8 import Hardware, IMCLinear, quantize

    torch.manual_seed(0)
    xb = crossbar("circuit.components.adc.bits=4")
    hw = Hardware(xb)
    layer = IMCLinear(96, 24, name="l", bias=False)
    layer.deploy(hw)
    hw.ops.clear()
    x = torch.randn(5, 96, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    x_q, sx = quantize(x.detach())
    exact = int8_matmul(x_q, torch.from_numpy(xb.stored["l"].values)).float() * (sx * layer.w_scale)
    assert not torch.allclose(y.detach(), exact)  # a 4-bit ADC loses precision
    phases = {op.phase: op for op in hw.ops}
    assert phases["forward"].counts[("adc", "convert")] > 0
    assert phases["input_grad"].counts[("adc", "convert")] > 0
    assert ("sense_amp", "sense") not in phases["forward"].counts


@pytest.mark.parametrize("sets", [[], ["circuit.analog.input_encoding=sign_magnitude"],
                                  ["circuit.analog.column_drive=bipolar"],
                                  ["circuit.analog.weight_encoding=offset", "circuit.analog.input_encoding=sign_magnitude"],
                                  ["circuit.analog.weight_encoding=differential"]], ids=str)
def test_expected_counts_match_the_counted_gemm_on_random_operands(sets):
    """The cost-only expectation of an analog GEMM agrees with the functional count on the same statistics, for
    every encoding and column drive."""
    from imcsim.circuits.activity import plane_ones

    xb = crossbar(*sets)
    rng = np.random.default_rng(3)
    w = rng.integers(-60, 60, (200, 24)).astype(np.int8)
    xb.store("w", w)
    x = torch.from_numpy(rng.integers(-128, 128, (64, 200)).astype(np.int8))
    _, rec = xb.forward(x, "w")
    density = list(plane_ones(x) / x.numel())
    exp = xb.expected_gemm(64, 200, 24, density, "forward", "w", samples=4)
    for key in (("dac", "convert"), ("adc", "convert"), ("shift_add", "accumulate"), ("psum", "add")):
        assert exp.counts[key] == rec.counts[key], key
    dev = (xb.device.component, "read")
    assert exp.counts[dev] == pytest.approx(rec.counts[dev], rel=0.05)
    assert exp.cycles == rec.cycles
    dy = torch.from_numpy(rng.integers(-128, 128, (64, 24)).astype(np.int8))
    _, rec_t = xb.backward_input(dy, "w")
    exp_t = xb.expected_gemm(64, 24, 200, list(plane_ones(dy) / dy.numel()), "input_grad", "w")
    for key in (("dac", "convert"), ("adc", "convert")):
        assert exp_t.counts[key] == rec_t.counts[key], key
    assert exp_t.cycles == rec_t.cycles


def test_adc_energy_follows_the_converter_survey_envelope():
    """Murmann's ADC survey (github bmurmann/ADC-survey): a 0.27 pJ floor, a Walden part doubling per bit and a
    thermal part quadrupling per bit (0.145 aJ x 4^ENOB), and the energy per conversion rising with the rate above
    the 46.7 MHz Schreier corner. Through the ISAAC cost point (8 bits, 1.67 pJ at 1.2 GS/s)."""
    from imcsim.errors import InputError

    e = {b: crossbar(f"circuit.components.adc.bits={b}").actions.energy_j(("adc", "convert"))
         for b in (4, 8, 9, 15, 16)}
    assert e[8] == pytest.approx(1.67e-12)
    assert 1.7 < e[9] / e[8] < 2.5  # about 2 x per bit below ~10 bits (less where the floor weighs)
    # toward 4 x per bit where thermal noise limits (for this converter, 6 x above the envelope at 8 bits, the
    # thermal term overtakes the Walden one past 15 bits; on the envelope itself past ~10)
    assert 2.5 < e[16] / e[15] < 4.0
    assert e[4] > 0.27e-12  # never below the survey's floor
    slow = crossbar("circuit.components.adc.t_conversion=1.66ns").actions.energy_j(("adc", "convert"))
    assert slow == pytest.approx(e[8] / 2)  # half the rate, above the corner: half the energy
    with pytest.raises(InputError) as err:
        crossbar("circuit.components.adc.energy=0.2pJ")
    assert err.value.key.endswith("adc.energy")
    # area: ISAAC's 1200 um^2 at 8 bits (32 nm), growing with the capacitive DAC's share of the energy
    area = {b: crossbar(f"circuit.components.adc.bits={b}").blocks["adc"].area_m2 for b in (6, 8, 9)}
    assert area[8] == pytest.approx(1200e-12)
    assert area[9] / area[8] == pytest.approx((e[9] - 0.27e-12) / (e[8] - 0.27e-12), rel=1e-9)
    assert area[6] < area[8] / 3


def test_relaxation_grows_the_error_with_time_and_a_refresh_reprograms_the_cells_that_left_their_window():
    """Wan et al.'s spread widens from 1 s to a day after programming; the product's error follows. A refresh
    re-verifies every programmed cell and reprograms those outside their window, from where they are now."""
    rng = np.random.default_rng(4)
    w = np.clip(rng.normal(0, 40, (128, 16)), -128, 127).astype(np.int8)
    x = torch.from_numpy(rng.integers(-128, 128, (32, 128), dtype=np.int8))
    exact = x.long() @ torch.from_numpy(w).long()
    xb = crossbar("circuit.components.adc.bits=14", *IDEAL)
    xb.store("w", w)
    early = rel_err(xb.forward(x, "w", count=False)[0], exact)
    xb.clock_s = 2 * 86400.0
    late = rel_err(xb.forward(x, "w", count=False)[0], exact)
    assert late > 1.2 * early
    programmed = int((xb.cells["w"].z != 0).sum())
    recs = xb.refresh()
    (rec,) = recs
    pulses = rec.counts[(xb.device.component, "set_pulse")] + rec.counts[(xb.device.component, "reset_pulse")]
    assert pulses > 0
    assert rec.counts[(xb.device.component, "verify_read")] == programmed + pulses  # a check read of each, + verify
    refreshed = xb.cells["w"].t_prog == xb.clock_s
    assert 0 < int(refreshed.sum()) <= programmed
    assert rel_err(xb.forward(x, "w", count=False)[0], exact) < late


def test_offset_encoding_puts_every_weight_mid_window_where_the_spread_is_largest():
    """Under Wan et al.'s spread (wider at higher G), ISAAC's biased code W + 128 programs every weight's top cell
    mid-window, so small weights carry more error than with W+/W- magnitudes (whose top cells stay at g_min)."""
    rng = np.random.default_rng(5)
    w = np.clip(rng.normal(0, 12, (128, 16)), -128, 127).astype(np.int8)
    x = torch.from_numpy(rng.integers(-128, 128, (32, 128), dtype=np.int8))
    exact = x.long() @ torch.from_numpy(w).long()
    errs = {}
    for enc in ("subtract", "offset"):
        xb = crossbar("circuit.components.adc.bits=14", *IDEAL, f"circuit.analog.weight_encoding={enc}")
        xb.store("w", w)
        errs[enc] = rel_err(xb.forward(x, "w", count=False)[0], exact)
    assert errs["offset"] > 1.5 * errs["subtract"]


def test_ir_drop_and_adc_offset_reach_the_result():
    rng = np.random.default_rng(6)
    w = rng.integers(-128, 128, (128, 16)).astype(np.int8)
    x = torch.from_numpy(rng.integers(0, 128, (8, 128), dtype=np.int8))
    exact = x.long() @ torch.from_numpy(w).long()

    def err(*sets):
        xb = crossbar("circuit.components.adc.bits=16", "device.read.noise=0", *sets)
        xb.store("w", w)
        nominal(xb, "w", w)
        return rel_err(xb.forward(x, "w", count=False)[0], exact)

    assert err("circuit.analog.wire=null") == 0.0
    assert err("circuit.analog.wire.resistivity=3.25e-7 Ohm*m") > err()  # ten times the resistivity
    assert err("circuit.analog.wire=null", "circuit.analog.adc_offset=1") > 0.0
    # NeuroSim's 32 nm wire: rho / (w^2 AR) over a 4F cell pitch, about 2 Ohm per cell
    xb = crossbar("device.read.noise=0")
    r = 3.25e-8 / (32e-9**2 * 2.0) * 4 * 32e-9
    assert xb.wire_resistance_ohm == pytest.approx(r, rel=1e-9)
    xb.store("w", w)
    nominal(xb, "w", w)
    g = 1e-6 + 3e-6 * xb._levels_of(w)
    series = xb._wire_series(g.shape)
    # the cell nearest the driver and the sense node: one row segment and one column segment
    assert series[127, 0, 0] == pytest.approx(2 * r, rel=1e-9)
    g_eff = 1e-6 + 3e-6 * xb._levels_now("w")
    np.testing.assert_allclose(g_eff, g / (1 + g * series), rtol=1e-12)


def test_verify_reads_are_sensed_through_the_adc():
    xb = crossbar()
    rec = xb.store("w", np.arange(-32, 32, dtype=np.int8).reshape(8, 8))[0]
    assert rec.counts[("adc", "convert")] == rec.counts[(xb.device.component, "verify_read")] > 0


def test_isaac_component_table():
    """ISAAC (Shafiee et al., ISCA 2016), as its card cites: eight 8-bit ADCs at 1.2 GS/s draw 16 mW (2 mW each,
    1.67 pJ per conversion); 8 x 128 one-bit DACs at 1.2 GHz draw 4 mW (3.3 fJ each as the card rounds it). Within
    1 % and 2 %."""
    xb = crossbar()
    rate = 1.2e9
    assert 8 * xb.actions.energy_j(("adc", "convert")) * rate == pytest.approx(16e-3, rel=0.01)
    assert 8 * 128 * xb.actions.energy_j(("dac", "convert")) * rate == pytest.approx(4e-3, rel=0.02)
    # shift-and-add of one 8-bit code: 9 adder bits of Aladdin's 40 nm cell scaled to 32 nm and 1.0 V, 0.059 pJ,
    # within 3 x of ISAAC's 0.021 pJ per S+A (was 32 adder bits, 10 x); ISAAC's figure is for its own adder cell
    assert 1.0 < xb.actions.energy_j(("shift_add", "accumulate")) / 0.021e-12 < 3.0


def test_cells_found_stuck_neither_move_nor_relax():
    xb = crossbar(*IDEAL, "device.variation.stuck_low=0.1")
    w = np.full((64, 8), 100, dtype=np.int8)
    xb.store("w", w)
    c = xb.cells["w"]
    assert c.bad.any()
    assert np.all(c.z[c.bad] == 0.0)
    xb.clock_s = 86400.0
    g = xb.device.conductance_at(c.g, c.z, np.maximum(xb.clock_s - c.t_prog, 0.0))
    np.testing.assert_array_equal(g[c.bad], c.g[c.bad])
