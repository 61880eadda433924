"""Torch models for on-device learning: a small CNN backbone and Rep-Net side modules.

Rep-Net (Yang et al., "Rep-Net: Efficient On-Device Learning via Feature
Reprogramming", CVPR 2022): the backbone is frozen; a side module reads the
feature entering a backbone block and its output is added to that block's
output. A side module is: avg-pool (by 4 when it reads the image, else by 2)
-> k x k conv (k = 5, or 3 when the pooled map is 7 x 7 or smaller; grouped
with g = 2 except the first) -> BN -> ReLU -> 1 x 1 conv -> BN whose gamma
starts at zero (so the network starts exactly as the backbone) -> bilinear
upsample to the block output's size. Side modules are not chained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imcsim.workloads.int8 import IMCConv2d, IMCLinear


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, name: str, groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = IMCConv2d(cin, cout, k, name=f"{name}.conv", stride=stride, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


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


class SideModule(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int, pool: int, k: int, groups: int, name: str):
        super().__init__()
        self.pool = pool
        self.conv1 = IMCConv2d(cin, mid, k, name=f"{name}.conv1", groups=groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = IMCConv2d(mid, cout, 1, name=f"{name}.conv2")
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


class RepNet(nn.Module):
    """Backbone + side modules at ``side_blocks`` + one linear head per task.

    With ``per_task`` every task gets its own side modules (added with its head),
    so learning a task cannot disturb another's; otherwise all tasks share one set.
    """

    def __init__(self, backbone: nn.Module, side_blocks: list[int], side_width: int, image_size: int,
                 per_task: bool = False):
        super().__init__()
        self.backbone = backbone
        self.per_task = per_task
        self._side_specs: list[tuple[int, int, int, int, int, int]] = []  # block, cin, cout, pool, k, groups
        size = image_size
        for i, (cin, cout, stride) in enumerate(backbone.block_channels()):
            if i in side_blocks:
                first = i == 0
                pool = 4 if first else 2
                pooled = max(1, size // pool)
                k = 3 if pooled <= 7 else 5
                groups = 1 if first or cin % 2 or side_width % 2 else 2
                self._side_specs.append((i, cin, cout, pool, k, groups))
            size = (size + 2 * 1 - 3) // stride + 1
        self.side_width = side_width
        self.sides = nn.ModuleDict() if per_task else self._make_sides("side")
        self.heads = nn.ModuleDict()

    def _make_sides(self, prefix: str) -> nn.ModuleDict:
        return nn.ModuleDict({
            str(i): SideModule(cin, cout, self.side_width, pool, k, groups, f"{prefix}.s{i}")
            for i, cin, cout, pool, k, groups in self._side_specs
        })

    def add_head(self, task: str, n_classes: int) -> IMCLinear:
        """Add ``task``'s head (and, per task, its side modules)."""
        head = IMCLinear(self.backbone.feature_dim, n_classes, name=f"head.{task}")
        self.heads[task] = head
        if self.per_task and self._side_specs:
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
        h = x
        for i, block in enumerate(self.backbone.blocks):
            inp = h
            h = block(inp)
            side = sides[str(i)] if str(i) in sides else None  # noqa: SIM401 (ModuleDict has no .get)
            if side is not None:
                h = h + side(inp, tuple(h.shape[-2:]))
        return F.adaptive_avg_pool2d(h, 1).flatten(1)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.heads[task](self.features(x, task))
