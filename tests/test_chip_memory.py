"""The chip's memory: the global buffer model against published figures, DRAM and wire cards, placement of the
training tensors, traffic in energy and schedule, leakage with temperature, the duty cycle, bad input."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch

from imcsim.api import build_hardware, run
from imcsim.components.base import Technology
from imcsim.components.blocks import DigitalUnit
from imcsim.components.memory import GlobalBuffer, Interconnect
from imcsim.config import load_card, load_config
from imcsim.errors import InputError
from imcsim.ops import OpRecord
from imcsim.workloads.dataflow import LayerCall, LayerGraph, trace_dataflow
from imcsim.workloads.memory import training_memory
from imcsim.workloads.models import RepNet, TinyCNN
from imcsim.workloads.traffic import BufferTooSmall, buffer_traffic, place

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "configs" / "sas_mram_repnet.yaml"
MOBILENET = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
SMALL = ("workload.baselines=[]", "workload.cost_only.image_size=64")  # MobileNetV2 cost-only, one method, 64 x 64


def tech(node: str, vdd: str = "0.9 V") -> Technology:
    return Technology.model_validate({"node": node, "vdd": vdd, "clock": "1 GHz"})


def components(*sets: str):
    """The shipped bit-serial circuit card's components (validated), with ``--set``-style overrides."""
    card, _ = load_card("circuit", "bitserial_macro_28nm", list(sets))
    return card.components


def buffer(node: str, **fields) -> GlobalBuffer:
    return GlobalBuffer("global_buffer", components().global_buffer.model_copy(update=fields), tech(node))


def test_buffer_against_cacti_at_28nm():
    """CACTI 6.5 at 28 nm for an 8 KB bank with a 512-bit port (as listed for the Bitfusion accelerator's buffers):
    read 0.0347 pJ/bit, write 0.0486 pJ/bit. Tolerance: within 4x, below CACTI: this model counts bitlines, word
    lines, sense amplifiers and the H-tree, but not the decoders, precharge devices and output drivers CACTI adds.
    Writes cost more than reads in both (full-swing bitlines)."""
    gb = buffer("28 nm", capacity_kib=8, banks=1, bank_width_bits=512, subarray_rows=128, subarray_cols=512,
                column_mux=1)
    for model, cacti in ((gb.read_bit_j, 0.0347e-12), (gb.write_bit_j, 0.0486e-12)):
        assert cacti / 4 <= model <= cacti
    assert gb.write_bit_j > gb.read_bit_j


def test_buffer_grows_with_capacity_as_horowitz_table():
    """Horowitz, ISSCC 2014, 45 nm 0.9 V, a 64-bit read: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ (10x from 8 KB to
    1 MB, through the wire of the larger array). The model's 64-bit reads at 45 nm grow with capacity, and by
    5-20x from 8 KB to 1 MB. Absolute values are not compared: Horowitz's figures are cache reads (tags and
    several ways per access), a scratchpad buffer reads one word."""
    e = [buffer("45 nm", capacity_kib=kib, banks=1, bank_width_bits=64).read_bit_j * 64 for kib in (8, 32, 1024)]
    assert e[0] < e[1] < e[2]
    assert 5 <= e[2] / e[0] <= 20
    assert 1.2 <= e[1] / e[0] <= 3  # Horowitz: 2x


def test_buffer_refuses_nodes_and_organisations_outside_its_range():
    with pytest.raises(Exception, match="analytical SRAM model"):
        buffer("130 nm")
    with pytest.raises(Exception, match="activates"):
        buffer("28 nm", capacity_kib=8, banks=4, bank_width_bits=1024)


def test_buffer_area_and_leakage_follow_the_cells():
    gb = buffer("28 nm")
    bits = 2048 * 1024 * 8
    assert gb.area_m2 == pytest.approx(bits * 146 * (28e-9) ** 2 / 0.7)
    assert gb.leakage_w(298.0) == pytest.approx(bits * 20e-12 * 0.9)
    assert gb.leakage_w(298.0 + 19.0) == pytest.approx(2 * gb.leakage_w(298.0))  # doubles every 19 K


