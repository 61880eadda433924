"""Device physics: each model derives per-action cell costs from physical parameters.

Each device kind registers in :data:`imcsim.registry.DEVICES` (its card model, builder and description);
``build_device`` turns a validated card into a device model (see :mod:`imcsim.devices.base`).
"""

from __future__ import annotations

import inspect

from imcsim.devices.base import MemoryDevice, WriteEvents
from imcsim.devices.mram import SOTMRAM, STTMRAM, SOTMRAMCard, STTMRAMCard
from imcsim.devices.reram import ReRAM, ReRAMCard
from imcsim.devices.sas_mram import SASMRAM, SASMRAMCard
from imcsim.devices.sram import SRAM, SRAMCard
from imcsim.registry import DEVICES

DEVICES.register("sas_mram", SASMRAMCard, lambda card, seed, temperature_k=300.0: SASMRAM.from_card(card, temperature_k),
                 "STT-assisted SOT MRAM: N MTJs share one heavy-metal write line and transistor")
DEVICES.register("stt_mram", STTMRAMCard, lambda card, seed, temperature_k=300.0: STTMRAM.from_card(card, temperature_k),
                 "STT-MRAM 1T1MTJ: write current through the MTJ")
DEVICES.register("sot_mram", SOTMRAMCard, lambda card, seed, temperature_k=300.0: SOTMRAM.from_card(card, temperature_k),
                 "SOT-MRAM 2T1MTJ: write current through a heavy-metal strip under the MTJ")
DEVICES.register("sram", SRAMCard, lambda card, seed: SRAM.from_card(card),
                 "6T SRAM: bitline-capacitance read/write energy, leakage, area in F^2")
DEVICES.register("reram", ReRAMCard, lambda card, seed: ReRAM.from_card(card, seed=seed),
                 "ReRAM 1T1R: multi-level conductance, stochastic write-and-verify programming")
CARD_KINDS = DEVICES  # kind -> card model


def build_device(card, seed: int = 0, temperature_k: float = 300.0) -> MemoryDevice:
    """Device model for a validated card (of any registered kind). Raises PhysicsError for unphysical cards.

    ``seed`` feeds devices with stochastic behaviour (ReRAM programming); ``temperature_k`` (``run.temperature``)
    sets the temperature-dependent physics of the devices that model it (a builder that takes a
    ``temperature_k`` keyword).
    """
    build = DEVICES.for_card(card).build
    try:
        takes_temperature = "temperature_k" in inspect.signature(build).parameters
    except (TypeError, ValueError):
        takes_temperature = False
    if takes_temperature:
        return build(card, seed, temperature_k=temperature_k)
    return build(card, seed)


def device_warnings(device) -> list[tuple[str, str]]:
    """(card key, message) for each rate of the device's operating point above its card's limit (devices without
    such limits report none)."""
    return list(getattr(device, "warnings", lambda: [])())


__all__ = ["CARD_KINDS", "MemoryDevice", "WriteEvents", "build_device", "device_warnings"]
