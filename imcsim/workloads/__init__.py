"""Workloads: torch models whose INT8 GEMMs run on the IMC macro, and their specs."""

from imcsim.workloads.adaptation import AdaptationCard
from imcsim.workloads.continual import ContinualCard

CARD_KINDS = {
    "continual_learning": ContinualCard,
    "lora_adaptation": AdaptationCard,
}

DESCRIPTIONS = {
    "continual_learning": "frozen backbone + trainable side network (Rep-Net and baselines) over a task sequence",
    "lora_adaptation": "frozen transformer adapted per task with LoRA, LoRAFusion or full fine-tuning",
}

__all__ = ["CARD_KINDS", "DESCRIPTIONS", "AdaptationCard", "ContinualCard"]
