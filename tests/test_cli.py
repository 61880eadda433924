"""CLI smoke tests: every shipped config, every README command, golden files, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imcsim.config import load_config
from imcsim.metrics import REGISTRY, within

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
MAIN_CONFIG = ROOT / "configs" / "sas_mram_repnet.yaml"
GOLDEN = ROOT / "tests" / "golden"
sys.path.insert(0, str(GOLDEN))
from regenerate import (  # noqa: E402
    SMOKE_SETTINGS,
    derived_for,
    golden_comparable,
    golden_tolerance,
    smoke_settings,
)


def imcsim(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = shutil.which("imcsim")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "imcsim.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``imcsim ARGS`` run in this process (the same ``main`` the console script calls, without the seconds of a
    fresh interpreter); the README commands themselves run as subprocesses above."""
    from imcsim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return subprocess.CompletedProcess(["imcsim", *args], code, out.getvalue(), err.getvalue())


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _metrics_from_json(metrics: dict) -> dict:
    """report.json metrics as the run made them (null is NaN, "inf" is infinity)."""
    return {k: math.nan if v is None else float(v) if v in ("inf", "-inf") else v for k, v in metrics.items()}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)  # every one, at its smoke settings
def test_every_config_runs_from_the_cli_and_matches_its_golden(config, tmp_path):
    """One CLI run per shipped config (smoke settings): its files, and its figures against the golden file."""
    sets = [x for s in smoke_settings(config) for x in ("--set", s)]
    res = cli("run", str(config), "--quiet", "--out", str(tmp_path / "out"), *sets)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["config"]["name"] == config.stem
    assert report["metrics"]["energy_train_j"] > 0
    assert (tmp_path / "out" / "counts.csv").read_text().startswith("component,action,group,count,energy_j")

    golden = json.loads((GOLDEN / f"{config.stem}.json").read_text())
    assert golden["smoke_settings"] == smoke_settings(config)
    derived = derived_for(config)
    for section in ("device_figures", "actions"):
        assert derived[section].keys() == golden["derived"][section].keys()
        for key, value in golden["derived"][section].items():
            assert derived[section][key] == pytest.approx(value, rel=1e-9), key
    assert derived["area_m2"] == pytest.approx(golden["derived"]["area_m2"], rel=1e-9)
    m, g = _metrics_from_json(report["metrics"]), golden["metrics"]
    assert m.keys() == g.keys()
    assert m["latency_per_step_s"] <= m["latency_in_order_per_step_s"] * (1 + 1e-9)
    phases = ("forward", "input_grad", "weight_grad", "update")  # the critical path split over the run
    assert sum(m[f"latency_train_{p}_s"] for p in phases) == pytest.approx(m["latency_train_s"], rel=1e-9)
    assert report["metric_units"] == {k: REGISTRY[k].unit for k in report["metrics"]}
    layers = (tmp_path / "out" / "layers.csv").read_text().splitlines()
    assert layers[0].startswith("module,shape,params,trainable,macs_forward_per_step,")
    assert len(layers) == len(report["tables"]["layers"]) + 1
    if "analog_error_relative_rms" in g:  # measured by functional runs; not measured (NaN) by cost-only runs
        cost_only = load_config(config).config.run.mode == "cost_only"
        assert math.isnan(m["analog_error_relative_rms"]) == math.isnan(g["analog_error_relative_rms"]) == cost_only
    assert report["environment"]["threads"] == golden["environment"]["threads"] == 1
    reason = golden_comparable(golden["environment"], report["environment"])
    if reason:  # never a silent pass: the comparison is reported as skipped, with its reason
        pytest.skip(reason)
    for key, value in g.items():  # every registered metric: cost-only exactly, functional within its spread
        assert within(m[key], value, golden_tolerance(golden, key)), (key, m[key], value, golden_tolerance(golden, key))


def test_run_trace_writes_a_chrome_trace(tmp_path):
    out = tmp_path / "out"
    trace = tmp_path / "trace.json"
    res = imcsim("run", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--out", str(out), "--quiet",
                 "--trace", str(trace), "--set", "workload.baselines=[]")
    assert res.returncode == 0, res.stderr
    data = json.loads(trace.read_text())
    slices = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert slices
    assert {e["cat"] for e in slices} >= {"forward", "input_grad", "update"}
    report = json.loads((out / "report.json").read_text())
    makespan_s = data["otherData"]["makespan_cycles"] * data["otherData"]["cycle_time_s"]
    assert makespan_s == pytest.approx(report["metrics"]["latency_per_step_s"], rel=1e-9)


def test_run_trace_into_a_folder_is_a_clear_input_error(tmp_path):
    res = cli("run", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--out", str(tmp_path / "o"), "--quiet",
              "--trace", str(tmp_path))
    assert res.returncode == 2
    assert "--trace" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_readme_setup_commands_are_exact_and_ci_runs_the_test_command():
    blocks = _readme_blocks()
    assert blocks[0] == "pip install -e . && imcsim run configs/sas_mram_repnet.yaml"
    assert blocks[1] == "pip install -e '.[test]' && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1] in [line.strip() for line in ci.splitlines()]


