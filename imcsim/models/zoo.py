"""Model zoo: published reference networks as plain-torch feature extractors.

Every network here is built from ordinary ``torch.nn`` layers only (no IMC layers,
no torchvision, no fused attention kernels), so that a tracer sees each convolution,
linear layer and attention product. Each is a *feature extractor*: the reference
network without its final task classifier, which the simulator replaces by one
linear head per task. The common interface (:class:`ZooNet`):

- ``blocks`` (``nn.ModuleList``): ``forward(x)`` applies them in order and returns
  the last block's output. Block boundaries are the connection points where side
  modules attach (the input of block i is read, and added to the output of block i):
  a stem, each residual / inverted-residual block or encoder layer, each stage conv.
- ``feature_dim``: the width of the features a head reads. The last block returns
  either a feature map ``(N, feature_dim, H, W)`` (global-average-pooled by the
  simulator) or a vector ``(N, feature_dim)``.
- ``classifier_in`` and ``reference_classes``: the in-features and classes of the
  reference network's own final classifier, so that its published parameter count
  is the extractor's plus ``classifier_in * reference_classes + reference_classes``
  (``classifier_bias`` is True), or plus ``classifier_in * reference_classes`` for
  the bias-free classifier of ``vgg8_cifar`` (``classifier_bias`` is False).

The networks (:data:`ZOO`):

- ``vgg8_cifar``: the 8-layer VGG that DNN+NeuroSim V2.0/V2.1 benchmarks on-chip
  training with (X. Peng, S. Huang, H. Jiang, A. Lu and S. Yu, "DNN+NeuroSim V2.0: An
  End-to-End Benchmarking Framework for Compute-in-Memory Accelerators for On-Chip
  Training", IEEE TCAD 40(11), 2021; layer table ``Training_pytorch/NeuroSIM/NetWork.csv``
  of the neurosim/DNN_NeuroSim_V2.1 repository). 7 blocks, 12,973,440 parameters
  with the 1024 -> 10 classifier.
- ``vgg16``: VGG configuration D (Simonyan and Zisserman, ICLR 2015) as torchvision
  builds it. 14 blocks, 138,357,544 parameters with the 4096 -> 1000 classifier.
- ``resnet18``, ``resnet50``: He et al., CVPR 2016, as torchvision builds them (stride
  on the 3x3 conv of the bottleneck, "v1.5"). 9 and 17 blocks; 11,689,512 and
  25,557,032 parameters with the 1000-class fc.
- ``mobilenet_v2``: Sandler et al., CVPR 2018, the same architecture as
  :class:`imcsim.workloads.backbones.MobileNetV2`. 19 blocks, 3,504,872 parameters.
- ``mobilenet_v3_large``, ``mobilenet_v3_small``: Howard et al., ICCV 2019, as
  torchvision builds them. 18 and 14 blocks; 5,483,032 and 2,542,856 parameters.
- ``proxylessnas_mobile``: Cai, Zhu and Han, ICLR 2019, the same architecture as
  :class:`imcsim.workloads.backbones.ProxylessNASMobile`. 22 blocks, 4,080,512 parameters.
- ``vit_tiny``: DeiT-Tiny (Touvron et al., ICML 2021), a ViT-Ti/16 with a class token.
  14 blocks, 5,717,416 parameters with the 192 -> 1000 head; smaller variants through
  the builder's keywords.

Every builder works under ``with torch.device("meta"):`` (no Python control flow on
tensor values), so real-size networks can be laid out without allocating weights.
Weights are initialised in the usual way of these networks: Kaiming-normal (fan-out)
convolutions, unit / zero batch-norm affine and N(0, 0.01) linear layers for the CNNs;
truncated-normal (std 0.02) linear layers, class token and position embedding for the ViT.
Activations are never applied in place, so a hook on any layer sees that layer's own output.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from imcsim.workloads.backbones import (
    MOBILENET_V2_SETTING,
    PROXYLESS_MOBILE_MBCONVS,
    make_divisible,
)

ActFactory = Callable[[], nn.Module]


class ZooNet(nn.Module):
    """A feature extractor given as an ordered list of blocks.

    ``forward`` applies ``blocks`` in order and returns the last block's output, a
    ``(N, feature_dim, H, W)`` feature map or an ``(N, feature_dim)`` vector.
    ``classifier_in`` / ``reference_classes`` / ``classifier_bias`` describe the reference
    network's final linear classifier, which is not built.
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        feature_dim: int,
        classifier_in: int,
        reference_classes: int,
        classifier_bias: bool = True,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = int(feature_dim)
        self.classifier_in = int(classifier_in)
        self.reference_classes = int(reference_classes)
        self.classifier_bias = bool(classifier_bias)

    def classifier_params(self) -> int:
        """Parameters of the reference network's final classifier (not part of this extractor)."""
        bias = self.reference_classes if self.classifier_bias else 0
        return self.classifier_in * self.reference_classes + bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


