"""Power management as components: process corners, power gating of idle blocks, DRAM low-power states, the
resource table and the line naming what sets the step time."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.api import build_hardware, run
from imcsim.cli import main
from imcsim.components.memory import DramCard
from imcsim.components.power import PowerGatingCard, ProcessCornerCard
from imcsim.config import load_card, load_config
from imcsim.sim.gating import busy_union, dram_energy, idle_gaps

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
BERT = ROOT / "configs" / "reram_lora_bert_mini_cost.yaml"
SMALL = ("workload.baselines=[]", "workload.cost_only.image_size=64")


def _card(name: str):
    """A component card from the library, read as a circuit card reads it (its role from its name)."""
    role = next(r for r in ("corner", "logic_leakage", "power_gating", "dram") if name.startswith(r))
    circuit, _ = load_card("circuit", "bitserial_macro_28nm", [f"components.{role}.card={name}"])
    return getattr(circuit.components, role)


def _refused(capsys, key: str, value: str, says: str = "") -> None:
    """``imcsim validate`` of the MobileNetV2 config with ``--set key=value`` exits 2 with one line naming the key."""
    code = main(["validate", str(MOBILENET), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert key in err
    assert says in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- process corners -------------------------------------------------------------------------


def test_corners_hold_cactis_32nm_tables():
    """CACTI 7 tech_params/32nm.dat, I_off_n at 300 K and 400 K (exact, the cards' own numbers), and the
    exponential between them passes through both points."""
    expected = {"hp": (152e-9, 6.1e-6, 0.9), "lop": (59.4e-9, 263e-9, 0.6), "lstp": (20.6e-12, 744e-12, 1.0)}
    for name, (cold, hot, vdd) in expected.items():
        c = _card(f"corner_{name}_32nm_cacti")
        assert isinstance(c, ProcessCornerCard)
        # card values are in A/m: 1 A/um = 1e6 A/m
        assert c.i_off_at(300.0) == pytest.approx(cold * 1e6, rel=1e-9)
        assert c.i_off_at(398.0) < hot * 1e6
        assert c.vdd_v == vdd


def test_logic_leakage_reproduces_aladdins_register_at_the_hp_corner():
    """Aladdin's 40 nm register bit leaks 74 nW over 5.98 um^2 at 0.9 V (12.4 mW/mm^2, power_func.h): the
    card's leaking width at the HP corner gives it back within 1 %."""
    from imcsim.components.base import Technology
    from imcsim.components.memory import LogicLeakage

    tech = Technology.model_validate({"node": "28 nm", "vdd": "0.9 V", "clock": "700 MHz"})
    hp = LogicLeakage("logic_leakage", _card("logic_leakage_aladdin_40nm"), tech, _card("corner_hp_32nm_cacti"))
    lstp = LogicLeakage("logic_leakage", _card("logic_leakage_aladdin_40nm"), tech, _card("corner_lstp_32nm_cacti"))
    assert hp.density_w_per_m2(300.0) == pytest.approx(12.4e-3 / 1e-6, rel=0.01)
    # the low-standby-power corner leaks 152 nA / 20.6 pA less per width, at (0.9 / 1.0)^2 of its nominal supply
    assert lstp.density_w_per_m2(300.0) == pytest.approx(
        hp.density_w_per_m2(300.0) * (20.6e-12 / 152e-9) * (1.0 / 0.9) * 0.81, rel=1e-6)


def test_a_supply_far_from_the_corners_is_refused(tmp_path, capsys):
    _refused(capsys, "circuit.components.corner.vdd", "3 V", "nominal")


def test_a_corner_the_library_does_not_hold_is_refused(capsys):
    _refused(capsys, "circuit.components.corner.card", "corner_fast_3nm", "corner_fast_3nm")


def test_two_corners_on_one_chip_are_warned_about(capsys):
    code = main(["validate", str(MOBILENET), "--set", "circuit.components.global_buffer.flavour=HP"])
    err = capsys.readouterr().err
    assert code == 0
    assert "warning:" in err
    assert "circuit.components.global_buffer.flavour" in err
    assert "LSTP" in err


def test_the_shipped_circuits_are_on_one_low_power_corner(capsys):
    for cfg in sorted((ROOT / "configs").glob("*.yaml")):
        loaded = load_config(cfg)
        assert loaded.config.circuit.components.corner.flavour == "LSTP", cfg.name
        build_hardware(loaded)
    assert "two corners" not in capsys.readouterr().err


# --- power gating --------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "says"), [
    ("domains.interconnect", "idle", "cannot be gated"),
    ("domains.always_on", "idle", "cannot be gated"),
    ("domains.cache", "idle", "is not a power domain"),
    ("idle_after", "1 ns", "shorter than"),
    ("policy", "sometimes", "policy"),
])
def test_bad_gating_is_refused_naming_the_key(key, value, says, capsys):
    _refused(capsys, f"circuit.components.power_gating.{key}", value, says)


