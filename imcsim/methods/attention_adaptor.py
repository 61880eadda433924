"""DA2 and DA3 (Yang, Rakin and Fan: "DA2: Deep Attention Adapter for Memory-Efficient On-Device
Multi-Domain Learning", arXiv 2012.01362 v1, 2020; "DA3: Dynamic Additive Attention Adaption for
Memory-Efficient On-Device Multi-Domain Learning", CVPR Workshops 2022, pp. 2619-2627).

The backbone is frozen, so its convolutions keep no input for backward; a light attention adaptor per
block is learned per domain (task), with the domain's head: a residual attention adaptor in DA2, an
additive one in DA3 (:class:`imcsim.workloads.models.AttentionAdaptor`, whose docstring states the design
choices the papers leave open). The papers report 19-37x less training memory than fine-tuning on a
Jetson Nano, and DA3 2x shorter training. Multi-domain learning is the task sequence, each task with its
own adaptors (``attention.per_task``) and head.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from torch import nn

from imcsim.methods.base import FrozenBackbone, Sides
from imcsim.registry import METHODS
from imcsim.workloads.models import AttentionAdaptor, SideOptions, residual_blocks


class AttentionAdaptorMethod(FrozenBackbone):
    """Attention adaptors of one ``variant`` beside every residual block (or ``attention.blocks``); they and
    the heads train."""

    def __init__(self, variant: str):
        self.variant = variant

    def sides(self, card: Any, backbone: nn.Module) -> Sides:
        a = card.attention
        return Sides(residual_blocks(backbone, a.blocks, "attention.blocks"), None, a.kernel, {}, a.per_task,
                     SideOptions(image_first=False, expand=1.0 / a.reduction, groups=1,
                                 factory=partial(AttentionAdaptor, variant=self.variant)),
                     {"repnet.side_blocks": "attention.blocks", "repnet.overrides": "attention.reduction"})

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return model.sides.parameters()


METHODS.register("da2", AttentionAdaptorMethod("residual"), "DA2: a residual attention adaptor beside every "
                 "residual block, learned per task with its head; the backbone is frozen")
METHODS.register("da3", AttentionAdaptorMethod("additive"), "DA3: an additive attention adaptor beside every "
                 "residual block, learned per task with its head; the backbone is frozen")
