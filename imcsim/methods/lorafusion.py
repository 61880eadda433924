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
from imcsim.workloads.adaptation import LoRAFusionSpec
from imcsim.workloads.transformer import (
    LoRAFusionLinear,
    attach_lorafusion,
    init_fusion_coefficients,
    lora_pool_from,
)


def _spec(layer: nn.Module) -> LoRAFusionSpec:
    """The ``lorafusion`` card section a wrapper was attached with (the defaults for one made by hand)."""
    return getattr(layer, "fusion", None) or LoRAFusionSpec()


def _trained_key(key: str) -> bool:
    return key.endswith(".w") or key.endswith(".magnitude")


class LoRAFusion(Method):
    """Fusion coefficients (per block) and magnitudes (per adapted projection) over a frozen pool."""

    workloads = frozenset({ADAPTATION})

    def pool_size(self, card: Any) -> int:
        return card.adapters.pool_size

    def attach(self, card: Any, model: nn.Module, pool: list) -> list[nn.Module]:
        """The wrappers, each carrying the card's ``lorafusion`` section (coefficient init and training, norm)."""
        wrappers = attach_lorafusion(model, lora_pool_from(pool), card.adapters.targets, card.adapters.rank,
                                     layout=card.lorafusion.layout)
        for w in wrappers:
            w.fusion = card.lorafusion
            w.detach_norm = card.lorafusion.norm == "detached"
            w.merged_backward = card.lorafusion.backward == "merged"
        return wrappers

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """The magnitudes, and the coefficients unless ``lorafusion.train_coefficients`` is false."""
        return [p for m in model.modules() if isinstance(m, LoRAFusionLinear)
                for p in ((m.coef.w, m.magnitude) if _spec(m).train_coefficients else (m.magnitude,))]

    def start_task(self, model: nn.Module, adapters: list[nn.Module]) -> None:
        """Coefficients as ``lorafusion.coefficient_init`` sets them (the reference's Xavier draw from torch's
        seeded generator, or zero) and magnitudes the row norms of the merged weight W0 + dW they give, so the
        task starts at the base model plus the fused pool update."""
        if not adapters:
            return
        init_fusion_coefficients(model, _spec(adapters[0]).coefficient_init)
        with torch.no_grad():
            for a in adapters:
                a.magnitude.copy_(a.row_norms())
                a.coef.w_start = a.coef.w.detach().clone()

    def task_figures(self, model: nn.Module, adapters: list[nn.Module]) -> dict[str, float]:
        """How far the task moved its coefficients (mean |w - w_start| over every block's) and the largest |w|."""
        coefs = {id(a.coef): a.coef for a in adapters if hasattr(a.coef, "w_start")}.values()
        if not coefs:
            return {}
        moved = torch.cat([(c.w.detach() - c.w_start).abs() for c in coefs])
        return {"coefficient_change_mean": float(moved.mean()),
                "coefficient_max": float(torch.cat([c.w.detach().abs() for c in coefs]).max())}

    def task_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The task's coefficients and magnitudes, kept in SRAM."""
        return {k: v.detach().clone() for k, v in model.state_dict().items() if _trained_key(k)}

    def step_ops(self, macro: Any, adapters: list[nn.Module], rows: int, samples: int) -> list[OpRecord]:
        return fusion_ops(macro, adapters, rows, samples)


def fusion_ops(macro: Any, adapters: list[LoRAFusionLinear], rows: int, samples: int) -> list[OpRecord]:
    """LoRAFusion's digital work per step and adapted linear: combining the pool outputs with the
    coefficients (N x rows x (r + d)), forming B_l A_l and the row norms of W0 + dW (d x r x k and d x k),
    each also in the backward pass; and the coefficient gradient: through the merged adapters, the outer
    products dL/dA_l and dL/dB_l (rows x r x (k + d)) and their inner products with each pool adapter
    (N x r x (k + d)); through the pool outputs, each output's inner product with its gradient
    (N x rows x (r + d)). With the stacked layout the B side is summed in the array: the digital unit combines
    the N parts of u and scales u by each coefficient (N x rows x 2r), and the pool-output gradient pairs each
    B_i^T g of the stacked input gradient with u (N x rows x 2r)."""
    ops: list[OpRecord] = []
    for a in adapters:
        d, k = a.base.weight.shape
        n, r = a.pool_size, a.rank
        width = 2 * r if a.stacked else r + d
        for phase in ("forward", "input_grad"):
            ops += [rec.tagged(module=a.name) for rec in (
                macro.digital_gemm(n, rows, width, phase=phase, layer=f"{a.name}.fusion", samples=samples),
                macro.digital_gemm(d, r + 1, k, phase=phase, layer=f"{a.name}.norm", samples=samples))]
        if not _spec(a).train_coefficients:
            continue
        grads = ((r, rows, k + d), (n, 1, r * (k + d))) if a.merged_backward else ((n, rows, width),)
        ops += [macro.digital_gemm(*shape, phase="weight_grad", layer=f"{a.name}.coef_grad", samples=samples
                                   ).tagged(module=a.name) for shape in grads]
    return ops


METHODS.register("lorafusion", LoRAFusion(), "LoRAFusion: a pool of pretrained LoRA adapters deployed once; "
                 "per-task fusion coefficients and magnitudes train in SRAM, with no array writes")
