"""MRAM physics: switching, critical currents, read disturb, supply energies, operating-point checks, the SAS group
read and half-select, temperature, wear, and validation against published cells (each with source and tolerance)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imcsim.config import load_card
from imcsim.devices import build_device
from imcsim.devices.switching import (
    critical_error_rate,
    precessional_error_rate,
    sot_critical_current_a,
    sot_error_rate,
    thermal_switch_probability,
    write_error_rate,
)
from imcsim.errors import PhysicsError

ROOT = Path(__file__).resolve().parents[1]
SAS, STT, SOT = "sas_mram_4mtj_zhang_tcad2024", "stt_mram_1t1mtj_nvsim", "sot_mram_2t1mtj_imec"


def _device(name: str, *sets: str, temperature_k: float = 300.0):
    card, _ = load_card("device", str(ROOT / "devices" / f"{name}.yaml"), list(sets))
    return build_device(card, temperature_k=temperature_k)


# --- switching ---------------------------------------------------------------------------


def test_no_double_count_above_the_critical_current():
    """Above I_c0 the error rate is Butler's alone: the old product with exp(-t/tau0) made the STT card's 1.31 x
    I_c0, 10 ns write 22,000 x too reliable."""
    i, t, delta, tau_d = 1.31, 10e-9, 60.0, 1e-9
    assert write_error_rate(i, t, delta, 1e-9, tau_d) == pytest.approx(float(precessional_error_rate(i, t, delta, tau_d)))
    assert write_error_rate(i, t, delta, 1e-9, tau_d) > 0.05


@pytest.mark.parametrize("t", [0.2e-9, 1e-9, 10e-9, 100e-9])
def test_wer_is_continuous_at_the_critical_current(t):
    below = float(write_error_rate(1.0 - 1e-9, t, 60, 1e-9, 1e-9))
    above = float(write_error_rate(1.0 + 1e-9, t, 60, 1e-9, 1e-9))
    assert above == pytest.approx(below, rel=1e-6)
    assert above == pytest.approx(float(critical_error_rate(t, 60, 1e-9)), rel=1e-6)


ratios = st.floats(0.0, 4.0)
times = st.floats(1e-11, 1e-6)


@given(ratios, ratios, times, times, st.floats(20, 100), st.sampled_from([1.0, 2.0]))
def test_stronger_or_longer_pulse_never_raises_wer(i1, i2, t1, t2, delta, n):
    lo_i, hi_i = sorted((i1, i2))
    lo_t, hi_t = sorted((t1, t2))

    def w(i, t):
        return float(write_error_rate(i, t, delta, 1e-9, 2e-9, n))

    assert w(hi_i, lo_t) <= w(lo_i, lo_t) + 1e-15
    assert w(lo_i, hi_t) <= w(lo_i, lo_t) + 1e-15
    assert 0.0 <= w(lo_i, lo_t) <= 1.0


@given(ratios, ratios, times, st.floats(20, 100))
def test_sot_error_rate_is_monotone_and_continuous(i1, i2, t, delta):
    lo, hi = sorted((i1, i2))
    assert float(sot_error_rate(hi, t, delta, 1e-9)) <= float(sot_error_rate(lo, t, delta, 1e-9)) + 1e-15
    below, above = (float(sot_error_rate(1 + eps, t, delta, 1e-9)) for eps in (-1e-12, 1e-12))
    assert above == pytest.approx(below, rel=1e-6)


def test_perpendicular_read_disturb_uses_the_squared_barrier():
    """Delta (1 - i)^2 (Taniguchi and Imamura 2011) against the in-plane Delta (1 - i)."""
    p2 = float(thermal_switch_probability(0.3, 1e-9, 60, 1e-9, 2.0))
    p1 = float(thermal_switch_probability(0.3, 1e-9, 60, 1e-9, 1.0))
    assert p2 == pytest.approx(-math.expm1(-math.exp(-60 * 0.49)), rel=1e-9)
    assert p2 > p1 * 1e5


# --- the junction ------------------------------------------------------------------------


def test_macrospin_critical_current_scales_with_delta_not_area():
    larger = _device(STT, "mtj.length=120nm", "mtj.width=60nm", "read.v_read=0.06V")
    base = _device(STT)
    assert larger.mtj.ic0_p_to_ap_a == pytest.approx(base.mtj.ic0_p_to_ap_a)  # same Delta, damping, P
    higher = _device(STT, "mtj.delta=70", "write.i_write=260uA")
    assert higher.mtj.ic0_p_to_ap_a == pytest.approx(base.mtj.ic0_p_to_ap_a * 70 / 60)


def test_p_to_ap_needs_more_current_by_slonczewskis_asymmetry():
    m = _device(STT).mtj
    p = m.params.polarization
    assert m.ic0_p_to_ap_a / m.ic0_ap_to_p_a == pytest.approx((1 + p * p) / (1 - p * p))


def test_the_jc0_area_route_is_the_documented_alternative():
    """ic0_model: jc0_area scales a measured J_c0 (Ikeda 2010: 3.9 MA/cm^2) by the area: the mean of the
    two directions' critical currents is J_c0 x area, split by the same asymmetry."""
    dev = _device(STT, "mtj.ic0_model=jc0_area", "mtj.jc0_stt=3.9e6A/cm^2", "write.i_write=400uA",
                  "write.v_supply=1.8V", "mtj.v_breakdown=2V", "read.v_read=0.05V")
    m, p = dev.mtj, dev.mtj.params.polarization
    assert m.ic0_mean_a == pytest.approx(3.9e10 * m.area_m2)
    assert m.ic0_p_to_ap_a / m.ic0_ap_to_p_a == pytest.approx((1 + p * p) / (1 - p * p))
    with pytest.raises(PhysicsError) as err:
        _device(STT, "mtj.ic0_model=jc0_area")
    assert err.value.key == "mtj.ic0_model"


