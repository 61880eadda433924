"""ReRAM write-and-verify model: cited values, pulse-count properties, write counting,
seeded determinism and build-time physics checks.

The shipped card devices/reram_hfox_neurosim.yaml is read through the config
machinery (source tags stripped) and validated as a :class:`ReRAMCard`; tests
that need other parameters replace fields of that body.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.config import _read_card
from imcsim.devices import reram
from imcsim.devices.reram import ReRAM, ReRAMCard
from imcsim.errors import PhysicsError

ROOT = Path(__file__).resolve().parents[1]
CARD_PATH = ROOT / "devices" / "reram_hfox_neurosim.yaml"
CSV_PATH = ROOT / "tests" / "data" / "reram_nvsim_neurosim.csv"
_TAG = re.compile(r"^(.*?)\s*\[([A-Za-z0-9_.\-]+)\]\s*$")


NEUROSIM_STEP = 0.007874  # NeuroSim's online-learning step, 1/127 of the window: the hand-computed tests use it


def make_card(**sections) -> ReRAMCard:
    """The shipped card with fields replaced, e.g. ``make_card(programming={"max_pulses": 1})``; its pulse step is
    NeuroSim's 128-state one unless ``programming.step`` is given (the card's own ``auto`` step is tested on
    its own), and the relaxation fit applies in siemens as fitted unless ``relaxation.scale`` is given."""
    body, _ = _read_card(CARD_PATH, "device")
    body["programming"] = {**body["programming"], "step": NEUROSIM_STEP}
    body["relaxation"] = {**body["relaxation"], "scale": "absolute"}
    for section, fields in sections.items():
        body[section] = {**(body.get(section) or {}), **fields} if isinstance(fields, dict) else fields
    return ReRAMCard.model_validate(body)


def make_device(seed: int = 0, **sections) -> ReRAM:
    return ReRAM.from_card(make_card(**sections), seed=seed)


# the loop of the original fixed-step model: identical steps, identical cells, an ohmic cell
FIXED = {"programming": {"algorithm": "fixed", "c2c_sigma": 0.0}, "variation": {"step_sigma": 0}, "iv": None}


def read_cited_csv(path: Path) -> dict[str, tuple[float, str]]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert "NVSim" in lines[0]
    assert "NeuroSim" in lines[0]
    rows = csv.DictReader(line for line in lines if not line.startswith("#"))
    return {r["quantity"]: (float(r["value"]), r["unit"]) for r in rows}


# --- the card and cited values --------------------------------------------------


def test_every_card_number_cites_a_reference():
    raw = yaml.safe_load(CARD_PATH.read_text())
    assert next(iter(raw)) == "schema_version"
    refs = raw["references"]
    assert "design" in refs
    seen = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k not in ("schema_version", "kind", "description", "references", "algorithm", "c2c_model"):
                    walk(v, f"{path}.{k}".lstrip("."))
            return
        if isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
            return
        assert isinstance(node, str), f"{path}: untagged value {node!r}"
        m = _TAG.match(node)
        assert m, f"{path}: no [reference] tag in {node!r}"
        assert m.group(2) in refs, f"{path}: [{m.group(2)}] is not in references"
        seen.append(path)

    walk(raw, "")
    assert "programming.c2c_sigma" in seen
    assert "endurance" in seen


def test_values_match_cited_csv():
    expected = read_cited_csv(CSV_PATH)
    dev = make_device(iv=None)  # the hand values are ohmic; the I-V law is checked in test_reram_effects.py
    got = dict(dev.figures())
    # NVSim's sample_RRAM.cell: 2.0 V, 10 ns set pulse on R_on = 100 kOhm at the set voltage.
    nvsim = make_device(set_pulse={"voltage": "2.0 V", "width": "10 ns"}, iv=None)
    got["nvsim_set_pulse_energy_on_state"] = (nvsim.set_pulse_energy_j(1.0 / 100e3), "J")
    for name, (value, unit) in expected.items():
        assert name in got, name
        assert got[name][1] == unit, name
        assert got[name][0] == pytest.approx(value, rel=1e-9), name


def test_device_properties_from_the_card():
    dev = make_device()
    assert (dev.kind, dev.component, dev.bits_per_cell) == ("reram", "reram_cell", 2)
    assert dev.endurance_cycles == pytest.approx(1e6 / dev.figures()["wear_per_pulse_cycles"][0])
    assert dev.leakage_per_bit_w == 0.0
    assert dev.area_per_bit_m2 == pytest.approx(16 * (32e-9) ** 2 / 2)
    np.testing.assert_allclose(dev.level_conductances_siemens(), [1e-6, 4e-6, 7e-6, 10e-6])
    f = dev.figures()
    assert f["pulses_full_range_mean"][0] > f["pulses_one_level_mean"][0] + 10
    assert f["pulses_one_level_p99"][0] >= f["pulses_one_level_mean"][0]
    assert f["write_failure_rate_random"][0] < 1e-3
    assert f == dev.figures()  # cached, and seeded from the card
    assert make_device(seed=5).figures() == f  # figures do not depend on the device seed


def test_noise_free_transition_by_hand():
    """c2c = 0: one SET pulse of step*range after another until inside the window."""
    dev = make_device(**FIXED)
    s = 0.007874 * 9e-6  # step in S
    n = math.ceil((3e-6 - 0.75e-6) / s)  # 0 -> 1 must come within 0.75 uS of 4 uS
    assert n == 32
    res = dev.program(np.array([0]), np.array([1]))
    assert res.pulses.tolist() == [n]
    assert (res.set_pulses, res.reset_pulses, res.verify_reads, res.failures) == (n, 0, n, 0)
    g_before = 1e-6 + s * np.arange(n)
    assert res.set_energy_j == pytest.approx(2.0**2 * 50e-9 * g_before.sum())
    assert res.verify_energy_j == pytest.approx(0.5**2 * 10e-9 * (g_before + s).sum())
    assert res.reset_energy_j == 0.0
    assert res.g_final_siemens[0] == pytest.approx(1e-6 + n * s)
    # downwards the same by symmetry, with RESET pulses
    down = dev.program(np.array([3]), np.array([2]))
    assert down.pulses.tolist() == [n]
    assert (down.set_pulses, down.reset_pulses) == (0, n)


# --- property: a longer way never takes fewer pulses --------------------------


@st.composite
def level_paths(draw):
    """(levels, start, end1, end2): two transitions in one direction, |end2 - start| > |end1 - start|."""
    levels = draw(st.sampled_from([4, 8]))
    top = levels - 1
    d1 = draw(st.integers(1, top - 1))
    d2 = draw(st.integers(d1 + 1, top))
    if draw(st.booleans()):
        start = draw(st.integers(0, top - d2))
        return levels, start, start + d1, start + d2
    start = draw(st.integers(d2, top))
    return levels, start, start - d1, start - d2


@settings(max_examples=25, deadline=None)
@given(path=level_paths(), step_frac=st.floats(0.1, 0.5), c2c_frac=st.floats(0.0, 0.5),
       seed=st.integers(0, 2**32 - 1))
def test_larger_level_distance_never_takes_fewer_pulses(path, step_frac, c2c_frac, seed):
    levels, start, end1, end2 = path
    half_window = 0.25 / (levels - 1)  # tolerance x spacing, in units of the range
    dev = make_device(
        seed=seed,
        cell={"levels": levels},
        programming={"step": step_frac * 2 * half_window, "c2c_sigma": c2c_frac * half_window,
                     "tolerance": 0.25, "max_pulses": 5000},
    )
    n = 4000
    near = dev.program(np.full(n, start), np.full(n, end1)).pulses
    far = dev.program(np.full(n, start), np.full(n, end2)).pulses
    # Each extra level adds about spacing / step >= 4 pulses (step <= 0.5 x the
    # window width = 0.25 spacing), far more than four standard errors of the
    # difference (under 1 pulse here): an inverted model fails, sampling noise
    # essentially never does.
    se = math.sqrt(near.var() / n + far.var() / n)
    assert far.mean() >= near.mean() - 4 * se - 1e-9
    assert near.min() >= 1


# --- counting, determinism, energies ----------------------------------------------


def test_unchanged_cells_take_no_pulses_and_no_energy():
    dev = make_device()
    levels = np.tile(np.arange(4), 50).reshape(8, 25)
    res = dev.program(levels, levels)
    assert res.pulses.shape == levels.shape
    assert not res.pulses.any()
    assert not res.failed.any()
    assert (res.set_pulses, res.reset_pulses, res.verify_reads, res.failures) == (0, 0, 0, 0)
    assert res.energy_j == 0.0
    np.testing.assert_array_equal(res.g_final_siemens, dev.level_conductances_siemens()[levels])
    new = levels.copy()
    new[0] = (new[0] + 1) % 4
    mixed = dev.program(levels, new)
    same = levels == new
    assert not mixed.pulses[same].any()
    assert (mixed.pulses[~same] >= 1).all()
    np.testing.assert_array_equal(mixed.g_final_siemens[same], dev.level_conductances_siemens()[levels[same]])
    bits = np.random.default_rng(1).integers(0, 2, (4, 16))
    ev = dev.count_writes(bits, bits)
    assert ev.counts == {"set_pulse": 0, "reset_pulse": 0, "verify_read": 0, "write_fail": 0}
    assert ev.cell_writes.shape == (4, 8)
    assert not ev.cell_writes.any()


def test_failures_counted_when_max_pulses_is_tiny():
    n = 500
    old, new = np.zeros(n, dtype=np.int64), np.full(n, 3, dtype=np.int64)
    dev = make_device(programming={"max_pulses": 2})
    res = dev.program(old, new)
    assert res.failures == n
    assert res.failed.all()
    assert (res.pulses == 2).all()
    ev = dev.count_writes(np.zeros((1, 8), dtype=np.uint8), np.ones((1, 8), dtype=np.uint8))
    assert ev.counts["write_fail"] == 4
    assert make_device().program(old, new).failures == 0  # the shipped card's limit is ample


def test_seeded_determinism_and_different_seeds_differ():
    rng = np.random.default_rng(3)
    old, new = rng.integers(0, 4, 5000), rng.integers(0, 4, 5000)
    global_state = np.random.get_state()[1].copy()
    a, b = make_device(seed=7), make_device(seed=7)
    runs_a = [a.program(old, new) for _ in range(2)]
    runs_b = [b.program(old, new) for _ in range(2)]
    for ra, rb in zip(runs_a, runs_b, strict=True):
        np.testing.assert_array_equal(ra.pulses, rb.pulses)
        np.testing.assert_array_equal(ra.g_final_siemens, rb.g_final_siemens)
        assert (ra.set_pulses, ra.reset_pulses, ra.failures) == (rb.set_pulses, rb.reset_pulses, rb.failures)
        assert (ra.set_energy_j, ra.reset_energy_j, ra.verify_energy_j) == (
            rb.set_energy_j, rb.reset_energy_j, rb.verify_energy_j)
    assert not np.array_equal(runs_a[0].pulses, runs_a[1].pulses)  # the generator advances
    other = make_device(seed=8).program(old, new)
    assert not np.array_equal(other.pulses, runs_a[0].pulses)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # global RNG untouched


def test_threaded_and_single_threaded_runs_agree(monkeypatch):
    rng = np.random.default_rng(4)
    n = 2 * reram._PARALLEL_MIN_CELLS
    old, new = rng.integers(0, 4, n), rng.integers(0, 4, n)
    threaded = make_device(seed=11).program(old, new)
    monkeypatch.setattr(reram, "_PARALLEL_MIN_CELLS", 10**12)
    single = make_device(seed=11).program(old, new)
    np.testing.assert_array_equal(threaded.pulses, single.pulses)
    np.testing.assert_array_equal(threaded.g_final_siemens, single.g_final_siemens)
    assert threaded.energy_j == single.energy_j


def test_all_energies_non_negative():
    dev = make_device()
    actions = dev.actions()
    assert set(actions) == {"read", "set_pulse", "reset_pulse", "verify_read", "write_fail"}
    for name, spec in actions.items():
        assert spec.cost.energy_j >= 0, name
        assert spec.cost.latency_s >= 0, name
        assert spec.cost.energy_j > 0 or name == "write_fail", name
    for name, (value, unit) in dev.figures().items():
        if unit == "J":
            assert value >= 0, name
    rng = np.random.default_rng(5)
    res = dev.program(rng.integers(0, 4, (50, 40)), rng.integers(0, 4, (50, 40)))
    assert min(res.set_energy_j, res.reset_energy_j, res.verify_energy_j) >= 0
    assert res.pulse_energy_j + res.verify_energy_j == pytest.approx(res.energy_j)


def test_action_energies_match_programming_in_expectation():
    """Counts x expected per-action energies reproduce program()'s exact energies for random data."""
    dev = make_device(seed=21)
    rng = np.random.default_rng(6)
    old, new = rng.integers(0, 4, 20000), rng.integers(0, 4, 20000)
    res = dev.program(old, new)
    act = dev.actions()
    assert res.set_pulses * act["set_pulse"].cost.energy_j == pytest.approx(res.set_energy_j, rel=0.03)
    assert res.reset_pulses * act["reset_pulse"].cost.energy_j == pytest.approx(res.reset_energy_j, rel=0.03)
    assert res.verify_reads * act["verify_read"].cost.energy_j == pytest.approx(res.verify_energy_j, rel=0.03)
    assert act["set_pulse"].cost.latency_s == pytest.approx(50e-9)
    assert act["verify_read"].cost.latency_s == pytest.approx(10e-9)


