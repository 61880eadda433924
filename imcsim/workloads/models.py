"""Torch models for on-device learning: a small CNN backbone and Rep-Net side modules.

Rep-Net (Yang et al., "Rep-Net: Efficient On-Device Learning via Feature
Reprogramming", CVPR 2022; the authors' code, ``repnet/model/reprogram.py``
of ASU-ESIC-FAN-Lab/RepNet): the backbone is frozen; a side module reads the
feature entering a backbone block (a *connection point*) and its output is
added to that block's output. Side modules are not chained. A side module is:
2 x 2 average pool -> k x k conv (grouped) -> BN -> ReLU -> 1 x 1 conv to the
block's output channels -> BN whose gamma starts at zero (so the network
starts exactly as the backbone) -> bilinear upsample to the block output's
size. The reference code's plan, the default here:

* channels inside a module follow the backbone's at its connection point: the
  block's input channels rounded up to a multiple of 8 (``make_divisible``);
* kernel 5, or 3 where the map the module reads is 7 x 7 or smaller;
* groups 2, except the first module, which reads the image itself (average
  pooled to the first connection block's output size) with groups 1;
* BN epsilon 1e-3 as the reference code's.

``repnet.width`` and ``repnet.kernel`` replace the plan by one width or kernel
for every module, and ``repnet.overrides`` sets any of (width, kernel, groups)
per connection point.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imcsim.errors import DataError
from imcsim.workloads.activations import activation
from imcsim.workloads.backbones import make_divisible
from imcsim.workloads.int8 import IMCConv2d, IMCLinear


class ConvBNReLU(nn.Module):
    sign_backward = False  # MobileTL's approximate activation backward (imcsim.workloads.activations)

    def __init__(self, cin: int, cout: int, k: int, stride: int, name: str, groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = IMCConv2d(cin, cout, k, name=f"{name}.conv", stride=stride, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return activation(y, "relu", self.sign_backward) if self.relu else y


class TinyCNN(nn.Module):
    """A 4-block CNN for small images (block 0 is the stem)."""

    def __init__(self, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.blocks = nn.ModuleList(
            [
                ConvBNReLU(in_channels, w, 3, 1, "backbone.b0"),
                ConvBNReLU(w, 2 * w, 3, 2, "backbone.b1"),
                ConvBNReLU(2 * w, 2 * w, 3, 1, "backbone.b2"),
                ConvBNReLU(2 * w, 4 * w, 3, 2, "backbone.b3"),
            ]
        )
        self.feature_dim = 4 * w

    def block_channels(self) -> list[tuple[int, int, int]]:
        """(in channels, out channels, stride) of each block."""
        return [(b.conv.cin, b.conv.cout, b.conv.stride) for b in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


SIDE_BN_EPS = 1e-3  # Rep-Net reference code (ProgramModule: BatchNorm2d(eps=0.001))


@dataclass(frozen=True)
class SideSpec:
    """One side module: where it connects and its shape (``reads_image``: the first module's input)."""

    key: str  # the connection point as the card names it (block index or module name)
    module: str  # the backbone module it wraps (its path)
    cin: int
    cout: int
    mid: int
    k: int
    groups: int
    pool: int  # the module's own average pool
    image_pool: int  # the first module reads the image pooled by this factor (0: reads the block input)
    stride: int = 1  # stride of the module's k x k conv (TinyTL's lite residual takes its block's)

    @property
    def params(self) -> int:
        """Parameters of the module: conv k x k, BN, conv 1 x 1, BN."""
        return self.cin // self.groups * self.mid * self.k * self.k + 2 * self.mid + self.mid * self.cout + 2 * self.cout


class SideModule(nn.Module):
    def __init__(self, spec: SideSpec, name: str):
        super().__init__()
        self.pool = spec.pool
        self.image_pool = spec.image_pool
        self.conv1 = IMCConv2d(spec.cin, spec.mid, spec.k, name=f"{name}.conv1", groups=spec.groups,
                               stride=spec.stride)
        self.bn1 = nn.BatchNorm2d(spec.mid, eps=SIDE_BN_EPS)
        self.conv2 = IMCConv2d(spec.mid, spec.cout, 1, name=f"{name}.conv2")
        self.bn2 = nn.BatchNorm2d(spec.cout, eps=SIDE_BN_EPS)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = _side_input(self, x)
        y = F.relu(self.bn1(self.conv1(x)))
        return _resized(self.bn2(self.conv2(y)), size)


def _side_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a module beside a block reads: the image pooled to the block's size (Rep-Net's first module), then
    its own average pool."""
    if module.image_pool > 1:
        x = F.avg_pool2d(x, module.image_pool)
    return F.avg_pool2d(x, module.pool) if module.pool > 1 else x


def _resized(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A side output upsampled (bilinear) to the block output's size."""
    if tuple(y.shape[-2:]) != tuple(size):
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    return y


