"""The circuit blocks: sense amplifier, line drivers, adder logic (counters, adder tree, shift-add, partial sums,
popcount tree), buffers, write drivers, converters, and the digital unit (the chip's memory is in :mod:`imcsim.components.memory`).

Each class owns its actions (with their kind), its area per instance and the scaling of its card's cost point
(:class:`imcsim.components.base.CostPoint`). The adder logic is built from one full-adder cell card: an
increment toggles about 2 counter bits; an adder tree combining the 8 weight-bit counts of one output adds
7 numbers of counter + 8 bits; a shift-add or a partial sum is a 32-bit addition; a popcount tree over W bits
adds sum_l (W / 2^l) l bits.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from imcsim.actions import ActionSpec
from imcsim.components.base import Component, ComponentCard, CostPoint, PointCard, Technology
from imcsim.errors import PhysicsError
from imcsim.params import EnergyJ, FrequencyHz, TimeS

N_BITS = 8  # INT8 operands
ACC_BITS = 32  # output accumulators (INT32 partial sums)
COUNTER_TOGGLES_PER_INCREMENT = 2.0  # a binary counter increment toggles 1 + 1/2 + 1/4 + ... < 2 bits


class SenseAmpCard(PointCard):
    kind: Literal["sense_amp"]


class LineDriverCard(PointCard):
    """Energy per cell on a driven line (the line's wire and gate capacitance)."""

    kind: Literal["line_driver"]


class FullAdderCard(PointCard):
    kind: Literal["full_adder"]


class RegisterCard(PointCard):
    kind: Literal["register"]


class LogicGateCard(PointCard):
    """A logic gate beside each cell (the AND of a digital SRAM CIM cell): energy per evaluation that switches it,
    area per instance."""

    kind: Literal["logic_gate"]


class WriteDriverCard(PointCard):
    """Driver overhead of one write pulse (charging the write line)."""

    kind: Literal["write_driver"]


class DacCard(PointCard):
    """A 1-bit input driver/DAC conversion; ``bits`` per conversion (binary-weighted: energy doubles per bit)."""

    kind: Literal["dac"]
    bits: int = Field(1, ge=1, le=8, description="input bits applied per cycle (1 = bit-serial)")


class AdcCard(PointCard):
    """An ADC whose conversion energy follows the survey envelope of published converters in resolution and
    rate, through the card's cost point (see :class:`Adc`)."""

    kind: Literal["adc"]
    bits: int = Field(ge=1, le=16, description="ADC resolution")
    reference_bits: int = Field(ge=1, le=16, description="resolution of the cost point")
    floor_energy_j: EnergyJ = Field(alias="floor_energy", ge=0.0, le=1e-10,
                                    description="energy per conversion no converter goes below at low resolution")
    thermal_energy_j: EnergyJ = Field(alias="thermal_energy", gt=0.0, le=1e-15,
                                      description="k in the thermal-noise term k 4^B of the energy per conversion")
    rate_corner_hz: FrequencyHz = Field(alias="rate_corner", gt=1e3, le=1e11,
                                        description="conversion rate above which the energy per conversion grows "
                                                    "in proportion to the rate")
    reference_t_conversion_s: TimeS = Field(alias="reference_t_conversion", gt=1e-12, le=1e-5,
                                            description="conversion time of the cost point")
    t_conversion_s: TimeS = Field(alias="t_conversion", gt=1e-12, le=1e-5, description="time of one conversion")


class DigitalUnitCard(ComponentCard):
    """The near-memory digital unit: an INT8 MAC and an FP32 SGD update per lane, ``macs_per_cycle`` lanes."""

    kind: Literal["digital_unit"]
    mac_int8: CostPoint = Field(description="one INT8 multiply with INT32 accumulate")
    fp32_update: CostPoint = Field(description="one FP32 SGD update of one parameter (mul + add)")
    compare: CostPoint = Field(description="one INT8 compare or select (ReLU, max pooling, masks)")
    fp32_add: CostPoint = Field(description="one FP32 add of the weight-free work (norms, residual adds, pooling)")
    fp32_mul: CostPoint = Field(description="one FP32 multiply of the weight-free work (norms, scalings)")
    requant: CostPoint = Field(description="requantising one INT32 result to INT8: a 32-bit fixed-point multiply "
                               "and a rounding add")
    macs_per_cycle: int = Field(ge=1, le=1 << 20)


class SenseAmp(Component):
    def __init__(self, role: str, card: SenseAmpCard, tech: Technology, t_sense_s: float):
        super().__init__(role, card, tech)
        self.t_sense_s = t_sense_s

    def actions(self) -> dict[str, ActionSpec]:
        return {"sense": self.spec(self.energy_j, "one column sensed", latency_s=self.t_sense_s)}


class LineDriver(Component):
    """Drives one line of ``cells`` cells: a row across a subarray, or a bit-column down it."""

    def __init__(self, role: str, card: LineDriverCard, tech: Technology, action: str, cells: int, what: str):
        super().__init__(role, card, tech)
        self.action, self.cells, self.what = action, cells, what

    def actions(self) -> dict[str, ActionSpec]:
        return {self.action: self.spec(self.energy_j * self.cells, f"one {self.what} driven ({self.cells} cells)")}


class AdderLogic(Component):
    """Adder logic of ``bit_adds`` full-adder operations per action, built from a full-adder cell."""

    def __init__(self, role: str, card: FullAdderCard, tech: Technology, action: str, bit_adds: float,
                 description: str, width_bits: int = 0, register: RegisterCard | None = None):
        super().__init__(role, card, tech)
        self.action, self.bit_adds, self.description = action, bit_adds, description
        # one instance: ``width_bits`` adder bits, each with a register bit if it accumulates
        register_m2 = register.scaled(tech, f"components.{role}.register_bit.node")[1] if register else 0.0
        self.area_m2 = width_bits * (self.area_m2 + register_m2)

    def actions(self) -> dict[str, ActionSpec]:
        return {self.action: self.spec(self.energy_j * self.bit_adds, self.description)}


def column_counter(card: FullAdderCard, tech: Technology, rows: int, rows_per_sense: int = 1) -> AdderLogic:
    """A column's popcount counter. Sensing ``rows_per_sense`` R > 1 rows per cycle, the column first compresses
    its R AND results in a popcount tree: its full adders add to the area; the energy stays two full-adder
    operations per AND result of 1, which bounds the tree's popcount_tree_bit_adds(R) / R (< 2 for every R)
    plus the counter's own toggles, both switching with the 1 inputs."""
    bits = counter_bits(rows) + (popcount_tree_bit_adds(rows_per_sense) if rows_per_sense > 1 else 0)
    return AdderLogic("column_counter", card, tech, "increment", COUNTER_TOGGLES_PER_INCREMENT,
                      "a sensed AND result of 1 increments a column popcount counter", width_bits=bits)


def adder_tree(card: FullAdderCard, tech: Technology, rows: int, extra_bits: int = 0) -> AdderLogic:
    """One per output (8 bit-columns): its full adders are its area. ``extra_bits``: wider partial products (a
    Booth digit's shifted or negated weight is one bit wider)."""
    adds = (N_BITS - 1) * (counter_bits(rows) + N_BITS + extra_bits)
    return AdderLogic("adder_tree", card, tech, "combine", adds, "8 weight-bit counts of one output combined with "
                      "shifts", width_bits=adds)


def shift_add(card: FullAdderCard, tech: Technology, register: RegisterCard) -> AdderLogic:
    return AdderLogic("shift_add", card, tech, "accumulate", ACC_BITS,
                      "one plane result shifted into a 32-bit accumulator", width_bits=ACC_BITS, register=register)


def partial_sum(card: FullAdderCard, tech: Technology) -> AdderLogic:
    return AdderLogic("psum", card, tech, "add", ACC_BITS, "32-bit partial sum across row tiles")


def popcount_tree(card: FullAdderCard, tech: Technology, width: int) -> AdderLogic:
    return AdderLogic("popcount_tree", card, tech, "reduce", popcount_tree_bit_adds(width),
                      "popcount of one row of AND results across a subarray's columns")


class Buffer(Component):
    """A register file moving operand bits in (``read_bit``) or results out (``write_bit``)."""

    def __init__(self, role: str, card: RegisterCard, tech: Technology, action: str):
        super().__init__(role, card, tech)
        self.action = action

    def actions(self) -> dict[str, ActionSpec]:
        return {self.action: self.spec(self.energy_j, "one bit", kind="transfer")}


class Latch(Component):
    """Latches of the weight-reuse dataflow, one register bit per cell of a subarray: a sensed bit is written
    once per vector tile and read by every active input bit of the tile's vectors."""

    def actions(self) -> dict[str, ActionSpec]:
        return {"write_bit": self.spec(self.energy_j, "a sensed weight bit latched", kind="transfer"),
                "read_bit": self.spec(self.energy_j, "a latched weight bit ANDed with an input bit", kind="transfer")}


class CellGate(Component):
    """The gate beside each cell of an in-cell-compute array (``dataflow.weight_reuse: in_cell``): the cell's
    storage node holds one input and the input bit's row line the other, so a product needs no sensing."""

    def actions(self) -> dict[str, ActionSpec]:
        return {"evaluate": self.spec(self.energy_j, "an input bit of 1 ANDed with a stored 1 in the cell's gate")}


class WriteDriver(Component):
    """One driver action per pulse kind of the device (every device action of kind ``write_pulse``)."""

    def __init__(self, role: str, card: WriteDriverCard, tech: Technology, pulses: list[str]):
        super().__init__(role, card, tech)
        self.pulses = pulses

    def actions(self) -> dict[str, ActionSpec]:
        return {p: self.spec(self.energy_j, f"driver overhead of one {p.replace('_', ' ')}") for p in self.pulses}


class Dac(Component):
    def actions(self) -> dict[str, ActionSpec]:
        b = self.card.bits
        return {"convert": self.spec(self.energy_j * 2 ** (b - 1),
                                     f"one {b}-bit input applied to a line (binary-weighted: energy doubles per bit)")}


class Adc(Component):
    """Energy per conversion from the envelope of published converters (Murmann, ADC performance survey
    1997-2025, github bmurmann/ADC-survey): a floor no converter goes below (the survey's fit: 0.27 pJ), a
    resolution-limited part that doubles per bit (a Walden figure of merit, FoM_W 2^B) and a thermal-noise part
    that quadruples per bit (k 4^B, the survey's fit: 0.145 aJ x 4^ENOB): about 2 x per bit in the middle and
    4 x per bit past ~10 bits. Above the survey's Schreier-FoM corner (46.7 MHz) the energy per conversion grows
    in proportion to the rate (-10 dB/decade). The card's cost point fixes FoM_W, ``E(B_ref) = floor + FoM_W
    2^B_ref + k 4^B_ref`` at its rate; the node scaling applies to the whole. The area follows the same
    resolution-dependent part: a SAR converter's area is dominated by its capacitive DAC, whose total capacitance
    sets both its switching energy and its size, so the area scales as ``FoM_W 2^B + k 4^B`` against the cost
    point's (the floor, the logic a converter needs at any resolution, is taken as a share of neither)."""

    def __init__(self, role: str, card: AdcCard, tech: Technology):
        super().__init__(role, card, tech)
        walden = card.energy_j - card.floor_energy_j - card.thermal_energy_j * 4.0**card.reference_bits
        if walden <= 0.0:
            raise PhysicsError(f"the floor and the thermal term k 4^B ({card.floor_energy_j:.3g} J + "
                               f"{card.thermal_energy_j * 4.0**card.reference_bits:.3g} J at {card.reference_bits} "
                               f"bits) exceed the cost point's {card.energy_j:.3g} J: the cost point lies below the "
                               "envelope of published converters", key=f"components.{role}.energy")
        self.fom_walden_j = walden / 2.0**card.reference_bits
        self.area_m2 *= self.capacitance(card.bits) / self.capacitance(card.reference_bits)

    def capacitance(self, bits: int) -> float:
        """The resolution-dependent part of the energy per conversion (J): the capacitive DAC's share."""
        return self.fom_walden_j * 2.0**bits + self.card.thermal_energy_j * 4.0**bits

    def shape(self, bits: int) -> float:
        c = self.card
        return c.floor_energy_j + self.fom_walden_j * 2.0**bits + c.thermal_energy_j * 4.0**bits

    def rate_factor(self, t_conversion_s: float) -> float:
        return max(1.0, 1.0 / (t_conversion_s * self.card.rate_corner_hz))

    @property
    def conversion_energy_j(self) -> float:
        c = self.card
        return (self.energy_j * self.shape(c.bits) / self.shape(c.reference_bits)
                * self.rate_factor(c.t_conversion_s) / self.rate_factor(c.reference_t_conversion_s))

    def actions(self) -> dict[str, ActionSpec]:
        return {"convert": self.spec(self.conversion_energy_j, f"one {self.card.bits}-bit conversion of a column or "
                                     "row sum", latency_s=self.card.t_conversion_s)}


class DigitalUnit(Component):
    def __init__(self, role: str, card: DigitalUnitCard, tech: Technology):
        super().__init__(role, card, tech)
        self.e_mac_j, mac_area = card.mac_int8.scaled(tech, f"components.{role}.mac_int8.node")
        self.e_update_j, _ = card.fp32_update.scaled(tech, f"components.{role}.fp32_update.node")
        self.e_op_j = {name: getattr(card, name).scaled(tech, f"components.{role}.{name}.node")[0]
                       for name in ("compare", "fp32_add", "fp32_mul", "requant")}
        self.macs_per_cycle = card.macs_per_cycle
        self.area_m2 = card.macs_per_cycle * mac_area  # the whole unit

    def actions(self) -> dict[str, ActionSpec]:
        return {"mac_int8": self.spec(self.e_mac_j, "INT8 MAC"),
                "fp32_update": self.spec(self.e_update_j, "FP32 SGD update of one parameter"),
                "compare": self.spec(self.e_op_j["compare"], "INT8 compare or select (ReLU, max pooling, masks)"),
                "fp32_add": self.spec(self.e_op_j["fp32_add"], "FP32 add (norms, residual adds, pooling, softmax)"),
                "fp32_mul": self.spec(self.e_op_j["fp32_mul"], "FP32 multiply (norms, scalings, softmax, GELU)"),
                "requant": self.spec(self.e_op_j["requant"], "INT32 result requantised to INT8 (fixed-point "
                                     "multiply and rounding add)")}


def counter_bits(rows: int) -> int:
    """Bits of a column counter that counts up to ``rows``."""
    return max(1, math.ceil(math.log2(rows + 1)))


def popcount_tree_bit_adds(width: int) -> int:
    """Full-adder operations of a binary popcount tree over ``width`` bits.

    Level l (1-based) adds width / 2^l pairs of l-bit numbers: sum_l (width / 2^l) * l.
    """
    total, level, inputs = 0, 1, width
    while inputs > 1:
        pairs = inputs // 2
        total += pairs * level
        inputs = pairs + inputs % 2
        level += 1
    return total
