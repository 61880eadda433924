"""Training-memory accounting: a hand-computed network, the rules for BN and frozen layers, meta = real."""

from __future__ import annotations

import copy

import torch
from torch import nn

from imcsim.workloads.memory import MemoryBits, training_memory
from imcsim.workloads.models import RepNet, TinyCNN


def test_hand_computed_two_layer_network():
    """Linear(4,3) trainable -> ReLU -> Linear(3,2) frozen, batch 2, SGD with momentum.

    weights: 15 trainable x 32 + 8 frozen x 8 = 544 bits; momentum: 15 x 32 = 480.
    kept: the first linear's input (2x4 x 8 = 64), the ReLU mask (6 x 1); the frozen
    linear keeps nothing. Live (8-bit tensors): forward max = 64 + 6 + (6 + 6) x 8 = 166
    at the ReLU (the second linear: 70 + (6 + 4) x 8 = 150); backward at the ReLU
    with its two gradients: 70 + 12 x 8 = 166. Peak = 544 + 480 + 166 = 1190 bits.
    """
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for p in net[2].parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 4)
    mem = training_memory(net.parameters(), lambda: net(x), momentum=True)
    assert mem.weights_trainable == 15 * 32
    assert mem.weights_frozen == 8 * 8
    assert mem.optimizer == 15 * 32
    assert mem.kept_by_kind == {"gemm_input": 64, "bn_input": 0, "relu_mask": 6}
    assert mem.peak_live_activations == 166
    assert mem.peak == 1190
    assert mem.as_bytes()["memory_peak_bytes"] == 1190 / 8
    no_momentum = training_memory(net.parameters(), lambda: net(x), momentum=False)
    assert no_momentum.peak == 1190 - 480


def test_frozen_network_keeps_nothing_and_bits_are_configurable():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for p in net.parameters():
        p.requires_grad_(False)
    mem = training_memory(net.parameters(), lambda: net(torch.randn(5, 4)), momentum=True,
                          bits=MemoryBits(weight_bits_frozen=4))
    assert mem.kept == 0
    assert mem.optimizer == 0
    assert mem.weights == 23 * 4


def test_bn_keeps_its_input_only_when_its_scale_trains_or_it_uses_batch_statistics():
    conv = nn.Conv2d(2, 2, 1, bias=False).requires_grad_(True)
    bn = nn.BatchNorm2d(2)
    x = torch.randn(3, 2, 4, 4)

    def kept_bn(train: bool, scale: bool, bias: bool) -> int:
        bn.train(train)
        bn.weight.requires_grad_(scale)
        bn.bias.requires_grad_(bias)
        return training_memory([*conv.parameters(), *bn.parameters()], lambda: bn(conv(x)),
                               momentum=False).kept_by_kind["bn_input"]

    full = 3 * 2 * 4 * 4 * 8
    assert kept_bn(train=False, scale=False, bias=True) == 0  # bias-only (TinyTL): no activation kept
    assert kept_bn(train=False, scale=True, bias=True) == full
    assert kept_bn(train=True, scale=False, bias=False) == full  # batch statistics couple the inputs


def test_meta_tracing_gives_the_real_accounting_for_repnet():
    torch.manual_seed(0)
    net = RepNet(TinyCNN(width=8), [0, 2], 8, 16)
    net.add_head("t", 4)
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    net.train()
    net.backbone.eval()
    real = training_memory(net.parameters(), lambda: net(torch.rand(4, 1, 16, 16), "t"), momentum=True)
    meta = copy.deepcopy(net).to("meta")
    traced = training_memory(meta.parameters(), lambda: meta(torch.empty(4, 1, 16, 16, device="meta"), "t"),
                             momentum=True)
    assert traced == real
    # the frozen backbone keeps no conv input; the side modules and the head do
    assert real.kept_by_kind["gemm_input"] > 0
    assert real.kept > 0
    assert real.weights_frozen == sum(p.numel() for p in net.backbone.parameters()) * 8