def test_readme_reference_commands(tmp_path):
    assert imcsim("--version").stdout.startswith("imcsim ")
    res = cli("validate", "configs/sas_mram_repnet.yaml")
    assert res.returncode == 0
    assert "valid" in res.stdout
    for what in ("devices", "circuits", "workloads", "configs"):
        res = cli("list", what)
        assert res.returncode == 0
        folder = ROOT / what
        for card in folder.glob("*.yaml"):
            assert card.stem in res.stdout
    res = cli("device", "sas_mram_4mtj_zhang_tcad2024")
    assert res.returncode == 0
    assert "write_energy_per_bit_random_data" in res.stdout
    res = cli("device", "sas_mram_4mtj_zhang_tcad2024", "--set", "write.t_reset=3ns")
    assert res.returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "configs/nope.yaml"], "configs/nope.yaml: no such file"),
        (["validate", "configs/sas_mram_repnet.yaml", "--set", "device.mtj.tmr=-1"], "device.mtj.tmr"),
        (["validate", "configs/sas_mram_repnet.yaml", "--set", "circuit.array.rows=1"], "circuit.array.rows"),
        (["run", "configs/sas_mram_repnet.yaml", "--set", "device.write.i_set_sot=500uA"], "device.write.i_set_sot"),
        (["device", "nosuchcard"], "no card 'nosuchcard'"),
        (["validate", "configs/reram_lorafusion.yaml", "--set", "workload.task_interval=900000s", "--set",
          "workload.n_tasks=20"], "workload.task_interval"),
        (["validate", "configs/reram_lora.yaml", "--set", "device.programming.algorithm=ispp"],
         "device.programming.ispp_start"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    res = cli(*args, "--library", str(ROOT)) if args[0] == "device" else cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "out"
    res = cli("run", "configs/sas_mram_repnet.yaml", "--out", str(out), "--set", "device.mtj.delta=0")
    assert res.returncode == 2
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_report():
    from imcsim.api import run
    from imcsim.config import load_config

    sets = [*SMOKE_SETTINGS, "workload.pretrain.epochs=1", "workload.tasks=[{name: t, classes: [5, 6, 7]}]",
            "workload.baselines=[]"]
    a = run(load_config(MAIN_CONFIG, sets, seed=3)).to_json()
    b = run(load_config(MAIN_CONFIG, sets, seed=3)).to_json()
    assert a == b
    c = run(load_config(MAIN_CONFIG, sets, seed=4)).to_json()
    assert c["metrics"] != a["metrics"]


@pytest.mark.slow
def test_readme_main_run_as_written():
    """The README's first command (after installing): the full default run."""
    cmd = _readme_blocks()[0].split("&&", 1)[1].split()
    assert cmd[0] == "imcsim"
    res = imcsim(*cmd[1:], timeout=900)
    assert res.returncode == 0, res.stderr
    report = json.loads((ROOT / "out" / "sas_mram_repnet" / "report.json").read_text())
    assert report["metrics"]["accuracy_source"] > 0.9
    assert report["metrics"]["accuracy_average"] > 0.3  # chance is 0.1-0.2 per task


@pytest.mark.parametrize("card", ["sas_mram_4mtj_zhang_tcad2024", "reram_hfox_neurosim"])
def test_device_plot_writes_a_png(tmp_path, card):
    out = tmp_path / "plot.png"
    res = cli("device", card, "--plot", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_device_plot_refused_for_sram(tmp_path):
    res = cli("device", "sram_6t_28nm", "--plot", str(tmp_path / "x.png"))
    assert res.returncode == 2
    assert "no plot for a sram device" in res.stderr


def test_set_card_swaps_the_device(tmp_path):
    from imcsim.api import build_hardware
    from imcsim.config import load_config

    loaded = load_config(MAIN_CONFIG, ["device.card=stt_mram_1t1mtj_nvsim", "device.write.t_write=20ns"])
    assert loaded.cards["device"].endswith("stt_mram_1t1mtj_nvsim.yaml")
    assert loaded.where("device.card") == "--set"
    hw = build_hardware(loaded)
    assert hw.device.kind == "stt_mram"
    assert hw.device.card.write.t_write_s == pytest.approx(20e-9)


def test_run_options_checked_before_running():
    res = cli("run", "configs/sas_mram_repnet.yaml", "--set", "run.mode=cost_only")
    assert res.returncode == 2
    assert res.stderr.strip() == ("imcsim: error: --set: run.mode: run.mode=cost_only needs a workload.cost_only "
                                  "section (batch_size, steps_per_task, activity and the model's sizes); add one or "
                                  "use mode functional")


def test_cost_only_grouped_convs_on_an_analog_crossbar_are_a_clear_input_error(tmp_path):
    res = cli("run", "configs/sas_mram_repnet_mobilenetv2_cost.yaml", "--out", str(tmp_path / "o"), "--quiet",
              "--set", "circuit.card=reram_crossbar_isaac_32nm", "--set", "device.card=reram_hfox_neurosim")
    assert res.returncode == 2
    assert res.stderr.startswith("imcsim: error: --set: circuit.card: layer ")
    assert "grouped convolution" in res.stderr
    assert not (tmp_path / "o").exists()


def test_readme_network_commands_run_as_written(tmp_path):
    """The three model sources of the README, in a copy of configs/ and examples/ (nothing written to the repo)."""
    block = next(b for b in _readme_blocks() if "export_onnx.py" in b)
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    sources = set()
    for line in block.splitlines():
        for command in line.split("&&"):
            words = shlex.split(command)
            if words[0] == "imcsim":
                res = cli(*words[1:], "--quiet", cwd=tmp_path)
                sources |= {json.loads(p.read_text())["tables"]["model"]["source"]
                            for p in (tmp_path / "out").glob("*/report.json")}
            else:
                res = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True,
                                     timeout=300, check=False)
            assert res.returncode == 0, (command, res.stderr)
    assert sources == {"zoo", "python", "onnx"}


def test_list_models_names_the_zoo_and_the_transformer_presets():
    from imcsim.models.backbone import zoo_names
    from imcsim.workloads.adaptation import TRANSFORMERS

    res = cli("list", "models")
    assert res.returncode == 0
    names = {line.split()[0] for line in res.stdout.splitlines()}
    assert names == set(zoo_names()) | set(TRANSFORMERS)
    assert "vgg8_cifar" in names
    assert "flan_t5_large" in names