def test_wake_energy_and_threshold_follow_cacti_p():
    g = _card("power_gating_28nm")
    assert isinstance(g, PowerGatingCard)
    # C vdd dV: a collapsed rail recharges by vdd, a retentive one by vdd - v_retention
    area = 1e-8  # 0.01 mm^2
    assert g.wake_energy_j(area, 0.9, False) == pytest.approx(0.14e-15 / 1e-12 * area * 0.81)
    assert g.wake_energy_j(area, 0.9, True) == pytest.approx(0.14e-15 / 1e-12 * area * 0.9 * 0.4)
    e = g.wake_energy_j(area, 0.9, False)
    assert g.threshold_s("periphery", 1e-6, e, g.residual) == pytest.approx(
        g.wake_time_s + e / ((1 - g.residual) * 1e-6))
    never = g.model_copy(update={"domains": {"periphery": "never"}})
    assert never.threshold_s("periphery", 1e-6, e, g.residual) == np.inf
    always = g.model_copy(update={"policy": "always"})
    assert always.threshold_s("digital", 1e-6, e, g.residual) == g.wake_time_s


def _fake_schedule(starts, ends, per, nres, span):
    res_ptr = np.cumsum([0] + [len(p) for p in per])
    res_id = np.array([r for p in per for r in p], dtype=np.int64)
    comp = types.SimpleNamespace(res_ptr=res_ptr, res_id=res_id, resources=[f"r{i}" for i in range(nres)])
    return types.SimpleNamespace(compiled=comp, start=np.asarray(starts), end=np.asarray(ends), makespan=span)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_idle_gaps_and_busy_union_match_a_cycle_by_cycle_count(data):
    """Per resource, the idle intervals (the wrap-around one joined) add up to the cycles it is not held, and
    their number is the number of maximal idle runs on the step's circle; per group, the busy union is the
    cycles in which any of its resources is held."""
    nres = data.draw(st.integers(1, 4))
    nseg = data.draw(st.integers(1, 12))
    starts = data.draw(st.lists(st.integers(0, 40), min_size=nseg, max_size=nseg))
    lens = data.draw(st.lists(st.integers(0, 8), min_size=nseg, max_size=nseg))
    per = [sorted(data.draw(st.sets(st.integers(0, nres - 1), min_size=1))) for _ in range(nseg)]
    ends = [a + n for a, n in zip(starts, lens, strict=True)]
    span = max(*ends, 1) + data.draw(st.integers(0, 4))
    sched = _fake_schedule(starts, ends, per, nres, span)
    gaps = idle_gaps(sched)
    for r in range(nres):
        held = np.zeros(span, dtype=bool)
        for a, b, p in zip(starts, ends, per, strict=True):
            if r in p:
                held[a:b] = True
        if not held.any():
            assert f"r{r}" not in gaps
            continue
        g = gaps[f"r{r}"]
        assert g.sum() == span - held.sum()
        runs = int(np.sum(held & ~np.roll(held, 1)))  # idle runs on a circle = busy runs
        assert len(g) == (runs if not held.all() else 0)
    union = busy_union(sched, lambda n: "A" if n in ("r0", "r1") else n)
    held = np.zeros(span, dtype=bool)
    for a, b, p in zip(starts, ends, per, strict=True):
        if 0 in p or 1 in p:
            held[a:b] = True
    assert union.get("A", 0) == held.sum()


def _dram():
    return _card("dram_lpddr4_3200")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1e-3), max_size=20), st.floats(0.0, 1e-2))
def test_dram_between_bursts_never_costs_more_than_standby(gaps, busy):
    card = _dram()
    g = np.asarray(gaps)
    total = float(g.sum()) + busy
    standby = dram_energy(card, "never", g, total)
    assert standby == pytest.approx(card.background_power_w * total)
    idle = dram_energy(card, "idle", g, total)
    assert idle <= standby * (1 + 1e-12)
    assert idle >= card.self_refresh_power_w * total * (1 - 1e-12)  # no state draws less than self refresh