# ----------------------------------------------------------------------------- common layers


class ConvBNAct(nn.Sequential):
    """k x k conv (padding k // 2) -> optional BN -> optional activation, as ``conv``, ``bn``, ``act``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        act: ActFactory | None = None,
        bn: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=bias)
        if bn:
            layers["bn"] = nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)
        self.cin, self.cout, self.stride = cin, cout, stride


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate of MobileNetV3: global average pool -> 1x1 conv (bias) -> ReLU
    -> 1x1 conv (bias) -> hard-sigmoid, which scales the input channel-wise."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """Inverted residual / MBConv block: [1x1 ``expand`` conv -> BN -> act] -> k x k depthwise ``dw``
    conv -> BN -> act -> [``se`` gate] -> 1x1 ``project`` conv -> BN (linear bottleneck), plus the
    input when the stride is 1 and the widths agree.

    The expand conv is left out when ``hidden == cin`` (expansion 1).
    """

    def __init__(
        self,
        cin: int,
        hidden: int,
        cout: int,
        k: int,
        stride: int,
        act: ActFactory,
        se_channels: int | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        self.cin, self.hidden, self.cout, self.k, self.stride = cin, hidden, cout, k, stride
        norm = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.expand = ConvBNAct(cin, hidden, 1, act=act, **norm) if hidden != cin else None
        self.dw = ConvBNAct(hidden, hidden, k, stride=stride, groups=hidden, act=act, **norm)
        self.se = SqueezeExcite(hidden, se_channels) if se_channels is not None else None
        self.project = ConvBNAct(hidden, cout, 1, **norm)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.expand is None else self.expand(x)
        h = self.dw(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        return x + h if self.use_residual else h


def _init_cnn(model: nn.Module) -> None:
    """Reference CNN initialisation: Kaiming-normal (fan-out) convs, zero biases, unit / zero BN
    affine, linear weights N(0, 0.01). A model built on the meta device (shapes only) is left as it is."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _cnn(
    blocks: list[nn.Module], feature_dim: int, classifier_in: int, classes: int, classifier_bias: bool = True
) -> ZooNet:
    net = ZooNet(blocks, feature_dim, classifier_in, classes, classifier_bias)
    _init_cnn(net)
    return net


# ----------------------------------------------------------------------------- VGG


