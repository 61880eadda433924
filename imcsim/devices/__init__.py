"""Device physics: each model derives per-action cell costs from physical parameters.

``CARD_KINDS`` maps a card's ``kind`` to its typed card model; ``build_device``
turns a validated card into a device model (see :mod:`imcsim.devices.base`).
"""

from __future__ import annotations

from imcsim.devices.base import MemoryDevice, WriteEvents
from imcsim.devices.mram import SOTMRAM, STTMRAM, SOTMRAMCard, STTMRAMCard
from imcsim.devices.reram import ReRAM, ReRAMCard
from imcsim.devices.sas_mram import SASMRAM, SASMRAMCard
from imcsim.devices.sram import SRAM, SRAMCard

CARD_KINDS = {
    "sas_mram": SASMRAMCard,
    "stt_mram": STTMRAMCard,
    "sot_mram": SOTMRAMCard,
    "sram": SRAMCard,
    "reram": ReRAMCard,
}

DESCRIPTIONS = {
    "sas_mram": "STT-assisted SOT MRAM: N MTJs share one heavy-metal write line and transistor",
    "stt_mram": "STT-MRAM 1T1MTJ: write current through the MTJ",
    "sot_mram": "SOT-MRAM 2T1MTJ: write current through a heavy-metal strip under the MTJ",
    "sram": "6T SRAM: bitline-capacitance read/write energy, leakage, area in F^2",
    "reram": "ReRAM 1T1R: multi-level conductance, stochastic write-and-verify programming",
}

_BUILDERS = {
    SASMRAMCard: SASMRAM.from_card,
    STTMRAMCard: STTMRAM.from_card,
    SOTMRAMCard: SOTMRAM.from_card,
    SRAMCard: SRAM.from_card,
}


def build_device(card, seed: int = 0) -> MemoryDevice:
    """Device model for a validated card. Raises PhysicsError for unphysical cards.

    ``seed`` feeds devices with stochastic behaviour (ReRAM programming).
    """
    if isinstance(card, ReRAMCard):
        return ReRAM.from_card(card, seed=seed)
    builder = _BUILDERS.get(type(card))
    if builder is None:
        raise TypeError(f"no device model for card type {type(card).__name__}")
    return builder(card)


__all__ = ["CARD_KINDS", "DESCRIPTIONS", "MemoryDevice", "WriteEvents", "build_device"]