def test_dram_states_follow_the_drampower_memspec():
    """DRAMPower MICRON_6Gb_LPDDR4-3200_32bit_A per 16-bit channel: IDD3N 37.9 mW, IDD2P 6.29 mW, IDD6 1.20 mW,
    tXP 7.5 ns, tXSR 286 ns; the x32 device has two channels (within 1 %)."""
    c = _dram()
    assert isinstance(c, DramCard)
    assert c.background_power_w == pytest.approx(2 * 37.9e-3, rel=0.01)
    assert c.power_down_power_w == pytest.approx(2 * 6.29e-3, rel=0.01)
    assert c.self_refresh_power_w == pytest.approx(2 * 1.20e-3, rel=0.01)
    # a 1 ms gap goes to self refresh, its exit spent in active standby
    e = dram_energy(c, "idle", np.array([1e-3]), 1e-3)
    assert e == pytest.approx(c.self_refresh_power_w * (1e-3 - 286e-9) + c.background_power_w * 286e-9)
    # a 100 ns gap is too short for self refresh's exit: power-down
    e = dram_energy(c, "idle", np.array([100e-9]), 100e-9)
    assert e == pytest.approx(c.power_down_power_w * (100e-9 - 7.5e-9) + c.background_power_w * 7.5e-9)


def test_a_power_down_above_standby_is_refused(capsys):
    _refused(capsys, "circuit.components.dram.power_down_power", "1 W", "active standby")


# --- whole runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    return {policy: run(load_config(MOBILENET, overrides=[*SMALL, f"circuit.components.power_gating.policy={policy}"]))
            for policy in ("never", "idle", "always")}


def test_gating_on_idle_never_costs_more_than_never_gating(mobilenet):
    never, idle = mobilenet["never"].metrics, mobilenet["idle"].metrics
    assert idle["energy_train_leakage_j"] < never["energy_train_leakage_j"]
    assert never["gating_wakeups"] == 0
    assert idle["gating_wakeups"] > 0
    # gating changes static energy only: every dynamic level and the step time are the same
    for level in ("array", "periphery", "buffer", "dram", "interconnect", "digital"):
        assert idle[f"energy_train_{level}_j"] == never[f"energy_train_{level}_j"]
    assert idle["latency_per_step_s"] == never["latency_per_step_s"]
    # always gates every interval longer than the wake-up, worth it or not: its wake-ups are at least idle's
    assert mobilenet["always"].metrics["gating_wakeups"] >= idle["gating_wakeups"]


def test_resource_table_adds_up_and_names_the_step_setter(mobilenet):
    r = mobilenet["idle"]
    rows = r.tables["resources"]
    total = r.metrics["energy_train_j"]
    assert sum(row["energy_share"] for row in rows) == pytest.approx(1.0, rel=1e-9)
    static = sum(row["energy_static_j"] for row in rows)
    assert static == pytest.approx(r.metrics["energy_train_leakage_j"], rel=1e-9)
    assert sum(row["energy_dynamic_j"] for row in rows) == pytest.approx(total - static, rel=1e-9)
    setter = [row for row in rows if row["sets_step_time"]]
    assert len(setter) == 1
    assert setter[0]["busy_share"] == max(row["busy_share"] for row in rows if row["busy_share"] is not None)
    assert r.metrics["utilization_digital"] == pytest.approx(
        next(row for row in rows if row["resource"] == "digital")["busy_share"], rel=1e-9)


def test_default_mobilenetv2_repnet_training_is_not_leakage_bound():
    """The issue's criterion: leakage below 30 % of the default MobileNetV2 224 Rep-Net training energy (idle
    blocks gated, LSTP logic, DRAM in power-down or self refresh at 1.5 % bandwidth use)."""
    m = run(load_config(MOBILENET, overrides=["workload.baselines=[]"])).metrics
    assert m["leakage_share_train"] < 0.30


def test_run_names_the_resource_that_sets_the_step_time(tmp_path, capsys):
    code = main(["run", str(BERT), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("step time set by:"))
    assert "digital" in line
    assert "% busy" in line


def test_isaac_shares_one_adc_per_crossbar():
    """ISAAC (ISCA 2016, Table I): 8 ADCs for 8 crossbars of 128 x 128 in an IMA, 0.0096 mm^2 for the 8."""
    circuit, _ = load_card("circuit", "reram_crossbar_isaac_32nm")
    assert circuit.analog.cols_per_adc == circuit.array.cols == 128
    assert circuit.components.adc.area_m2 == pytest.approx(0.0096e-6 / 8)


# --- the read path ---------------------------------------------------------------------------


def test_a_read_draws_its_rail_for_the_sense_window_only():
    """E = v_supply (I_P + I_AP) t_sense: the shipped MRAM cards read from a 0.3 V rail for 0.7 ns of the
    1.4 ns cycle, (0.9 x 1.4) / (0.3 x 0.7) = 6x below the core supply over the whole cycle."""
    from imcsim.devices import build_device

    card, _ = load_card("device", "sas_mram_4mtj_zhang_tcad2024")
    old = card.model_copy(update={"read": card.read.model_copy(update={"v_supply_v": 0.9, "t_sense_s": None})})
    new_e = build_device(card).figures()["read_energy_per_bit"][0]
    old_e = build_device(old).figures()["read_energy_per_bit"][0]
    assert old_e / new_e == pytest.approx(0.9 * 1.4 / (0.3 * 0.7), rel=1e-9)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("read.t_sense", "2 ns", "must fit in the read cycle"),
    ("read.v_supply", "0.05 V", "must exceed"),
    ("read.v_supply", "0.1001 V", "cannot hold"),
])
def test_a_read_path_that_cannot_work_is_refused(key, value, says, capsys):
    _refused(capsys, f"device.{key}", value, says)