def test_read_disturb_follows_the_read_polarity():
    ap = _device(STT)
    p_to_ap = _device(STT, "read.polarity=p_to_ap", "read.max_ic0_fraction=0.6")
    # ap_to_p disturbs only AP cells, whose current is the smaller, against the smaller critical current
    i_p, i_ap = ap.mtj.read_currents_a(0.1)
    assert ap.mtj.read_disturb_ratio(ap.card.read) == pytest.approx(i_ap / ap.mtj.ic0_ap_to_p_a)
    assert p_to_ap.mtj.read_disturb_ratio(p_to_ap.card.read) == pytest.approx(i_p / ap.mtj.ic0_p_to_ap_a)
    assert p_to_ap.mtj.read_disturb_probability(p_to_ap.card.read) > ap.mtj.read_disturb_probability(ap.card.read)


def test_read_energy_is_drawn_from_the_supply_with_the_reference_branch():
    dev = _device(STT)
    i_p, i_ap = dev.mtj.read_currents_a(dev.card.read.v_read_v)
    vdd, t = dev.card.transistor.vdd_v, dev.card.read.t_read_s
    assert dev.actions()["read"].cost.energy_j == pytest.approx(vdd * (i_p + i_ap) * t)
    assert dev.actions()["read"].cost.energy_j > dev.card.read.v_read_v * 0.5 * (i_p + i_ap) * t * 2


def test_transistor_width_carries_the_current_within_the_rails_headroom():
    """The write transistor takes the drop the rail leaves it over the junction (or a smaller design drop):
    a lower rail leaves less headroom and needs a wider transistor; a rail above the device's rating is refused."""
    dev = _device(STT)
    tr, w = dev.card.transistor, dev.card.write
    i = w.i_write_a
    assert i * dev.r_transistor_ohm == pytest.approx(w.v_supply_v - dev.barrier_voltage_v, rel=1e-9)
    assert i <= tr.width_for_current_m(i, dev.headroom_v) * tr.i_on_per_width_a_per_m
    assert _device(STT, "write.v_supply=1.1V").area_per_bit_m2 > dev.area_per_bit_m2
    assert _device(STT, "transistor.v_drop=0.1V").area_per_bit_m2 > dev.area_per_bit_m2
    with pytest.raises(PhysicsError) as err:
        _device(STT, "write.v_supply=2V")
    assert err.value.key == "write.v_supply"
    assert "I/O transistors" in err.value.message


