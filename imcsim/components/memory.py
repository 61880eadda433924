"""The chip's memory around the macro: the global buffer (an analytical SRAM model), off-chip DRAM, the on-chip
interconnect, and the static power of logic.

**Global buffer** (:class:`GlobalBuffer`), CACTI-style (Thoziyoor et al., "CACTI 5.1", HP Labs HPL-2008-20;
NVSim, Dong et al., IEEE TCAD 31(7), 2012): ``banks`` banks of ``capacity / banks`` each, built from subarrays
of ``subarray_rows x subarray_cols`` 6T cells. One access moves ``bank_width_bits`` bits of one bank:

* the subarrays that deliver them (``cols / column_mux`` bits each) activate one row: every bitline of those
  subarrays swings by ``read_swing`` from ``vdd`` (a read), a written column swings fully (``C_bl vdd^2``) and
  the half-selected ones of the row swing as in a read; ``C_bl = rows x bitline_cap_per_cell``;
* the word line of each activated subarray charges ``cols x wordline_cap_per_cell`` to ``vdd``;
* one sense amplifier per delivered bit (``sense``, a cost point scaled to the node);
* the data and address bits travel between the bank's port and the subarray over the bank's H-tree, one
  bank side long (``sqrt(bank area)``: half the width across and half the height down, to the centre of the
  farthest quadrant and back to the edge), switching ``activity`` of the time: ``activity C_wire L vdd^2`` per
  bit, with ``C_wire`` the wire capacitance per length.

Area is the cells' over the ``array_efficiency`` of the layout; leakage is ``I_leak vdd`` per cell, growing
2x per ``leakage_doubling`` of temperature (subthreshold leakage rises exponentially with temperature).
Capacitances and the sense energy are cost points at the card's node and scale with feature size
(:data:`imcsim.components.base.SCALING_RANGE`); cell area is in F^2, so it follows the node exactly.

**DRAM** (:class:`Dram`): energy per bit read and written (activation, array and I/O together, as the card's
sources state them), bandwidth from the per-pin data rate, pins per channel and channels, background power
while training and self-refresh power while it holds data idle. Off chip: no node scaling.

**Interconnect** (:class:`Interconnect`): a repeated on-chip wire costs ``activity (1 + repeater_overhead)
C_wire vdd^2`` per bit per metre; the distance a bit travels between the macro, the buffer and the digital
unit is set by the floorplan's area (see :meth:`Interconnect.placed`).

**Logic leakage** (:class:`LogicLeakage`): the leaking transistor width per unit area of standard-cell logic
(sense amplifiers, counters, adders, drivers, the digital unit); its static power is that width times the chip's
process corner's off current at the run's temperature times the supply (:mod:`imcsim.components.power`).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from imcsim.actions import ActionSpec
from imcsim.components.base import Component, ComponentCard, CostPoint, Technology, node_ratio
from imcsim.components.power import TEMPERATURE_RANGE_K, ProcessCornerCard
from imcsim.errors import FieldError, PhysicsError
from imcsim.params import (
    CapacitanceF,
    CapacitancePerLengthFPerM,
    CurrentA,
    EnergyJ,
    FrequencyHz,
    LengthM,
    Number,
    PowerW,
    TemperatureK,
    TimeS,
    VoltageV,
    WidthPerAreaPerM,
)

BUFFER_NODE_RANGE_M = (16e-9, 90e-9)
"""Nodes over which the analytical SRAM model's inputs (6T cell in F^2, per-cell capacitances scaled linearly
with feature size) are used: planar and FinFET 6T cells of 90 nm to 16 nm keep 120-200 F^2 (ITRS 2013 PIDS
tables), outside which the cell and wire assumptions need a card of their own."""


def leakage_factor(temperature_k: float, reference_k: float, doubling_k: float) -> float:
    """Leakage at ``temperature_k`` over leakage at ``reference_k``: 2 per ``doubling_k`` of rise."""
    return 2.0 ** ((temperature_k - reference_k) / doubling_k)


class _Leaky(ComponentCard):
    leakage_temperature_k: TemperatureK = Field(alias="leakage_temperature", ge=200.0, le=450.0,
                                                description="temperature of the leakage figure")
    leakage_doubling_k: TemperatureK = Field(alias="leakage_doubling", gt=1.0, le=200.0,
                                             description="temperature rise that doubles the leakage")

    def leakage_scale(self, temperature_k: float, key: str) -> float:
        lo, hi = TEMPERATURE_RANGE_K
        if not lo <= temperature_k <= hi:
            raise PhysicsError(f"{temperature_k:g} K is outside the {lo:g}..{hi:g} K over which the leakage "
                               "figures hold", key=key)
        return leakage_factor(temperature_k, self.leakage_temperature_k, self.leakage_doubling_k)


class GlobalBufferCard(_Leaky):
    """An SRAM global buffer (see the module docstring)."""

    kind: Literal["global_buffer"]
    capacity_kib: int = Field(ge=1, le=1 << 22, description="capacity in KiB (1024 bytes)")
    banks: int = Field(ge=1, le=1 << 10, description="banks, each with its own port")
    bank_width_bits: int = Field(ge=8, le=1 << 12, description="bits one bank reads or writes per cycle")
    subarray_rows: int = Field(ge=16, le=1 << 12)
    subarray_cols: int = Field(ge=16, le=1 << 12)
    column_mux: int = Field(ge=1, le=64, description="bit columns per delivered bit of a subarray")
    cell_area_f2: Number = Field(ge=50.0, le=1000.0, description="6T cell area in F^2")
    array_efficiency: Number = Field(gt=0.1, le=1.0, description="cell area over bank area")
    bitline_cap_per_cell: CapacitanceF = Field(gt=0.0, le=1e-14)
    wordline_cap_per_cell: CapacitanceF = Field(gt=0.0, le=1e-14)
    read_swing_v: VoltageV = Field(alias="read_swing", gt=0.01, le=1.0, description="bitline swing of a read")
    sense: CostPoint = Field(description="one bit sensed")
    wire_cap_per_length: CapacitancePerLengthFPerM = Field(gt=1e-12, le=1e-9, description="H-tree wire "
                                                           "capacitance per length")
    activity: Number = Field(0.5, gt=0.0, le=1.0, description="probability that a moved bit switches its wire")
    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9, description="node of the capacitances")
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0, description="supply of the leakage figure")
    i_leak_a: CurrentA = Field(alias="i_leak", ge=0.0, le=1e-8, description="leakage current per cell")
    flavour: str = Field(description="the transistor flavour of the cells' leakage figure (HP, LOP, LSTP or a "
                         "library's name); a chip on another corner is warned about")


class DramCard(ComponentCard):
    """An off-chip DRAM (see the module docstring)."""

    kind: Literal["dram"]
    standard: str = Field(description="the DRAM standard and speed grade")
    read_energy_per_bit_j: EnergyJ = Field(alias="read_energy_per_bit", gt=0.0, le=1e-9)
    write_energy_per_bit_j: EnergyJ = Field(alias="write_energy_per_bit", gt=0.0, le=1e-9)
    data_rate_hz: FrequencyHz = Field(alias="data_rate", gt=1e6, le=1e11, description="transfers per second "
                                      "per data pin")
    pins_per_channel: int = Field(ge=1, le=4096)
    channels: int = Field(ge=1, le=1024)
    background_power_w: PowerW = Field(alias="background_power", ge=0.0, le=100.0,
                                       description="power of the powered-up, idle-between-accesses device "
                                       "(active standby)")
    power_down_power_w: PowerW = Field(alias="power_down_power", ge=0.0, le=100.0,
                                       description="power of the device in power-down between bursts")
    power_down_exit_s: TimeS = Field(alias="power_down_exit", ge=0.0, le=1e-3,
                                     description="time to leave power-down (tXP)")
    self_refresh_power_w: PowerW = Field(alias="self_refresh_power", ge=0.0, le=10.0,
                                         description="power of the device holding data in self refresh")
    self_refresh_exit_s: TimeS = Field(alias="self_refresh_exit", ge=0.0, le=1e-3,
                                       description="time to leave self refresh (tXSR), spent in active standby")

    @model_validator(mode="after")
    def _ordered(self) -> DramCard:
        if self.power_down_power_w > self.background_power_w:
            raise FieldError("power_down_power", f"power-down ({self.power_down_power_w:g} W) must draw no more "
                             f"than active standby (background_power, {self.background_power_w:g} W)")
        if self.self_refresh_power_w > self.background_power_w:
            raise FieldError("self_refresh_power", f"self refresh ({self.self_refresh_power_w:g} W) must draw no "
                             f"more than active standby (background_power, {self.background_power_w:g} W)")
        return self

    @property
    def bits_per_s(self) -> float:
        return self.data_rate_hz * self.pins_per_channel * self.channels


class InterconnectCard(ComponentCard):
    kind: Literal["interconnect"]
    wire_cap_per_length: CapacitancePerLengthFPerM = Field(gt=1e-12, le=1e-9)
    repeater_overhead: Number = Field(ge=0.0, le=5.0, description="repeater capacitance switched per unit of "
                                      "wire capacitance")
    activity: Number = Field(0.5, gt=0.0, le=1.0, description="probability that a moved bit switches its wire")


class LogicLeakageCard(ComponentCard):
    kind: Literal["logic_leakage"]
    leaking_width_per_m2: WidthPerAreaPerM = Field(alias="leaking_width", gt=0.0, le=1e8,
                                                   description="leaking transistor width per area of logic")


class GlobalBuffer(Component):
    """The global buffer at the circuit's node and supply (see the module docstring)."""

    def __init__(self, role: str, card: GlobalBufferCard, tech: Technology):
        super().__init__(role, card, tech)
        lo, hi = BUFFER_NODE_RANGE_M
        if not lo <= tech.node_m <= hi:
            raise PhysicsError(f"the analytical SRAM model of the global buffer holds from {lo * 1e9:g} to "
                               f"{hi * 1e9:g} nm; the circuit is at {tech.node_m * 1e9:g} nm",
                               key=f"components.{role}.node")
        c = card
        s = node_ratio(c.node_m, tech, f"components.{role}.node")  # the capacitances scale with feature size
        v = tech.vdd_v
        self.vdd_v = v
        self.capacity_bits = c.capacity_kib * 1024 * 8
        bank_bits = self.capacity_bits / c.banks
        self.bits_per_subarray = max(1, c.subarray_cols // c.column_mux)
        self.subarrays_per_access = math.ceil(c.bank_width_bits / self.bits_per_subarray)
        if c.subarray_rows * c.subarray_cols * self.subarrays_per_access > bank_bits:
            raise PhysicsError(f"one access of {c.bank_width_bits} bits activates {self.subarrays_per_access} "
                               f"subarrays of {c.subarray_rows} x {c.subarray_cols}, more than a bank of "
                               f"{bank_bits / 8192:g} KiB holds", key=f"components.{role}.bank_width_bits")
        cell_m2 = c.cell_area_f2 * tech.node_m ** 2
        self.area_m2 = self.capacity_bits * cell_m2 / c.array_efficiency
        self.bank_side_m = math.sqrt(bank_bits * cell_m2 / c.array_efficiency)
        c_bl = c.subarray_rows * c.bitline_cap_per_cell * s
        columns = self.subarrays_per_access * c.subarray_cols
        width = c.bank_width_bits
        address_bits = max(1, math.ceil(math.log2(max(2.0, bank_bits / width))))
        e_sense, _ = c.sense.scaled(tech, f"components.{role}.sense.node")
        e_wordline = columns * c.wordline_cap_per_cell * s * v * v
        e_wire = c.activity * c.wire_cap_per_length * self.bank_side_m * v * v
        self.parts_j = {  # per access of ``width`` bits
            "bitlines_read": columns * c_bl * v * c.read_swing_v,
            "bitlines_write": width * c_bl * v * v + (columns - width) * c_bl * v * c.read_swing_v,
            "wordlines": e_wordline,
            "sense": width * e_sense,
            "htree": (width + address_bits) * e_wire,
        }
        p = self.parts_j
        self.read_bit_j = (p["bitlines_read"] + p["wordlines"] + p["sense"] + p["htree"]) / width
        self.write_bit_j = (p["bitlines_write"] + p["wordlines"] + p["htree"]) / width
        self.bits_per_cycle = c.banks * width

    def leakage_w(self, temperature_k: float) -> float:
        c = self.card
        return (self.capacity_bits * c.i_leak_a * c.leakage_scale(temperature_k, "temperature")
                * self.vdd_v * (self.vdd_v / c.vdd_v))

    def actions(self) -> dict[str, ActionSpec]:
        return {"read_bit": self.spec(self.read_bit_j, "one bit read from the global buffer", kind="transfer"),
                "write_bit": self.spec(self.write_bit_j, "one bit written into the global buffer", kind="transfer")}


class Dram(Component):
    def actions(self) -> dict[str, ActionSpec]:
        c = self.card
        return {"read_bit": self.spec(c.read_energy_per_bit_j, f"one bit read from {c.standard}", kind="transfer"),
                "write_bit": self.spec(c.write_energy_per_bit_j, f"one bit written to {c.standard}",
                                       kind="transfer")}


class Interconnect(Component):
    """On-chip wires; :meth:`placed` sets the distance a bit travels from the floorplan."""

    def __init__(self, role: str, card: InterconnectCard, tech: Technology):
        super().__init__(role, card, tech)
        self.bit_per_m_j = card.activity * (1.0 + card.repeater_overhead) * card.wire_cap_per_length \
            * tech.vdd_v ** 2
        self.distance_m = 0.0

    def placed(self, chip_area_m2: float) -> Interconnect:
        """Set the distance of a transfer on a square floorplan of ``chip_area_m2``: the mean Manhattan distance
        from a uniformly placed tile to the buffer at the centre, half the side (s/4 along each axis)."""
        self.distance_m = 0.5 * math.sqrt(max(chip_area_m2, 0.0))
        return self

    def actions(self) -> dict[str, ActionSpec]:
        return {"bit": self.spec(self.bit_per_m_j * self.distance_m,
                                 f"one bit moved {self.distance_m * 1e3:.3g} mm between buffer and macro",
                                 kind="transfer")}


class LogicLeakage(Component):
    """Static power of logic: leaking width x the corner's off current x the supply."""

    def __init__(self, role: str, card: LogicLeakageCard, tech: Technology, corner: ProcessCornerCard):
        super().__init__(role, card, tech)
        corner.check(tech, "components.corner")
        self.corner = corner
        self.vdd_v = tech.vdd_v

    def density_w_per_m2(self, temperature_k: float) -> float:
        return self.card.leaking_width_per_m2 * self.corner.leakage_per_width_w(temperature_k, self.vdd_v)

    def power_w(self, area_m2: float, temperature_k: float) -> float:
        """Static power of ``area_m2`` of logic at ``temperature_k``."""
        return area_m2 * self.density_w_per_m2(temperature_k)

    def actions(self) -> dict[str, ActionSpec]:
        return {}
