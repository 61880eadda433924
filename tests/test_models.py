"""Any network in: model sources, automatic mapping, Rep-Net on any backbone, provenance, sampled writes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from imcsim.api import run
from imcsim.config import load_config
from imcsim.errors import InputError
from imcsim.models.mapping import MappingError, array_modules, map_to_array
from imcsim.workloads.dataflow import UnmappedGemm, trace_dataflow
from imcsim.workloads.int8 import IMCConv2d, IMCLinear

ROOT = Path(__file__).resolve().parents[1]
COST = ROOT / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
# A small cost-only run of one method on a user's model: the shapes are what matter here.
SMALL = ["workload.baselines=[]", "workload.method=full", "workload.repnet.side_blocks=[]",
         "workload.cost_only.image_size=16", "workload.cost_only.batch_size=2", "circuit.array.n_subarrays=4096"]

PLAIN_CNN = '''
import torch
from torch import nn


def build(width=8, classes=10):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 1, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, classes))
'''


def _user_file(tmp_path: Path, body: str, name: str = "my_model.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def _table(report) -> list[tuple]:
    """The per-layer table without names: shape, parameters, trainable, MACs."""
    return [(r["shape"], r["params"], r["trainable"], r["macs_forward_per_step"], r["macs_train_per_step"])
            for r in report.tables["layers"]]


def _refused(capsys, *args) -> str:
    from imcsim.cli import main

    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# --- mapping --------------------------------------------------------------------------------------------------


def test_plain_layers_map_to_imc_layers_with_their_weights_and_the_same_outputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, (3, 5), stride=(1, 2), padding=(1, 2), dilation=1, groups=3, bias=True),
                          nn.ReLU(), nn.Conv2d(6, 4, 3, padding=2, dilation=2), nn.Flatten(), nn.Linear(4 * 8 * 4, 5))
    x = torch.randn(2, 3, 8, 8)
    want = model(x)
    mapped = map_to_array(model, prefix="net.")
    assert [type(m) for m in array_modules(mapped)] == [IMCConv2d, IMCConv2d, IMCLinear]
    assert [m.name for m in array_modules(mapped)] == ["net.0", "net.2", "net.4"]
    assert torch.allclose(mapped(x), want, atol=1e-6)
    graph = trace_dataflow(mapped, lambda: mapped(x), samples=2)
    conv = graph["net.0"]
    assert (conv.m, conv.k, conv.n, conv.groups) == (2 * 8 * 4, 1 * 3 * 5, 2, 3)  # per group: C/g*kh*kw x out/g


@pytest.mark.parametrize("layer", [nn.Conv1d(3, 4, 3), nn.LSTM(4, 4), nn.ConvTranspose2d(3, 3, 2),
                                   nn.MultiheadAttention(8, 2)])
def test_a_layer_with_weights_imcsim_cannot_map_is_an_error_naming_it(layer):
    model = nn.Sequential(nn.Conv2d(3, 3, 1), layer)
    with pytest.raises(MappingError, match=rf"'1' \({type(layer).__name__}\)"):
        map_to_array(model)


def test_a_model_that_maps_nothing_to_the_array_is_an_error():
    with pytest.raises(MappingError, match="maps no layer to the array"):
        array_modules(map_to_array(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))))


def test_a_gemm_with_a_weight_outside_a_mapped_layer_is_refused_by_the_tracer():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x):
            return self.lin(x) @ self.w

    model = map_to_array(Custom())
    x = torch.ones(2, 4)
    with pytest.raises(UnmappedGemm, match="module 'model' multiplies by a weight of its own"):
        trace_dataflow(model, lambda: model(x), samples=2)


# --- model sources through a run ------------------------------------------------------------------------------


def test_a_plain_torch_model_and_the_equivalent_zoo_model_give_the_same_layer_table():
    """The zoo's mobilenet_v2 (IMC layers by construction) and the plain-torch MobileNetV2 of the model zoo, given
    as a Python factory: same shapes, parameters, trainability and MACs, layer by layer."""
    sets = ["workload.baselines=[]", "workload.cost_only.image_size=64", "workload.cost_only.batch_size=2"]
    zoo = run(load_config(COST, sets))
    plain = run(load_config(COST, [*sets, "workload.model.source=python",
                                   "workload.model.factory=imcsim.models.zoo:build_mobilenet_v2"]))
    assert _table(plain) == _table(zoo)
    assert plain.metrics["energy_train_j"] == pytest.approx(zoo.metrics["energy_train_j"], rel=1e-9)
    assert plain.tables["model"]["architecture_hash"] != zoo.tables["model"]["architecture_hash"]  # other names
    assert zoo.tables["model"]["source"] == "zoo"
    assert plain.tables["model"]["source"] == "python"


def test_torch_to_onnx_to_imcsim_gives_the_same_layer_table(tmp_path):
    import importlib.util

    path = _user_file(tmp_path, PLAIN_CNN)
    spec = importlib.util.spec_from_file_location("plain_cnn_for_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), tmp_path / "m.onnx", dynamo=False)
    by_factory = run(load_config(COST, [*SMALL, "workload.model.source=python",
                                        f"workload.model.factory={path}:build"]))
    by_onnx = run(load_config(COST, [*SMALL, "workload.model.source=onnx", f"workload.model.path={tmp_path}/m.onnx"]))
    assert _table(by_onnx) == _table(by_factory)
    stored = [r for r in by_onnx.tables["layers"] if r["params"]]
    assert len(stored) == 4  # three convs and the task head (the model's own classifier replaced)
    from imcsim.models.onnx_import import onnx_digest

    assert by_onnx.tables["model"]["file_sha256"] == onnx_digest(tmp_path / "m.onnx")


def test_a_factory_file_is_found_relative_to_the_config_and_hashed_by_content(tmp_path):
    _user_file(tmp_path, PLAIN_CNN)
    config = tmp_path / "run.yaml"
    config.write_text(COST.read_text().replace("  card: repnet_mobilenetv2_224\n",
                                               "  card: repnet_mobilenetv2_224\n  model: {source: python, "
                                               "factory: 'my_model.py:build', kwargs: {width: 8}}\n"))
    first = load_config(config, SMALL)
    assert Path(first.config.workload.model.factory.rpartition(":")[0]) == tmp_path / "my_model.py"
    report = run(first)
    assert report.tables["model"]["kwargs"] == {"width": 8}
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "my_model.py").write_text(PLAIN_CNN)
    (moved / "run.yaml").write_text(config.read_text())
    assert load_config(moved / "run.yaml", SMALL).config_hash == first.config_hash  # the same content
    (moved / "my_model.py").write_text(PLAIN_CNN.replace("2 * width", "3 * width"))
    assert load_config(moved / "run.yaml", SMALL).config_hash != first.config_hash  # another model


@pytest.mark.parametrize(("body", "key", "words"), [
    ("from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(768, 10))\n",
     "workload.model", "maps no layer to the array"),
    ("from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.Conv1d(4, 4, 3), "
     "nn.Flatten(), nn.Linear(776, 2))\n", "workload.model", "'2' (Conv1d) has weights imcsim does not map"),
    ("from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))\n",
     "workload.model", "fails on a (2, 3, 16, 16) input"),
    ("def build():\n    return 3\n", "workload.model.factory", "not a torch nn.Module"),
    ("raise RuntimeError('broken file')\n", "workload.model.factory", "RuntimeError: broken file"),
])
def test_a_user_model_imcsim_cannot_use_is_one_line_naming_the_key(tmp_path, capsys, body, key, words):
    path = _user_file(tmp_path, body)
    sets = [x for s in [*SMALL, "workload.model.source=python", f"workload.model.factory={path}:build"]
            for x in ("--set", s)]
    line = _refused(capsys, "run", str(COST), "--out", str(tmp_path / "out"), "--quiet", *sets)
    assert f": {key}: " in line
    assert words in line
    assert not (tmp_path / "out").exists()


def test_a_corrupt_or_unsupported_onnx_file_is_one_line_naming_the_file_and_the_node(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not protobuf \xff\xfe")
    sets = [x for s in [*SMALL, "workload.model.source=onnx", f"workload.model.path={bad}"] for x in ("--set", s)]
    line = _refused(capsys, "run", str(COST), "--quiet", "--out", str(tmp_path / "o"), *sets)
    assert "workload.model.path" in line
    assert "bad.onnx" in line
    node = helper.make_node("NonMaxSuppression", ["x", "y"], ["z"], name="nms_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4]),
                                            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1])],
                              [helper.make_tensor_value_info("z", TensorProto.INT64, [1, 3])])
    unsupported = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), unsupported)
    sets = [x for s in [*SMALL, "workload.model.source=onnx", f"workload.model.path={unsupported}"]
            for x in ("--set", s)]
    line = _refused(capsys, "run", str(COST), "--quiet", "--out", str(tmp_path / "o"), *sets)
    assert "nms.onnx" in line
    assert "nms_node" in line
    assert "NonMaxSuppression" in line


def test_an_unknown_zoo_network_and_a_missing_source_field_are_refused_at_load():
    with pytest.raises(InputError, match=r"workload\.model\.arch: unknown zoo network 'resnet19'; valid: .*resnet18"):
        load_config(COST, ["workload.model.arch=resnet19"])
    with pytest.raises(InputError, match=r"workload\.model\.path: source onnx needs a path"):
        load_config(COST, ["workload.model.source=onnx"])


# --- Rep-Net on any backbone ----------------------------------------------------------------------------------


def _side(cin: int, cout: int, k: int, groups: int) -> int:
    """Parameters of one Rep-Net side module of the reference code (ProgramModule): conv k x k (in -> mid, groups),
    BN, conv 1x1 (mid -> out), BN, with mid = the input channels rounded up to a multiple of 8."""
    mid = max(8, (cin + 4) // 8 * 8)
    return cin // groups * mid * k * k + 2 * mid + mid * cout + 2 * cout


def _side_params(arch: str, points: list[int], sets: list[str] = ()) -> int:
    loaded = load_config(COST, ["workload.baselines=[]", f"workload.model.arch={arch}",
                                f"workload.repnet.side_blocks={points}", *sets])
    from imcsim.workloads.continual import backbone_of, repnet_model

    card = loaded.config.workload
    with torch.device("meta"):
        model = repnet_model(card, backbone_of(card, 3, 224, weights=False), 224)
    return sum(p.numel() for p in model.sides.parameters())


def test_repnet_side_modules_on_mobilenet_v2_follow_the_reference_plan():
    """MobiProgramNet (mobilenetv2): modules at features 2, 4, 7, 11, 14, 17; the first reads the image (3
    channels, groups 1) at 56 x 56; the others read the block input: 24 @ 56, 32 @ 28, 64 @ 14, 96 @ 14,
    160 @ 7 (kernel 3 at 7 x 7); outputs 24, 32, 64, 96, 160, 320 channels."""
    by_hand = (_side(3, 24, 5, 1) + _side(24, 32, 5, 2) + _side(32, 64, 5, 2) + _side(64, 96, 5, 2)
               + _side(96, 160, 5, 2) + _side(160, 320, 3, 2))
    assert by_hand == 380_072
    assert _side_params("mobilenet_v2", [2, 4, 7, 11, 14, 17]) == by_hand


def test_repnet_side_modules_on_proxylessnas_mobile_follow_the_reference_plan():
    """ProgramNet (proxyless_mobile): modules at reference blocks 1, 5, 9, 13, 17, 21 (our 2, 4, 8, 12, 16, 20):
    the first reads the image (3 -> 32, groups 1, at 56 x 56), then 32 -> 40, 40 -> 80, 80 -> 96, 96 -> 192,
    192 -> 320. The reference code gives module 17 kernel 3 (its size list has 7 there, the block's output
    size), while the rule it states (kernel 3 where the module's input map is 7 x 7) gives 5 at the 14 x 14
    input: the rule is the default, and a per-module override reproduces the code exactly."""
    rule = (_side(3, 32, 5, 1) + _side(32, 40, 5, 2) + _side(40, 80, 5, 2) + _side(80, 96, 5, 2)
            + _side(96, 192, 5, 2) + _side(192, 320, 3, 2))
    code = rule - _side(96, 192, 5, 2) + _side(96, 192, 3, 2)
    points = [2, 4, 8, 12, 16, 20]
    assert _side_params("proxylessnas_mobile", points) == rule == 489_192
    assert _side_params("proxylessnas_mobile", points, ["workload.repnet.overrides={'16': {kernel: 3}}"]) == code


def test_side_modules_attach_by_module_name_on_a_backbone_without_blocks(tmp_path):
    path = _user_file(tmp_path, PLAIN_CNN)
    report = run(load_config(COST, [*SMALL, "workload.method=repnet", "workload.model.source=python",
                                    f"workload.model.factory={path}:build", "workload.repnet.side_blocks=['3', '6']"]))
    sides = [r for r in report.tables["layers"] if r["module"].startswith("side.")]
    assert len(sides) == 4
    assert all(r["trainable"] for r in sides)
    with pytest.raises(InputError, match=r"workload.repnet.side_blocks: block index 2: this backbone has no blocks"):
        run(load_config(COST, [*SMALL, "workload.method=repnet", "workload.model.source=python",
                               f"workload.model.factory={path}:build", "workload.repnet.side_blocks=[2]"]))


# --- adapters at real size -------------------------------------------------------------------------------------


def test_lora_and_lorafusion_trainable_counts_at_flan_t5_large_size():
    """Flan-T5-large: adapters on q and v of 24 encoder self-attentions, 24 decoder self-attentions and 24
    cross-attentions = 144 linears of 1024 -> 1024; rank 16; pool of 20; 48 blocks; a 2-class head."""
    from imcsim.workloads.adaptation import COST_TASK, KIND, _adapted_model
    from imcsim.workloads.trainer import method_for, trained_parameters
    from imcsim.workloads.transformer import lora_trainable_params, lorafusion_trainable_params

    adapters_lora = 144 * 16 * (1024 + 1024)
    adapters_fusion = 48 * 20 + 144 * 1024
    head = 1024 * 2 + 2
    assert (adapters_lora, adapters_fusion) == (4_718_592, 148_416)
    for method, count, want in (("lora", lora_trainable_params, adapters_lora),
                                ("lorafusion", lorafusion_trainable_params, adapters_fusion)):
        card = load_config(ROOT / "configs" / f"reram_{method}_flan_t5_large_cost.yaml").config.workload
        model, _ = _adapted_model(card, card.cost_only.model, [(COST_TASK, 2)])
        trained_parameters(model, method_for(KIND, method))
        assert count(model) == want
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == want + head


# --- sampled programming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["sas_mram_repnet.yaml", "reram_lora.yaml"])
def test_a_programmed_row_sample_scales_to_the_cell_by_cell_counts_of_the_whole(config):
    """Writing a 1024 x 64 matrix cell by cell, and a 256-row sample of it scaled by 4, count alike: within 6 %,
    three standard deviations of the sample's count of changed weights (a wrong scale is off by 25 % or more)."""
    from imcsim.api import build_hardware

    rng = np.random.default_rng(0)
    w = np.clip(np.rint(rng.normal(0, 34, (1024, 64))), -128, 127).astype(np.int8)
    new = np.clip(w.astype(np.int16) + (rng.random(w.shape) < 0.2) * rng.choice([-1, 1], w.shape), -128, 127
                  ).astype(np.int8)
    whole_hw, sample_hw = (build_hardware(load_config(ROOT / "configs" / config)) for _ in range(2))
    whole = [*whole_hw.macro.store("w", w), *whole_hw.macro.update_weights("w", new)]
    sample = [*sample_hw.macro.store("w", w[:256], rows=1024), *sample_hw.macro.update_weights("w", new[:256])]
    assert sample_hw.macro.subarrays_used == whole_hw.macro.subarrays_used  # the whole matrix is placed
    tol = 0.06
    for a, b in zip(whole, sample, strict=True):
        assert b.shape == a.shape
        assert b.cell_scale == 4.0
        assert b.changed_weights == pytest.approx(a.changed_weights, rel=tol)
        for key, n in a.counts.items():
            if n >= 1000:  # rare actions (a reset pulse on a cell that overshot) are noise in a sample
                assert b.counts.get(key, 0) == pytest.approx(n, rel=tol), key


def test_cost_only_programs_at_most_its_budget_of_weights_cell_by_cell():
    from imcsim.workloads.costonly import WRITE_BUDGET, WRITE_SAMPLE_MIN, sample_limit

    assert sample_limit(1) == 1 << 14
    assert sample_limit(10**6) == WRITE_SAMPLE_MIN
    assert sample_limit(1000) * 1000 <= WRITE_BUDGET


def test_report_json_records_the_model_and_its_architecture(tmp_path):
    from imcsim.cli import main

    out = tmp_path / "o"
    assert main(["run", str(COST), "--out", str(out), "--quiet",
                 *[x for s in [*SMALL, "workload.model.arch=vgg8_cifar", "workload.cost_only.image_size=32",
                                        "circuit.array.n_subarrays=6400"] for x in ("--set", s)]]) == 0
    report = json.loads((out / "report.json").read_text())
    model = report["tables"]["model"]
    assert model["source"] == "zoo"
    assert model["arch"] == "vgg8_cifar"
    assert len(model["architecture_hash"]) == 16
    assert model["array_layers"] == 8
    assert model["array_params"] == 12_973_440 - 10_240 + 1024 * 5
    header = (out / "layers.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["module", "shape", "params", "trainable"]


def test_weight_free_work_is_counted_per_element_and_charged_to_the_latest_layer():
    """conv -> BN in training mode (4 FP32 adds and 3 multiplies per element) -> ReLU (1 compare) -> 2x2 average
    pool (1 add per input element) -> linear: the digital work after the conv, forward; backward only where a
    gradient flows (frozen conv and BN, a trainable head: none). On running statistics a BN is a scale and shift."""
    from imcsim.workloads.dataflow import BN_EVAL_OPS, ELEMENTWISE_OPS, PER_INPUT_OPS

    assert ELEMENTWISE_OPS["batch_norm"] == {"fp32_add": 4, "fp32_mul": 3}
    assert ELEMENTWISE_OPS["relu"] == {"compare": 1}
    assert PER_INPUT_OPS["avg_pool2d"] == {"fp32_add": 1}
    assert BN_EVAL_OPS == {"fp32_add": 1, "fp32_mul": 1}
    model = map_to_array(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                                       nn.Flatten(), nn.Linear(4 * 4 * 4, 2)))
    x = torch.randn(2, 3, 8, 8)
    conv_out = 2 * 4 * 8 * 8
    graph = trace_dataflow(model, lambda: model(x), samples=2)
    work = (("compare", conv_out), ("fp32_add", 4 * conv_out + conv_out), ("fp32_mul", 3 * conv_out))
    assert (graph["0"].elementwise, graph["0"].elementwise_grad) == (work, work)
    model[0].requires_grad_(False)
    model[1].requires_grad_(False)
    frozen = trace_dataflow(model, lambda: model(x), samples=2)
    assert (frozen["0"].elementwise, frozen["0"].elementwise_grad) == (work, ())
    assert frozen["5"].elementwise == ()  # nothing after the last layer
    model.eval()  # running statistics: the BN scales and shifts
    evaluated = trace_dataflow(model, lambda: model(x), samples=2)
    assert dict(evaluated["0"].elementwise) == {"compare": conv_out, "fp32_add": 2 * conv_out, "fp32_mul": conv_out}


def test_a_run_re_costed_from_counts_already_made_equals_a_fresh_count():
    """Counting is separate from costing: a device point whose write counts are those of a run already made (the
    same SAS group, another pulse width and current) takes those counts, re-timed, and reports exactly what a
    fresh count reports; a device whose writes are stochastic (ReRAM) always counts anew."""
    from imcsim import api

    sets = ["workload.baselines=[last_layer]", "workload.cost_only.image_size=64", "workload.cost_only.batch_size=2"]
    point = [*sets, "device.write.t_set=3ns", "device.write.i_stt=150uA"]
    api._COUNTED.clear()
    fresh = run(load_config(COST, point))
    assert len(api._COUNTED) == 2  # the method and its baseline
    api._COUNTED.clear()
    run(load_config(COST, [*sets, "device.write.t_set=1ns"]))
    recosted = run(load_config(COST, point))
    assert len(api._COUNTED) == 2  # reused, not counted again
    assert recosted.metrics == pytest.approx(fresh.metrics, nan_ok=True, rel=1e-12)
    assert json.dumps(recosted.tables, sort_keys=True, default=str) == json.dumps(fresh.tables, sort_keys=True,
                                                                                  default=str)
    assert recosted.metrics["latency_train_update_s"] != pytest.approx(
        run(load_config(COST, [*sets, "device.write.t_set=1ns"])).metrics["latency_train_update_s"])


def test_digital_work_traced_on_two_samples_scales_to_the_counts_of_the_whole_batch():
    """A functional run traces its graph on two samples and scales the digital work (norms, activations, attention
    products) to each batch; a cost-only run traces the batch itself. Both must count the same actions."""
    from collections import Counter

    from imcsim.api import build_hardware
    from imcsim.models.zoo import build_vit_tiny
    from imcsim.workloads.costonly import elementwise_ops, weightless_ops

    macro = build_hardware(load_config(COST)).macro
    model = map_to_array(build_vit_tiny(3, image_size=16, patch=4, dim=16, depth=1, heads=2, mlp_dim=32))

    def counts(samples: int, graph_samples: int) -> Counter:
        x = torch.randn(graph_samples, 3, 16, 16)
        graph = trace_dataflow(model, lambda: model(x), samples=graph_samples)
        total: Counter = Counter()
        for c in graph.calls:
            for op in [*elementwise_ops(macro, c, samples), *(weightless_ops(macro, c, samples) if c.weightless
                                                                else [])]:
                total.update(op.counts)
        return total

    batch = counts(6, 6)
    assert batch[("digital", "fp32_add")] > 0
    assert batch[("digital", "requant")] > 0
    assert batch[("digital", "mac_int8")] > 0
    assert counts(6, 2) == batch