# --- operating points refused or reported -----------------------------------------------------


@pytest.mark.parametrize(("name", "sets", "key"), [
    (STT, ["write.i_write=80uA"], "write.i_write"),  # below the critical current
    (STT, ["write.i_write=400uA", "write.v_supply=3V"], "write.i_write"),  # the barrier breaks down
    (STT, ["write.v_supply=0.6V"], "write.v_supply"),  # the rail cannot drive the current
    (STT, ["read.v_read=0.25V", "read.v_supply=0.9V"], "read.v_read"),  # above the read-disturb rule
    (SOT, ["write.i_write=90uA"], "write.i_write"),  # below the SOT critical current
    (SAS, ["heavy_metal.thickness=4nm", "heavy_metal.width=60nm"], "write.i_stt"),  # the returns switch a neighbour
    (SAS, ["write.i_set_sot=700uA"], "write.i_set_sot"),
    (SAS, ["write.i_reset=700uA"], "write.i_reset"),
])
def test_unphysical_operating_points_are_refused_naming_the_key(name, sets, key):
    with pytest.raises(PhysicsError) as err:
        _device(name, *sets)
    assert err.value.key == key
    assert any(ch.isdigit() for ch in err.value.message)  # the value and the limit are named


def test_error_rates_above_the_limit_are_reported():
    short = _device(STT, "write.t_write=5ns", "write.i_write=300uA", "write.v_supply=1.5V")
    warned = dict(short.warnings())
    assert "write.max_error_rate" in warned
    assert "exceeds" in warned["write.max_error_rate"]
    assert short.wer() > 1e-6
    assert not _device(STT).warnings()
    sas = _device(SAS, "write.t_set=5ns")
    assert any("set write error rate" in msg for _, msg in sas.warnings())


# --- the SAS group -----------------------------------------------------------------------------


def test_group_read_margins_bound_every_state_of_the_other_mtjs():
    dev = _device(SAS)
    for scheme in ("concurrent", "sequential"):
        assert dev.read_margins_a(scheme) == pytest.approx(dev.enumerated_margins_a(scheme))
    conc, seq = dev.read_margins_a("concurrent"), dev.read_margins_a("sequential")
    assert all(c < s for c, s in zip(conc, seq, strict=True))  # the others' currents lift the shared line
    assert conc == sorted(conc, reverse=True)  # the far MTJ sees the most line resistance


def test_a_read_scheme_that_cannot_sense_is_refused_and_auto_falls_back():
    # the prototype-like narrow line with a 750 Ohm transistor: concurrent margins collapse toward the far MTJ
    narrow = ["heavy_metal.thickness=4nm", "heavy_metal.width=60nm", "write.i_set_sot=20uA", "write.i_stt=20uA",
              "write.i_reset=150uA", "write.t_set=2ns", "transistor.v_drop=0.15V", "read.v_read=0.15V",
              "read.max_ic0_fraction=0.5", "read.v_supply=0.9V"]
    with pytest.raises(PhysicsError) as err:
        _device(SAS, *narrow, "read.scheme=concurrent")
    assert err.value.key == "read.scheme"
    auto = _device(SAS, *narrow)
    assert auto.scheme == "sequential"
    assert auto.read_passes == 4
    assert auto.actions()["read"].cost.latency_s == pytest.approx(4 * auto.card.read.t_read_s)


def test_across_rows_groups_hold_bits_of_different_weights():
    dev = _device(SAS, "read.scheme=across_rows")
    old = np.zeros((4, 8), dtype=np.uint8)
    new = old.copy()
    new[0, 0] = 1  # one bit of one weight: one group (column 0, rows 0-3)
    ev = dev.count_writes(old, new)
    assert ev.counts == {"reset_pulse": 1, "set_pulse": 1, "stt_assist": 1}
    new[0, :4] = 1  # bits 0-3 of one weight: four groups across rows, one per column
    assert dev.count_writes(old, new).counts["reset_pulse"] == 4
    row_grouped = _device(SAS, "read.scheme=sequential")
    assert row_grouped.count_writes(old, new).counts["reset_pulse"] == 1


