"""Full fine-tuning: every parameter trains, in the array (the reference every other method saves against).

On a CNN backbone its batch norms use batch statistics (and so keep their inputs for backward).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from imcsim.methods.base import ADAPTATION, CONTINUAL, Method
from imcsim.registry import METHODS


class Full(Method):
    """Everything trains; the model trains in training mode throughout."""

    workloads = frozenset({CONTINUAL, ADAPTATION})

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return model.parameters()


METHODS.register("full", Full(), "full fine-tuning: every weight trains in the array (the baseline of both workloads)")