ADAPTOR_VARIANTS = ("residual", "additive")


class AttentionAdaptor(nn.Module):
    """A DA2 / DA3 attention adaptor beside a frozen backbone block (Yang, Rakin and Fan: "DA2: Deep Attention
    Adapter for Memory-Efficient On-Device Multi-Domain Learning", arXiv 2012.01362 v1, 2020; "DA3: Dynamic
    Additive Attention Adaption for Memory-Efficient On-Device Multi-Domain Learning", CVPR Workshops 2022,
    pp. 2619-2627).

    The papers describe the adaptor (a light module per block, learned per domain, reading the frozen
    backbone so that no backbone activation is kept for backward; DA2 a residual attention module, DA3 an
    additive one) but publish no code; the design choices here are stated so they can be changed:

    * it reads the block's input, average-pooled by ``spec.pool`` (as Rep-Net's side modules, whose authors
      these are), and its output, upsampled to the block output's size, is added to the block's output;
    * a residual branch: k x k conv (``attention.kernel``, default 3) to ``spec.mid`` channels (the input
      channels / ``attention.reduction``) -> BN -> ReLU -> 1 x 1 conv to the block's output channels;
    * a channel attention: global average pool -> linear to the output channels (squeeze-and-excitation's
      form, one layer);
    * ``residual`` (DA2): the branch times the sigmoid of the attention, so the backward pass keeps both
      (the product's two operands); ``additive`` (DA3): the attention is added to the branch, which keeps
      nothing for the sum;
    * a last BN whose scale starts at zero, so a new domain starts exactly as the backbone.

    DA3's use of the attention to gate computation at inference is not modelled (the simulator counts
    training and deployment).
    """

    def __init__(self, spec: SideSpec, name: str, variant: str = "additive"):
        super().__init__()
        if variant not in ADAPTOR_VARIANTS:
            raise ValueError(f"adaptor variant must be one of {ADAPTOR_VARIANTS} (got {variant!r})")
        self.variant = variant
        self.pool = spec.pool
        self.image_pool = spec.image_pool
        self.conv1 = IMCConv2d(spec.cin, spec.mid, spec.k, name=f"{name}.conv1", groups=spec.groups)
        self.bn1 = nn.BatchNorm2d(spec.mid, eps=SIDE_BN_EPS)
        self.conv2 = IMCConv2d(spec.mid, spec.cout, 1, name=f"{name}.conv2")
        self.attention = IMCLinear(spec.cin, spec.cout, name=f"{name}.attention")
        self.bn2 = nn.BatchNorm2d(spec.cout, eps=SIDE_BN_EPS)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = _side_input(self, x)
        branch = self.conv2(F.relu(self.bn1(self.conv1(x))))
        att = self.attention(F.adaptive_avg_pool2d(x, 1).flatten(1))[:, :, None, None]
        return _resized(self.bn2(branch * torch.sigmoid(att) if self.variant == "residual" else branch + att), size)


def residual_blocks(backbone: nn.Module, given: list[int | str] | None = None, key: str = "blocks"
                    ) -> list[int | str]:
    """``given`` connection points, or by default the blocks of the backbone's ``blocks`` list that hold two or
    more convolutions (its residual blocks: MBConvs, ResNet blocks; not the stem nor a final 1 x 1 conv), or
    when none does every conv block but the stem (without linear layers: its output is a feature map). A
    backbone without a blocks list needs them given (``key``)."""
    if given is not None:
        return list(given)
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise SideModuleError("this backbone has no blocks list; name the blocks the modules go beside", key)
    convs = [sum(isinstance(m, IMCConv2d) for m in b.modules()) for b in blocks]
    chosen = [i for i, n in enumerate(convs) if n >= 2]
    maps = [i for i, b in enumerate(blocks)  # a block with a linear layer ends in a vector, not a feature map
            if i > 0 and convs[i] and not any(isinstance(m, IMCLinear) for m in b.modules())]
    return chosen or maps


class SideModuleError(DataError):
    """A Rep-Net connection point that does not exist or cannot take a side module (``key``: the card key)."""

    def __init__(self, message: str, key: str = "repnet.side_blocks") -> None:
        super().__init__(message, key)


def connection_module(backbone: nn.Module, point: int | str) -> str:
    """The path of the backbone module at ``point``: block index i -> ``blocks.i``, or a module name."""
    if isinstance(point, int):
        blocks = getattr(backbone, "blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise SideModuleError(f"block index {point}: this backbone has no blocks list; give module names "
                                   f"(e.g. {_example_names(backbone)})")
        if not 0 <= point < len(blocks):
            raise SideModuleError(f"must be block indices 0..{len(blocks) - 1} or module names (got {point})")
        return f"blocks.{point}"
    try:
        backbone.get_submodule(point)
    except AttributeError:
        raise SideModuleError(f"no module named {point!r} in the backbone (e.g. {_example_names(backbone)})") from None
    if not point:
        raise SideModuleError("an empty module name is the whole backbone, not a connection point")
    return point