def test_count_writes_packs_two_bits_per_cell():
    dev = make_device(**FIXED)
    # LSB first: (1,0)->1, (0,1)->2, (1,1)->3, (0, pad 0)->0
    bits = np.array([[1, 0, 0, 1, 1, 1, 0]], dtype=np.uint8)
    assert dev.levels_from_bits(bits).tolist() == [[1, 2, 3, 0]]
    ev = dev.count_writes(np.zeros_like(bits), bits)
    # noise-free 0 -> l: ceil((l x 3 uS - 0.75 uS) / (0.007874 x 9 uS)) SET pulses
    assert ev.cell_writes.tolist() == [[32, 75, 117, 0]]
    assert ev.counts == {"set_pulse": 224, "reset_pulse": 0, "verify_read": 224, "write_fail": 0}
    assert set(ev.counts) <= set(dev.actions())  # every counted action has a cost
    # an int8 weight as the digital macro lays it out (8 bit cells, LSB first): 108 = 1230 in base 4
    w = np.unpackbits(np.array([108], dtype=np.uint8), bitorder="little").reshape(1, 8)
    assert dev.levels_from_bits(w).tolist() == [[0, 3, 2, 1]]
    batch = np.random.default_rng(2).integers(0, 2, (2, 3, 16))
    assert dev.count_writes(np.zeros_like(batch), batch).cell_writes.shape == (2, 3, 8)


