"""Device physics: each model derives per-action cell costs from physical parameters.

``CARD_KINDS`` maps a card's ``kind`` to its typed card model; ``build_device``
turns a validated card into a device model (see :mod:`imcsim.devices.base`).
"""

from __future__ import annotations

from imcsim.devices.base import MemoryDevice, WriteEvents
from imcsim.devices.sas_mram import SASMRAM, SASMRAMCard

CARD_KINDS = {
    "sas_mram": SASMRAMCard,
}

DESCRIPTIONS = {
    "sas_mram": "STT-assisted SOT MRAM: N MTJs share one heavy-metal write line and transistor",
}


def build_device(card) -> MemoryDevice:
    """Device model for a validated card. Raises PhysicsError for unphysical cards."""
    if isinstance(card, SASMRAMCard):
        return SASMRAM.from_card(card)
    raise TypeError(f"no device model for card type {type(card).__name__}")


__all__ = ["CARD_KINDS", "DESCRIPTIONS", "MemoryDevice", "WriteEvents", "build_device"]
