"""MobileNetV2 and ProxylessNAS-Mobile backbones: parameter counts, shapes, IMC layers, builder."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from imcsim.workloads.backbones import (
    PROXYLESS_MOBILE_MBCONVS,
    InvertedResidual,
    MobileNetV2,
    ProxylessNASMobile,
    build_backbone,
)
from imcsim.workloads.int8 import IMCConv2d
from imcsim.workloads.models import RepNet, TinyCNN

# torchvision mobilenet_v2: 3,504,872 parameters, of which the classifier is 1280 * 1000 + 1000.
MOBILENET_V2_FEATURES = 3_504_872 - (1280 * 1000 + 1000)  # 2,223,872

# ProxylessNAS-Mobile: osmr/imgclsmob pytorchcv/models/proxylessnas.py asserts 4,080,512 parameters
# for proxylessnas_mobile (the paper reports 4.1M), of which the classifier is 1280 * 1000 + 1000.
PROXYLESS_MOBILE_FEATURES = 4_080_512 - (1280 * 1000 + 1000)  # 2,799,512


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mbconv_params(cin: int, cout: int, k: int, t: int) -> int:
    """Conv weights + BN (gamma, beta) of one MBConv block, counted by hand."""
    hidden = cin * t
    expand = 0 if t == 1 else cin * hidden + 2 * hidden
    dw = hidden * k * k + 2 * hidden
    project = hidden * cout + 2 * cout
    return expand + dw + project


def _shapes(model: nn.Module, size: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of every block for a 2 x 3 x size x size input on meta tensors."""
    model = model.to("meta")
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    hooks = [
        b.register_forward_hook(
            lambda _m, inp, out: seen.append((tuple(inp[0].shape), tuple(out.shape)))
        )
        for b in model.blocks
    ]
    h = torch.empty(2, 3, size, size, device="meta")
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
    for hook in hooks:
        hook.remove()
    return seen


def test_mobilenet_v2_param_count_matches_torchvision_features():
    m = MobileNetV2()
    assert len(m.blocks) == 19
    assert sum(isinstance(b, InvertedResidual) for b in m.blocks) == 17
    assert m.feature_dim == 1280
    assert _n_params(m) == MOBILENET_V2_FEATURES == 2_223_872


def test_proxylessnas_mobile_param_count():
    m = ProxylessNASMobile()
    assert len(m.blocks) == 22
    assert m.feature_dim == 1280
    # Derivation from the block list: stem 3*32*9 + 2*32, the MBConvs, final 320*1280 + 2*1280.
    derived = 3 * 32 * 9 + 2 * 32 + 320 * 1280 + 2 * 1280
    cin = 32
    for k, t, cout, _s in PROXYLESS_MOBILE_MBCONVS:
        derived += _mbconv_params(cin, cout, k, t)
        cin = cout
    assert derived == PROXYLESS_MOBILE_FEATURES  # the hand count agrees with the published total
    n = _n_params(m)
    assert abs(n - PROXYLESS_MOBILE_FEATURES) <= 0.1 * PROXYLESS_MOBILE_FEATURES
    assert n == PROXYLESS_MOBILE_FEATURES


@pytest.mark.parametrize("cls", [MobileNetV2, ProxylessNASMobile])
def test_block_channels_match_shapes_and_end_at_7x7(cls):
    m = cls()
    chans = m.block_channels()
    shapes = _shapes(m, 224)
    assert len(shapes) == len(chans) == len(m.blocks)
    for (cin, cout, stride), (ins, outs) in zip(chans, shapes, strict=True):
        assert ins[1] == cin
        assert outs[1] == cout
        assert outs[2] == (ins[2] - 1) // stride + 1
    for (_a, prev_out, _s), (nxt_in, _b, _t) in itertools.pairwise(chans):
        assert prev_out == nxt_in
    assert shapes[-1][1] == (2, m.feature_dim, 7, 7)
    assert chans[-1][2] == 1


def test_proxyless_stage_layout():
    m = ProxylessNASMobile()
    outs = [c for _i, c, _s in m.block_channels()]
    assert outs[0] == 32
    assert outs[1] == 16
    assert outs[-1] == 1280
    assert sorted(set(outs[2:-1])) == [32, 40, 80, 96, 192, 320]
    kernels = {b.k for b in m.blocks if isinstance(b, InvertedResidual)}
    assert kernels == {3, 5, 7}
    expansions = {b.expansion for b in list(m.blocks)[2:-1]}
    assert expansions == {3, 6}


@pytest.mark.parametrize("cls", [MobileNetV2, ProxylessNASMobile])
def test_every_conv_is_imc_with_unique_backbone_name(cls):
    m = cls()
    assert not any(isinstance(x, nn.Conv2d) for x in m.modules())
    convs = [x for x in m.modules() if isinstance(x, IMCConv2d)]
    names = [c.name for c in convs]
    assert len(set(names)) == len(names)
    assert all(n.startswith("backbone.") for n in names)
    # every conv is followed by its own BN
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == len(convs)


def test_inverted_residual_forward_small_input():
    torch.manual_seed(0)
    block = InvertedResidual(8, 8, 1, 6, "backbone.t", k=5).eval()
    assert block.use_residual
    x = torch.randn(1, 8, 6, 6)
    y = block(x)
    assert y.shape == x.shape
    # with the projection BN silenced the block is the identity (residual path)
    nn.init.zeros_(block.project_bn.weight)
    assert torch.allclose(block(x), x)
    down = InvertedResidual(8, 16, 2, 1, "backbone.u")
    assert down.expand is None
    assert not down.use_residual
    assert down(x).shape == (1, 16, 3, 3)


def test_real_forward_small_input_through_repnet():
    torch.manual_seed(0)
    backbone = MobileNetV2(width_mult=0.25).eval()
    net = RepNet(backbone, side_blocks=[1, 5], side_width=8, image_size=32).eval()
    net.add_head("t", 3)
    with torch.no_grad():
        y = net(torch.randn(1, 3, 32, 32), "t")
    assert y.shape == (1, 3)
    assert torch.isfinite(y).all()


def test_build_backbone():
    assert isinstance(build_backbone("mobilenet_v2", 3), MobileNetV2)
    assert isinstance(build_backbone("proxylessnas_mobile", 3), ProxylessNASMobile)
    tiny = build_backbone("tiny_cnn", 1)
    assert isinstance(tiny, TinyCNN)
    assert tiny.feature_dim == 64
    assert build_backbone("tiny_cnn", 1, width=8).feature_dim == 32
    with pytest.raises(ValueError, match="mobilenet_v2"):
        build_backbone("resnet18", 3)