def test_half_select_counts_the_returning_stt_currents():
    dev = _device(SAS)
    w = dev.card.write
    assert dev.half_select_line_current_a == pytest.approx(w.i_set_sot_a + (w.n_mtj - 1) * w.i_stt_a)
    fewer = _device(SAS, "write.i_stt=120uA", "write.t_set=40ns")
    assert fewer.half_select_disturb() < dev.half_select_disturb()
    assert dev.i_transistor_a >= w.i_set_sot_a + w.n_mtj * w.i_stt_a


def test_sweeping_the_write_pulse_moves_energy_and_lifetime():
    """The review found a 1-4 ns sweep of the SAS pulse moving energy by 4 ppm and lifetime not at all."""
    a, b = _device(SAS, "write.t_set=30ns"), _device(SAS, "write.t_set=60ns")
    assert b.mean_write_energy_per_bit_j() > 1.5 * a.mean_write_energy_per_bit_j()
    assert b.endurance_cycles < 0.7 * a.endurance_cycles
    s1, s2 = _device(STT), _device(STT, "write.i_write=300uA", "write.v_supply=1.5V")
    assert s2.endurance_cycles < s1.endurance_cycles / 10  # barrier wear rises steeply with voltage


# --- temperature -------------------------------------------------------------------------------


def test_hot_junctions_lose_stability_tmr_and_margin():
    cold, room, hot = (_device(STT, temperature_k=t) for t in (250.0, 300.0, 375.0))
    assert cold.mtj.delta > room.mtj.delta > hot.mtj.delta
    assert room.mtj.delta == pytest.approx(60.0)
    assert cold.mtj.tmr0 > room.mtj.tmr0 > hot.mtj.tmr0
    assert hot.mtj.retention_s() < room.mtj.retention_s()
    assert hot.mtj.sense_margin_a(0.1) < room.mtj.sense_margin_a(0.1)
    assert hot.mtj.ic0_p_to_ap_a < room.mtj.ic0_p_to_ap_a  # I_c0 follows the barrier energy


def test_temperature_outside_the_laws_is_refused():
    with pytest.raises(PhysicsError):
        _device(STT, temperature_k=500.0)


# --- validation against published figures -------------------------------------------------------


@pytest.mark.parametrize(("r_on", "i_write", "t_write", "published"), [
    (3000.0, 80e-6, 10e-9, 1.0e-12),  # sample_STTRAM.cell since 2014 (NVSim repository, commit 6e3d070)
    (6000.0, 40.82e-6, 5e-9, 0.193895e-12),  # the first sample_STTRAM.cell (commit 4bc8fbb, 2013)
])
def test_nvsim_sample_stt_cells_write_energy(r_on, i_write, t_write, published):
    """NVSim (Dong et al., IEEE TCAD 31(7), 2012) costs a current-mode write as vdd x I x t (MemCell.cpp,
    CalculateWriteEnergy) at its 45 nm supply, 1.0 V (Technology.cpp); the model's supply-referenced energy
    reproduces both published cells within 20 % (the 1 pJ cell sits at the edge: it implies a 1.25 V rail)."""
    area = math.pi / 4 * 100e-9 * 50e-9
    dev = _device(STT, f"mtj.ra={r_on * area * 1e12:.6g}Ohm*um^2", "mtj.tmr=1.0", "mtj.v_half=5V",
                  "mtj.delta=20", f"write.i_write={i_write * 1e6:.6g}uA", f"write.t_write={t_write * 1e9:g}ns",
                  "write.v_supply=1.0V", "transistor.vdd=1.0V", "mtj.v_breakdown=1.5V",
                  "read.max_ic0_fraction=0.9", "read.v_supply=1.0V")
    assert dev.mtj.r_p_ohm == pytest.approx(r_on, rel=1e-5)
    assert dev.e_write_j == pytest.approx(published, rel=0.2)