def test_digital_unit_reproduces_horowitz_ops():
    """Horowitz, ISSCC 2014, 45 nm 0.9 V: 8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ = an INT8 MAC; FP32 add 0.9 pJ,
    FP32 multiply 3.7 pJ, 8-bit add 0.03 pJ (a compare), 32-bit multiply 3.1 + 32-bit add 0.1 (requantising)."""
    unit = DigitalUnit("digital", components().digital_unit, tech("45 nm"))
    assert unit.e_mac_j == pytest.approx(0.2e-12 + 0.1e-12, rel=1e-9)
    expected = {"fp32_add": 0.9e-12, "fp32_mul": 3.7e-12, "compare": 0.03e-12, "requant": 3.2e-12}
    assert unit.e_op_j == pytest.approx(expected, rel=1e-9)


def test_wire_energy_against_keckler():
    """Keckler et al., IEEE Micro 2011, Table 1: 240 fJ per bit per mm per transition at 40 nm, 0.9 V (5 %)."""
    wire = Interconnect("interconnect", components().interconnect, tech("40 nm")).placed(4e-6)  # a 2 mm x 2 mm floorplan: 1 mm from the centre
    assert wire.distance_m == pytest.approx(1e-3)
    per_transition = wire.actions()["bit"].cost.energy_j / wire.card.activity
    assert per_transition == pytest.approx(240e-15, rel=0.05)


def test_dram_cards_match_their_standards():
    """JEDEC: LPDDR4-3200 x32 (two 16-bit channels) 12.8 GB/s; HBM2, 8 x 128 bits at 2 Gb/s, 256 GB/s. O'Connor et
    al., MICRO 2017: HBM2 3.92 pJ/bit."""
    lp = components().dram
    hbm = components("components.dram.card=dram_hbm2").dram
    assert lp.bits_per_s / 8 == pytest.approx(12.8e9)
    assert hbm.bits_per_s / 8 == pytest.approx(256e9)
    assert hbm.read_energy_per_bit_j == pytest.approx(3.92e-12)


def _call(name: str, in_e: int, out_e: int, kept: int, trainable: bool = True, samples: int = 2,
          producers=()) -> LayerCall:
    return LayerCall(name, 1, 1, 1, 1, samples, trainable, tuple(producers), True, in_elems=in_e, out_elems=out_e,
                     kept_bits=kept)


