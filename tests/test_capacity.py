"""Capacity is part of validation: the subarrays a workload needs, counted before any training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from imcsim.api import _array_layers, build_hardware, check_capacity, run
from imcsim.cli import main
from imcsim.config import load_config
from imcsim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
MAIN = ROOT / "configs" / "sas_mram_repnet.yaml"
KEY = "circuit.array.n_subarrays"

# Small functional runs: one epoch on a few images of each class (the model and its storage as shipped).
SMALL_CNN = [
    "workload.baselines=[]", "workload.pretrain.epochs=1", "workload.train.epochs=1",
    "workload.pretrain.task={name: p, classes: [0, 1, 2, 3, 4], max_per_class: 12}",
    "workload.tasks=[{name: a, classes: [5, 6, 7], max_per_class: 6}, "
    "{name: b, classes: [0, 1], transform: rotate90, max_per_class: 6}]",
]
SMALL_LORA = ["workload.train.epochs=1", "workload.train.samples=20", "workload.pretrain.epochs=1",
              "workload.pretrain.samples=40", "workload.pool_train.epochs=1", "workload.pool_train.samples=20",
              "workload.n_tasks=2"]
# Small cost-only models (the shapes are what matter here).
SMALL_BERT = ["workload.cost_only.model.d_model=32", "workload.cost_only.model.n_layers=1",
              "workload.cost_only.model.d_ff=64", "workload.cost_only.model.seq_len=16",
              "workload.cost_only.batch_size=2", "workload.cost_only.model.vocab=100"]
SMALL_MOBILENET = ["workload.baselines=[]", "workload.cost_only.image_size=64", "workload.cost_only.batch_size=2",
                   "workload.model.width=8", "workload.repnet.width=8"]


def _stored_layout(loaded, hw) -> dict[tuple[str, str], tuple[int, int]]:
    """Every matrix the check places for the config's method: name -> (row tiles, column tiles)."""
    card = loaded.config.workload
    placed: dict[tuple[str, str], tuple[int, int]] = {}
    for layer in _array_layers(card, loaded.config.run.mode):
        placed.update(hw.macro.placement(layer.name, layer.k, layer.n, layer.groups))
    return placed


def _check_matches_the_run(config: str, sets: list[str]) -> int:
    loaded = load_config(ROOT / "configs" / config, sets)
    needed = check_capacity(loaded).needed
    hw = build_hardware(loaded)
    report = run(loaded, hardware=hw)
    stored = {key: (s.row_tiles, s.col_tiles) for key, s in hw.macro.matrices().items()}
    assert _stored_layout(loaded, hw) == stored  # the same matrices, tiled the same way
    assert needed == hw.macro.subarrays_used == report.metrics["subarrays_used"]
    return needed


@pytest.mark.parametrize(
    ("config", "sets"),
    [
        ("sas_mram_repnet.yaml", SMALL_CNN),  # per-task side modules, grouped convs stored group by group
        ("sas_mram_repnet.yaml", [*SMALL_CNN, "circuit.dataflow.input_grad=transposed_copy",
                                  "workload.repnet.per_task=false"]),
        ("reram_lora.yaml", SMALL_LORA),
        ("reram_lora.yaml", [*SMALL_LORA, "workload.adapter_memory=sram"]),
        ("reram_lorafusion.yaml", SMALL_LORA),
    ],
)
def test_needed_total_is_what_a_functional_run_stores(config, sets):
    _check_matches_the_run(config, sets)


@pytest.mark.parametrize(
    ("config", "sets"),
    [
        ("sas_mram_repnet_mobilenetv2_cost.yaml", SMALL_MOBILENET),  # grouped convs packed block-diagonally
        ("reram_lora_bert_mini_cost.yaml", SMALL_BERT),
        ("reram_lorafusion_bert_mini_cost.yaml", SMALL_BERT),
    ],
)
def test_needed_total_is_what_a_cost_only_run_stores(config, sets):
    _check_matches_the_run(config, sets)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_need_what_their_golden_runs_used(config):
    golden = json.loads((ROOT / "tests" / "golden" / f"{config.stem}.json").read_text())
    cap = check_capacity(load_config(config, golden["smoke_settings"]))
    assert cap.fits
    assert cap.needed == golden["metrics"]["subarrays_used"]
    assert sum(cap.parts.values()) == cap.needed