def test_ikeda_2010_critical_current_from_delta():
    """Ikeda et al., Nature Materials 9, 721 (2010): a 40 nm CoFeB-MgO pMTJ with Delta ~ 40 has I_c0 = 49 uA. The
    macrospin I_c0 of the cards' free layer (damping 0.01, P = 0.4) at Delta = 40, averaged over the two
    directions, lands within 20 %."""
    m = _device(STT, "mtj.length=40nm", "mtj.width=40nm", "mtj.delta=40", "mtj.ra=4Ohm*um^2",
                "write.i_write=70uA", "read.v_read=0.05V").mtj
    assert m.ic0_mean_a == pytest.approx(49e-6, rel=0.2)


def test_garello_2014_sot_critical_current_rises_as_one_over_t():
    """Garello et al., APL 105, 212402 (2014): the SOT critical current scales with 1/t for short pulses, and
    perpendicular dots switch with pulses down to 180 ps."""
    dev = _device(SOT)
    ic0, tau = dev.card.heavy_metal.ic0_a, dev.tau_sot_s
    short = np.array([20e-12, 40e-12, 80e-12])
    excess = sot_critical_current_a(ic0, short, tau) - ic0
    assert excess * short == pytest.approx(np.full(3, ic0 * tau))  # charge-limited: (I_c - I_c0) t constant
    fast = _device(SOT, "write.t_write=180ps", "write.i_write=300uA")
    assert fast.wer() < 1e-6


def test_imec_sot_writes_below_100_fj_at_sub_ns_pulses():
    """imec, IEDM 2023 ('Scaling the SOT track'): SOT-MRAM switching below 100 fJ per bit at sub-ns pulses."""
    dev = _device(SOT, "write.t_write=0.4ns")
    assert dev.e_write_j < 100e-15
    assert dev.wer() < 1e-6


def test_imec_four_pillars_on_one_track_write_selectively():
    """imec IEDM 2022: four pillars on one shared SOT track, each written selectively. The SAS group sets only the
    selected pillars, within the error-rate limit for its unselected ones."""
    dev = _device(SAS)
    old = np.zeros((1, 4), dtype=np.uint8)
    new = np.array([[0, 1, 0, 1]], dtype=np.uint8)
    ev = dev.count_writes(old, new)
    assert ev.counts == {"reset_pulse": 1, "set_pulse": 1, "stt_assist": 2}
    assert ev.cell_writes.tolist() == [[0, 1, 0, 1]]
    assert dev.half_select_disturb() < dev.card.write.max_error_rate


# --- errors in the loop -----------------------------------------------------------------------


def _macro_with_errors(*sets: str, seed: int = 3):
    from imcsim.api import build_hardware
    from imcsim.config import load_config
    from imcsim.devices.errors import ErrorInjector

    hw = build_hardware(load_config(ROOT / "configs" / "sas_mram_repnet.yaml", [f"device.{s}" for s in sets]))
    hw.macro.errors = ErrorInjector(hw.device, seed)
    return hw.macro


def test_injected_write_errors_follow_the_operating_point():
    rng = np.random.default_rng(0)
    w0 = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    w1 = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    good = _macro_with_errors()
    good.store("l", w0)
    good.update_weights("l", w1)
    assert np.array_equal(good.stored["l"].values, w1)  # WER ~1e-8: nothing fails in 16k cells
    bad = _macro_with_errors("write.t_set=5ns")  # set WER 0.78
    bad.store("l", w0)
    bad.update_weights("l", w1)
    wrong = np.count_nonzero(bad.stored["l"].values != w1)
    assert wrong > 0.3 * w1.size
    assert bad.errors.flips["write"] > 0
    # a set that fails leaves the bit at 0: the stored codes have fewer ones than intended
    from imcsim.circuits.macro import _cell_bits
    assert _cell_bits(bad.stored["l"].values).sum() < _cell_bits(w1).sum()


