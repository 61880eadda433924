"""LoRAFusion: a pool of pretrained LoRA adapters deployed once; per task only fusion coefficients and
magnitude vectors train, in SRAM (zero array writes per task).

The adapted weight is ``m * (W0 + dW) / ||W0 + dW||`` with ``dW`` the coefficient-weighted pool
(:class:`imcsim.workloads.transformer.LoRAFusionLinear`). The pool is ``adapters.pool_size`` adapters
trained in float on pool tasks before deployment. Each task keeps its coefficients and magnitudes;
testing a task switches them in, at no write. Combining the pool's outputs and the row norms run in the
digital unit: :func:`fusion_ops`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from imcsim.methods.base import ADAPTATION, Method
from imcsim.ops import OpRecord
from imcsim.registry import METHODS
from imcsim.workloads.transformer import (
    LoRAFusionLinear,
    attach_lorafusion,
    fusion_coefficients,
    lora_pool_from,
)


def _trained_key(key: str) -> bool:
    return key.endswith(".w") or key.endswith(".magnitude")


class LoRAFusion(Method):
    """Fusion coefficients (per block) and magnitudes (per adapted projection) over a frozen pool."""

    workloads = frozenset({ADAPTATION})

    def pool_size(self, card: Any) -> int:
        return card.adapters.pool_size

    def attach(self, card: Any, model: nn.Module, pool: list) -> list[nn.Module]:
        return attach_lorafusion(model, lora_pool_from(pool), card.adapters.targets, card.adapters.rank)

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for m in model.modules() if isinstance(m, LoRAFusionLinear) for p in (m.coef.w, m.magnitude)]

    def start_task(self, model: nn.Module, adapters: list[nn.Module]) -> None:
        """Coefficients zero and magnitudes the base row norms: the task starts from the base model."""
        with torch.no_grad():
            for c in fusion_coefficients(model):
                c.w.zero_()
            for a in adapters:
                a.magnitude.copy_(a.base.weight.norm(dim=1))

    def task_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The task's coefficients and magnitudes, kept in SRAM."""
        return {k: v.detach().clone() for k, v in model.state_dict().items() if _trained_key(k)}

    def step_ops(self, macro: Any, adapters: list[nn.Module], rows: int, samples: int) -> list[OpRecord]:
        return fusion_ops(macro, adapters, rows, samples)


def fusion_ops(macro: Any, adapters: list[LoRAFusionLinear], rows: int, samples: int) -> list[OpRecord]:
    """LoRAFusion's digital work per step and adapted linear: combining the pool outputs with the
    coefficients (N x rows x (r + d)), forming B_l A_l and the row norms of W0 + dW (d x r x k and d x k),
    each also in the backward pass."""
    ops: list[OpRecord] = []
    for a in adapters:
        d, k = a.base.weight.shape
        for phase in ("forward", "input_grad"):
            ops += [rec.tagged(module=a.name) for rec in (
                macro.digital_gemm(len(a.pool), rows, a.rank + d, phase=phase, layer=f"{a.name}.fusion",
                                   samples=samples),
                macro.digital_gemm(d, a.rank + 1, k, phase=phase, layer=f"{a.name}.norm", samples=samples))]
    return ops


METHODS.register("lorafusion", LoRAFusion(), "LoRAFusion: a pool of pretrained LoRA adapters deployed once; "
                 "per-task fusion coefficients and magnitudes train in SRAM, with no array writes")
