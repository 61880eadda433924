"""STT-MRAM and SOT-MRAM cells built from the same MTJ model, for side-by-side comparison.

* STT-MRAM (1T1MTJ): the write current flows through the MTJ; switching follows
  the STT critical current I_c0 = J_c0 * area. Write energy per flipped bit:
  ``I^2 R_MTJ t + I V_drop t`` with R_MTJ the mean of R_P and R_AP at the write
  bias. One access transistor per bit, sized for the write current.
* SOT-MRAM (2T1MTJ): the write current flows through the heavy-metal strip
  under the MTJ (one pitch long); switching follows the SOT critical current.
  Write energy ``I^2 R_HM t + I V_drop t``. A write transistor sized for the
  SOT current plus a read transistor sized for the read current.

Both write only the bits that change (one pulse per flipped bit, polarity by
current direction); reads are as for any MTJ (:mod:`imcsim.devices.mtj`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import NonVolatileCell, TransistorParams, WriteEvents, flipped_bits
from imcsim.devices.mtj import MTJ, MTJParams, ReadParams
from imcsim.devices.sot import HeavyMetalParams, pulse_energy_j
from imcsim.devices.switching import WritePath
from imcsim.errors import PhysicsError
from imcsim.params import CurrentA, Number, Params, TimeS


class BitWriteParams(Params):
    """Card section ``write``: one pulse per flipped bit."""

    i_write_a: CurrentA = Field(alias="i_write", ge=1e-6, le=5e-3)
    t_write_s: TimeS = Field(alias="t_write", gt=1e-12, le=1e-6)
    tau_d_s: TimeS | None = Field(None, alias="tau_d", gt=1e-13, le=1e-7,
                                  description="precessional time constant (STT cards)")


class _MRAMCardBase(Params):
    description: str
    references: dict[str, str]
    mtj: MTJParams
    read: ReadParams
    write: BitWriteParams
    transistor: TransistorParams
    endurance_cycles: Number = Field(alias="endurance", gt=1.0, le=1e20)


class STTMRAMCard(_MRAMCardBase):
    """An STT-MRAM card (``kind: stt_mram``)."""

    kind: Literal["stt_mram"]


class SOTMRAMCard(_MRAMCardBase):
    """An SOT-MRAM card (``kind: sot_mram``)."""

    kind: Literal["sot_mram"]
    heavy_metal: HeavyMetalParams


@dataclass(frozen=True)
class _BitwiseMRAM(NonVolatileCell):
    """Shared part of the one-pulse-per-flipped-bit MRAM cells."""

    card: STTMRAMCard | SOTMRAMCard
    mtj: MTJ
    bits_per_cell: int = 1

    def actions(self) -> dict[str, ActionSpec]:
        rd, w = self.card.read, self.card.write
        return {
            "read": ActionSpec(ActionCost(self.mtj.read_energy_j(rd), rd.t_read_s), "one MTJ read at V_read", "read"),
            "write_pulse": ActionSpec(ActionCost(self.e_write_j, w.t_write_s), "one flipped bit written", "write_pulse"),
        }

    def write_count_key(self) -> tuple | None:
        return ("flipped_bits",)  # one pulse per flipped bit, whatever the card

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        flips = flipped_bits(old_bits, new_bits)
        return WriteEvents(counts={"write_pulse": int(flips.sum())}, cell_writes=flips)

    def wer(self) -> float:
        path = self.write_path()
        return float(path.wer(path.i_op_a, path.t_op_s))

    def _common_figures(self) -> dict[str, tuple[float, str]]:
        rd, w = self.card.read, self.card.write
        return {
            **self.mtj.read_figures(rd),
            "write_energy_per_flipped_bit": (self.e_write_j, "J"),
            "write_latency": (w.t_write_s, "s"),
            "write_error_rate": (self.wer(), ""),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
            "endurance": (self.endurance_cycles, ""),
        }


@dataclass(frozen=True)
class STTMRAM(_BitwiseMRAM):
    kind: str = "stt_mram"
    component: str = "stt_cell"

    @classmethod
    def from_card(cls, card: STTMRAMCard) -> STTMRAM:
        if card.write.tau_d_s is None:
            raise PhysicsError("an STT card needs the precessional time constant", key="write.tau_d")
        dev = cls(card=card, mtj=MTJ.from_params(card.mtj))
        v_mtj = card.write.i_write_a * dev.mtj.r_ap0_ohm
        if v_mtj > 1.5:
            raise PhysicsError(
                f"drives {v_mtj:.2f} V across the MTJ in the AP state; MgO barriers break down near 1.5 V",
                key="write.i_write",
            )
        return dev

    @property
    def r_write_ohm(self) -> float:
        """Mean MTJ resistance seen by the write current (P and AP at the write bias)."""
        i = self.card.write.i_write_a
        r_ap = self.mtj.r_ap_at(i * self.mtj.r_p_ohm)
        return 0.5 * (self.mtj.r_p_ohm + r_ap)

    @property
    def e_write_j(self) -> float:
        w = self.card.write
        return pulse_energy_j(w.i_write_a, w.t_write_s, self.r_write_ohm, self.card.transistor.v_drop_v)

    def write_path(self) -> WritePath:
        w, m = self.card.write, self.card.mtj
        return WritePath("STT write (through the MTJ)", self.mtj.ic0_stt_a, w.i_write_a, w.t_write_s, m.delta,
                         m.tau0_s, w.tau_d_s)

    @property
    def area_per_bit_m2(self) -> float:
        return self.card.transistor.area_for_current_m2(self.card.write.i_write_a)

    def figures(self) -> dict[str, tuple[float, str]]:
        return {**self._common_figures(), "ic0_stt": (self.mtj.ic0_stt_a, "A")}


@dataclass(frozen=True)
class SOTMRAM(_BitwiseMRAM):
    kind: str = "sot_mram"
    component: str = "sot_cell"

    @classmethod
    def from_card(cls, card: SOTMRAMCard) -> SOTMRAM:
        dev = cls(card=card, mtj=MTJ.from_params(card.mtj))
        hm = card.heavy_metal
        if hm.width_m < card.mtj.width_m:
            raise PhysicsError(
                f"must cover the MTJ width {card.mtj.width_m * 1e9:.0f} nm (got {hm.width_m * 1e9:.0f} nm)",
                key="heavy_metal.width",
            )
        if card.write.i_write_a <= hm.ic0_a:
            raise PhysicsError(
                f"must exceed the SOT critical current {hm.ic0_a * 1e6:.0f} uA (got {card.write.i_write_a * 1e6:.0f} uA)",
                key="write.i_write",
            )
        return dev

    @property
    def r_hm_ohm(self) -> float:
        return self.card.heavy_metal.resistance_ohm(1)

    @property
    def e_write_j(self) -> float:
        w = self.card.write
        return pulse_energy_j(w.i_write_a, w.t_write_s, self.r_hm_ohm, self.card.transistor.v_drop_v)

    def write_path(self) -> WritePath:
        w, m, hm = self.card.write, self.card.mtj, self.card.heavy_metal
        return WritePath("SOT write (heavy-metal strip)", hm.ic0_a, w.i_write_a, w.t_write_s, m.delta, m.tau0_s,
                         hm.tau_d_s)

    @property
    def area_per_bit_m2(self) -> float:
        tr = self.card.transistor
        i_read = self.card.read.v_read_v / self.mtj.r_p_ohm
        return tr.area_for_current_m2(self.card.write.i_write_a) + tr.area_for_current_m2(i_read)

    def figures(self) -> dict[str, tuple[float, str]]:
        return {**self._common_figures(), "r_heavy_metal": (self.r_hm_ohm, "Ohm"),
                "ic0_sot": (self.card.heavy_metal.ic0_a, "A")}
