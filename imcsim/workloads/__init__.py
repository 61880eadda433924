"""Workloads: torch models whose INT8 GEMMs run on the IMC macro, and their specs."""

from imcsim.registry import WORKLOADS
from imcsim.workloads.adaptation import AdaptationCard
from imcsim.workloads.continual import ContinualCard

WORKLOADS.register("continual_learning", ContinualCard, None,
                   "frozen backbone + trainable side network (Rep-Net and baselines) over a task sequence")
WORKLOADS.register("lora_adaptation", AdaptationCard, None,
                   "frozen transformer adapted per task with LoRA, LoRAFusion or full fine-tuning")
CARD_KINDS = WORKLOADS  # kind -> card model

__all__ = ["CARD_KINDS", "AdaptationCard", "ContinualCard"]
