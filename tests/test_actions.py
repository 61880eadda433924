"""The combination rules of action costs, written once in imcsim.actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imcsim.actions import ZERO, ActionCost, ActionSpec, ActionTable, serial

costs = st.builds(ActionCost, st.floats(0, 1e-9), st.floats(0, 1e-6))


@given(costs, costs)
def test_serial_adds_and_parallel_takes_the_longer(a, b):
    s = a.then(b)
    assert s.energy_j == pytest.approx(a.energy_j + b.energy_j)
    assert s.latency_s == pytest.approx(a.latency_s + b.latency_s)
    p = a.alongside(b)
    assert p.energy_j == pytest.approx(a.energy_j + b.energy_j)
    assert p.latency_s == max(a.latency_s, b.latency_s)
    assert serial([a, b, ZERO]) == s
    assert a.times(3).energy_j == pytest.approx(3 * a.energy_j)


def test_negative_costs_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        ActionCost(-1e-15, 0.0)


def test_table_names_a_missing_action():
    table = ActionTable({("adc", "convert"): ActionSpec(ActionCost(1e-12, 1e-9), "one conversion", "compute")})
    assert table.energy_j(("adc", "convert")) == 1e-12
    assert table.latency_s(("adc", "convert")) == 1e-9
    with pytest.raises(KeyError, match=r"no cost for action dac\.convert"):
        table[("dac", "convert")]
