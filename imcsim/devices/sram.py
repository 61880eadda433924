"""SRAM: the baseline digital cell of a technology node.

Per-bit costs are derived from the bitline physics of a 6T array:

* bitline capacitance C_BL = rows x C per cell (drain junction plus wire);
* read: the precharged bitline discharges by the sense swing dV and is
  restored from V_dd, drawing ``C_BL V_dd dV``;
* write: the driver swings one bitline of the pair fully, ``C_BL V_dd^2``;
* leakage: I_leak x V_dd per cell, all the time (volatile, so data must stay powered);
* area: the cell's area in F^2 times F^2.

Writes go by word: a changed INT8 weight rewrites its 8 cells. Endurance is
unlimited (returned as infinity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import WriteEvents
from imcsim.params import CapacitanceF, CurrentA, LengthM, Number, Params, TimeS, VoltageV

WORD_BITS = 8


class SRAMCellParams(Params):
    feature_size_m: LengthM = Field(alias="feature_size", gt=1e-9, le=500e-9)
    vdd_v: VoltageV = Field(alias="vdd", gt=0.3, le=5.0)
    area_f2: Number = Field(alias="area_f2", gt=20.0, le=1000.0, description="cell area in F^2")
    c_bitline_per_cell_f: CapacitanceF = Field(alias="c_bitline_per_cell", gt=1e-18, le=1e-14)
    rows_per_bitline: int = Field(ge=8, le=4096)
    read_swing_v: VoltageV = Field(alias="read_swing", gt=0.01, le=1.0)
    i_leak_a: CurrentA = Field(alias="i_leak", ge=0.0, le=1e-8, description="leakage current per cell")
    t_read_s: TimeS = Field(alias="t_read", gt=1e-12, le=1e-6)
    t_write_s: TimeS = Field(alias="t_write", gt=1e-12, le=1e-6)


class SRAMCard(Params):
    """An SRAM card (``kind: sram``)."""

    kind: Literal["sram"]
    description: str
    references: dict[str, str]
    cell: SRAMCellParams


@dataclass(frozen=True)
class SRAM:
    card: SRAMCard
    kind: str = "sram"
    component: str = "sram_cell"
    bits_per_cell: int = 1

    @classmethod
    def from_card(cls, card: SRAMCard) -> SRAM:
        return cls(card=card)

    @property
    def c_bitline_f(self) -> float:
        c = self.card.cell
        return c.rows_per_bitline * c.c_bitline_per_cell_f

    @property
    def e_read_j(self) -> float:
        c = self.card.cell
        return self.c_bitline_f * c.vdd_v * c.read_swing_v

    @property
    def e_write_j(self) -> float:
        c = self.card.cell
        return self.c_bitline_f * c.vdd_v**2

    @property
    def leakage_per_bit_w(self) -> float:
        c = self.card.cell
        return c.i_leak_a * c.vdd_v

    @property
    def area_per_bit_m2(self) -> float:
        c = self.card.cell
        return c.area_f2 * c.feature_size_m**2

    @property
    def endurance_cycles(self) -> float:
        return math.inf

    def actions(self) -> dict[str, ActionSpec]:
        c = self.card.cell
        return {
            "read": ActionSpec(ActionCost(self.e_read_j, c.t_read_s), "one bit read (bitline swing restored)", "read"),
            "write_bit": ActionSpec(ActionCost(self.e_write_j, c.t_write_s), "one bit written (full bitline swing)", "write"),
        }

    def write_count_key(self) -> tuple | None:
        return ("sram_words", WORD_BITS)

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        old = np.asarray(old_bits, dtype=np.uint8)
        new = np.asarray(new_bits, dtype=np.uint8)
        if old.shape != new.shape:
            raise ValueError(f"old and new bits differ in shape: {old.shape} vs {new.shape}")
        cols = old.shape[-1]
        pad = (-cols) % WORD_BITS
        widths = [(0, 0)] * (old.ndim - 1) + [(0, pad)]
        o = np.pad(old, widths).reshape(*old.shape[:-1], -1, WORD_BITS)
        n = np.pad(new, widths).reshape(*new.shape[:-1], -1, WORD_BITS)
        changed = (o != n).any(axis=-1)
        cell_writes = np.broadcast_to(changed[..., None], o.shape).reshape(*old.shape[:-1], -1)[..., :cols]
        return WriteEvents(counts={"write_bit": int(cell_writes.sum())}, cell_writes=cell_writes.astype(np.int32))

    def figures(self) -> dict[str, tuple[float, str]]:
        c = self.card.cell
        return {
            "bitline_capacitance": (self.c_bitline_f, "F"),
            "read_energy_per_bit": (self.e_read_j, "J"),
            "write_energy_per_bit": (self.e_write_j, "J"),
            "leakage_per_bit": (self.leakage_per_bit_w, "W"),
            "read_latency": (c.t_read_s, "s"),
            "write_latency": (c.t_write_s, "s"),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
        }
