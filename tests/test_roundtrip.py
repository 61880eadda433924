"""Every card model survives its own dump: JSON, a mapping, and the resolved config a report records each
validate back to an equal card. Caches keyed by a card's JSON (the traced models, the pretrained backbone)
validate it again, so a dump that a card cannot read back breaks every run that reaches them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from imcsim.config import _read_card, load_config, validate_model
from imcsim.params import Params
from imcsim.registry import REGISTRIES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
COMPONENT_CARDS = sorted((ROOT / "circuits" / "components").glob("*.yaml"))


LOADER_TYPED = {"RunConfig", "ChipOptions"}
"""Models whose sections are typed by the config loader through the registries (fields of type Any): their
round trip is the loader's, not their own."""


def _sub_cards(value) -> list[Params]:
    """Every card in ``value`` (a card, or a mapping or sequence holding some), nested ones included; a model
    the loader types stands for the cards it holds."""
    if isinstance(value, dict):
        return [c for v in value.values() for c in _sub_cards(v)]
    if isinstance(value, list | tuple):
        return [c for v in value for c in _sub_cards(v)]
    if not isinstance(value, Params):
        return []
    found = [] if type(value).__name__ in LOADER_TYPED else [value]
    return found + [c for name in type(value).model_fields for c in _sub_cards(getattr(value, name))]


@cache
def shipped_cards() -> tuple[Params, ...]:
    """Every typed card of the shipped configs and card folders, nested ones included."""
    from imcsim.components import COMPONENTS
    from imcsim.config import SECTIONS, load_card

    cards: list[Params] = []
    for config in CONFIGS:
        cards += _sub_cards(load_config(config).config)
    for section, (folder, _) in SECTIONS.items():
        for path in sorted((ROOT / folder).glob("*.yaml")):
            cards += _sub_cards(load_card(section, str(path))[0])
    for path in COMPONENT_CARDS:
        body, shown = _read_card(path, "component")
        if body["kind"] == "digital_unit":
            body.setdefault("macs_per_cycle", 1)  # the lanes are the circuit card's choice
        cards.append(validate_model(COMPONENTS[body["kind"]], body, "component", lambda _k, s=shown: s))
    return tuple(cards)


def _numeric_leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numeric_leaves(v, (*prefix, k))
    elif isinstance(tree, float) and tree != 0.0:
        yield prefix


def _set(tree: dict, path: tuple, value) -> dict:
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
    return out


def _get(tree: dict, path: tuple):
    for k in path:
        tree = tree[k]
    return tree


def assert_round_trips(card: Params) -> None:
    model = type(card)
    assert model.model_validate_json(card.model_dump_json()) == card
    assert model.model_validate(card.model_dump()) == card
    # the resolved config of a report (JSON types, SI numbers), read back as YAML would give it
    assert validate_model(model, json.loads(card.model_dump_json()), "card", lambda _k: "test") == card


def test_every_registered_card_model_has_a_shipped_card_to_round_trip():
    covered = {type(c) for c in shipped_cards()}
    registered = {r[name] for r in REGISTRIES for name in r}
    assert registered <= covered, sorted(m.__name__ for m in registered - covered)


@pytest.mark.parametrize("index", range(len(shipped_cards())),
                         ids=lambda i: f"{type(shipped_cards()[i]).__name__}-{i}")
def test_every_shipped_card_round_trips(index):
    assert_round_trips(shipped_cards()[index])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_card_with_any_valid_value_round_trips(data):
    """A registered card with one number moved anywhere its range allows dumps and reads back equal."""
    registered = tuple({r[name] for r in REGISTRIES for name in r})
    cards = [c for c in shipped_cards() if type(c) in registered]
    card = data.draw(st.sampled_from(cards))
    dumped = card.model_dump()
    leaves = list(_numeric_leaves(dumped))
    if leaves:
        path = data.draw(st.sampled_from(leaves))
        scale = data.draw(st.floats(0.01, 100.0, allow_nan=False, allow_infinity=False))
        try:
            card = type(card).model_validate(_set(dumped, path, _get(dumped, path) * scale))
        except ValidationError:
            card = type(card).model_validate(dumped)  # out of the field's range: the shipped value then
    assert_round_trips(card)
