"""The interface every training method implements, and the two workload kinds it can apply to.

A method decides, for the task-sequence trainer (:mod:`imcsim.workloads.trainer`):

* where it applies: :attr:`Method.workloads`;
* what it attaches to the model: Rep-Net side modules (:meth:`Method.side_blocks`, built with the
  model) or adapters on a transformer's projections (:meth:`Method.attach`, over a pool of pretrained
  adapters when :meth:`Method.pool_size` asks for one);
* which parameters train: :meth:`Method.trainable`, besides every task's own head, which always trains;
* what happens per task: :meth:`Method.start_task` (a fresh adapter, reset coefficients) and
  :meth:`Method.task_state` (values kept per task and switched in to test that task);
* the extra ops of a training step: :meth:`Method.step_ops` (such as LoRAFusion's digital fusion);
* its memory rules: :meth:`Method.train_mode` (a batch norm with batch statistics keeps its input for
  backward; a conv or linear keeps its input only if its weight trains, which :meth:`Method.trainable`
  decides) and :meth:`Method.digital_layers` (adapters kept in SRAM in the digital unit, not in the array).

Every hook has a default that does nothing, so a method states only what it changes. Methods hold no
state between runs: the trainer passes in the card, the model and the adapters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from imcsim.ops import OpRecord

CONTINUAL = "continual_learning"  # a frozen CNN backbone learning a task sequence (imcsim.workloads.continual)
ADAPTATION = "lora_adaptation"  # a frozen transformer adapted per task (imcsim.workloads.adaptation)


class Method:
    """A training method (see the module docstring). Register one instance with :data:`imcsim.registry.METHODS`."""

    workloads: ClassVar[frozenset[str]] = frozenset()

    def side_blocks(self, card: Any) -> list[int]:
        """Continual workloads: the backbone blocks that get a Rep-Net side module."""
        return []

    def pool_size(self, card: Any) -> int:
        """Adaptation: how many LoRA adapters to pretrain (in float, off-device) for :meth:`attach`."""
        return 0

    def attach(self, card: Any, model: nn.Module, pool: list) -> list[nn.Module]:
        """Adaptation: wrap the model's projections with adapters (over ``pool``, the pretrained
        adapters' states); return the adapters."""
        return []

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """The parameters the method trains besides the task heads."""
        return ()

    def train_mode(self, model: nn.Module) -> None:
        """Put the model in its training mode, once per epoch (default: everything in training mode)."""
        model.train()

    def digital_layers(self, card: Any, adapters: list[nn.Module]) -> list[nn.Module]:
        """IMC layers of the adapters that live in the digital unit's SRAM instead of the array."""
        return []

    def start_task(self, model: nn.Module, adapters: list[nn.Module]) -> None:
        """Prepare the trainable state for a new task (default: carry on from the previous task)."""

    def task_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The values kept per task once it is learned; testing that task switches them in (default: none,
        every task is tested with the state the model holds)."""
        return {}

    def step_ops(self, macro: Any, adapters: list[nn.Module], rows: int, samples: int) -> list[OpRecord]:
        """Ops the method adds to every training step, each tagged with the layer it belongs to
        (``rows``: operand rows of the step, ``samples``: its batch)."""
        return []


class FrozenBackbone(Method):
    """A continual-learning method that keeps the backbone frozen: its batch norms use their running
    statistics (they keep no input for backward unless their scale trains)."""

    workloads = frozenset({CONTINUAL})

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        model.backbone.eval()


def backbone_bn_biases(model: nn.Module) -> list[nn.Parameter]:
    """The biases of the backbone's batch norms (TinyTL-style bias training)."""
    return [m.bias for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
