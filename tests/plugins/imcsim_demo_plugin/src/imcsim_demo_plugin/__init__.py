"""An imcsim plug-in: the device kind ``demo_sram``, an SRAM cell under another name, and the training
method ``demo_bias_head``.

It shows both contracts: a card model with its own ``kind``, a builder taking (card, seed), and a
``register(devices)`` function named by an entry point in the group ``imcsim.devices``; a
:class:`imcsim.methods.base.Method` and a ``register_methods(methods)`` function named by an entry point
in the group ``imcsim.methods``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from imcsim.devices.sram import SRAM, SRAMCard
from imcsim.methods.base import FrozenBackbone


class DemoSRAMCard(SRAMCard):
    """An SRAM card of kind ``demo_sram``."""

    kind: Literal["demo_sram"]


def register(devices) -> None:
    devices.register("demo_sram", DemoSRAMCard, lambda card, seed: SRAM.from_card(card),
                     "demo plug-in: a 6T SRAM cell registered by another package")


class DemoBiasHead(FrozenBackbone):
    """Continual learning that trains the heads and the bias of the backbone's last batch norm."""

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        return [norms[-1].bias]


def register_methods(methods) -> None:
    methods.register("demo_bias_head", DemoBiasHead(),
                     "demo plug-in: the heads and the bias of the backbone's last batch norm train")
