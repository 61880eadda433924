"""Model zoo: registry, published parameter counts, block chaining and output shapes."""

from __future__ import annotations

import dataclasses
import itertools
import operator

import pytest
import torch
from torch import fx, nn

from imcsim.models.zoo import ZOO, ZooEntry, ZooNet, build_vit_tiny, build_zoo_model

NAMES = (
    "vgg8_cifar",
    "vgg16",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "proxylessnas_mobile",
    "vit_tiny",
)

# Parameter count of each reference network, its final classifier included.
PUBLISHED_TOTALS = {
    # By hand from DNN_NeuroSim_V2.1 NetWork.csv (bias-free, no BN): 3*128*9 + 128*128*9
    # + 128*256*9 + 256*256*9 + 256*512*9 + 512*512*9 + 8192*1024 + 1024*10.
    "vgg8_cifar": 3 * 128 * 9
    + 128 * 128 * 9
    + 128 * 256 * 9
    + 256 * 256 * 9
    + 256 * 512 * 9
    + 512 * 512 * 9
    + 8192 * 1024
    + 1024 * 10,
    "vgg16": 138_357_544,  # torchvision VGG16_Weights.IMAGENET1K_V1 num_params
    "resnet18": 11_689_512,  # torchvision ResNet18_Weights.IMAGENET1K_V1 num_params
    "resnet50": 25_557_032,  # torchvision ResNet50_Weights.IMAGENET1K_V1 num_params
    "mobilenet_v2": 3_504_872,  # torchvision MobileNet_V2_Weights.IMAGENET1K_V1 num_params
    "mobilenet_v3_large": 5_483_032,  # torchvision MobileNet_V3_Large_Weights.IMAGENET1K_V1
    "mobilenet_v3_small": 2_542_856,  # torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1
    # osmr/imgclsmob pytorchcv proxylessnas.py self-test for proxylessnas_mobile (paper: 4.1M)
    "proxylessnas_mobile": 4_080_512,
    # DeiT-Tiny (Touvron et al. 2021, Table 1: 5M); exact count of timm deit_tiny_patch16_224
    "vit_tiny": 5_717_416,
}

BLOCK_COUNTS = {
    "vgg8_cifar": 7,  # six convs + flatten/FC
    "vgg16": 14,  # 13 convs + pool/FC/FC
    "resnet18": 9,  # stem + 8 basic blocks
    "resnet50": 17,  # stem + 16 bottlenecks
    "mobilenet_v2": 19,  # stem + 17 inverted residuals + 1x1 conv
    "mobilenet_v3_large": 18,  # stem + 15 bnecks + 1x1 conv + pool/FC
    "mobilenet_v3_small": 14,  # stem + 11 bnecks + 1x1 conv + pool/FC
    "proxylessnas_mobile": 22,  # stem + 20 MBConvs + 1x1 conv
    "vit_tiny": 14,  # patch embedding + 12 encoder layers + LayerNorm/class token
}

# (feature_dim, spatial size of the output map at the default image size, or None for a vector).
OUTPUTS = {
    "vgg8_cifar": (1024, None),
    "vgg16": (4096, None),
    "resnet18": (512, 7),
    "resnet50": (2048, 7),
    "mobilenet_v2": (1280, 7),
    "mobilenet_v3_large": (1280, None),
    "mobilenet_v3_small": (1024, None),
    "proxylessnas_mobile": (1280, 7),
    "vit_tiny": (192, None),
}

TINY_VIT = {"image_size": 32, "patch": 4, "dim": 64, "depth": 2, "heads": 2, "mlp_dim": 128}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(name: str, **kwargs) -> ZooNet:
    with torch.device("meta"):
        return ZOO[name].builder(**kwargs)


def _block_io(model: ZooNet, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Size, torch.Size]]]:
    """forward(x) and the (input shape, output shape) of every block as forward calls it."""
    seen: list[tuple[torch.Size, torch.Size]] = []
    hooks = [
        b.register_forward_hook(lambda _m, inp, out: seen.append((inp[0].shape, out.shape)))
        for b in model.blocks
    ]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return y, seen