def _example_names(backbone: nn.Module) -> str:
    names = [n for n, _ in backbone.named_children()][:4]
    return ", ".join(names) or "none"


def _shapes_at(backbone: nn.Module, paths: list[str], x: torch.Tensor) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) of each module at ``paths`` in one meta forward pass (first call)."""
    meta = copy.deepcopy(backbone).to("meta").eval()  # shapes only: a BN on a 1 x 1 map of one image is fine
    seen: dict[str, tuple[tuple, tuple]] = {}

    def hook(path):
        def record(_module, args, out):
            if path not in seen and args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                seen[path] = (tuple(args[0].shape), tuple(out.shape))
        return record

    for path in paths:
        meta.get_submodule(path).register_forward_hook(hook(path))
    with torch.no_grad():
        meta(x.to("meta"))
    return seen


def side_plan(backbone: nn.Module, points: list[int | str], image_size: int, in_channels: int,
              width: int | None = None, kernel: int | None = None,
              overrides: dict[str, dict[str, int]] | None = None, options: SideOptions | None = None
              ) -> list[SideSpec]:
    """The side modules of Rep-Net at ``points`` on ``backbone`` (see the module docstring for the plan);
    ``options`` change the plan for another method's modules (:class:`SideOptions`)."""
    opt = options or SideOptions()
    paths = [connection_module(backbone, p) for p in points]
    if len(set(paths)) != len(paths):
        raise SideModuleError(f"connection points repeat a module (got {points})")
    x = torch.empty(1, in_channels, image_size, image_size)
    shapes = _shapes_at(backbone, paths, x)
    order = {p: i for i, p in enumerate(shapes)}  # forward order of the connection modules
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {str(p) for p in points})
    if unknown:
        raise SideModuleError(f"overrides name connection points not in side_blocks: {unknown}", "repnet.overrides")
    specs = []
    for point, path in sorted(zip(points, paths, strict=True), key=lambda pp: order.get(pp[1], len(order))):
        if path not in shapes:
            raise SideModuleError(f"connection point {point!r} ({path}) is not run by the backbone's forward pass")
        (in_shape, out_shape) = shapes[path]
        if len(in_shape) != 4 or len(out_shape) != 4:
            raise SideModuleError(f"connection point {point!r} ({path}) maps {in_shape} to {out_shape}; side modules "
                                   "attach to feature maps (N, C, H, W) only")
        first = not specs and opt.image_first
        if first:  # reads the image, average-pooled to the block's output size
            cin, image_pool, read = in_channels, max(1, image_size // out_shape[-1]), max(1, out_shape[-1])
        else:
            cin, image_pool, read = in_shape[1], 0, in_shape[-1]
        ov = overrides.get(str(point), {})
        if opt.expand is None:
            planned = make_divisible(cin)
        elif opt.divisor > 1:  # TinyTL's make_divisible(int(C_in x expand), 8)
            planned = make_divisible(int(cin * opt.expand), opt.divisor)
        else:
            planned = max(1, round(cin * opt.expand))
        mid = ov.get("width", width if width is not None else planned)
        k = ov.get("kernel", kernel if kernel is not None else (3 if read <= 7 and opt.small_kernel else 5))
        groups = ov.get("groups", opt.groups or (1 if first or cin % 2 or mid % 2 else 2))
        if cin % groups or mid % groups:
            raise SideModuleError(f"groups={groups} must divide the channels {cin} -> {mid} at {point!r}",
                                   "repnet.overrides")
        pool = 2 if read >= 2 else 1
        stride = max(1, -(-in_shape[-1] // max(1, out_shape[-1]))) if opt.block_stride and not first else 1
        if pool > 1 and stride > 1 and read // pool < stride:  # too small a map for both: keep the pool only
            stride = 1
        specs.append(SideSpec(str(point), path, cin, out_shape[1], mid, k, groups, pool, image_pool, stride))
    return specs


@dataclass(frozen=True)
class SideOptions:
    """How a method's side modules differ from Rep-Net's plan (the defaults are Rep-Net's).

    ``image_first``: the first module reads the image (Rep-Net) or, False, its own block's input like the
    others; ``expand``: channels inside a module are its input channels times this (None: Rep-Net's rounding
    up to a multiple of 8); ``small_kernel``: kernel 3 where the map read is 7 x 7 or smaller (else always 5);
    ``block_stride``: the k x k conv takes the block's stride (TinyTL); ``groups``: of every module's k x k
    conv (None: 2 where the channels allow, 1 for a module reading the image); ``divisor``: round the expanded
    width up to a multiple of it (1: to the nearest integer); ``factory``: builds the module from its
    :class:`SideSpec` and layer-name prefix (None: :class:`SideModule`).
    """

    image_first: bool = True
    expand: float | None = None
    small_kernel: bool = True
    block_stride: bool = False
    groups: int | None = None
    divisor: int = 1
    factory: Callable[[SideSpec, str], nn.Module] | None = None


class _SideHook:
    """Forward hook of a connection module: adds the active side module's output to the block's output.

    Stateless (deep copies carry it safely): the side module and the image in use are put on the
    connection module by :meth:`RepNet.features` for the duration of one forward pass.
    """

    def __call__(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        active = module.__dict__.get("_imcsim_side")
        if active is None:
            return out
        side, image = active
        src = image if side.image_pool else args[0]
        return out + side(src, tuple(out.shape[-2:]))


def _key(point: str) -> str:
    return point.replace(".", "_")


class RepNet(nn.Module):
    """Backbone + side modules at connection points + one linear head per task.

    ``side_blocks``: connection points, block indices (``backbone.blocks[i]``) or backbone module names.
    ``side_width`` (None: the reference plan) and ``kernel`` fix every module's width and kernel;
    ``overrides`` maps a point (as given) to ``{width, kernel, groups}``. With ``per_task`` every task
    gets its own side modules (added with its head), so learning a task cannot disturb another's;
    otherwise all tasks share one set.
    """

    def __init__(self, backbone: nn.Module, side_blocks: list[int | str], side_width: int | None, image_size: int,
                 per_task: bool = False, in_channels: int | None = None, kernel: int | None = None,
                 overrides: dict[str, dict[str, int]] | None = None, options: SideOptions | None = None):
        super().__init__()
        self.backbone = backbone
        self.per_task = per_task
        if in_channels is None:
            in_channels = _in_channels(backbone)
        self.side_options = options or SideOptions()
        self.side_specs = (side_plan(backbone, list(side_blocks), image_size, in_channels, side_width, kernel,
                                     overrides, self.side_options) if side_blocks else [])
        for spec in self.side_specs:
            module = backbone.get_submodule(spec.module)
            if not any(isinstance(h, _SideHook) for h in module._forward_hooks.values()):
                module.register_forward_hook(_SideHook())
        self.sides = nn.ModuleDict() if per_task else self._make_sides("side")
        self.heads = nn.ModuleDict()

    def _make_sides(self, prefix: str) -> nn.ModuleDict:
        make = self.side_options.factory or SideModule
        return nn.ModuleDict({_key(s.key): make(s, f"{prefix}.s{s.key}") for s in self.side_specs})

    def add_head(self, task: str, n_classes: int) -> IMCLinear:
        """Add ``task``'s head (and, per task, its side modules)."""
        head = IMCLinear(self.backbone.feature_dim, n_classes, name=f"head.{task}")
        self.heads[task] = head
        if self.per_task and self.side_specs:
            self.sides[task] = self._make_sides(f"side.{task}")
        return head

    def task_sides(self, task: str) -> nn.ModuleDict:
        if not self.per_task:
            return self.sides
        return self.sides[task] if task in self.sides else nn.ModuleDict()

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters a step on ``task`` uses: all but the other tasks' heads and side modules."""
        other = {id(p) for name, h in self.heads.items() if name != task for p in h.parameters()}
        if self.per_task:
            other |= {id(p) for name, s in self.sides.items() if name != task for p in s.parameters()}
        return [p for p in self.parameters() if id(p) not in other]

    def features(self, x: torch.Tensor, task: str) -> torch.Tensor:
        sides = self.task_sides(task)
        taps = []
        for spec in self.side_specs:
            key = _key(spec.key)
            side = sides[key] if key in sides else None  # noqa: SIM401 (ModuleDict has no .get)
            module = self.backbone.get_submodule(spec.module)
            module.__dict__["_imcsim_side"] = None if side is None else (side, x)
            taps.append(module)
        try:
            h = self.backbone(x)
        finally:
            for module in taps:
                module.__dict__["_imcsim_side"] = None
        if h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, 1)
        elif h.dim() == 3:  # tokens (N, T, D): their mean
            h = h.mean(dim=1)
        return h.flatten(1)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.features(x, task))


def _in_channels(backbone: nn.Module) -> int:
    """Input channels of a backbone: those of its first conv."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d | IMCConv2d):
            return m.in_channels if isinstance(m, nn.Conv2d) else m.cin
    raise SideModuleError("cannot tell the backbone's input channels (it has no convolution)", "model")