def test_program_rejects_bad_levels():
    dev = make_device()
    with pytest.raises(ValueError, match="lie in"):
        dev.program(np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="shape"):
        dev.program(np.zeros(3, dtype=int), np.zeros(4, dtype=int))


# --- build-time physics checks ------------------------------------------------------


def test_g_max_not_above_g_min_is_a_physics_error():
    with pytest.raises(PhysicsError) as err:
        make_device(cell={"g_max": "1 uS"})
    assert err.value.key == "cell.g_max"
    assert str(err.value).startswith("cell.g_max: must exceed g_min")


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"cell": {"levels": 6}}, "cell.levels"),
        ({"programming": {"tolerance": 0.001, "max_pulses": 50}}, "programming.tolerance"),
        ({"programming": {"c2c_sigma": 0.5, "max_pulses": 4}}, "programming.tolerance"),
        ({"programming": {"step": 0.2}}, "programming.step"),
        ({"read": {"v_read": "2 V"}}, "read.v_read"),
    ],
)
def test_unprogrammable_cards_are_physics_errors(sections, key):
    with pytest.raises(PhysicsError) as err:
        make_device(**sections)
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_the_shipped_step_is_sized_for_the_cells_levels():
    """``step: auto``: the largest nominal step whose largest pulse under the card's nonlinear update moves at most
    half the accept window (tolerance x spacing); a slightly larger one moves more. A 4-level cell programmed
    with it takes a handful of pulses per random transition (NeuroSim's 128-state step takes 7x more) and lands
    closer to its target."""
    from imcsim.config import load_card
    from imcsim.devices.reram import _curve_labels, _largest_pulse, programming_step

    card, _ = load_card("device", "reram_hfox_neurosim")
    p = card.programming
    assert p.step == "auto"
    h = p.tolerance / (card.cell.levels - 1)
    step = programming_step(card)
    assert _largest_pulse(_curve_labels(p), step) == pytest.approx(h, rel=1e-6)
    assert _largest_pulse(_curve_labels(p), step * 1.001) > h
    assert step < h  # the LTD curve's first pulse is larger than the mean step
    fixed = card.model_copy(update={"programming": p.model_copy(update={"algorithm": "fixed"})})
    assert programming_step(fixed) == pytest.approx(h, rel=1e-9)
    auto, synapse = ReRAM.from_card(card).figures(), make_device().figures()
    assert auto["programming_step_of_range"][0] == pytest.approx(step)
    assert auto["pulses_random_transition_mean"][0] * 5 < synapse["pulses_random_transition_mean"][0]
    assert auto["write_energy_random_transition"][0] * 5 < synapse["write_energy_random_transition"][0]
    assert auto["programmed_error_rms_per_spacing"][0] < synapse["programmed_error_rms_per_spacing"][0]


