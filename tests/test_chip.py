"""A chip of several macros: placement of layers by policy, each macro's own cells and periphery in the counts,
lifetime by the macro that wears first, inter-macro traffic, and bad placements refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imcsim.api import build_hardware, check_capacity, run
from imcsim.config import load_config
from imcsim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
MOBILENET = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
SMALL = ["workload.baselines=[]", "workload.cost_only.image_size=64"]
SRAM = ["chip.macros.sram.device.card=sram_6t_28nm", "chip.macros.sram.circuit.card=bitserial_macro_28nm",
        "chip.macros.sram.circuit.array.n_subarrays=512"]
TRAINABLE_IN_SRAM = [*SRAM, "chip.placement.policy=trainable", "chip.placement.macro=sram"]


def _run(*sets: str):
    return run(load_config(MOBILENET, [*SMALL, *sets]))


@pytest.fixture(scope="module")
def single_and_chip():
    return _run(), _run(*TRAINABLE_IN_SRAM)


def test_trainable_layers_in_sram_leave_the_mram_unwritten(single_and_chip):
    """Rep-Net on a SAS-MRAM backbone macro with its side modules and heads in an SRAM macro: no MRAM write
    pulse during training, the SRAM cells carry the writes (no write wear: only the backbone's read stress, far
    beyond any run, bounds the lifetime), the backbone's
    work is the same, and the SRAM macro's own components appear under its name."""
    single, chip = single_and_chip
    s, c = single.metrics, chip.metrics
    assert s["write_pulses"] > 0
    assert c["write_pulses"] == 0  # SRAM writes are not pulses; the MRAM is never rewritten
    assert c["cells_ever_written"] > 0
    assert s["lifetime_steps"] < float("inf")
    assert c["lifetime_steps"] > 1e6 * s["lifetime_steps"]
    components = {comp for (comp, _), _ in chip.costs["train"].energy_j.items()}
    assert {"sram.sram_cell", "sram.sense_amp"} <= components
    assert "sas_group" in components
    levels = sum(c[f"energy_train_{lv}_j"] for lv in ("array", "periphery", "buffer", "dram", "interconnect",
                                                      "digital", "leakage"))
    assert levels == pytest.approx(c["energy_train_j"], rel=1e-9)
    assert c["area_m2"] > s["area_m2"]  # the SRAM macro's subarrays and periphery
    assert c["power_idle_w"] > s["power_idle_w"]  # its volatile cells hold the trained weights between sessions
    assert c["inter_macro_traffic_per_step_bytes"] > 0
    assert "inter_macro_traffic_per_step_bytes" not in s
    assert c["macs_train_per_step"] == s["macs_train_per_step"]


def test_placement_by_name_and_the_macro_each_layer_lands_in():
    loaded = load_config(MOBILENET, [*SMALL, *SRAM, "chip.placement.policy=by_name",
                                     "chip.placement.layers.head*=sram"])
    hw = build_hardware(loaded)
    check_capacity(loaded, hw)
    assert hw.macro.macro_of("head.digits_5_9") == "sram"
    assert hw.macro.macro_of("backbone.b0.conv") == "main"
    assert hw.macro.macro_of("head.digits_5_9.g0") == "sram"  # a stored group of the layer


@pytest.mark.parametrize(("sets", "key", "text"), [
    ([*SRAM, "chip.placement.policy=trainable", "chip.placement.macro=nosuch"], "chip.placement.macro",
     "names no macro"),
    ([*SRAM, "chip.placement.policy=by_name", "chip.placement.layers.nosuch*=sram"], "chip.placement.layers.nosuch*",
     "matches no layer"),
    ([*SRAM, "chip.placement.policy=by_name", "chip.placement.layers.head*=other"], "chip.placement.layers.head*",
     "names no macro"),
    (["chip.macros.main.device.card=sram_6t_28nm"], "chip.macros.main", "not 'main'"),
    ([*SRAM, "chip.macros.sram.extra=1"], "chip.macros.sram.extra", "unknown key"),
    ([*TRAINABLE_IN_SRAM, "chip.macros.sram.circuit.array.n_subarrays=1"],
     "chip.macros.sram.circuit.array.n_subarrays", "subarrays"),
])
def test_bad_placements_are_refused_naming_the_key(sets, key, text):
    with pytest.raises(InputError) as info:
        run(load_config(MOBILENET, [*SMALL, *sets]))
    assert info.value.key == key
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_the_cli_refuses_a_bad_placement_with_exit_2(tmp_path, capsys):
    from imcsim.cli import main

    code = main(["run", str(MOBILENET), *(x for s in [*SMALL, *SRAM, "chip.placement.policy=trainable",
                                                       "chip.placement.macro=nosuch"] for x in ("--set", s)),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "chip.placement.macro" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_single_macro_config_hashes_as_before_the_chip_section():
    """Adding the chip section changes nothing for a run without further macros."""
    loaded = load_config(MOBILENET)
    assert "chip" not in loaded.resolved


@pytest.mark.slow
def test_functional_training_on_a_chip_learns_as_on_one_macro():
    """The arithmetic is exact in both macros: the same seed trains to the same accuracy with the trainable
    layers in SRAM, while the MRAM is never rewritten."""
    smoke = ["workload.train.epochs=1", "workload.pretrain.epochs=2", "workload.baselines=[]"]
    main = ROOT / "configs" / "sas_mram_repnet.yaml"
    single = run(load_config(main, smoke)).metrics
    chip = run(load_config(main, [*smoke, "chip.macros.sram.device.card=sram_6t_28nm",
                                  "chip.placement.policy=trainable", "chip.placement.macro=sram"])).metrics
    assert chip["accuracy_average"] == pytest.approx(single["accuracy_average"], abs=1e-9)
    assert chip["write_pulses"] == 0
    assert single["write_pulses"] > 0
