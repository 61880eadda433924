"""The metrics registry is the one list: every metric a run reports is registered, with unit, basis, meaning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from imcsim.metrics import BASES, COMPARE_METRICS, METHOD_COLUMNS, REGISTRY, SWEEP_METRICS, Metric
from imcsim.units import unit_of_name

GOLDEN = Path(__file__).resolve().parent / "golden"
CONDITIONAL = {"utilization_scratch"}  # only with the in-array weight gradient, which no shipped config uses


def _golden_metrics() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["metrics"] for p in sorted(GOLDEN.glob("*.json"))}


def test_every_reported_metric_is_registered_and_every_registered_one_is_reported():
    reported = set().union(*(m.keys() for m in _golden_metrics().values()))
    assert reported - set(REGISTRY) == set()
    assert set(REGISTRY) - reported == CONDITIONAL


@pytest.mark.parametrize("metric", list(REGISTRY.values()), ids=list(REGISTRY))
def test_each_metric_states_unit_basis_and_meaning(metric: Metric):
    assert metric.basis in BASES
    assert len(metric.description) > 15
    assert metric.unit == (unit_of_name(metric.name) or "1")
    assert metric.rel >= 0
    assert metric.abs_tol >= 0


def test_the_tables_read_the_registry():
    assert set(COMPARE_METRICS) | set(METHOD_COLUMNS) | set(SWEEP_METRICS) <= set(REGISTRY)
    assert len(set(COMPARE_METRICS)) == len(COMPARE_METRICS)


def test_tolerances_can_fail():
    energy = REGISTRY["energy_train_j"]
    assert energy.matches(1.04, 1.0)
    assert not energy.matches(1.06, 1.0)
    steps = REGISTRY["training_steps"]
    assert not steps.matches(108, 107)
    analog = REGISTRY["analog_error_relative_rms"]
    assert analog.matches(math.nan, math.nan)
    assert not analog.matches(0.0, math.nan)
    assert REGISTRY["lifetime_tasks"].matches(math.inf, math.inf)
    assert not REGISTRY["lifetime_tasks"].matches(1e9, math.inf)
