"""Rep-Net plus the backbone's batch-norm biases: side modules, heads and BN biases train."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from imcsim.methods.base import backbone_bn_biases
from imcsim.methods.repnet import RepNet
from imcsim.registry import METHODS


class RepNetBias(RepNet):
    """Rep-Net's side modules and heads, and the backbone's BN biases (shared by the tasks)."""

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [*super().trainable(model), *backbone_bn_biases(model)]


METHODS.register("repnet_bias", RepNetBias(), "Rep-Net side modules and heads plus the backbone's batch-norm "
                 "biases (shared by the tasks)")
