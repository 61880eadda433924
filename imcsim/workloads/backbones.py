"""ImageNet-scale mobile backbones built from IMC layers: MobileNetV2 and ProxylessNAS-Mobile.

Both follow the backbone interface of :class:`imcsim.workloads.models.TinyCNN`:
``blocks`` (an ``nn.ModuleList``; block i maps its input feature to its output
feature), ``block_channels()`` -> ``(in channels, out channels, stride)`` per
block, and ``feature_dim`` (channels of the last block's output, which RepNet
global-average-pools into its linear heads). Every convolution is an
:class:`IMCConv2d` (bias-free, padding k // 2) followed by ``nn.BatchNorm2d``,
so the whole backbone can be deployed onto the simulated macro; conv names are
``backbone.b<i>.<part>`` with ``<part>`` one of ``conv`` (stem / final 1x1),
``expand``, ``dw``, ``project``.

MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018): stem 3x3/2 conv to 32 channels, the 17 inverted
residual blocks of the standard (t, c, n, s) table, final 1x1 conv to 1280 ->
19 blocks. With width multiplier 1.0 the blocks hold 2,223,872 parameters
(conv weights + BN affine), i.e. torchvision's 3,504,872 less its 1000-class
classifier (1280 * 1000 + 1000).

ProxylessNAS-Mobile (Cai, Zhu and Han, "ProxylessNAS: Direct Neural
Architecture Search on Target Task and Hardware", ICLR 2019; the released
``proxyless_mobile`` network, whose net config the official repository
mit-han-lab/proxylessnas loads in ``proxyless_nas/model_zoo.py`` from
``han-cai/files: proxylessnas/proxyless_mobile.config``). The block list
below, :data:`PROXYLESS_MOBILE_MBCONVS`, was taken from two independent
transcriptions of that config that agree block for block: osmr/imgclsmob
``pytorch/pytorchcv/models/proxylessnas.py`` (``get_proxylessnas("mobile")``,
whose self-test asserts 4,080,512 parameters) and ShowLo/ProxylessNASNets
``proxylessNASNets`` (``mode == "mobile"``). Note the released network's
first searched stage is 32 channels wide (the supernet's is 24), and two of
its four blocks were searched to "zero" (skipped); every other stage keeps
all its blocks. Stage widths: 32, 40, 80, 96, 192, 320.

Our ``blocks`` are [stem 3x3/2 conv to 32, MBConv e1 k3 to 16, the 19 kept
searched MBConvs, final 1x1 conv to 1280] -> 22 blocks (indices 0..21), with
1,280 output channels and 2,799,512 parameters (4,080,512 less the
1,281,000-parameter classifier).

Numbering note: the reference code (``ProxylessNASNets`` in
mit-han-lab/proxylessnas ``proxyless_nas/nas_modules.py``, and its OFA/TinyTL
descendants) keeps the stem and the final 1x1 conv outside its block list but keeps the two
skipped blocks in it as identity blocks, so its block j is the MBConv e1 for
j = 0, our block j + 1 for j in {1, 2}, an identity for j in {3, 4}, and our
block j - 1 for j >= 5. If the Rep-Net side-module positions 1, 5, 9, 13, 17,
21 are counted that way (they are then the first block of each stage), they
are our blocks 2, 4, 8, 12, 16, 20.
"""

from __future__ import annotations

import torch
from torch import nn