def test_placement_policies(small_hardware):
    macro = small_hardware.macro
    cap = macro.buffer.capacity_bits
    graph = LayerGraph([_call("a", 100, 100, cap // 4), _call("b", 100, 100, cap // 4, producers=[("a", False)]),
                        _call("c", 100, 100, cap, producers=[("b", False)])])
    first = place(graph, None, macro)
    assert first.policy == "on_chip_first"
    assert set(first.kept_in_dram) == {"c"}
    assert set(first.kept_on_chip) == {"a", "b"}  # last layer first, while fits
    macro.card = macro.card.model_copy(update={"memory": macro.card.memory.model_copy(update={"policy": "dram"})})
    assert set(place(graph, None, macro).kept_in_dram) == {"a", "b", "c"}
    macro.card = macro.card.model_copy(update={"memory": macro.card.memory.model_copy(update={"policy": "on_chip"})})
    with pytest.raises(BufferTooSmall, match="on_chip keeps"):
        place(graph, None, macro)
    huge = LayerGraph([_call("big", cap, cap, 0, samples=1)])
    with pytest.raises(BufferTooSmall, match=r"layer 'big' needs .* for one sample"):
        place(huge, None, macro)


def test_buffer_traffic_per_phase():
    """Forward: read the input, write the output; input gradient: read dy, write dx; weight gradient: the kept
    input (dy already read)."""
    t = buffer_traffic(_call("a", 10, 20, 80), scale=1.0)
    assert t["forward"][("global_buffer", "read_bit")] == 80
    assert t["forward"][("global_buffer", "write_bit")] == 160
    assert t["input_grad"][("global_buffer", "read_bit")] == 160
    assert t["input_grad"][("global_buffer", "write_bit")] == 80
    assert t["weight_grad"][("global_buffer", "read_bit")] == 80
    assert t["forward"][("interconnect", "bit")] == 240


def test_kept_bits_per_layer_add_up_to_the_training_memory():
    """What the dataflow trace charges to each layer is what the memory trace keeps, for a frozen and a
    trainable network (batch norms in training mode keep their inputs, ReLUs their masks)."""
    for frozen_backbone in (False, True):
        torch.manual_seed(0)
        net = RepNet(TinyCNN(width=8), [0, 2], 8, 16)
        net.add_head("t", 4)
        net.train()
        if frozen_backbone:  # Rep-Net: the backbone frozen, its batch norms on running statistics
            for p in net.backbone.parameters():
                p.requires_grad_(False)
            net.backbone.eval()
        meta = copy.deepcopy(net).to("meta")
        x = torch.empty(4, 1, 16, 16, device="meta")
        graph = trace_dataflow(meta, lambda x=x, meta=meta: meta(x, "t"), samples=4)
        mem = training_memory(meta.parameters(), lambda x=x, meta=meta: meta(x, "t"), momentum=True)
        assert sum(c.kept_bits for c in graph.calls) == mem.kept
        assert all(c.in_elems > 0 for c in graph.calls)
        assert all(c.out_elems > 0 for c in graph.calls)


def _run(path: Path, *sets: str):
    return run(load_config(path, overrides=list(sets)))


@pytest.fixture(scope="module")
def mobilenet_methods():
    """MobileNetV2 cost-only at 64 x 64: Rep-Net and full fine-tuning on the same chip."""
    return {m: _run(MOBILENET, f"workload.method={m}", "workload.baselines=[]",
                    "workload.cost_only.image_size=64") for m in ("repnet", "full")}


def test_methods_differ_in_energy_as_their_memory_differs(mobilenet_methods):
    rep, full = mobilenet_methods["repnet"].metrics, mobilenet_methods["full"].metrics
    assert full["memory_activations_kept_bytes"] > 5 * rep["memory_activations_kept_bytes"]
    assert full["dram_traffic_per_step_bytes"] > 5 * rep["dram_traffic_per_step_bytes"]
    assert full["energy_train_dram_j"] > 5 * rep["energy_train_dram_j"]
    for m in (rep, full):  # the levels add up to the total
        levels = sum(m[f"energy_train_{lv}_j"] for lv in
                     ("array", "periphery", "buffer", "dram", "interconnect", "digital", "leakage"))
        assert levels == pytest.approx(m["energy_train_j"], rel=1e-9)
        assert m["tops_per_watt_train_on_chip"] > m["tops_per_watt_train"]


def test_slow_dram_lengthens_the_critical_path():
    """The same step with a DRAM 1000x slower: the transfers (on their own resource) lengthen the step by at least
    their time over the channel, less what they overlap (here: most of it, they are longer than the compute)."""
    fast = _run(MOBILENET, *SMALL, "workload.method=full").metrics
    slow = _run(MOBILENET, *SMALL, "workload.method=full", "circuit.components.dram.data_rate=3.2 MHz").metrics
    bits = fast["dram_traffic_per_step_bytes"] * 8
    t_dram = bits / (3.2e6 * 16 * 2)
    assert slow["latency_per_step_s"] >= 0.5 * t_dram
    assert slow["latency_per_step_s"] > fast["latency_per_step_s"] + 0.4 * t_dram
    assert slow["energy_train_leakage_j"] > fast["energy_train_leakage_j"]  # static power over the longer time
    assert slow["utilization_dram"] > 0.5 > fast["utilization_dram"]  # the slow DRAM is busy most of the step


def test_leakage_enters_the_energy_and_grows_with_temperature():
    ungated = "circuit.components.power_gating.policy=never"
    cool = _run(MOBILENET, *SMALL, ungated).metrics
    hot = _run(MOBILENET, *SMALL, ungated, "run.temperature=357 K").metrics
    assert cool["energy_train_leakage_j"] == pytest.approx(cool["power_static_w"] * cool["latency_train_s"],
                                                           rel=1e-6)
    # the buffer's cells double every 19 K (57 K above 300 K: 8x); the logic follows the LSTP corner's off
    # current, 20.6 pA/um at 300 K and 744 pA/um at 400 K (CACTI 32 nm): (744 / 20.6)^0.57; DRAM is not
    # temperature-set
    hw = build_hardware(load_config(MAIN))
    cool_parts, hot_parts = hw.macro.static_power_w(300.0), hw.macro.static_power_w(357.0)
    assert hot_parts["buffer"] == pytest.approx(8 * cool_parts["buffer"])
    assert hot_parts["periphery"] == pytest.approx((744 / 20.6) ** 0.57 * cool_parts["periphery"])
    assert hot_parts["dram"] == cool_parts["dram"]
    assert hot["power_static_w"] > cool["power_static_w"]
    # the junctions' TMR falls with temperature, so the AP read current and the array's read energy rise
    assert hot["energy_train_array_j"] > cool["energy_train_array_j"]
    assert hot["energy_train_periphery_j"] == pytest.approx(cool["energy_train_periphery_j"], rel=1e-9)


def test_duty_cycle_energy_per_day_and_sram_holds_its_weights():
    sets = (*SMALL, "run.train_time_per_day=7200 s")
    mram = _run(MOBILENET, *sets).metrics
    sram = _run(MOBILENET, *sets, "device.card=sram_6t_28nm").metrics
    for m in (mram, sram):
        p_train = m["energy_train_j"] / m["latency_train_s"]
        assert m["energy_per_day_j"] == pytest.approx(p_train * 7200 + m["power_idle_w"] * (86400 - 7200), rel=1e-9)
    assert sram["power_idle_w"] > mram["power_idle_w"]  # volatile cells must stay powered to hold the weights


def test_buffer_too_small_is_refused_naming_the_key(tmp_path, capsys):
    from imcsim.cli import main
    code = main(["run", str(MOBILENET), "--set", "circuit.components.global_buffer.capacity_kib=32", "--set",
          "circuit.components.global_buffer.banks=1",
          *(x for s in SMALL for x in ("--set", s)), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(r"circuit\.components\.global_buffer\.capacity_kib: .* needs .* for one sample's input and "
                     r"output; raise .* to at least \d+", err[0])
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"capacity_kib: memory.policy on_chip keeps"):
        _run(MOBILENET, *SMALL, "circuit.memory.policy=on_chip", "workload.method=full")


def test_dram_ops_are_transfers_of_their_own():
    macro = build_hardware(load_config(MAIN)).macro
    op = macro.dram_transfer(1000, 24, "forward", "x", "spill")
    assert isinstance(op, OpRecord)
    assert op.kind == "transfer"
    assert op.counts[("dram", "read_bit")] == 1000
    assert op.counts[("interconnect", "bit")] == 1024
    per_cycle = 3200e6 * 16 * 2 * macro.t_cycle_s  # LPDDR4-3200, two 16-bit channels
    assert op.cycles == math.ceil(1024 / per_cycle)


def test_idle_break_even_between_a_volatile_and_a_non_volatile_chip():
    """A session costs E + P_idle t after it: the lower-idle-power run wins past (E_b - E_a) / (P_a - P_b)."""
    from imcsim.compare import idle_break_even

    assert idle_break_even(1.0, 2e-3, 3.0, 1e-3) == pytest.approx(2000.0)  # costlier session, lower idle power
    assert idle_break_even(1.0, 2e-3, 0.5, 1e-3) == 0.0  # lower from the start
    assert idle_break_even(1.0, 1e-3, 3.0, 2e-3) is None  # never
    assert idle_break_even(1.0, 1e-3, 3.0, 1e-3) is None
    assert idle_break_even(3.0, 1e-3, 1.0, 2e-3) is None  # cheaper session, higher idle power: not in the long run
    assert idle_break_even(3.0, 1e-3, 1.0, 1e-3) == 0.0


def test_compare_reports_the_idle_break_even(tmp_path):
    from imcsim.compare import idle_break_even_lines
    from imcsim.report import Report

    def report(energy: float, idle: float) -> Report:
        return Report(schema_version=1, imcsim_version="0", name="x", config_hash="", seed=0, config={},
                      metrics={"energy_train_j": energy, "power_idle_w": idle}, costs={}, action_descriptions={},
                      tables={})

    lines = idle_break_even_lines(["sram", "mram"], [report(1.0, 2e-3), report(3.0, 1e-3)])
    assert len(lines) == 1
    assert lines[0].startswith("mram vs sram, training session + idle: lower once idle longer than")
    # a cheaper session on a chip that idles at a higher power (SRAM beside the array): lower only for a while
    lines = idle_break_even_lines(["mram", "hybrid"], [report(3.0, 1e-3), report(1.0, 2e-3)])
    assert lines == ["hybrid vs mram, training session + idle: lower while idle less than 2 ks, then higher "
                     "(its idle power is higher)"]


def test_traffic_is_reported_per_tensor_and_per_layer(mobilenet_methods):
    """tables.traffic splits the step's buffer and DRAM bytes by tensor; layers.csv by layer; both add up."""
    for report in mobilenet_methods.values():
        m, tables = report.metrics, report.tables
        per_step = [r for r in tables["traffic"] if r["basis"] == "per step"]
        dram = sum(r["dram_read_bytes"] + r["dram_write_bytes"] for r in per_step)
        buffer = sum(r["buffer_read_bytes"] + r["buffer_write_bytes"] for r in per_step)
        assert dram == pytest.approx(m["dram_traffic_per_step_bytes"], rel=1e-9)
        assert buffer == pytest.approx(m["buffer_traffic_per_step_bytes"], rel=1e-9)
        assert sum(r["dram_traffic_per_step_bytes"] for r in tables["layers"]) == pytest.approx(dram, rel=1e-9)
        tensors = {r["tensor"] for r in per_step}
        assert {"activations", "errors", "input batch", "master weights and optimizer state"} <= tensors
        deploy = [r for r in tables["traffic"] if r["basis"] == "deployment"]
        assert [r["tensor"] for r in deploy] == ["weights"]
        stored = sum(r["params"] for r in tables["layers"] if r["subarrays"])
        assert deploy[0]["dram_read_bytes"] == pytest.approx(stored, rel=1e-9)  # every stored INT8 weight, once
    spilled = {name: sum(r["dram_write_bytes"] for r in rep.tables["traffic"] if r["tensor"] == "kept activations")
               for name, rep in mobilenet_methods.items()}
    assert spilled["full"] > spilled["repnet"]  # full fine-tuning keeps every layer's input, and spills it


def test_a_sample_working_set_leaves_room_for_kept_activations():
    """MobileNetV2 at 224 x 224, batch 8: its largest whole-batch working set fills the 2 MiB buffer, so nothing
    else stays on chip; reserving one sample's working set keeps part of the kept activations in the buffer."""
    sets = ["workload.baselines=[]", "workload.method=full"]
    batch = run(load_config(MOBILENET, sets))
    sample = run(load_config(MOBILENET, [*sets, "circuit.memory.working_set=sample"]))
    assert batch.metrics["memory_buffer_state_bytes"] == 0
    assert sample.metrics["memory_buffer_state_bytes"] > 0
    assert sample.metrics["dram_traffic_per_step_bytes"] < batch.metrics["dram_traffic_per_step_bytes"]
