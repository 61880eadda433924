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
    current ``i_on_per_width`` x W) and drops no more than ``v_drop`` doing so, in the linear region, where its
    on resistance is ``R_on W = r_on_multiplier x vdd / i_on_per_width`` (the effective-resistance rule of
    CACTI and NVSim, formula.cpp). The width is the larger of the two, and at least one feature size; its area
    follows a 1T1R layout rule, ``(W / F + 1) * cell_height_f * F^2``.
    """

    feature_size_m: LengthM = Field(alias="feature_size", gt=1e-9, le=500e-9, description="technology node F")
    vdd_v: VoltageV = Field(alias="vdd", ge=0.3, le=3.3, description="core supply: reads draw their current from it")
    i_on_per_width_a_per_m: CurrentPerWidthAPerM = Field(
        alias="i_on_per_width", gt=10.0, le=5000.0, description="saturation drive current per width (e.g. '1 mA/um')"
    )
    r_on_multiplier: Number = Field(1.54, gt=0.1, le=10.0,
                                    description="on resistance x width in units of vdd / i_on_per_width (CACTI: 1.54)")
    v_drop_v: VoltageV = Field(alias="v_drop", ge=0.01, le=1.0,
                               description="largest voltage drop the design allows across the on transistor")
    cell_height_f: Number = Field(alias="cell_height_f", gt=1.0, le=50.0, description="cell height in F")

    @property
    def r_on_width_ohm_m(self) -> float:
        """On resistance times width (Ohm m)."""
        return self.r_on_multiplier * self.vdd_v / self.i_on_per_width_a_per_m

    def width_for_current_m(self, i_a: float) -> float:
        return max(i_a / self.i_on_per_width_a_per_m, i_a * self.r_on_width_ohm_m / self.v_drop_v,
                   self.feature_size_m)

    def on_resistance_ohm(self, i_a: float) -> float:
        """On resistance of the transistor sized for ``i_a``."""
        return self.r_on_width_ohm_m / self.width_for_current_m(i_a)

    def area_for_current_m2(self, i_a: float) -> float:
        f = self.feature_size_m
        return (self.width_for_current_m(i_a) / f + 1.0) * self.cell_height_f * f * f


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