def test_every_macro_of_a_chip_leaks_in_its_own_domains():
    """A hybrid chip's SRAM macro: its volatile cells keep their weights in retention while gated (retentive
    domain), its periphery is gated like the main macro's; the powered-up static power is the domains' sum with
    DRAM's standby."""
    hybrid = ROOT / "configs" / "sas_mram_sram_hybrid_repnet_cost.yaml"
    loaded = load_config(hybrid, overrides=["workload.cost_only.image_size=64"])
    hw = build_hardware(loaded)
    from imcsim.api import check_capacity

    check_capacity(loaded, hw)
    r = run(loaded, hardware=hw)
    domains = hw.macro.leakage_domains(300.0)
    cells = [d for d in domains if d.domain == "array"]
    assert cells
    assert all(d.retentive for d in cells)  # only the SRAM macro's cells leak, and they hold state
    parts = hw.macro.static_power_w(300.0)
    assert sum(parts.values()) == pytest.approx(sum(d.power_w for d in domains)
                                                + hw.macro.dram.card.background_power_w, rel=1e-12)
    rows = {row["resource"]: row for row in r.tables["resources"]}
    assert rows["array"]["energy_static_j"] < rows["array"]["energy_static_ungated_j"]


def test_the_adder_cell_is_neurosims_nand_adder_with_its_validated_activity():
    """NeuroSim V1.4 (Adder.cpp, Technology.cpp, formula.cpp; 32 nm PTM LP, 0.9 V): a full-adder bit switches
    13 NAND2 input and 7 output capacitances, times the silicon-validated activity 0.15. The NAND2's 4F NMOS and
    1.5 x 2F PMOS are widened to the 28 F cell height; its input capacitance is (C_ideal + C_overlap + C_fringe)
    per width, its output the drains' junction, sidewall and gate-edge capacitances. The card holds that
    energy within 1 % and nine NAND2 of 11.4 F x 28 F within 1 %."""
    f, vdd = 32e-9, 0.9
    c_gate = 8.375279e-10 * 1.2 + 6.856677e-10  # F/m: ideal gate + 20 % overlap + fringe
    ratio = 1.5 * 2 * f / (1.5 * 2 * f + 4 * f)
    wp = ratio * (28 * f - 3.5 * f - 3.6 * f)
    wn = wp / ratio * (1 - ratio)
    grade = 2.0  # 1 + vdd / built-in potential (0.9 V)
    cj, csw, cdc = 1e-3 / grade ** 0.5, 2.5e-10 / grade ** 0.33, 0.5e-10 / grade ** 0.33
    c_in = c_gate * (wn + wp)
    c_out = 5.6 * f * wn * cj + 2.8 * f * wp * cj + (11.2 * f + wn) * csw + 5.6 * f * csw + (wn + wp) * cdc
    energy = (13 * c_in + 7 * c_out) * vdd ** 2 * 0.15
    card = load_card("circuit", "bitserial_macro_28nm")[0].components.adder_cell
    assert card.card == "full_adder_neurosim_32nm"
    assert card.energy_j == pytest.approx(energy, rel=0.01)
    assert card.area_m2 == pytest.approx(9 * 11.4 * 28 * f * f, rel=0.01)


def test_the_in_cell_gate_is_zigzags_nor2_switching_half_its_input_capacitance():
    """ZigZag-IMC's 28 nm DIMC model (imc_model_validation/dimc_validation/28nm): a NOR2 of 0.614 um^2 with 0.7 fF
    over its input ports; a 1-bit product switches the input side only, C / 2 x vdd^2 at 0.9 V. The card holds
    that energy within 2 % (rounded to 0.28 fJ) and the area exactly."""
    card = load_card("circuit", "bitserial_macro_28nm")[0].components.cell_gate
    assert card.card == "and_gate_zigzag_28nm"
    assert card.energy_j == pytest.approx(0.7e-15 / 2 * 0.9**2, rel=0.02)
    assert card.area_m2 == pytest.approx(0.614e-12, rel=1e-9)
