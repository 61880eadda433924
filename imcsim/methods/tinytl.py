"""TinyTL (Cai, Gan, Zhu and Han, "TinyTL: Reduce Memory, Not Parameters for Efficient On-Device
Learning", NeurIPS 2020; the authors' code, ``tinytl/model/modules.py`` of mit-han-lab/tinyml): the
backbone's weights stay frozen; its batch-norm biases train, and a lite residual module beside every
residual block learns what the biases alone cannot.

A lite residual module (``LiteResidualModule`` of the reference code) reads its block's input, average-pools
it by 2, applies a k x k group conv (groups 2, width ``expand`` x its input channels, the block's stride), a
norm and ReLU, a 1 x 1 conv to the block's output channels and a final norm whose scale starts at zero, and
is upsampled and added to the block's output: :class:`imcsim.workloads.models.SideModule` under
:class:`TinyTL`'s plan. The reference code's defaults (``tinytl.*`` in the card): kernel 5, expand 1, groups 2.
Because the modules read activations downsampled by 2 and at a reduced width, the memory they keep is a
small fraction of the backbone's (the paper: up to 6.5x less training memory than fine-tuning the whole
network, 3.8 % more parameters).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from imcsim.methods.base import FrozenBackbone, Sides, backbone_bn_biases
from imcsim.registry import METHODS
from imcsim.workloads.models import SideOptions, residual_blocks


class TinyTL(FrozenBackbone):
    """Lite residual modules beside every residual block (or ``tinytl.blocks``), the backbone's BN biases
    (shared by the tasks) and the heads."""

    def sides(self, card: Any, backbone: nn.Module) -> Sides:
        t = card.tinytl
        return Sides(residual_blocks(backbone, t.blocks, "tinytl.blocks"), None, t.kernel, {}, t.per_task,
                     SideOptions(image_first=False, expand=t.expand, small_kernel=False, block_stride=True,
                                 groups=t.groups, divisor=8),
                     {"repnet.side_blocks": "tinytl.blocks", "repnet.overrides": "tinytl.groups"})

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [*model.sides.parameters(), *backbone_bn_biases(model)]


METHODS.register("tinytl", TinyTL(), "TinyTL: lite residual modules beside every residual block, the backbone's "
                 "batch-norm biases and the heads train; the weights stay frozen")
