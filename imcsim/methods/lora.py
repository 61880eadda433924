"""LoRA (Hu et al., ICLR 2022): low-rank A and B beside each targeted projection; a fresh pair per task.

The adapters fill one slot (earlier tasks are tested with the latest adapter). With
``adapter_memory: reram`` A and B are stored in the array and every optimizer step rewrites their
changed cells (write-and-verify); with ``sram`` they live in the digital unit, whose GEMMs and updates
are counted there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from imcsim.methods.base import ADAPTATION, Method
from imcsim.registry import METHODS
from imcsim.workloads.transformer import LoRALinear, attach_lora


class LoRA(Method):
    """A and B of the card's ``adapters.targets`` at ``adapters.rank``; re-initialised at every task."""

    workloads = frozenset({ADAPTATION})

    def attach(self, card: Any, model: nn.Module, pool: list) -> list[nn.Module]:
        return attach_lora(model, card.adapters.targets, card.adapters.rank)

    def trainable(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A.weight, m.lora_B.weight)]

    def digital_layers(self, card: Any, adapters: list[nn.Module]) -> list[nn.Module]:
        return [m for a in adapters for m in (a.lora_A, a.lora_B)] if card.adapter_memory == "sram" else []

    def start_task(self, model: nn.Module, adapters: list[nn.Module]) -> None:
        """A fresh adapter in the same slot: A Kaiming-uniform, B zero (the task starts from the base model)."""
        with torch.no_grad():
            for a in adapters:
                nn.init.kaiming_uniform_(a.lora_A.weight, a=5**0.5)
                a.lora_B.weight.zero_()


METHODS.register("lora", LoRA(), "LoRA: low-rank A and B per adapted projection, a fresh pair per task, in ReRAM "
                 "(rewritten every step) or SRAM")
