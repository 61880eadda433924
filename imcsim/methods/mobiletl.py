"""MobileTL (Chiang, Frumkin, Liang and Marculescu, "MobileTL: On-Device Transfer Learning with Inverted
Residual Blocks", AAAI 2023): the top ``mobiletl.blocks`` blocks of the backbone are fine-tuned, the rest
frozen. In each fine-tuned block:

* every convolution (and linear layer) trains, with its bias if it has one;
* the inner normalisation layers (all but the block's last, e.g. after the expand and the depthwise conv of
  an inverted residual) train their shift only, with frozen scale and running statistics, so they keep no
  input for backward;
* the block's last normalisation layer trains fully (scale, shift, batch statistics);
* ReLU, ReLU6 and hard-swish take a sign function for their backward pass, keeping a 1-bit mask
  (:mod:`imcsim.workloads.activations`).

The paper reports 46.3 % (MobileNetV2) and 53.3 % (MobileNetV3) less memory per fine-tuned block than
fine-tuning it as usual. In a block with a projection shortcut (ResNet), the shortcut's BN trains its shift
only, like an inner one; the main branch's last BN is the block's last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from imcsim.methods.base import FrozenBackbone, batch_statistics, mark, marked
from imcsim.registry import METHODS
from imcsim.workloads.activations import sign_backward_modules
from imcsim.workloads.int8 import IMCModule
from imcsim.workloads.models import SideModuleError

SHORTCUTS = ("downsample", "shortcut")
"""Module names of a block's projection shortcut: its BN is an inner one (shift only), not the block's last."""


class MobileTL(FrozenBackbone):
    """The top blocks' convs, inner-BN shifts and last BNs; sign-backward activations; the heads."""

    def prepare_backbone(self, card: Any, backbone: nn.Module) -> None:
        n = card.mobiletl.blocks
        blocks = getattr(backbone, "blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise SideModuleError("this backbone has no blocks list to take the top blocks of", "mobiletl.blocks")
        if n > len(blocks):
            raise SideModuleError(f"the backbone has {len(blocks)} blocks (got blocks={n})", "mobiletl.blocks")
        for block in blocks[len(blocks) - n:]:
            for m in block.modules():
                if isinstance(m, IMCModule):  # convs, and the linears of a squeeze-excite or a classifier block
                    mark(m, "weight")
            norms = [m for name, m in block.named_modules() if isinstance(m, nn.BatchNorm2d)
                     and not any(part in name for part in SHORTCUTS)]
            shortcut = [m for name, m in block.named_modules() if isinstance(m, nn.BatchNorm2d)
                        and any(part in name for part in SHORTCUTS)]
            for bn in shortcut:
                mark(bn, "shift")
            for bn in norms[:-1]:
                mark(bn, "shift")
            if norms:
                mark(norms[-1], "full")
            sign_backward_modules(block)

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return marked(model)

    def train_mode(self, model: nn.Module) -> None:
        super().train_mode(model)
        batch_statistics(model)


METHODS.register("mobiletl", MobileTL(), "MobileTL: the top blocks fine-tune with inner-BN shifts only, the last "
                 "BN fully and sign-backward activations (1-bit masks)")
