"""The metrics registry is the one list: every metric a run reports is registered, with unit, basis, meaning,
and the report, its tables and the CLI's metric options agree with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from imcsim.circuits.base import LEVELS
from imcsim.metrics import (
    BASES,
    COMPARE_METRICS,
    METHOD_COLUMNS,
    REGISTRY,
    RENAMED,
    SUMMARY_METHOD_COLUMNS,
    SWEEP_METRICS,
    Metric,
    check_metric,
    unit_of,
)
from imcsim.report import Report, render_metric
from imcsim.units import unit_of_name

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
COST = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"


def _golden_metrics() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["metrics"] for p in sorted(GOLDEN.glob("*.json"))}


def test_every_reported_metric_is_registered_and_every_registered_one_is_reported_or_conditional():
    goldens = _golden_metrics()
    reported = set().union(*(m.keys() for m in goldens.values()))
    assert reported - set(REGISTRY) == set()
    for name, metrics in goldens.items():  # a metric a run leaves out says when it is reported
        missing = set(REGISTRY) - set(metrics)
        assert all(REGISTRY[m].when for m in missing), (name, sorted(m for m in missing if not REGISTRY[m].when))
    assert not set(RENAMED) & reported  # the former names are gone from every report


@pytest.mark.parametrize("metric", list(REGISTRY.values()), ids=list(REGISTRY))
def test_each_metric_states_unit_basis_and_meaning(metric: Metric):
    assert metric.basis in BASES
    assert len(metric.description) > 15
    assert metric.unit == (unit_of_name(metric.name) or metric.unit_override or "1")
    assert not (unit_of_name(metric.name) and metric.unit_override)  # a suffix's unit is never overridden
    assert callable(metric.compute)


def test_the_tables_read_the_registry():
    assert set(COMPARE_METRICS) | set(METHOD_COLUMNS) | set(SWEEP_METRICS) | set(SUMMARY_METHOD_COLUMNS) <= set(
        REGISTRY)
    assert len(set(COMPARE_METRICS)) == len(COMPARE_METRICS)
    assert set(RENAMED.values()) <= set(REGISTRY)
    assert not set(RENAMED) & set(REGISTRY)


def test_report_json_carries_the_registered_unit_of_every_metric():
    metrics = next(iter(_golden_metrics().values()))
    report = Report(schema_version=1, imcsim_version="x", name="r", config_hash="abc", seed=0, config={},
                    metrics=metrics, costs={}, tables={"device_figures": {"r_p": {"value": 1.0, "unit": "Ohm"}}})
    data = report.to_json()
    assert data["metric_units"] == {k: REGISTRY[k].unit for k in metrics}
    assert data["metric_units"]["tops_per_watt_train"] == "TOPS/W"
    assert data["metric_units"]["energy_per_mac_train_j"] == "J"
    assert render_metric("utilization_cells", 0.5) == "50.0 %"
    assert render_metric("tops_per_watt_forward", 12.0) == "12 TOPS/W"
    assert unit_of("write_pulses") == "1"


def test_golden_figures_are_consistent():
    phases = ("forward", "input_grad", "weight_grad", "update")
    for name, m in _golden_metrics().items():
        total = m["energy_train_j"]
        # the phases' dynamic energy and the static energy over the run make the total; so do the levels
        assert sum(m[f"energy_train_{p}_j"] for p in phases) + m["energy_train_leakage_j"] == pytest.approx(
            total, rel=1e-9), name
        assert sum(m[f"energy_train_{lv}_j"] for lv in LEVELS) == pytest.approx(total, rel=1e-9), name
        assert sum(m[f"latency_train_{p}_s"] for p in phases) == pytest.approx(m["latency_train_s"], rel=1e-9)
        assert sum(m[f"latency_per_step_{p}_s"] for p in phases) == pytest.approx(m["latency_per_step_s"], rel=1e-9)
        assert m["macs_train_per_step"] >= m["macs_forward_per_step"] > 0, name
        assert m["tops_per_watt_forward"] == pytest.approx(2 / m["energy_per_mac_forward_j"] / 1e12, rel=1e-9)
        assert m["tops_per_watt_train"] == pytest.approx(2 / m["energy_per_mac_train_j"] / 1e12, rel=1e-9)
        assert m["energy_per_mac_train_j"] == pytest.approx(m["energy_per_step_j"] / m["macs_train_per_step"],
                                                            rel=1e-9)


def test_a_former_name_is_refused_with_its_new_name():
    from imcsim.errors import InputError

    assert check_metric("energy_train_j", "--plot") == "energy_train_j"
    for old, new in RENAMED.items():
        with pytest.raises(InputError) as info:
            check_metric(old, "--plot")
        assert new in str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="unknown metric"):
        check_metric("energy_train", "--plot")


def test_a_run_reports_registered_metrics_its_layer_table_adds_up_and_in_order_bounds_the_step():
    """Cost-only MobileNetV2 at batch 1: every figure registered, the per-layer energies add up to the phase
    totals, and the in-order step (buffer transfers included) is at least the scheduled step."""
    from imcsim.api import run
    from imcsim.config import load_config

    report = run(load_config(COST, ["workload.cost_only.steps_per_task=2", "workload.cost_only.batch_size=1",
                                    "workload.baselines=[]"]))
    m = report.metrics
    assert set(m) <= set(REGISTRY)
    assert all(REGISTRY[k].when for k in set(REGISTRY) - set(m))
    assert m["latency_in_order_per_step_s"] >= m["latency_per_step_s"]
    layers = report.tables["layers"]
    for p in ("forward", "input_grad", "weight_grad", "update"):
        assert sum(r[f"energy_{p}_j"] for r in layers) == pytest.approx(m[f"energy_train_{p}_j"], rel=1e-9)
    static_deploy = sum(e for (comp, _), e in report.costs["deploy"].energy_j.items() if comp == "leakage")
    assert sum(r["energy_deploy_j"] for r in layers) + static_deploy == pytest.approx(m["energy_deploy_j"], rel=1e-9)
    for level in LEVELS[:-1]:  # per layer by level (static power is the chip's, not a layer's)
        assert sum(r[f"energy_train_{level}_j"] for r in layers) == pytest.approx(m[f"energy_train_{level}_j"],
                                                                                  rel=1e-9)
    assert sum(r["macs_train_per_step"] for r in layers) == pytest.approx(m["macs_train_per_step"], rel=1e-9)
    assert sum(r["subarrays"] for r in layers) == m["subarrays_used"]
    figures = report.tables["device_figures"]
    assert figures
    assert all(set(v) == {"value", "unit"} for v in figures.values())
    assert not math.isnan(m["tops_per_watt_train"])
