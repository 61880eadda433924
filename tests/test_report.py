"""Cost results are additive; reports are written atomically and completely."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim.cost import EMPTY, cost
from imcsim.metrics import LAYER_COLUMNS
from imcsim.report import Report, write_report

keys = st.sampled_from([("sense_amp", "sense"), ("adder_tree", "combine"), ("sas_group", "reset_pulse"),
                        ("digital", "mac_int8"), ("global_buffer", "read_bit")])
count_maps = st.dictionaries(keys, st.integers(0, 10**9), max_size=5)
cycle_maps = st.dictionaries(st.sampled_from(["forward", "input_grad", "update"]), st.integers(0, 10**6), max_size=3)


@given(count_maps, count_maps, cycle_maps, cycle_maps)
@settings(max_examples=60, deadline=None)
def test_cost_of_a_split_stream_adds_up(hardware_table, c1, c2, y1, y2):
    table, t = hardware_table
    whole = cost(Counter(c1) + Counter(c2), table, Counter(y1) + Counter(y2), t)
    parts = cost(c1, table, y1, t) + cost(c2, table, y2, t)
    assert whole.total_energy_j == pytest.approx(parts.total_energy_j, rel=1e-12, abs=1e-30)
    assert whole.total_latency_s == pytest.approx(parts.total_latency_s, rel=1e-12, abs=1e-30)
    assert dict(whole.counts) == dict(parts.counts)
    assert whole.total_energy_j >= 0
    assert (parts + EMPTY).total_energy_j == pytest.approx(parts.total_energy_j)
    # the total is the sum of the component breakdown
    assert sum(whole.energy_by_component_j().values()) == pytest.approx(whole.total_energy_j)


@pytest.fixture(scope="module")
def hardware_table():
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    hw = build_hardware(load_config(Path(__file__).resolve().parents[1] / "configs" / "sas_mram_repnet.yaml"))
    return hw.macro.actions, hw.macro.t_cycle_s


def _report(name="r", energy=1e-12) -> Report:
    c = cost({("sense_amp", "sense"): 3}, _table(), {"forward": 2}, 1e-9)
    return Report(schema_version=1, imcsim_version="x", name=name, config_hash="abc", seed=0,
                  config={"name": name}, metrics={"energy_train_j": energy, "accuracy_average": 0.5},
                  costs={"train": c}, tables={"layers": [{"module": "conv1", "shape": "8 x 9 x 4",
                                                          "macs_forward_per_step": 288.0, "subarrays": 1}]})


def _table():
    from imcsim.actions import ActionCost, ActionSpec, ActionTable

    return ActionTable({("sense_amp", "sense"): ActionSpec(ActionCost(2e-15, 1e-9), "one sense", "compute")})


def test_report_files_are_complete(tmp_path):
    out = write_report(_report(), tmp_path / "run")
    data = json.loads((out / "report.json").read_text())
    for key in ("schema_version", "imcsim_version", "config_hash", "seed", "config", "metrics", "costs"):
        assert key in data
    assert data["costs"]["train"]["energy_j"]["sense_amp.sense"] == pytest.approx(6e-15)
    rows = (out / "counts.csv").read_text().splitlines()
    assert rows[0] == "component,action,group,count,energy_j"
    assert rows[1].startswith("sense_amp,sense,train,3,")
    assert "energy_train_j" in (out / "summary.txt").read_text()
    layers = (out / "layers.csv").read_text().splitlines()
    assert layers[0].split(",") == list(LAYER_COLUMNS)
    assert layers[1].startswith("conv1,8 x 9 x 4,,,288.0,")  # params and trainable: not in this table
    assert data["metric_units"] == {"energy_train_j": "J", "accuracy_average": "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left behind


def test_interrupted_write_keeps_the_old_report(tmp_path, monkeypatch):
    out = write_report(_report("first"), tmp_path / "run")
    import imcsim.report as rep

    def boom(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "render_summary", boom)
    with pytest.raises(KeyboardInterrupt):
        write_report(_report("second"), tmp_path / "run")
    assert json.loads((out / "report.json").read_text())["name"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_rewrite_replaces_whole_folder(tmp_path):
    out = write_report(_report("first"), tmp_path / "run")
    (out / "stale.txt").write_text("old")
    write_report(_report("second"), tmp_path / "run")
    assert json.loads((out / "report.json").read_text())["name"] == "second"
    assert not (out / "stale.txt").exists()
