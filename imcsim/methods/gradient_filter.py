"""Gradient filtering (Yang, Li and Marculescu, "Efficient On-Device Training via Gradient Filtering",
CVPR 2023; the authors' code, SLDGroup/GradientFilter-CVPR23): the last ``gradient_filter.layers``
convolutions of the backbone train with a gradient filter of patch radius ``gradient_filter.radius``
(:mod:`imcsim.workloads.gradfilter`); the batch norm after each of them trains its scale and shift on its
running statistics; every earlier layer is frozen and every BN stays in eval mode (the reference
configurations ``classification/configs/cls/mbv2/filt_last{N}_r{R}.yaml``: ``set_bn_eval: True``, N = 1-4,
R = 2, 4, 7; "last 2" on MobileNetV2 trains the final 1 x 1 conv and the last block's projection).

The paper reports up to 19x speedup and 77.1 % less training memory than back-propagation through the same
layers on ImageNet, for about 0.1 % accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from imcsim.methods.base import FrozenBackbone, mark, marked
from imcsim.registry import METHODS
from imcsim.workloads.int8 import IMCConv2d
from imcsim.workloads.models import SideModuleError


class GradientFilter(FrozenBackbone):
    """The last N convolutions, filtered, and their BNs' scale and shift; the heads."""

    def prepare_backbone(self, card: Any, backbone: nn.Module) -> None:
        spec = card.gradient_filter
        layers = list(backbone.modules())
        convs = [i for i, m in enumerate(layers) if isinstance(m, IMCConv2d)]
        if spec.layers > len(convs):
            raise SideModuleError(f"the backbone has {len(convs)} convolutions (got layers={spec.layers})",
                                  "gradient_filter.layers")
        for i in convs[-spec.layers:]:
            conv = layers[i]
            if conv.dilation != (1, 1):
                raise SideModuleError(f"{conv.name} is dilated {conv.dilation}; the filter is defined for "
                                      "undilated convolutions", "gradient_filter.layers")
            conv.grad_filter = spec.radius
            mark(conv, "weight")
            after = next((m for m in layers[i + 1:] if isinstance(m, IMCConv2d | nn.BatchNorm2d)), None)
            if isinstance(after, nn.BatchNorm2d):
                mark(after, "affine")

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return marked(model)

    def max_grad_norm(self, card: Any) -> float | None:
        """The reference recipe clips the gradient norm (``gradient_clip_val`` 1.0 on CIFAR, 2.0 on ImageNet):
        a filtered weight gradient points every kernel tap the same way, and a strided conv's is about
        stride^2 x the exact one's."""
        return card.gradient_filter.clip_norm


METHODS.register("gradient_filter", GradientFilter(), "gradient filtering: the last N convolutions train with "
                 "their backward pass on r x r patches (pooled input and gradient), BNs in eval mode")
