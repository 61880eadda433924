"""Circuit blocks as components: each kind registers its card model and class once (``imcsim list components``).

Circuits build their blocks from the component cards their card names (``circuits/components/``); see
:mod:`imcsim.components.base` for what a component owns.
"""

from imcsim.components.base import SCALING_RANGE, Component, ComponentCard, CostPoint, Technology
from imcsim.components.blocks import (
    Adc,
    AdcCard,
    Buffer,
    CellGate,
    Dac,
    DacCard,
    DigitalUnit,
    DigitalUnitCard,
    FullAdderCard,
    LineDriver,
    LineDriverCard,
    LogicGateCard,
    RegisterCard,
    SenseAmp,
    SenseAmpCard,
    WriteDriver,
    WriteDriverCard,
)
from imcsim.components.memory import (
    Dram,
    DramCard,
    GlobalBuffer,
    GlobalBufferCard,
    Interconnect,
    InterconnectCard,
    LogicLeakage,
    LogicLeakageCard,
)
from imcsim.components.power import PowerGatingCard, ProcessCornerCard
from imcsim.registry import COMPONENTS

COMPONENTS.register("sense_amp", SenseAmpCard, SenseAmp, "sense amplifier: one column sensed per cycle")
COMPONENTS.register("line_driver", LineDriverCard, LineDriver,
                    "row or bit-column driver: energy per cell on the driven line")
COMPONENTS.register("full_adder", FullAdderCard, None,
                    "full-adder cell: builds column counters, the adder tree, shift-add, partial sums and popcounts")
COMPONENTS.register("register", RegisterCard, Buffer, "register bit: input and output operand buffers")
COMPONENTS.register("logic_gate", LogicGateCard, CellGate,
                    "gate beside each cell of an in-cell-compute array: energy per evaluation, area per cell")
COMPONENTS.register("write_driver", WriteDriverCard, WriteDriver, "write driver: overhead of one write pulse")
COMPONENTS.register("global_buffer", GlobalBufferCard, GlobalBuffer,
                    "on-chip SRAM buffer: read/write energy per bit, leakage and area from an analytical SRAM model")
COMPONENTS.register("dram", DramCard, Dram, "off-chip DRAM: energy per bit, channel bandwidth, background power")
COMPONENTS.register("interconnect", InterconnectCard, Interconnect,
                    "on-chip repeated wires: energy per bit per length, distance from the floorplan")
COMPONENTS.register("logic_leakage", LogicLeakageCard, LogicLeakage,
                    "static power of logic per area, with its temperature dependence")
COMPONENTS.register("process_corner", ProcessCornerCard, None,
                    "transistor flavour of the chip (HP, LOP, LSTP, a library): supply, on and off current per width")
COMPONENTS.register("power_gating", PowerGatingCard, None,
                    "power gating of idle blocks: policy per domain, residual leakage, wake-up energy and time")
COMPONENTS.register("dac", DacCard, Dac, "input DAC of an analog crossbar (binary-weighted per bit)")
COMPONENTS.register("adc", AdcCard, Adc, "column/row ADC of an analog crossbar: energy per conversion vs resolution")
COMPONENTS.register("digital_unit", DigitalUnitCard, DigitalUnit,
                    "near-memory digital unit: INT8 MACs and FP32 SGD updates, lanes per cycle")

__all__ = ["COMPONENTS", "SCALING_RANGE", "Component", "ComponentCard", "CostPoint", "Technology"]