def _vgg_conv(cin: int, cout: int, pool: bool, bias: bool) -> nn.Sequential:
    """3x3 conv (padding 1) -> ReLU [-> 2x2 max-pool]."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["conv"] = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    layers["act"] = nn.ReLU()
    if pool:
        layers["pool"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


# DNN+NeuroSim V2.1 NetWork.csv, VGG-8 on CIFAR-10: (output channels, max-pool after the conv).
VGG8_CIFAR_CONVS: tuple[tuple[int, bool], ...] = (
    (128, False),
    (128, True),
    (256, False),
    (256, True),
    (512, False),
    (512, True),
)

# VGG configuration D (Simonyan and Zisserman 2015, Table 1): conv widths per stage; each stage
# ends in a 2x2 max-pool.
VGG16_STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


def build_vgg8_cifar(in_channels: int = 3) -> ZooNet:
    """VGG-8 of DNN+NeuroSim V2.0/V2.1 (Peng et al., IEEE TCAD 2021; ``NetWork.csv`` of the
    DNN_NeuroSim_V2.1 repository) for 32 x 32 inputs.

    Six bias-free 3x3 convs (128, 128, 256, 256, 512, 512 channels) with ReLU and a 2x2 max-pool
    after each pair, then a bias-free FC 8192 -> 1024 with ReLU; no batch norm (NeuroSim maps
    weights only). Blocks: the six conv blocks (pools in blocks 1, 3, 5) and flatten + FC + ReLU
    -> (N, 1024). The reference classifier is a bias-free FC 1024 -> 10, which is not built
    here (``classifier_bias`` False), so the 12,973,440 weights of the network are the
    extractor's plus 10,240.
    """
    blocks: list[nn.Module] = []
    c = in_channels
    for cout, pool in VGG8_CIFAR_CONVS:
        blocks.append(_vgg_conv(c, cout, pool, bias=False))
        c = cout
    spatial = 32 // 2 ** sum(pool for _, pool in VGG8_CIFAR_CONVS)
    blocks.append(
        nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc=nn.Linear(c * spatial * spatial, 1024, bias=False),
                act=nn.ReLU(),
            )
        )
    )
    return _cnn(blocks, 1024, 1024, 10, classifier_bias=False)


def build_vgg16(in_channels: int = 3) -> ZooNet:
    """VGG-16, configuration D of Simonyan and Zisserman, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", ICLR 2015, as torchvision's ``vgg16`` (biases, no batch norm).

    Blocks: one per 3x3 conv (+ ReLU; the last conv block of each stage holds its 2x2 max-pool),
    then adaptive average pool to 7 x 7 + flatten + FC 25088 -> 4096 + ReLU + FC 4096 -> 4096 +
    ReLU -> (N, 4096): 14 blocks. The reference classifier FC 4096 -> 1000 is not built.
    """
    blocks: list[nn.Module] = []
    c = in_channels
    for stage in VGG16_STAGES:
        for j, cout in enumerate(stage):
            blocks.append(_vgg_conv(c, cout, pool=j == len(stage) - 1, bias=True))
            c = cout
    blocks.append(
        nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d((7, 7)),
                flatten=nn.Flatten(),
                fc1=nn.Linear(c * 7 * 7, 4096),
                act1=nn.ReLU(),
                fc2=nn.Linear(4096, 4096),
                act2=nn.ReLU(),
            )
        )
    )
    return _cnn(blocks, 4096, 4096, 1000)


# ----------------------------------------------------------------------------- ResNet


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    """1x1 strided projection shortcut (conv + BN) when the shape changes, else None."""
    if stride == 1 and cin == cout:
        return None
    return ConvBNAct(cin, cout, 1, stride=stride)


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, plus the (projected)
    input, then ReLU."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.cin, self.cout, self.stride = cin, cout, stride
        self.conv1 = ConvBNAct(cin, width, 3, stride=stride, act=nn.ReLU)
        self.conv2 = ConvBNAct(width, cout, 3)
        self.downsample = _downsample(cin, cout, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck (v1.5, stride on the 3x3 conv): 1x1 conv -> BN -> ReLU -> 3x3 conv
    (stride) -> BN -> ReLU -> 1x1 conv to 4 x width -> BN, plus the (projected) input, then ReLU."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.cin, self.cout, self.stride = cin, cout, stride
        self.conv1 = ConvBNAct(cin, width, 1, act=nn.ReLU)
        self.conv2 = ConvBNAct(width, width, 3, stride=stride, act=nn.ReLU)
        self.conv3 = ConvBNAct(width, cout, 1)
        self.downsample = _downsample(cin, cout, stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + identity)


def _resnet(block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], in_channels: int) -> ZooNet:
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and one block per residual block of the four
    stages (widths 64, 128, 256, 512; stride 2 at the first block of stages 2-4)."""
    stem = ConvBNAct(in_channels, 64, 7, stride=2, act=nn.ReLU)
    stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
    blocks: list[nn.Module] = [stem]
    c = 64
    for stage, n in enumerate(layers):
        width = 64 * 2**stage
        for j in range(n):
            b = block(c, width, 2 if stage > 0 and j == 0 else 1)
            blocks.append(b)
            c = b.cout
    return _cnn(blocks, c, c, 1000)


def build_resnet18(in_channels: int = 3) -> ZooNet:
    """ResNet-18 (He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016) as torchvision's ``resnet18``: stem + 8 basic blocks = 9 blocks, a 512-channel
    feature map (7 x 7 at 224 x 224). The reference 512 -> 1000 fc is not built."""
    return _resnet(BasicBlock, (2, 2, 2, 2), in_channels)


def build_resnet50(in_channels: int = 3) -> ZooNet:
    """ResNet-50 (He et al., CVPR 2016) as torchvision's ``resnet50`` (v1.5: stride on the 3x3
    conv of the bottleneck): stem + 16 bottlenecks = 17 blocks, a 2048-channel feature map.
    The reference 2048 -> 1000 fc is not built."""
    return _resnet(Bottleneck, (3, 4, 6, 3), in_channels)


