"""Circuits: the bit-serial digital IMC macro built from a device's cell costs."""

from imcsim.circuits.crossbar import AnalogCrossbar, AnalogCrossbarCard
from imcsim.circuits.macro import (
    BitSerialMacro,
    BitSerialMacroCard,
    CapacityError,
    MappingError,
    OpRecord,
)

CARD_KINDS = {
    "bitserial_macro": BitSerialMacroCard,
    "analog_crossbar": AnalogCrossbarCard,
}

DESCRIPTIONS = {
    "bitserial_macro": "bit-serial digital IMC macro: AND-sensing subarrays, counters, adder tree, shift-add",
    "analog_crossbar": "analog ReRAM crossbar: DAC inputs, column current sums, ADCs, differential multi-level slices",
}


def build_circuit(card, device) -> BitSerialMacro:
    if isinstance(card, AnalogCrossbarCard):
        return AnalogCrossbar(card, device)
    if isinstance(card, BitSerialMacroCard):
        return BitSerialMacro(card, device)
    raise TypeError(f"no circuit model for card type {type(card).__name__}")


__all__ = ["CARD_KINDS", "DESCRIPTIONS", "AnalogCrossbar", "BitSerialMacro", "CapacityError", "MappingError", "OpRecord", "build_circuit"]
