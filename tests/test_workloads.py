"""INT8 training layers on the macro, Rep-Net initialisation, frozen layers, learning."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imcsim.workloads.int8 import Hardware, IMCConv2d, IMCLinear, imc_modules, int8_image, quantize
from imcsim.workloads.models import RepNet, TinyCNN


def test_quantize_roundtrip_within_half_step():
    x = torch.randn(100)
    q, s = quantize(x)
    assert q.dtype == torch.int8
    assert (q.float() * s - x).abs().max() <= s / 2 + 1e-7


def test_stochastic_rounding_is_unbiased():
    g = torch.Generator().manual_seed(0)
    x = torch.full((20000,), 0.3)
    q, _s = quantize(x, 1.0, stochastic=True, generator=g)
    assert set(q.unique().tolist()) == {0, 1}
    assert q.float().mean().item() == pytest.approx(0.3, abs=0.02)


def test_int8_linear_close_to_float(hardware):
    torch.manual_seed(0)
    layer = IMCLinear(40, 7, name="fc")
    x = torch.randn(16, 40)
    ref = F.linear(x, layer.weight, layer.bias)
    layer.deploy(Hardware(hardware.macro))
    y = layer(x)
    # error bounded by the two quantization steps (per-tensor scales)
    err = (y - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item()
    assert not torch.equal(y, ref)  # it really went through INT8


def test_int8_conv_matches_float_conv_including_groups(hardware):
    torch.manual_seed(1)
    hw = Hardware(hardware.macro)
    for groups in (1, 2):
        conv = IMCConv2d(4, 6, 3, name=f"c{groups}", stride=2, groups=groups)
        x = torch.randn(2, 4, 9, 9)
        ref = F.conv2d(x, conv.weight, stride=2, padding=1, groups=groups)
        conv.deploy(hw)
        y = conv(x)
        assert y.shape == ref.shape
        assert (y - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_repnet_starts_as_the_backbone():
    torch.manual_seed(2)
    backbone = TinyCNN(width=8)
    plain = RepNet(backbone, [], 4, 16)
    plain.add_head("t", 5)
    rep = RepNet(backbone, [0, 1, 3], 8, 16)
    rep.heads = plain.heads
    rep.eval()
    plain.eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(rep(x, "t"), plain(x, "t"), atol=1e-6)
    assert len(rep.sides) == 3


def test_frozen_layers_issue_no_weight_grad_and_no_writes(hardware):
    torch.manual_seed(3)
    hw = Hardware(hardware.macro)
    frozen = IMCLinear(12, 12, name="frozen")
    frozen.weight.requires_grad_(False)
    frozen.bias.requires_grad_(False)
    trained = IMCLinear(12, 3, name="trained")
    for m in (frozen, trained):
        m.deploy(hw)
    hw.ops.clear()
    opt = torch.optim.SGD(trained.parameters(), lr=0.5)
    x = torch.randn(8, 12)
    for _ in range(3):
        opt.zero_grad()
        trained(F.relu(frozen(x))).sum().backward()
        opt.step()
        frozen.sync()
        trained.sync()
    phases = {(op.layer, op.phase) for op in hw.ops}
    assert ("trained", "weight_grad") in phases
    assert ("frozen", "weight_grad") not in phases
    assert ("frozen", "input_grad") not in phases  # nothing upstream needs it
    frozen_writes = [op for op in hw.ops if op.layer == "frozen" and op.kind == "write"]
    assert all(not op.cell_writes.any() for op in frozen_writes)
    trained_writes = sum(int(op.cell_writes.sum()) for op in hw.ops if op.layer == "trained" and op.kind == "write")
    assert trained_writes > 0


def test_int8_training_learns_a_small_task(hardware):
    """INT8 training on the macro lowers the loss and clearly beats chance."""
    from sklearn.datasets import load_digits

    torch.manual_seed(4)
    d = load_digits()
    mask = d.target < 4
    x = torch.tensor(d.data[mask] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[mask])
    hw = Hardware(hardware.macro)
    l1, l2 = IMCLinear(64, 32, name="l1"), IMCLinear(32, 4, name="l2")
    for m in (l1, l2):
        m.deploy(hw)
    opt = torch.optim.SGD([*l1.parameters(), *l2.parameters()], lr=0.1, momentum=0.9)
    losses = []
    for _epoch in range(4):
        for idx in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            loss = F.cross_entropy(l2(F.relu(l1(x[idx]))), y[idx])
            loss.backward()
            opt.step()
            l1.sync()
            l2.sync()
            losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    with torch.no_grad():
        acc = (l2(F.relu(l1(x))).argmax(1) == y).float().mean().item()
    assert acc > 0.8  # chance is 0.25
    # the macro holds the INT8 image of the trained master weights
    q, _ = quantize(l1.weight_matrix().detach(), l1.w_scale)
    assert np.array_equal(int8_image(l1), q.numpy())
    assert len(imc_modules(torch.nn.ModuleList([l1, l2]))) == 2


def test_grouped_conv_stores_and_runs_each_group_on_its_own(hardware):
    torch.manual_seed(5)
    hw = Hardware(hardware.macro)
    conv = IMCConv2d(4, 6, 3, name="gc", groups=2)
    conv.deploy(hw)
    assert conv.stored_names() == ["gc.g0", "gc.g1"]
    assert hardware.macro.stored["gc.g0"].values.shape == (2 * 9, 3)
    hw.ops.clear()
    conv(torch.randn(1, 4, 5, 5))
    fwd = [op for op in hw.ops if op.phase == "forward"]
    assert [op.layer for op in fwd] == ["gc.g0", "gc.g1"]
    assert all(op.shape == (25, 18, 3) for op in fwd)  # each group: its own K rows, no zero blocks
    assert sum(op.counts[("input_buffer", "read_bit")] for op in fwd) == 25 * 36 * 8


def test_per_task_side_modules_are_separate_per_task():
    torch.manual_seed(3)
    net = RepNet(TinyCNN(width=8), [0, 1], 8, 16, per_task=True)
    net.add_head("a", 3)
    net.add_head("b", 4)
    assert set(net.sides) == {"a", "b"}
    names = {m.name for m in imc_modules(net)}
    assert {"side.a.s0.conv1", "side.b.s1.conv2"} <= names
    a_params = {id(p) for p in net.task_parameters("a")}
    assert not a_params & {id(p) for p in [*net.sides["b"].parameters(), *net.heads["b"].parameters()]}
    # training task b leaves task a's outputs untouched
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    x = torch.rand(6, 1, 16, 16)
    net.eval()
    with torch.no_grad():
        before = net(x, "a").clone()
    net.train()
    net.backbone.eval()
    opt = torch.optim.SGD([p for p in net.task_parameters("b") if p.requires_grad], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(net(x, "b"), torch.arange(6) % 4).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, "a"), before)


def test_baselines_table_compares_methods_on_the_same_hardware():
    from pathlib import Path

    from imcsim.api import run
    from imcsim.config import load_config

    root = Path(__file__).resolve().parents[1]
    sets = ["workload.train.epochs=1", "workload.pretrain.epochs=1", "workload.baselines=[last_layer, repnet]",
            "workload.tasks=[{name: a, classes: [5, 6, 7]}, {name: b, classes: [0, 1], transform: invert}]"]
    report = run(load_config(root / "configs" / "sas_mram_repnet.yaml", sets))
    rows = {r["method"]: r for r in report.tables["methods"]}
    assert list(rows) == ["repnet", "last_layer"]  # the run's own method first, never twice
    rep, last = rows["repnet"], rows["last_layer"]
    assert rep["trainable_params"] == report.metrics["trainable_params"]
    assert rep["forgetting"] == 0.0  # per-task side modules and heads over a frozen backbone
    assert last["trainable_params"] < rep["trainable_params"]
    assert last["memory_peak_bytes"] < rep["memory_peak_bytes"]
    assert last["energy_train_j"] < rep["energy_train_j"]


def test_cost_only_backward_reaches_trainable_bn_biases():
    """A gradient must flow through the frozen backbone to reach its BN biases (bias-only), not for a head."""
    from pathlib import Path

    from imcsim.api import build_hardware
    from imcsim.config import load_config
    from imcsim.workloads.continual import run_cost_only

    config = Path(__file__).resolve().parents[1] / "configs" / "sas_mram_repnet_mobilenetv2_cost.yaml"
    loaded = load_config(config, ["workload.cost_only.image_size=64"])
    card = loaded.config.workload

    def input_grad_layers(method: str) -> set[str]:
        result = run_cost_only(card.model_copy(update={"method": method}), build_hardware(loaded).macro, 0)
        return {op.layer for op in result.ops if op.phase == "input_grad"}

    assert input_grad_layers("last_layer") == set()
    bias = input_grad_layers("bias_only")
    assert any(name.startswith("backbone.") for name in bias)
    assert len(bias) > 10


@pytest.mark.parametrize(("method", "parts"), [
    ("repnet", {"heads", "sides"}),
    ("repnet_bias", {"heads", "sides", "bn_bias"}),
    ("last_layer", {"heads"}),
    ("bias_only", {"heads", "bn_bias"}),
    ("full", {"heads", "sides", "bn_bias", "backbone"}),
])
def test_each_continual_method_trains_its_parameters(method, parts):
    """Each method module says what trains; the trainer adds every task's head."""
    from imcsim.registry import METHODS
    from imcsim.workloads.trainer import trained_parameters

    torch.manual_seed(0)
    impl = METHODS[method]
    card = SimpleNamespace(repnet=SimpleNamespace(side_blocks=[0, 2], width=4, kernel=None, overrides={}, per_task=False))
    backbone = TinyCNN(width=4)
    plan = impl.sides(card, backbone)
    model = RepNet(backbone, plan.blocks if plan else [], 4, 16)
    model.add_head("t", 3)
    trained_parameters(model, impl)
    bn_bias = {id(m.bias) for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    groups = {"heads": {id(p) for p in model.heads.parameters()}, "sides": {id(p) for p in model.sides.parameters()},
              "bn_bias": bn_bias, "backbone": {id(p) for p in model.backbone.parameters()} - bn_bias}
    trains = {id(p) for p in model.parameters() if p.requires_grad}
    assert trains == set().union(*(groups[g] for g in parts))
    assert bool(len(model.sides)) == (method in ("repnet", "repnet_bias"))  # only Rep-Net attaches side modules
    model.train()
    impl.train_mode(model)
    assert model.backbone.training == (method == "full")  # a frozen backbone keeps its BN running statistics


def test_a_card_names_a_registered_method_of_its_workload(root):
    from imcsim.config import load_config
    from imcsim.errors import InputError
    from imcsim.registry import METHODS

    assert METHODS.names_for("continual_learning") == ["repnet", "repnet_bias", "last_layer", "bias_only", "tinytl",
                                                          "da2", "da3", "gradient_filter", "mobiletl", "full"]
    for setting in ("workload.method=lora", "workload.baselines=[full, nope]"):
        with pytest.raises(InputError, match=re.escape(
                "must be one of 'repnet', 'repnet_bias', 'last_layer', 'bias_only', 'tinytl', 'da2', 'da3', "
                "'gradient_filter', 'mobiletl' or 'full'")):
            load_config(root / "configs" / "sas_mram_repnet.yaml", [setting])