def test_zoo_names():
    assert tuple(ZOO) == NAMES
    assert set(PUBLISHED_TOTALS) == set(BLOCK_COUNTS) == set(OUTPUTS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_entry_fields(name):
    entry = ZOO[name]
    assert isinstance(entry, ZooEntry)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.image_size = 1  # type: ignore[misc]
    assert entry.kind == ("vit" if name == "vit_tiny" else "cnn")
    assert entry.image_size == (32 if name == "vgg8_cifar" else 224)
    assert entry.description
    assert len(entry.reference) > 40
    assert entry.builder.__name__ == f"build_{name}"


@pytest.mark.parametrize("name", NAMES)
def test_published_parameter_count(name):
    model = _meta_model(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert isinstance(model, ZooNet)
    classifier = model.classifier_in * model.reference_classes
    if model.classifier_bias:
        classifier += model.reference_classes
    assert model.classifier_params() == classifier
    assert _n_params(model) + classifier == PUBLISHED_TOTALS[name]
    assert len(model.blocks) == BLOCK_COUNTS[name]


def test_vgg8_hand_count():
    assert PUBLISHED_TOTALS["vgg8_cifar"] == 12_973_440
    model = _meta_model("vgg8_cifar")
    # NeuroSim maps weights only: no biases, no batch norm anywhere, and a bias-free classifier.
    assert not model.classifier_bias
    assert (model.classifier_in, model.reference_classes) == (1024, 10)
    assert _n_params(model) == 12_973_440 - 1024 * 10
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(name.endswith("weight") for name, _ in model.named_parameters())
    pools = [i for i, b in enumerate(model.blocks) if any(isinstance(m, nn.MaxPool2d) for m in b.modules())]
    assert pools == [1, 3, 5]


@pytest.mark.parametrize("name", NAMES)
def test_blocks_chain_and_output_shape(name):
    model = _meta_model(name)
    size = ZOO[name].image_size
    x = torch.empty(2, 3, size, size, device="meta")
    y, io = _block_io(model, x)
    assert len(io) == len(model.blocks)  # forward calls every block exactly once
    assert io[0][0] == x.shape
    for (_, out), (nxt, _) in itertools.pairwise(io):
        assert out == nxt
    h = x
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
    assert h.shape == y.shape == io[-1][1]
    dim, spatial = OUTPUTS[name]
    assert model.feature_dim == dim
    expected = (2, dim) if spatial is None else (2, dim, spatial, spatial)
    assert tuple(y.shape) == expected


@pytest.mark.parametrize("name", NAMES)
def test_fx_traceable(name):
    """No Python control flow on tensor values: torch.fx traces every network at full size."""
    model = _meta_model(name)
    traced = fx.symbolic_trace(model)
    size = ZOO[name].image_size
    x = torch.empty(2, 3, size, size, device="meta")
    assert traced(x).shape == model(x).shape


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "mobilenet_v3_small", "vit_tiny"])
def test_in_channels(name):
    model = _meta_model(name, in_channels=1)
    size = ZOO[name].image_size
    y = model(torch.empty(1, 1, size, size, device="meta"))
    assert y.shape[:2] == (1, model.feature_dim)


def test_vgg8_real_forward():
    torch.manual_seed(0)
    model = ZOO["vgg8_cifar"].builder().eval()
    x = torch.randn(2, 3, 32, 32)
    y, io = _block_io(model, x)
    h = x
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
    assert torch.equal(h, y)
    assert y.shape == (2, 1024)
    assert [tuple(o[1:]) for _, o in io[:6]] == [
        (128, 32, 32),
        (128, 16, 16),
        (256, 16, 16),
        (256, 8, 8),
        (512, 8, 8),
        (512, 4, 4),
    ]
    assert torch.isfinite(y).all()
    assert (y >= 0).all()  # ReLU output


def test_vit_tiny_real_forward_and_grad():
    torch.manual_seed(0)
    model = build_vit_tiny(**TINY_VIT)
    assert len(model.blocks) == TINY_VIT["depth"] + 2
    x = torch.randn(3, 3, 32, 32)
    y, io = _block_io(model.eval(), x)
    assert y.shape == (3, 64)
    tokens = (32 // 4) ** 2 + 1
    assert [tuple(o) for _, o in io] == [(3, tokens, 64)] * 3 + [(3, 64)]
    h = x
    with torch.no_grad():
        for block in model.blocks:
            h = block(h)
    assert torch.equal(h, y)
    model.train()
    model(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vit_attention_is_traceable():
    """Attention is written out: a tracer sees the q k^T and attn v products of every layer."""
    model = build_vit_tiny(**TINY_VIT)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    graph = fx.symbolic_trace(model).graph
    matmuls = [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.matmul, torch.matmul)]
    softmaxes = [n for n in graph.nodes if n.op == "call_method" and n.target == "softmax"]
    assert len(matmuls) == 2 * TINY_VIT["depth"]
    assert len(softmaxes) == TINY_VIT["depth"]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert not any(n.target is sdpa for n in graph.nodes)


def test_vit_attention_matches_reference_math():
    torch.manual_seed(0)
    model = build_vit_tiny(**TINY_VIT)
    attn = model.blocks[1].attn
    x = torch.randn(2, 5, 64)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads, hd = 2, 32

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, 5, heads, hd).transpose(1, 2)

    w = torch.softmax(split(q) @ split(k).transpose(-2, -1) / hd**0.5, dim=-1)
    expected = attn.proj((w @ split(v)).transpose(1, 2).reshape(2, 5, 64))
    torch.testing.assert_close(attn(x), expected)


def test_vit_bad_config():
    with pytest.raises(ValueError, match="multiple of the patch"):
        build_vit_tiny(image_size=30, patch=4)
    with pytest.raises(ValueError, match="divisible by heads"):
        build_vit_tiny(image_size=32, patch=4, dim=64, heads=3)


def test_build_zoo_model():
    with torch.device("meta"):
        model = build_zoo_model("resnet18", in_channels=2)
    assert model.blocks[0].conv.in_channels == 2
    with pytest.raises(ValueError, match="unknown zoo network"):
        build_zoo_model("alexnet")
