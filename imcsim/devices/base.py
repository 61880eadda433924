"""What every memory device model offers to the circuit layer.

A device model is built from a validated card (a :class:`~imcsim.params.Params`
subclass with a ``kind``). It exposes:

* ``actions()``: the per-action costs of its cell actions (read one bit,
  write pulses), each derived from the card's physical parameters;
* ``area_per_bit_m2``: silicon area per stored bit, write circuitry included;
* ``count_writes(old_bits, new_bits)``: the data-dependent write actions and
  per-cell switching events needed to turn stored bits ``old`` into ``new``;
* ``figures()``: the derived figures an architect inspects (name -> (value, unit)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import Field

from imcsim.actions import ActionSpec
from imcsim.errors import PhysicsError
from imcsim.params import CurrentPerWidthAPerM, LengthM, Number, Params, VoltageV


@dataclass(frozen=True)
class WriteEvents:
    """Result of :meth:`MemoryDevice.count_writes`.

    ``counts`` maps action name -> number of times it happens (pulses,
    verify reads, ...). ``cell_writes`` has the shape of the cells written and
    holds, per cell, how many write events stressed it (for endurance).
    """

    counts: Mapping[str, int]
    cell_writes: np.ndarray


class MemoryDevice(Protocol):
    kind: str
    component: str
    bits_per_cell: int
    area_per_bit_m2: float
    endurance_cycles: float  # write cycles a cell survives (inf when unlimited)
    leakage_per_bit_w: float  # static power per stored bit

    def actions(self) -> dict[str, ActionSpec]: ...

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents: ...

    def write_count_key(self) -> tuple | None:
        """What :meth:`count_writes` depends on besides the bits (None: not a pure function of them, such as
        stochastic programming). Two devices with the same key count the same writes for the same bits, so
        a sweep over other parameters (pulse energies, latencies) can reuse the counts."""
        ...

    def figures(self) -> dict[str, tuple[float, str]]: ...


class TransistorParams(Params):
    """Card section ``transistor``: the CMOS access/write device of a cell.

    The transistor is sized so that it both carries the largest current it must pass (at most its saturation
    current ``i_on_per_width`` x W) and drops no more than the write rail leaves it (the rail's headroom over
    the rest of the write path, or ``v_drop`` where the card fixes a smaller design drop) doing so, in the
    linear region, where its on resistance is ``R_on W = r_on_multiplier x vdd / i_on_per_width`` (the
    effective-resistance rule of CACTI and NVSim, formula.cpp). The width is the larger of the two, and at
    least one feature size; its area follows a 1T1R layout rule, ``(W / F + 1) F (cell_height_f F + L - F)``
    with ``L`` the drawn gate length (``F`` for a core device; an I/O device's gate is longer). A rail above
    the device's ``vdd`` is refused: it needs I/O transistors rated for it.
    """

    feature_size_m: LengthM = Field(alias="feature_size", gt=1e-9, le=500e-9, description="technology node F")
    vdd_v: VoltageV = Field(alias="vdd", ge=0.3, le=3.3, description="the supply the device is rated for (core "
                            "or I/O); reads draw from it unless the read section gives a read rail")
    i_on_per_width_a_per_m: CurrentPerWidthAPerM = Field(
        alias="i_on_per_width", gt=10.0, le=5000.0, description="saturation drive current per width (e.g. '1 mA/um')"
    )
    r_on_multiplier: Number = Field(1.54, gt=0.1, le=10.0,
                                    description="on resistance x width in units of vdd / i_on_per_width (CACTI: 1.54)")
    v_drop_v: VoltageV | None = Field(None, alias="v_drop", ge=0.01, le=3.3,
                                      description="largest voltage drop the design allows across the on transistor "
                                                  "(default: the whole headroom the rail leaves it)")
    gate_length_m: LengthM | None = Field(None, alias="gate_length", gt=1e-9, le=2e-6,
                                          description="drawn gate length (default: feature_size)")
    cell_height_f: Number = Field(alias="cell_height_f", gt=1.0, le=50.0, description="cell height in F")

    @property
    def r_on_width_ohm_m(self) -> float:
        """On resistance times width (Ohm m)."""
        return self.r_on_multiplier * self.vdd_v / self.i_on_per_width_a_per_m

    def drop_v(self, headroom_v: float | None) -> float:
        """The drop the transistor may take: the card's design drop, else the rail's headroom."""
        drop = self.v_drop_v if self.v_drop_v is not None else headroom_v
        if drop is None or drop <= 0.0:
            raise PhysicsError("the write rail leaves the transistor no headroom over the rest of the write path "
                               f"({0.0 if headroom_v is None else headroom_v:.3g} V); raise write.v_supply",
                               key="write.v_supply")
        return drop

    def width_for_current_m(self, i_a: float, headroom_v: float | None = None) -> float:
        return max(i_a / self.i_on_per_width_a_per_m, i_a * self.r_on_width_ohm_m / self.drop_v(headroom_v),
                   self.feature_size_m)

    def on_resistance_ohm(self, i_a: float, headroom_v: float | None = None) -> float:
        """On resistance of the transistor sized for ``i_a`` within ``headroom_v``."""
        return self.r_on_width_ohm_m / self.width_for_current_m(i_a, headroom_v)

    def area_for_current_m2(self, i_a: float, headroom_v: float | None = None) -> float:
        f = self.feature_size_m
        gate = self.gate_length_m if self.gate_length_m is not None else f
        return (self.width_for_current_m(i_a, headroom_v) / f + 1.0) * f * (self.cell_height_f * f + gate - f)

    def check_rail(self, v_supply_v: float, key: str = "write.v_supply") -> None:
        """A rail above the device's rated supply needs I/O transistors."""
        if v_supply_v > self.vdd_v * (1.0 + 1e-9):
            raise PhysicsError(f"a {v_supply_v:g} V rail drives transistors rated for {self.vdd_v:g} V "
                               "(transistor.vdd): a rail above the core supply needs I/O transistors; give the "
                               "transistor section an I/O device (its vdd, i_on_per_width and gate_length)", key=key)


def flipped_bits(old_bits: np.ndarray, new_bits: np.ndarray) -> np.ndarray:
    """0/1 array of the cells whose bit changes (shapes must match)."""
    old = np.asarray(old_bits, dtype=np.uint8)
    new = np.asarray(new_bits, dtype=np.uint8)
    if old.shape != new.shape:
        raise ValueError(f"old and new bits differ in shape: {old.shape} vs {new.shape}")
    return (old != new).astype(np.int32)


class NonVolatileCell:
    """Mixin for device models whose card has ``endurance_cycles`` and whose cells hold data unpowered."""

    @property
    def leakage_per_bit_w(self) -> float:
        """Non-volatile cells hold data unpowered: no array leakage (W)."""
        return 0.0

    @property
    def endurance_cycles(self) -> float:
        """Write cycles a cell survives, from the card."""
        return self.card.endurance_cycles  # type: ignore[attr-defined]