def test_write_verify_retry_repairs_and_counts_its_reads_and_pulses():
    rng = np.random.default_rng(1)
    w0 = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    w1 = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    plain = _macro_with_errors("write.t_set=8ns")
    plain.store("l", w0)
    rec_plain = plain.update_weights("l", w1)[0]
    verified = _macro_with_errors("write.t_set=8ns", "write.verify=true", "write.max_retries=6")
    verified.store("l", w0)
    rec_ver = verified.update_weights("l", w1)[0]
    dev = verified.device.component
    assert np.count_nonzero(verified.stored["l"].values != w1) < np.count_nonzero(plain.stored["l"].values != w1)
    assert verified.errors.flips["retried"] > 0
    assert rec_ver.counts[(dev, "read")] > 0
    assert (dev, "read") not in rec_plain.counts
    assert rec_ver.counts[(dev, "reset_pulse")] > rec_plain.counts[(dev, "reset_pulse")]


def test_half_select_flips_grow_with_the_returning_currents():
    dev = _device(SAS)
    w, m = dev.card.write, dev.mtj
    table = dev.half_select_by_returns()
    assert table == sorted(table)
    assert table[0] < table[-1]
    # k returning currents add to the set pulse under the unselected MTJ; the SOT barrier falls linearly with it
    ic = float(sot_critical_current_a(dev.ic0_sot_a, w.t_set_s, dev.tau_sot_s))
    for k, p in enumerate(table):
        s = (w.i_set_sot_a + k * w.i_stt_a) / ic
        assert p == pytest.approx(-math.expm1(-w.t_set_s / m.params.tau0_s * math.exp(-m.delta * (1 - s))), rel=1e-9)


@pytest.mark.slow
def test_functional_accuracy_under_errors_against_an_error_free_run():
    """The same seed with and without injected errors: an operating point that fails most sets loses accuracy."""
    from imcsim.api import run
    from imcsim.config import load_config

    sets = ["workload.train.epochs=1", "workload.pretrain.epochs=2", "workload.baselines=[]", "device.write.t_set=5ns"]
    cfg = ROOT / "configs" / "sas_mram_repnet.yaml"
    noisy = run(load_config(cfg, sets)).metrics
    clean = run(load_config(cfg, [*sets, "run.errors=none"])).metrics
    assert noisy["error_flips_write"] > 1000
    assert "error_flips_write" not in clean or clean["error_flips_write"] is None
    assert noisy["accuracy_average"] < clean["accuracy_average"] - 0.03


@pytest.mark.slow
def test_cost_only_hottest_cell_against_a_functional_run(tmp_path):
    """The cost-only lifetime takes its per-layer change fractions from a functional run (``from_report``); its
    hottest-cell estimate must land near the functional run's real hottest cell (within 1.5 x either way: the
    estimate pools bit positions and draws i.i.d. changes, where training moves some weights every step)."""
    from imcsim.api import run
    from imcsim.config import load_config
    from imcsim.report import write_report

    cfg = ROOT / "configs" / "sas_mram_repnet.yaml"
    sets = ["workload.train.epochs=1", "workload.pretrain.epochs=2", "workload.baselines=[]"]
    functional = run(load_config(cfg, sets))
    write_report(functional, tmp_path / "f")
    steps = int(functional.metrics["training_steps"]) // 3
    spec = ("{batch_size: 32, image_size: 16, in_channels: 1, steps_per_task: %d, activity: {from_report: %s}}"
            % (steps, tmp_path / "f" / "report.json"))
    cost = run(load_config(cfg, [*sets, "run.mode=cost_only", f"workload.cost_only={spec}"])).metrics
    f, c = functional.metrics["writes_max_per_cell_per_step"], cost["writes_max_per_cell_per_step"]
    assert f > 0
    assert f / 1.5 <= c <= 1.5 * f
    assert cost["lifetime_steps"] == pytest.approx(functional.metrics["lifetime_steps"], rel=0.5)


