"""Rep-Net (Yang et al., CVPR 2022): side modules beside a frozen backbone; they and the heads train.

A side module reads the backbone feature entering a block and adds its output after that block
(:class:`imcsim.workloads.models.SideModule`); the card's ``repnet`` section names the blocks, the side
width and whether each task gets its own side modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from imcsim.methods.base import FrozenBackbone, Sides
from imcsim.registry import METHODS


class RepNet(FrozenBackbone):
    """Side modules at ``repnet.side_blocks``; the side modules and the heads train."""

    def sides(self, card: Any, backbone: nn.Module) -> Sides:
        r = card.repnet
        return Sides(list(r.side_blocks), r.width, r.kernel, dict(r.overrides), r.per_task)

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return model.sides.parameters()


METHODS.register("repnet", RepNet(), "Rep-Net: side modules read the feature entering a backbone block and add "
                 "their output after it; side modules and heads train, the backbone is frozen")