# ----------------------------------------------------------------------------- mobile networks


def _mobile_net(
    mbconvs: list[tuple[int, int, int, int]], in_channels: int, width_mult: float
) -> ZooNet:
    """Stem 3x3/2 conv to 32 channels, MBConv blocks given as (kernel, expansion, output channels,
    stride), final 1x1 conv to 1280; BN after every conv, ReLU6 activations (MobileNetV2 and
    ProxylessNAS-Mobile)."""
    c = make_divisible(32 * width_mult)
    last = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
    blocks: list[nn.Module] = [ConvBNAct(in_channels, c, 3, stride=2, act=nn.ReLU6)]
    for k, t, ch, s in mbconvs:
        cout = make_divisible(ch * width_mult)
        blocks.append(InvertedResidual(c, round(c * t), cout, k, s, act=nn.ReLU6))
        c = cout
    blocks.append(ConvBNAct(c, last, 1, act=nn.ReLU6))
    return _cnn(blocks, last, last, 1000)


def build_mobilenet_v2(in_channels: int = 3, *, width_mult: float = 1.0) -> ZooNet:
    """MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted Residuals and
    Linear Bottlenecks", CVPR 2018), the architecture of
    :class:`imcsim.workloads.backbones.MobileNetV2` in plain torch: stem, the 17 inverted
    residuals of the (t, c, n, s) table, final 1x1 conv to 1280 -> 19 blocks. The reference
    1280 -> 1000 classifier is not built."""
    mbconvs = [(3, t, c, s if j == 0 else 1) for t, c, n, s in MOBILENET_V2_SETTING for j in range(n)]
    return _mobile_net(mbconvs, in_channels, width_mult)


def build_proxylessnas_mobile(in_channels: int = 3, *, width_mult: float = 1.0) -> ZooNet:
    """ProxylessNAS-Mobile (Cai, Zhu and Han, "ProxylessNAS: Direct Neural Architecture Search on
    Target Task and Hardware", ICLR 2019), the architecture of
    :class:`imcsim.workloads.backbones.ProxylessNASMobile` in plain torch: stem, the first MBConv,
    the 19 kept searched MBConvs, final 1x1 conv to 1280 -> 22 blocks. The reference
    1280 -> 1000 classifier is not built."""
    return _mobile_net(list(PROXYLESS_MOBILE_MBCONVS), in_channels, width_mult)


# MobileNetV3 bneck tables (Howard et al. 2019, Tables 1 and 2, as torchvision lays them out):
# (input channels, depthwise kernel, expanded channels, output channels, squeeze-excite,
#  activation "RE" = ReLU / "HS" = hard-swish, stride).
MOBILENET_V3_LARGE_BNECKS: tuple[tuple[int, int, int, int, bool, str, int], ...] = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
MOBILENET_V3_SMALL_BNECKS: tuple[tuple[int, int, int, int, bool, str, int], ...] = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
_V3_ACTS: dict[str, ActFactory] = {"RE": nn.ReLU, "HS": nn.Hardswish}
_V3_BN = {"bn_eps": 0.001, "bn_momentum": 0.01}


def _mobilenet_v3(
    bnecks: tuple[tuple[int, int, int, int, bool, str, int], ...], last_channel: int, in_channels: int
) -> ZooNet:
    """Stem 3x3/2 conv to 16 (BN, hard-swish), the bnecks, final 1x1 conv to 6 x the last bneck
    width (BN, hard-swish), then pool + flatten + FC to ``last_channel`` + hard-swish."""
    first = bnecks[0][0]
    blocks: list[nn.Module] = [ConvBNAct(in_channels, first, 3, stride=2, act=nn.Hardswish, **_V3_BN)]
    for cin, k, exp, cout, se, act, s in bnecks:
        squeeze = make_divisible(exp // 4, 8) if se else None
        blocks.append(InvertedResidual(cin, exp, cout, k, s, act=_V3_ACTS[act], se_channels=squeeze, **_V3_BN))
    c = bnecks[-1][3]
    blocks.append(ConvBNAct(c, 6 * c, 1, act=nn.Hardswish, **_V3_BN))
    blocks.append(
        nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(6 * c, last_channel),
                act=nn.Hardswish(),
            )
        )
    )
    return _cnn(blocks, last_channel, last_channel, 1000)


