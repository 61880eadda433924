"""Every shipped card validates, builds, and cites a source for every physical number (the device models'
published validation is in tests/test_mram_physics.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from imcsim.config import SECTIONS, _read_card, validate_model
from imcsim.devices import CARD_KINDS, build_device

ROOT = Path(__file__).resolve().parents[1]
COMPONENT_CARDS = sorted((ROOT / "circuits" / "components").glob("*.yaml"))
PHYSICAL_CARDS = (sorted((ROOT / "devices").glob("*.yaml")) + sorted((ROOT / "circuits").glob("*.yaml"))
                  + COMPONENT_CARDS)
ALL_CARDS = [(sec, p) for sec, (sub, _) in SECTIONS.items() for p in sorted((ROOT / sub).glob("*.yaml"))]
TAG = re.compile(r"\[([A-Za-z0-9_.\-]+)\]\s*$")
NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, tree


@pytest.mark.parametrize("path", PHYSICAL_CARDS, ids=lambda p: p.stem)
def test_every_physical_number_cites_a_reference(path):
    raw = yaml.safe_load(path.read_text())
    refs = raw["references"]
    assert refs, "a card needs references"
    for key, value in _leaves({k: v for k, v in raw.items() if k not in ("schema_version", "references")}):
        if isinstance(value, bool) or key in ("kind", "description"):
            continue
        if isinstance(value, int | float) or (isinstance(value, str) and NUMBER.match(value)):
            m = TAG.search(str(value))
            assert m, f"{path.name}: {key} = {value!r} has no [reference] tag"
            assert m.group(1) in refs, f"{path.name}: {key} cites unknown [{m.group(1)}]"


@pytest.mark.parametrize(("section", "path"), ALL_CARDS, ids=lambda x: getattr(x, "stem", x))
def test_every_card_validates_and_builds(section, path):
    from imcsim.config import load_card

    card, _ = load_card(section, str(path))  # a circuit card's components are read from their cards
    if section == "device":
        dev = build_device(card)
        for name, (value, _unit) in dev.figures().items():
            assert value >= 0, name
        for action, spec in dev.actions().items():
            assert spec.cost.energy_j >= 0, action
            assert spec.cost.latency_s >= 0, action
        assert dev.area_per_bit_m2 > 0


@pytest.mark.parametrize("path", COMPONENT_CARDS, ids=lambda p: p.stem)
def test_every_component_card_validates_against_its_kind(path):
    from imcsim.components import COMPONENTS

    body, shown = _read_card(path, "component")
    if body["kind"] == "digital_unit":
        body.setdefault("macs_per_cycle", 1)  # the lanes are the circuit card's choice
    card = validate_model(COMPONENTS[body["kind"]], body, "component", lambda _k: shown)
    assert card.description
    assert card.references


def test_a_component_override_and_a_swapped_component_card_reach_the_circuit(root):
    from imcsim.api import build_hardware
    from imcsim.config import load_config
    from imcsim.errors import InputError

    base = build_hardware(load_config(root / "configs" / "sas_mram_repnet.yaml")).macro
    over = build_hardware(load_config(root / "configs" / "sas_mram_repnet.yaml",
                                      ["circuit.components.sense_amp.energy=8 fJ"])).macro
    assert over.actions.energy_j(("sense_amp", "sense")) == pytest.approx(2 * base.actions.energy_j(("sense_amp",
                                                                                                    "sense")))
    assert over.actions.energy_j(("adder_tree", "combine")) == base.actions.energy_j(("adder_tree", "combine"))
    with pytest.raises(InputError, match=r"circuit.components.sense_amp.card: no component card 'nope' in .*available: "):
        load_config(root / "configs" / "sas_mram_repnet.yaml", ["circuit.components.sense_amp.card=nope"])
    with pytest.raises(InputError, match=r"--set: circuit.components.sense_amp.card: cannot read component card .*"
                                         r"File name too long"):  # found by the fuzzer: an OSError, not a traceback
        load_config(root / "configs" / "sas_mram_repnet.yaml", ["circuit.components.sense_amp.card=" + "x" * 300])
    with pytest.raises(InputError, match=r"latch_sense_amp_28nm.yaml: circuit.components.sense_amp.node: .*outside"):
        build_hardware(load_config(root / "configs" / "sas_mram_repnet.yaml", ["circuit.technology.node=180 nm"]))


def _device(name: str, *sets: str):
    from imcsim.config import load_card

    card, _ = load_card("device", str(ROOT / "devices" / f"{name}.yaml"), list(sets))
    return build_device(card)


def test_stt_and_sot_write_only_flipped_bits():
    old = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    new = np.array([[1, 1, 0, 0]], dtype=np.uint8)
    for name in ("stt_mram_1t1mtj_nvsim", "sot_mram_2t1mtj_imec"):
        ev = _device(name).count_writes(old, new)
        assert ev.counts == {"write_pulse": 2}
        assert ev.cell_writes.tolist() == [[1, 0, 1, 0]]


def test_sram_rewrites_whole_words():
    dev = _device("sram_6t_28nm")
    old = np.zeros((1, 16), dtype=np.uint8)
    new = old.copy()
    new[0, 9] = 1  # one bit of the second byte
    ev = dev.count_writes(old, new)
    assert ev.counts == {"write_bit": 8}
    assert ev.cell_writes[0, :8].sum() == 0
    assert ev.cell_writes[0, 8:].sum() == 8
    assert math.isinf(dev.endurance_cycles)
    # C_BL V_dd^2 for 128 cells x 0.16 fF at 0.9 V
    assert dev.e_write_j == pytest.approx(128 * 0.16e-15 * 0.81)


def test_same_mtj_three_ways_orders_as_expected():
    """SOT writes through a low-resistance strip at 1 ns: cheapest write; STT and the SAS set push current through
    the junction for the free layer's precession time: costliest; SAS shares one transistor per group."""
    sas, stt, sot = (_device(n) for n in ("sas_mram_4mtj_zhang_tcad2024", "stt_mram_1t1mtj_nvsim",
                                           "sot_mram_2t1mtj_imec"))
    assert sot.e_write_j < stt.e_write_j
    assert sot.e_write_j < sas.mean_write_energy_per_bit_j()
    assert sot.card.write.t_write_s < stt.card.write.t_write_s


def test_device_parameter_moves_the_figures():
    base = _device("sot_mram_2t1mtj_imec")
    thicker = _device("sot_mram_2t1mtj_imec", "heavy_metal.thickness=8nm", "write.i_write=400uA")
    assert thicker.r_hm_ohm == pytest.approx(base.r_hm_ohm / 2)
    assert thicker.card.heavy_metal.ic0_a == pytest.approx(2 * base.card.heavy_metal.ic0_a)


def test_card_kinds_registry_matches_descriptions():
    from imcsim.registry import DEVICES

    assert set(CARD_KINDS) == set(DEVICES.descriptions)


def test_list_components_shows_each_component_card_with_its_kind(capsys):
    from imcsim.cli import main

    assert main(["list", "components"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert {p.stem for p in COMPONENT_CARDS} == set(lines)
    assert lines["latch_sense_amp_28nm"] == "sense_amp"
