"""Circuits: the bit-serial digital IMC macro built from a device's cell costs."""

from imcsim.circuits.crossbar import AnalogCrossbar, AnalogCrossbarCard
from imcsim.circuits.macro import (
    BitSerialMacro,
    BitSerialMacroCard,
    CapacityError,
    MappingError,
    OpRecord,
)
from imcsim.registry import CIRCUITS

CIRCUITS.register("bitserial_macro", BitSerialMacroCard, BitSerialMacro,
                  "bit-serial digital IMC macro: AND-sensing subarrays, counters, adder tree, shift-add")
CIRCUITS.register("analog_crossbar", AnalogCrossbarCard, AnalogCrossbar,
                  "analog ReRAM crossbar: DAC inputs, column current sums, ADCs, differential multi-level slices")
CARD_KINDS = CIRCUITS  # kind -> card model


def build_circuit(card, device) -> BitSerialMacro:
    """Circuit model of a validated card (of any registered kind) on ``device``."""
    return CIRCUITS.for_card(card).build(card, device)


__all__ = ["CARD_KINDS", "AnalogCrossbar", "BitSerialMacro", "CapacityError", "MappingError", "OpRecord", "build_circuit"]
