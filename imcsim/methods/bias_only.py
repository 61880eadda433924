"""Bias-only training (TinyTL-style, Cai et al., NeurIPS 2020): the backbone's BN biases and the heads train."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from imcsim.methods.base import FrozenBackbone, backbone_bn_biases
from imcsim.registry import METHODS


class BiasOnly(FrozenBackbone):
    """The backbone's BN biases (shared by the tasks) and the heads."""

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return backbone_bn_biases(model)


METHODS.register("bias_only", BiasOnly(), "TinyTL-style: the backbone's batch-norm biases and the heads train, "
                 "the weights stay frozen")
