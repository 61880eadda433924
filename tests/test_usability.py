"""Behaviour a new user or a notebook relies on: the same keys everywhere, stable hashes, untouched global state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imcsim import api
from imcsim.config import load_card, load_config
from imcsim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "configs" / "sas_mram_repnet.yaml"
COST = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"


def test_the_device_command_takes_the_keys_run_takes():
    short, _ = load_card("device", "sas_mram_4mtj_zhang_tcad2024", ["write.t_set=3ns"], library=ROOT)
    full, _ = load_card("device", "sas_mram_4mtj_zhang_tcad2024", ["device.write.t_set=3ns"], library=ROOT)
    assert short.write.t_set_s == full.write.t_set_s == pytest.approx(3e-9)


def test_the_config_hash_does_not_depend_on_how_the_path_is_spelled(monkeypatch, tmp_path):
    absolute = load_config(MAIN).config_hash
    monkeypatch.chdir(ROOT)
    relative = load_config(Path("configs") / MAIN.name).config_hash
    monkeypatch.chdir(tmp_path)
    elsewhere = load_config(os.path.relpath(MAIN, tmp_path)).config_hash
    assert absolute == relative == elsewhere
    assert load_config(MAIN, ["device.write.t_set=3ns"]).config_hash != absolute  # the physics still counts


def test_a_run_leaves_the_callers_random_state_alone(monkeypatch):
    real = api._execute

    def seeding(*args, **kwargs):  # the workloads seed torch's global generator
        torch.manual_seed(12345)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_execute", seeding)
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    api.run(load_config(COST, ["workload.cost_only.steps_per_task=2", "workload.baselines=[]"]))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_importing_imcsim_keeps_the_matplotlib_backend():
    code = ("import matplotlib; matplotlib.use('pdf'); import imcsim.plots, imcsim.cli, imcsim.api, imcsim.sweep; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "pdf"


def test_cost_only_per_task_rows_carry_the_cards_task_names():
    loaded = load_config(COST, ["workload.cost_only.steps_per_task=2", "workload.baselines=[]"])
    rows = api.run(loaded).tables["per_task"]
    assert [r["task"] for r in rows] == [t.name for t in loaded.config.workload.tasks]


def test_cuda_for_an_adaptation_run_is_refused_not_ignored():
    loaded = load_config(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml", ["run.torch_device=cuda"])
    with pytest.raises(InputError) as info:
        api.build_hardware(loaded)
    assert info.value.key == "run.torch_device"
    assert "CPU" in info.value.message


def test_trace_step_keeps_the_asked_step_or_the_last():
    from sys import path as sys_path

    sys_path.insert(0, str(ROOT / "tests" / "golden"))
    from regenerate import SMOKE_SETTINGS

    loaded = load_config(MAIN, [*SMOKE_SETTINGS, "workload.baselines=[]"])
    timeline = api.run(loaded, trace_step=5).timeline
    assert timeline.traced_index == 5
    assert timeline.traced is not timeline.first_step
    assert timeline.traced.makespan == timeline.step_cycles[4]
    one_step = load_config(COST, ["workload.cost_only.steps_per_task=2", "workload.baselines=[]"])
    last = api.run(one_step, trace_step=3).timeline  # cost-only: one counted step
    assert last.traced_index == len(last.step_cycles) == 1


MINE = """schema_version: 1
name: mine
device: {card: sram_6t_28nm}
circuit: {card: bitserial_macro_28nm, array: {n_subarrays: 4096}}
workload: {card: repnet_mobilenetv2_224}
run: {mode: cost_only}
"""


def test_shipped_cards_work_outside_a_clone(tmp_path, monkeypatch, capsys):
    from imcsim import cli
    from imcsim.config import BUILTIN_LIBRARY

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMCSIM_LIBRARY", raising=False)
    assert cli.main(["list", "devices"]) == 0
    assert "sas_mram_4mtj_zhang_tcad2024" in capsys.readouterr().out
    (tmp_path / "mine.yaml").write_text(MINE)
    loaded = load_config(tmp_path / "mine.yaml")
    assert Path(loaded.cards["device"]).resolve() == (BUILTIN_LIBRARY / "devices" / "sram_6t_28nm.yaml").resolve()


def test_a_library_named_by_the_environment_comes_before_the_built_in_one(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    (lib / "devices").mkdir(parents=True)
    (lib / "devices" / "sram_6t_28nm.yaml").write_text(
        (ROOT / "devices" / "sram_6t_28nm.yaml").read_text().replace("vdd: 0.9 V", "vdd: 0.8 V"))
    for sub in ("circuits", "workloads"):
        (lib / sub).symlink_to(ROOT / sub)
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.yaml").write_text(MINE)
    monkeypatch.setenv("IMCSIM_LIBRARY", str(lib))
    assert load_config(work / "mine.yaml").config.device.cell.vdd_v == pytest.approx(0.8)
    monkeypatch.setenv("IMCSIM_LIBRARY", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="IMCSIM_LIBRARY"):
        load_config(work / "mine.yaml")
