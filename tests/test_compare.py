"""imcsim compare: break-even arithmetic, cumulative series from reports, the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imcsim.compare import TaskSeries, break_even, break_even_lines, unique_names
from imcsim.report import Report

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["workload.train.epochs=1", "workload.pretrain.epochs=1", "workload.baselines=[]",
         "workload.tasks=[{name: a, classes: [5, 6, 7]}, {name: b, classes: [8, 9], transform: invert}]"]


def report(name: str, deploy_pulses: float, deploy_j: float, per_task: list[tuple[float, float]]) -> Report:
    return Report(schema_version=1, imcsim_version="0", name=name, config_hash="0", seed=0, config={},
                  metrics={"write_pulses_deploy": deploy_pulses, "energy_deploy_j": deploy_j},
                  costs={}, action_descriptions={},
                  tables={"per_task": [{"task": f"t{i}", "write_pulses": w, "energy_j": e}
                                       for i, (w, e) in enumerate(per_task)]})


def test_break_even_by_hand():
    base = np.array([100.0, 110.0, 120.0])  # deploy 100, 10 per task
    other = np.array([400.0, 404.0, 408.0])  # deploy 400, 4 per task: (400 - 100) / (10 - 4) = 50 tasks
    assert break_even(base, 10.0, other, 4.0) == pytest.approx(50.0)
    assert break_even(base, 10.0, np.array([50.0]), 3.0) == 0.0  # cheaper deployment and rate
    assert break_even(base, 10.0, other, 12.0) is None  # dearer per task: never


def test_series_start_at_deployment_and_accumulate_tasks():
    s = TaskSeries.of("x", report("x", 1000, 2e-3, [(10, 1e-3), (30, 3e-3)]))
    assert s.tasks == ["t0", "t1"]
    assert s.writes.tolist() == [1000, 1010, 1040]
    assert s.energy_j.tolist() == pytest.approx([2e-3, 3e-3, 6e-3])
    assert s.rate(s.writes) == 20
    lora = TaskSeries.of("lora", report("lora", 100, 0.0, [(500, 0.0)] * 3))
    fusion = TaskSeries.of("fusion", report("fusion", 1100, 0.0, [(0, 0.0)] * 3))
    lines = break_even_lines([lora, fusion])
    assert "fusion vs lora, write pulses: breaks even after 2 tasks" in lines[0]
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a-2", "a-3"]


def test_cli_compare_writes_table_plot_and_reports(tmp_path):
    from test_cli import imcsim

    out = tmp_path / "cmp"
    sets = [x for s in SMOKE for x in ("--set", s)]
    # a config with overrides of its own: CONFIG@KEY=VALUE
    res = imcsim("compare", "configs/sas_mram_repnet.yaml", "configs/sas_mram_repnet.yaml@device.card=stt_mram_1t1mtj_nvsim",
                 "--out", str(out), "--library", str(ROOT), *sets)
    assert res.returncode == 0, res.stderr
    assert "runs side by side" in res.stdout
    data = json.loads((out / "compare.json").read_text())
    variant = "sas_mram_repnet-card-stt_mram_1t1mtj_nvsim"
    assert data["runs"] == ["sas_mram_repnet", variant]
    for name in data["runs"]:
        cum = data["cumulative"][name]
        assert cum["tasks"] == ["deploy", "a", "b"]
        assert cum["write_pulses"] == sorted(cum["write_pulses"])  # cumulative: never decreasing
        run_report = json.loads((out / name / "report.json").read_text())
        assert data["environment"][name] == run_report["environment"]  # what made each run
        assert cum["energy_j"][-1] == pytest.approx(run_report["metrics"]["energy_deploy_j"]
                                                    + run_report["metrics"]["energy_train_j"], rel=1e-9)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare.csv").read_text().startswith(f"metric,unit,sas_mram_repnet,{variant}\n")
    assert data["metric_units"]["energy_train_j"] == "J"
    # the two devices write differently: the comparison is not trivial
    assert data["metrics"]["sas_mram_repnet"]["energy_train_j"] != data["metrics"][variant]["energy_train_j"]


def test_cli_compare_bad_config_writes_nothing(tmp_path):
    from test_cli import imcsim

    out = tmp_path / "cmp"
    res = imcsim("compare", "configs/sas_mram_repnet.yaml", str(tmp_path / "missing.yaml"), "--out", str(out))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "missing.yaml" in res.stderr
    assert not out.exists()


def test_cli_compare_bad_variant_is_one_line(tmp_path):
    from test_cli import imcsim

    out = tmp_path / "cmp"
    res = imcsim("compare", "configs/sas_mram_repnet.yaml@run.seed", "--out", str(out))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1
    assert "KEY=VALUE" in res.stderr
    assert "run.seed" in res.stderr
    assert not out.exists()


def test_a_configs_own_overrides_are_checked_like_set():
    from imcsim.cli import _variant, _variant_label
    from imcsim.config import load_config
    from imcsim.errors import InputError

    path, sets = _variant("configs/sas_mram_repnet.yaml@device.write.nope=1@run.seed=3")
    assert (path, sets) == ("configs/sas_mram_repnet.yaml", ["device.write.nope=1", "run.seed=3"])
    with pytest.raises(InputError, match="nope"):
        load_config(ROOT / path, sets)
    assert _variant_label("workload.cost_only.activity.weight_change_by_layer={.lora_A: 0.1}") == \
        "-weight_change_by_layer-_.lora_A_0.1"


@pytest.mark.slow
def test_readme_policy_comparison_runs_as_written(tmp_path):
    """The README's LoRA-under-each-policy command (about 75 s): four runs named by their own overrides, the
    policies writing less than every step, LoRAFusion writing nothing per task."""
    import re

    from test_cli import imcsim

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"imcsim compare configs/reram_lora\.yaml configs/reram_lora\.yaml@.*?--set \S+", readme, re.S)
    assert block, "the policy comparison command is in the README"
    args = block.group(0).replace("\\\n", " ").split()[1:]
    out = tmp_path / "cmp"
    res = imcsim(*args, "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "compare.json").read_text())
    assert data["runs"] == ["reram_lora", "reram_lora-kind-threshold", "reram_lora-kind-periodic", "reram_lorafusion"]
    pulses = {r: data["metrics"][r]["write_pulses"] for r in data["runs"]}
    assert pulses["reram_lora-kind-threshold"] < pulses["reram_lora"]
    assert pulses["reram_lora-kind-periodic"] < pulses["reram_lora"]
    assert pulses["reram_lorafusion"] == 0