@pytest.mark.parametrize(("config", "sets"), [("sas_mram_repnet.yaml", []),
                                              ("sas_mram_repnet_mobilenetv2_cost.yaml", []),
                                              ("reram_lora_bert_mini_cost.yaml", [])])
def test_exactly_the_needed_total_fits_and_one_less_does_not(config, sets):
    path = ROOT / "configs" / config
    needed = check_capacity(load_config(path, sets)).needed
    cap = check_capacity(load_config(path, [*sets, f"{KEY}={needed}"]))
    assert cap.fits
    assert cap.needed == cap.available == needed
    loaded = load_config(path, [*sets, f"{KEY}={needed - 1}"])
    with pytest.raises(InputError) as err:
        check_capacity(loaded)
    assert err.value.key == KEY
    assert err.value.file == loaded.where(KEY)
    assert f"needs {needed} " in err.value.message
    assert f"at least {needed} " in err.value.message
    assert f"has {needed - 1};" in err.value.message


def test_the_message_gives_the_total_by_part_and_the_file_that_set_the_key():
    loaded = load_config(MAIN, [f"{KEY}=4"])
    with pytest.raises(InputError) as err:
        check_capacity(loaded)
    msg = str(err.value)
    assert msg.startswith(f"--set: {KEY}: the workload needs 86 subarrays of 128 x 128 ")
    assert "(backbone 23, side modules 60, heads 3)" in msg
    assert "but the circuit has 4; raise circuit.array.n_subarrays to at least 86" in msg
    cost = load_config(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml")
    assert cost.where(KEY).endswith("reram_lora_bert_mini_cost.yaml")  # the config sets it, not --set
    with pytest.raises(InputError, match=r"needs 1728 crossbars .*\(base model 1536, adapters 192\)"):
        check_capacity(load_config(ROOT / "configs" / "reram_lora_bert_mini_cost.yaml", [f"{KEY}=100"]))


def test_a_baseline_that_needs_more_than_the_method_sets_the_total():
    sets = ["workload.method=full", "workload.baselines=[last_layer, repnet]"]
    bare = check_capacity(load_config(MAIN, ["workload.method=full", "workload.baselines=[]"]))
    assert bare.needed == 26  # backbone and heads only
    with pytest.raises(InputError, match=r"needs 86 subarrays .* with the baseline method repnet"):
        check_capacity(load_config(MAIN, [*sets, f"{KEY}=85"]))


def test_a_run_that_does_not_fit_fails_before_any_training():
    calls = []
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=f"{KEY}: the workload needs 86 subarrays"):
        run(load_config(MAIN, [f"{KEY}=85", "workload.baselines=[]"]), progress=lambda *a: calls.append(a))
    assert calls == []  # no training step ran
    assert time.perf_counter() - t0 < 30  # no pretraining either (it takes longer)


def test_a_grouped_layer_on_the_crossbar_in_cost_only_names_the_circuit_card():
    loaded = load_config(ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml",
                         ["device.card=reram_hfox_neurosim", "circuit.card=reram_crossbar_isaac_32nm"])
    with pytest.raises(InputError, match="grouped convolution") as err:
        check_capacity(loaded)
    assert err.value.key == "circuit.card"


def test_the_check_leaves_torch_random_state_alone():
    state = torch.get_rng_state()
    check_capacity(load_config(MAIN))
    check_capacity(load_config(ROOT / "configs" / "reram_lorafusion.yaml"))
    assert torch.equal(state, torch.get_rng_state())


def test_validate_refuses_a_workload_that_does_not_fit(capsys):
    assert main(["validate", str(MAIN), "--set", f"{KEY}=4"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"imcsim: error: --set: {KEY}: the workload needs 86 subarrays")


def test_validate_accepts_the_exact_total(capsys):
    assert main(["validate", str(MAIN), "--set", f"{KEY}=86"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "valid" in out
    assert "the workload needs 86 of 86 subarrays" in out


def test_source_channels_cover_every_data_source():
    from imcsim.workloads.continual import SOURCE_CHANNELS
    from imcsim.workloads.data import SOURCES, make_task

    assert set(SOURCE_CHANNELS) == set(SOURCES)
    task = make_task("t", [0, 1], "none", 16, 0.25, np.random.default_rng(0), max_per_class=2)
    assert task.channels == SOURCE_CHANNELS["digits"]