from imcsim.workloads.activations import activation
from imcsim.workloads.int8 import IMCConv2d


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (never below ``min_value`` nor 90 % of v)."""
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(v + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * v:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Module):
    """k x k IMC conv -> BN -> ReLU6 (the stem and the final 1x1 feature-mixing conv)."""

    sign_backward = False  # MobileTL's approximate activation backward (imcsim.workloads.activations)

    def __init__(self, cin: int, cout: int, k: int, stride: int, name: str):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.conv = IMCConv2d(cin, cout, k, name=f"{name}.conv", stride=stride)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.bn(self.conv(x)), "relu6", self.sign_backward)


class InvertedResidual(nn.Module):
    """MobileNetV2 / MBConv block: [1x1 expand -> BN -> ReLU6] -> k x k depthwise -> BN -> ReLU6
    -> 1x1 project -> BN (linear bottleneck), plus the input when stride is 1 and cin == cout.

    The expand conv is omitted when ``expansion == 1`` (the depthwise conv then reads the input).
    """

    sign_backward = False  # MobileTL's approximate activation backward (imcsim.workloads.activations)

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, name: str, k: int = 3):
        super().__init__()
        self.cin, self.cout, self.stride, self.k, self.expansion = cin, cout, stride, k, expansion
        hidden = round(cin * expansion)
        self.hidden = hidden
        if expansion != 1:
            self.expand = IMCConv2d(cin, hidden, 1, name=f"{name}.expand")
            self.expand_bn = nn.BatchNorm2d(hidden)
        else:
            self.expand = None
            self.expand_bn = None
        self.dw = IMCConv2d(hidden, hidden, k, name=f"{name}.dw", stride=stride, groups=hidden)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.project = IMCConv2d(hidden, cout, 1, name=f"{name}.project")
        self.project_bn = nn.BatchNorm2d(cout)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand is not None:
            h = activation(self.expand_bn(self.expand(h)), "relu6", self.sign_backward)
        h = activation(self.dw_bn(self.dw(h)), "relu6", self.sign_backward)
        h = self.project_bn(self.project(h))
        return x + h if self.use_residual else h


def _block_channels(blocks: nn.ModuleList) -> list[tuple[int, int, int]]:
    return [(b.cin, b.cout, b.stride) for b in blocks]


# (expansion t, output channels c, repeats n, first stride s), Sandler et al. 2018, Table 2.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _MobileBackbone(nn.Module):
    """Stem 3x3/2 conv to 32 channels, a list of MBConv blocks, final 1x1 conv to 1280."""

    def __init__(self, mbconvs: list[tuple[int, int, int, int]], in_channels: int, width_mult: float):
        super().__init__()
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        blocks: list[nn.Module] = [ConvBNAct(in_channels, c, 3, 2, "backbone.b0")]
        for k, t, ch, s in mbconvs:  # (depthwise kernel, expansion, output channels, stride)
            cout = make_divisible(ch * width_mult)
            blocks.append(InvertedResidual(c, cout, s, t, f"backbone.b{len(blocks)}", k=k))
            c = cout
        blocks.append(ConvBNAct(c, last, 1, 1, f"backbone.b{len(blocks)}"))
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = last

    def block_channels(self) -> list[tuple[int, int, int]]:
        """(in channels, out channels, stride) of each block."""
        return _block_channels(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class MobileNetV2(_MobileBackbone):
    """MobileNetV2 feature extractor as 19 blocks: stem, 17 inverted residuals, final 1x1 conv."""

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0):
        mbconvs = [(3, t, c, s if j == 0 else 1) for t, c, n, s in MOBILENET_V2_SETTING for j in range(n)]
        super().__init__(mbconvs, in_channels, width_mult)


# The kept MBConv blocks of the released proxyless_mobile network after the stem (32 channels):
# (depthwise kernel, expansion, output channels, stride). Sources: see the module docstring.
PROXYLESS_MOBILE_MBCONVS: tuple[tuple[int, int, int, int], ...] = (
    (3, 1, 16, 1),  # first MBConv (not searched)
    # stage 32 (two of its four searched blocks are skipped)
    (5, 3, 32, 2),
    (3, 3, 32, 1),
    # stage 40
    (7, 3, 40, 2),
    (3, 3, 40, 1),
    (5, 3, 40, 1),
    (5, 3, 40, 1),
    # stage 80
    (7, 6, 80, 2),
    (5, 3, 80, 1),
    (5, 3, 80, 1),
    (5, 3, 80, 1),
    # stage 96
    (5, 6, 96, 1),
    (5, 3, 96, 1),
    (5, 3, 96, 1),
    (5, 3, 96, 1),
    # stage 192
    (7, 6, 192, 2),
    (7, 6, 192, 1),
    (7, 3, 192, 1),
    (7, 3, 192, 1),
    # stage 320
    (7, 6, 320, 1),
)


class ProxylessNASMobile(_MobileBackbone):
    """ProxylessNAS-Mobile feature extractor as 22 blocks: stem, 20 MBConvs, final 1x1 conv."""

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__(list(PROXYLESS_MOBILE_MBCONVS), in_channels, width_mult)


BACKBONES = ("tiny_cnn", "mobilenet_v2", "proxylessnas_mobile")


def build_backbone(arch: str, in_channels: int, width: int | None = None) -> nn.Module:
    """The backbone named ``arch``; ``width`` sets TinyCNN's base width (default 16) and is
    not used by the fixed ImageNet architectures."""
    if arch == "tiny_cnn":
        from imcsim.workloads.models import TinyCNN

        return TinyCNN(in_channels, width or 16)
    if arch == "mobilenet_v2":
        return MobileNetV2(in_channels)
    if arch == "proxylessnas_mobile":
        return ProxylessNASMobile(in_channels)
    raise ValueError(f"unknown backbone arch {arch!r}; valid: {', '.join(BACKBONES)}")