def test_read_stress_enters_the_lifetime():
    """Barrier wear under read stress adds to the write wear: a junction read hard at a high read voltage wears out
    sooner than its writes alone would allow."""
    from imcsim.metrics import _lifetime

    dev = _device(STT)
    writes_only = _lifetime(0.5, dev, 0.0)
    assert writes_only == pytest.approx(dev.endurance_cycles / 0.5)
    hard = _device(STT, "read.v_read=0.2V", "read.max_ic0_fraction=0.6", "wear.tddb_time=1s", "read.v_supply=0.9V")
    assert hard.read_cycles < dev.read_cycles
    both = _lifetime(0.5, hard, 2.4e5)
    assert both == pytest.approx(1 / (0.5 / hard.endurance_cycles + 2.4e5 / hard.read_cycles))
    assert both < _lifetime(0.5, hard, 0.0)


def test_read_disturb_flips_only_the_disturbable_state_at_its_rate():
    from imcsim.devices.errors import ErrorInjector

    class Cell:
        def error_rates(self):
            return {"read_disturb": 1e-3}

    inj = ErrorInjector(Cell(), 0)
    bits = np.random.default_rng(0).integers(0, 2, (400, 400)).astype(np.uint8)
    out = inj.read(bits, 10)
    changed = out != bits
    expected = np.count_nonzero(bits) * -math.expm1(10 * math.log1p(-1e-3))
    assert bool((bits[changed] == 1).all())  # ap_to_p: only AP (1) cells fall to P
    assert abs(changed.sum() - expected) < 4 * math.sqrt(expected)
    assert inj.flips["read_disturb"] == changed.sum()


def test_thinned_write_errors_keep_each_direction_at_its_own_rate():
    """write_matrix strikes cells with the largest rate and accepts each with its own rate over it: a 0 -> 1 write
    fails with write_set, a 1 -> 0 write with write_reset, each independently."""
    from imcsim.circuits.macro import _cell_bits, _from_cell_bits
    from imcsim.devices.errors import ErrorInjector

    class Cell:
        def error_rates(self):
            return {"write_set": 0.02, "write_reset": 0.004}

    inj = ErrorInjector(Cell(), 5)
    rng = np.random.default_rng(2)
    old = rng.integers(-128, 128, (300, 100), dtype=np.int8)
    new = rng.integers(-128, 128, (300, 100), dtype=np.int8)
    ob, nb = _cell_bits(old), _cell_bits(new)
    got = _cell_bits(inj.write_matrix(old, new, _cell_bits, _from_cell_bits))
    for was, to, p in ((0, 1, 0.02), (1, 0, 0.004)):
        cells = (ob == was) & (nb == to)
        failed = np.count_nonzero(cells & (got == was))
        expected = cells.sum() * p
        assert abs(failed - expected) < 4 * math.sqrt(expected)
    assert np.array_equal(got[ob == nb], nb[ob == nb])  # unchanged cells stay


def test_sot_on_a_perpendicular_layer_needs_a_field_or_a_cited_field_free_mechanism():
    """SOT alone does not switch a perpendicular free layer deterministically: the SOT card and the SAS reset
    cite an embedded-magnet field-free mechanism (Garello et al., VLSI 2019); without it, or an in-plane field,
    the operating point is refused."""
    for name in (SOT, SAS):
        with pytest.raises(PhysicsError) as err:
            _device(name, "heavy_metal.field_free=null")
        assert err.value.key == "heavy_metal.in_plane_field"
        assert _device(name, "heavy_metal.field_free=null", "heavy_metal.in_plane_field=8e3A/m")
        with pytest.raises(PhysicsError) as err:
            _device(name, "heavy_metal.field_free=nowhere")
        assert err.value.key == "heavy_metal.field_free"


def test_a_rail_above_the_transistors_rating_is_refused():
    """The SAS group's 1.8 V write rail needs its I/O transistor; a core device (0.9 V) on it is refused."""
    with pytest.raises(PhysicsError) as err:
        _device(SAS, "transistor.vdd=0.9V", "transistor.i_on_per_width=1785.8uA/um", "transistor.gate_length=28nm")
    assert err.value.key == "write.v_supply"
    assert "I/O" in err.value.message