def build_mobilenet_v3_large(in_channels: int = 3) -> ZooNet:
    """MobileNetV3-Large (Howard et al., "Searching for MobileNetV3", ICCV 2019) as torchvision's
    ``mobilenet_v3_large``: stem, 15 bnecks, 1x1 conv to 960, and pool + FC 960 -> 1280 +
    hard-swish -> (N, 1280): 18 blocks. The reference 1280 -> 1000 classifier is not built."""
    return _mobilenet_v3(MOBILENET_V3_LARGE_BNECKS, 1280, in_channels)


def build_mobilenet_v3_small(in_channels: int = 3) -> ZooNet:
    """MobileNetV3-Small (Howard et al., ICCV 2019) as torchvision's ``mobilenet_v3_small``: stem,
    11 bnecks, 1x1 conv to 576, and pool + FC 576 -> 1024 + hard-swish -> (N, 1024): 14 blocks.
    The reference 1024 -> 1000 classifier is not built."""
    return _mobilenet_v3(MOBILENET_V3_SMALL_BNECKS, 1024, in_channels)


# ----------------------------------------------------------------------------- Vision Transformer


class PatchEmbedding(nn.Module):
    """Patch embedding of a ViT: patch x patch conv with stride patch, flattened to tokens, a
    learned class token prepended and a learned position embedding added -> (N, 1 + L, dim)."""

    def __init__(self, in_channels: int, dim: int, patch: int, image_size: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        self.n_patches = (image_size // patch) ** 2
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.n_patches + 1, dim))
        if not self.pos_embed.is_meta:  # shapes only on the meta device
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed


class SelfAttention(nn.Module):
    """Multi-head self-attention written out: fused ``qkv`` projection Linear(d, 3d), per head
    softmax(q @ k^T / sqrt(d_head)) @ v, and an output projection ``proj`` Linear(d, d)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (N, heads, T, head_dim)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, self.heads * self.head_dim)
        return self.proj(out)


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer: x + attn(LN(x)), then x + MLP(LN(x)) with
    MLP = Linear(d, mlp_dim) -> GELU -> Linear(mlp_dim, d)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(fc1=nn.Linear(dim, mlp_dim), act=nn.GELU(), fc2=nn.Linear(mlp_dim, dim))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClassTokenHead(nn.Module):
    """Final LayerNorm of a ViT, then the class token: (N, T, d) -> (N, d)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)[:, 0]


def build_vit_tiny(
    in_channels: int = 3,
    *,
    image_size: int = 224,
    patch: int = 16,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_dim: int = 768,
) -> ZooNet:
    """DeiT-Tiny (Touvron, Cord, Douze, Massa, Sablayrolles and Jégou, "Training data-efficient
    image transformers & distillation through attention", ICML 2021), i.e. the ViT-Ti/16 of
    Dosovitskiy et al. (ICLR 2021): 16 x 16 patches of a 224 x 224 image, width 192, 12 pre-LN
    encoder layers with 3 heads and MLP 768 (GELU), class token, learned position embedding,
    final LayerNorm. The keywords build smaller variants (e.g. 32 x 32, patch 4, dim 64, depth 2).

    Blocks: patch embedding, one per encoder layer, final LayerNorm + class token -> (N, dim):
    depth + 2 blocks. The reference dim -> 1000 head is not built.
    """
    blocks: list[nn.Module] = [PatchEmbedding(in_channels, dim, patch, image_size)]
    blocks += [EncoderLayer(dim, heads, mlp_dim) for _ in range(depth)]
    blocks.append(ClassTokenHead(dim))
    net = ZooNet(blocks, dim, dim, 1000)
    for m in net.modules():
        if isinstance(m, nn.Linear) and not m.weight.is_meta:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return net


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ZooEntry:
    """A zoo network: its builder ``builder(in_channels=3, **kwargs)``, a one-line description, the
    full citation of its source, its default input size (square images) and its kind ("cnn" or
    "vit")."""

    builder: Callable[..., nn.Module]
    description: str
    reference: str
    image_size: int
    kind: str


_RESNET_REF = (
    "K. He, X. Zhang, S. Ren and J. Sun, \"Deep Residual Learning for Image Recognition\", "
    "Proc. IEEE Conference on Computer Vision and Pattern Recognition (CVPR), pp. 770-778, 2016"
)
_MOBILENET_V3_REF = (
    "A. Howard, M. Sandler, G. Chu, L.-C. Chen, B. Chen, M. Tan, W. Wang, Y. Zhu, R. Pang, "
    "V. Vasudevan, Q. V. Le and H. Adam, \"Searching for MobileNetV3\", Proc. IEEE/CVF "
    "International Conference on Computer Vision (ICCV), pp. 1314-1324, 2019"
)

