"""Workloads: torch models whose INT8 GEMMs run on the IMC macro, and their specs."""

from imcsim.workloads.continual import ContinualCard

CARD_KINDS = {
    "continual_learning": ContinualCard,
}

DESCRIPTIONS = {
    "continual_learning": "frozen backbone + trainable side network (Rep-Net and baselines) over a task sequence",
}

__all__ = ["CARD_KINDS", "DESCRIPTIONS", "ContinualCard"]
