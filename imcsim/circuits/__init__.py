"""Circuits composed of components around a device's cells: the bit-serial digital macro and the analog crossbar,
both implementing :class:`imcsim.circuits.base.ArrayCircuit`."""

from imcsim.circuits.base import ArrayCircuit, CapacityError, MappingError
from imcsim.circuits.crossbar import AnalogCrossbar, AnalogCrossbarCard
from imcsim.circuits.macro import BitSerialMacro, BitSerialMacroCard
from imcsim.ops import OpRecord
from imcsim.registry import CIRCUITS

CIRCUITS.register("bitserial_macro", BitSerialMacroCard, BitSerialMacro,
                  "bit-serial digital IMC macro: AND-sensing subarrays, counters, adder tree, shift-add")
CIRCUITS.register("analog_crossbar", AnalogCrossbarCard, AnalogCrossbar,
                  "analog ReRAM crossbar: DAC inputs, column current sums, ADCs, differential multi-level slices")
CARD_KINDS = CIRCUITS  # kind -> card model


def build_circuit(card, device) -> ArrayCircuit:
    """Circuit model of a validated card (of any registered kind) on ``device``."""
    return CIRCUITS.for_card(card).build(card, device)


__all__ = ["CARD_KINDS", "AnalogCrossbar", "ArrayCircuit", "BitSerialMacro", "CapacityError", "MappingError", "OpRecord", "build_circuit"]