ZOO: dict[str, ZooEntry] = {
    "vgg8_cifar": ZooEntry(
        build_vgg8_cifar,
        "VGG-8 of DNN+NeuroSim V2.1 for CIFAR-10: six bias-free 3x3 convs and FC 8192->1024, no BN",
        "X. Peng, S. Huang, H. Jiang, A. Lu and S. Yu, \"DNN+NeuroSim V2.0: An End-to-End "
        "Benchmarking Framework for Compute-in-Memory Accelerators for On-Chip Training\", IEEE "
        "Transactions on Computer-Aided Design of Integrated Circuits and Systems, vol. 40, no. 11, "
        "2021; network table Training_pytorch/NeuroSIM/NetWork.csv of github.com/neurosim/"
        "DNN_NeuroSim_V2.1",
        32,
        "cnn",
    ),
    "vgg16": ZooEntry(
        build_vgg16,
        "VGG-16 (configuration D) with biases and no BN, as torchvision vgg16",
        "K. Simonyan and A. Zisserman, \"Very Deep Convolutional Networks for Large-Scale Image "
        "Recognition\", International Conference on Learning Representations (ICLR), 2015",
        224,
        "cnn",
    ),
    "resnet18": ZooEntry(
        build_resnet18, "ResNet-18 (basic blocks), as torchvision resnet18", _RESNET_REF, 224, "cnn"
    ),
    "resnet50": ZooEntry(
        build_resnet50,
        "ResNet-50 (bottlenecks, stride on the 3x3 conv), as torchvision resnet50",
        _RESNET_REF,
        224,
        "cnn",
    ),
    "mobilenet_v2": ZooEntry(
        build_mobilenet_v2,
        "MobileNetV2 (width 1.0): stem, 17 inverted residuals, 1x1 conv to 1280; ReLU6",
        "M. Sandler, A. Howard, M. Zhu, A. Zhmoginov and L.-C. Chen, \"MobileNetV2: Inverted "
        "Residuals and Linear Bottlenecks\", Proc. IEEE/CVF Conference on Computer Vision and "
        "Pattern Recognition (CVPR), pp. 4510-4520, 2018",
        224,
        "cnn",
    ),
    "mobilenet_v3_large": ZooEntry(
        build_mobilenet_v3_large,
        "MobileNetV3-Large: 15 bnecks with SE and hard-swish, as torchvision mobilenet_v3_large",
        _MOBILENET_V3_REF,
        224,
        "cnn",
    ),
    "mobilenet_v3_small": ZooEntry(
        build_mobilenet_v3_small,
        "MobileNetV3-Small: 11 bnecks with SE and hard-swish, as torchvision mobilenet_v3_small",
        _MOBILENET_V3_REF,
        224,
        "cnn",
    ),
    "proxylessnas_mobile": ZooEntry(
        build_proxylessnas_mobile,
        "ProxylessNAS-Mobile: the released proxyless_mobile network (stem, 20 MBConvs, 1x1 conv)",
        "H. Cai, L. Zhu and S. Han, \"ProxylessNAS: Direct Neural Architecture Search on Target "
        "Task and Hardware\", International Conference on Learning Representations (ICLR), 2019",
        224,
        "cnn",
    ),
    "vit_tiny": ZooEntry(
        build_vit_tiny,
        "DeiT-Tiny / ViT-Ti/16: patch 16, dim 192, depth 12, 3 heads, MLP 768, class token",
        "H. Touvron, M. Cord, M. Douze, F. Massa, A. Sablayrolles and H. Jégou, \"Training "
        "data-efficient image transformers & distillation through attention\", Proc. 38th "
        "International Conference on Machine Learning (ICML), PMLR 139, pp. 10347-10357, 2021",
        224,
        "vit",
    ),
}


def build_zoo_model(name: str, in_channels: int = 3, **kwargs) -> nn.Module:
    """The zoo network ``name`` (a key of :data:`ZOO`) built with ``in_channels`` and ``kwargs``."""
    try:
        entry = ZOO[name]
    except KeyError:
        raise ValueError(f"unknown zoo network {name!r}; valid: {', '.join(ZOO)}") from None
    return entry.builder(in_channels, **kwargs)