def test_the_relaxation_fit_is_read_in_the_cards_window():
    """Wan et al.'s spread, fitted on a 0-40 uS device, read at the same relative position of the card's 1-10 uS
    window and scaled by the windows' ratio 9/40 (``relaxation.scale: window``); ``absolute`` applies it in uS."""
    from imcsim.config import load_card

    card, _ = load_card("device", "reram_hfox_neurosim")
    assert card.relaxation.scale == "window"
    window, absolute = ReRAM.from_card(card), make_device()
    fit = card.relaxation.fits[0].sigma  # at 1 s, coefficients in S of x = G / 40 uS
    at = lambda x: sum(c * x**i for i, c in enumerate(fit))  # noqa: E731
    assert float(window.spread_siemens(10e-6, 1.0)) == pytest.approx(9 / 40 * at(1.0), rel=1e-9)
    assert float(window.spread_siemens(1e-6, 1.0)) == pytest.approx(9 / 40 * at(0.0), rel=1e-9)
    assert float(absolute.spread_siemens(10e-6, 1.0)) == pytest.approx(at(0.25), rel=1e-9)
    assert float(window.spread_siemens(10e-6, 1.0)) / window.level_spacing_siemens < 0.1  # was 0.75 in uS


def test_figures_depend_on_the_cards_numbers_not_its_wording():
    """The Monte Carlo behind the pulse figures is seeded from the card's physical content: rewording its
    description or a reference leaves every figure as it was; changing a number moves them."""
    base = make_device().figures()
    card = make_card()
    reworded = card.model_copy(update={"description": "reworded", "references": {**card.references, "x": "y"}})
    assert ReRAM.from_card(reworded).figures() == base
    assert make_device(programming={"tolerance": 0.2}).figures() != base
