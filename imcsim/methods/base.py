"""The interface every training method implements, and the two workload kinds it can apply to.

A method decides, for the task-sequence trainer (:mod:`imcsim.workloads.trainer`):

* where it applies: :attr:`Method.workloads`;
* what it attaches to the model: modules beside a CNN backbone's blocks (:meth:`Method.sides`: Rep-Net's
  side modules, TinyTL's lite residuals, DA2/DA3's attention adaptors, built with the model), changes to
  the backbone's own layers (:meth:`Method.prepare_backbone`: gradient filters, MobileTL's activations), or
  adapters on a transformer's projections (:meth:`Method.attach`, over a pool of pretrained
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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from imcsim.ops import OpRecord
from imcsim.workloads.models import SideOptions

CONTINUAL = "continual_learning"  # a frozen CNN backbone learning a task sequence (imcsim.workloads.continual)
ADAPTATION = "lora_adaptation"  # a frozen transformer adapted per task (imcsim.workloads.adaptation)


@dataclass(frozen=True)
class Sides:
    """Modules beside a CNN backbone (:class:`imcsim.workloads.models.RepNet` builds them): the connection
    points (``blocks``), one width and kernel for all (None: the plan's), per-point overrides, whether each
    task gets its own, how the plan and the module differ from Rep-Net's (``options``), and the method's card
    keys that a plan error names instead of Rep-Net's (``keys``: ``repnet.side_blocks`` -> ``tinytl.blocks``)."""

    blocks: list[int | str]
    width: int | None = None
    kernel: int | None = None
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    per_task: bool = True
    options: SideOptions = field(default_factory=SideOptions)
    keys: dict[str, str] = field(default_factory=dict)  # the card keys its errors name, for Rep-Net's keys


class Method:
    """A training method (see the module docstring). Register one instance with :data:`imcsim.registry.METHODS`."""

    workloads: ClassVar[frozenset[str]] = frozenset()

    def sides(self, card: Any, backbone: nn.Module) -> Sides | None:
        """Continual workloads: the modules beside the backbone's blocks (default: none)."""
        return None

    def prepare_backbone(self, card: Any, backbone: nn.Module) -> None:
        """Continual workloads: change the backbone's layers for this method once it is built (default: none)."""

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

    def max_grad_norm(self, card: Any) -> float | None:
        """Clip each step's gradient to this global norm before the update, as the method's recipe does
        (default: no clipping)."""
        return None

    def digital_layers(self, card: Any, adapters: list[nn.Module]) -> list[nn.Module]:
        """IMC layers of the adapters that live in the digital unit's SRAM instead of the array."""
        return []

    def start_task(self, model: nn.Module, adapters: list[nn.Module]) -> None:
        """Prepare the trainable state for a new task (default: carry on from the previous task)."""

    def task_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The values kept per task once it is learned; testing that task switches them in (default: none,
        every task is tested with the state the model holds)."""
        return {}

    def task_figures(self, model: nn.Module, adapters: list[nn.Module]) -> dict[str, float]:
        """Figures of the method's trained state once a task is learned, added to its row of the per-task table
        (default: none)."""
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


TRAIN_ROLE = "_imcsim_train"
"""The attribute a method sets on a backbone layer it trains in part (:func:`mark`, :func:`marked`)."""


def mark(module: nn.Module, role: str) -> None:
    """Mark a backbone layer as trained by the method: ``weight`` (a conv's or linear's weight and bias, if it has
    one), ``affine`` (a BN's scale and
    shift, on its running statistics), ``shift`` (a BN's shift only) or ``full`` (a BN's scale and shift, on
    batch statistics)."""
    setattr(module, TRAIN_ROLE, role)


def marked(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the backbone layers a method marked (:func:`mark`), by their roles."""
    out: list[nn.Parameter] = []
    for m in model.backbone.modules():
        role = getattr(m, TRAIN_ROLE, None)
        if role == "weight":
            out += [p for p in (m.weight, getattr(m, "bias", None)) if p is not None]
        elif role == "shift":
            out.append(m.bias)
        elif role in ("affine", "full"):
            out += [m.weight, m.bias]
    return out


def batch_statistics(model: nn.Module) -> None:
    """Put the backbone's BNs marked ``full`` in training mode (batch statistics), the rest as they are."""
    for m in model.backbone.modules():
        if getattr(m, TRAIN_ROLE, None) == "full":
            m.train()
