"""SAS-MRAM: STT-assisted SOT MRAM with N MTJs on one shared heavy-metal line.

The seed system (Zhang et al., IEEE TCAD 2024) puts N = 4 MTJs (100 nm x 50 nm)
on one heavy-metal (HM) strip driven by one write transistor. A group write is

1. a *reset* pulse: SOT current ``i_reset`` through the strip for ``t_reset``
   switches every MTJ of the group to the parallel (0) state; then
2. a *set* pulse: a sub-critical SOT current ``i_set_sot`` for ``t_set`` while
   an STT current ``i_stt`` flows through the selected MTJs only; the torques
   add, so only the selected MTJs switch to the antiparallel (1) state.

Torque superposition is modelled linearly: the effective drive of a selected
MTJ is ``i_set_sot / I_c0,SOT + i_stt / I_c0,STT``; unselected MTJs see only
``i_set_sot / I_c0,SOT`` (their half-select disturb probability is reported).

Energies are the electrical work of each pulse: ``I^2 R_HM t`` in the strip
plus ``I V_drop t`` in the write transistor, and ``I_stt^2 R_P t`` in each
selected MTJ. Reads pass V_read across one MTJ (through the shared
transistor), so one transistor per group serves reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Literal

import numba
import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import NonVolatileCell, TransistorParams, WriteEvents
from imcsim.devices.mtj import MTJ, MTJParams, ReadParams
from imcsim.devices.sot import HeavyMetalParams, pulse_energy_j
from imcsim.devices.switching import WritePath, thermal_switch_probability, write_error_rate
from imcsim.errors import PhysicsError
from imcsim.params import (
    CurrentA,
    Number,
    Params,
    TimeS,
)


class GroupWriteParams(Params):
    """Card section ``write``: the two pulses of a group write."""

    n_mtj: int = Field(ge=1, le=64, description="MTJs sharing one HM line and write transistor")
    i_reset_a: CurrentA = Field(alias="i_reset", ge=1e-6, le=5e-3)
    t_reset_s: TimeS = Field(alias="t_reset", gt=1e-12, le=1e-6)
    i_set_sot_a: CurrentA = Field(alias="i_set_sot", ge=1e-6, le=5e-3)
    i_stt_a: CurrentA = Field(alias="i_stt", ge=1e-6, le=1e-3)
    t_set_s: TimeS = Field(alias="t_set", gt=1e-12, le=1e-6)


class SASMRAMCard(Params):
    """A SAS-MRAM device card (``kind: sas_mram``)."""

    kind: Literal["sas_mram"]
    description: str
    references: dict[str, str]
    mtj: MTJParams
    read: ReadParams
    heavy_metal: HeavyMetalParams
    write: GroupWriteParams
    transistor: TransistorParams
    endurance_cycles: Number = Field(alias="endurance", gt=1.0, le=1e20, description="write cycles a cell survives")


@dataclass(frozen=True)
class SASMRAM(NonVolatileCell):
    """Derived SAS-MRAM group model. Build with :meth:`from_card`."""

    card: SASMRAMCard
    mtj: MTJ
    r_hm_ohm: float
    ic0_sot_a: float
    kind: str = "sas_mram"
    component: str = "sas_group"
    bits_per_cell: int = 1

    @classmethod
    def from_card(cls, card: SASMRAMCard) -> SASMRAM:
        hm = card.heavy_metal
        dev = cls(
            card=card,
            mtj=MTJ.from_params(card.mtj),
            r_hm_ohm=hm.resistance_ohm(card.write.n_mtj),
            ic0_sot_a=hm.ic0_a,
        )
        dev._check_physics()
        return dev

    # --- physics checks -----------------------------------------------------

    def _check_physics(self) -> None:
        c = self.card
        if c.heavy_metal.width_m < c.mtj.width_m:
            raise PhysicsError(
                f"must cover the MTJ width {c.mtj.width_m * 1e9:.0f} nm (got {c.heavy_metal.width_m * 1e9:.0f} nm)",
                key="heavy_metal.width",
            )
        if c.heavy_metal.pitch_m < c.mtj.length_m:
            raise PhysicsError(
                f"must be >= the MTJ length {c.mtj.length_m * 1e9:.0f} nm so pillars do not overlap "
                f"(got {c.heavy_metal.pitch_m * 1e9:.0f} nm)",
                key="heavy_metal.pitch",
            )
        w = c.write
        if w.i_set_sot_a >= self.ic0_sot_a:
            raise PhysicsError(
                f"must stay below the SOT critical current {self.ic0_sot_a * 1e6:.0f} uA "
                f"(got {w.i_set_sot_a * 1e6:.0f} uA), or unselected MTJs switch too",
                key="write.i_set_sot",
            )
        if w.i_reset_a <= self.ic0_sot_a:
            raise PhysicsError(
                f"must exceed the SOT critical current {self.ic0_sot_a * 1e6:.0f} uA "
                f"(got {w.i_reset_a * 1e6:.0f} uA) for a deterministic reset",
                key="write.i_reset",
            )

    # --- derived write figures -----------------------------------------------

    @property
    def r_write_transistor_ohm(self) -> float:
        return self.card.transistor.v_drop_v / self.card.write.i_reset_a

    def _pulse_energy_j(self, i_a: float, t_s: float) -> float:
        return pulse_energy_j(i_a, t_s, self.r_hm_ohm, self.card.transistor.v_drop_v)

    @property
    def e_reset_j(self) -> float:
        w = self.card.write
        return self._pulse_energy_j(w.i_reset_a, w.t_reset_s)

    @property
    def e_set_sot_j(self) -> float:
        w = self.card.write
        return self._pulse_energy_j(w.i_set_sot_a, w.t_set_s)

    @property
    def e_stt_per_bit_j(self) -> float:
        w = self.card.write
        return w.i_stt_a**2 * self.mtj.r_p_ohm * w.t_set_s

    @property
    def v_hm_reset_v(self) -> float:
        return self.card.write.i_reset_a * self.r_hm_ohm

    def group_write_energy_j(self, n_set: int) -> float:
        """Energy of rewriting one group so that ``n_set`` of its bits end at 1."""
        if n_set <= 0:
            return self.e_reset_j
        return self.e_reset_j + self.e_set_sot_j + n_set * self.e_stt_per_bit_j

    def mean_write_energy_per_bit_j(self) -> float:
        """Expected energy per bit of a group write with uniformly random data."""
        n = self.card.write.n_mtj
        e = sum(comb(n, k) * self.group_write_energy_j(k) for k in range(n + 1)) / 2**n
        return e / n

    @property
    def t_group_write_s(self) -> float:
        w = self.card.write
        return w.t_reset_s + w.t_set_s

    def reset_wer(self) -> float:
        w, m = self.card.write, self.card.mtj
        return float(
            write_error_rate(w.i_reset_a / self.ic0_sot_a, w.t_reset_s, m.delta, m.tau0_s, self.card.heavy_metal.tau_d_s)
        )

    def set_wer(self) -> float:
        w, m = self.card.write, self.card.mtj
        drive = w.i_set_sot_a / self.ic0_sot_a + w.i_stt_a / self.mtj.ic0_stt_a
        return float(write_error_rate(drive, w.t_set_s, m.delta, m.tau0_s, self.card.heavy_metal.tau_d_s))

    def write_path(self) -> WritePath:
        """The SOT reset path through the shared heavy-metal line."""
        w, m = self.card.write, self.card.mtj
        return WritePath("SOT reset (shared line)", self.ic0_sot_a, w.i_reset_a, w.t_reset_s, m.delta, m.tau0_s,
                         self.card.heavy_metal.tau_d_s)

    def half_select_disturb(self) -> float:
        w, m = self.card.write, self.card.mtj
        return float(thermal_switch_probability(w.i_set_sot_a / self.ic0_sot_a, w.t_set_s, m.delta, m.tau0_s))

    @property
    def area_per_bit_m2(self) -> float:
        """Group area (one write transistor + N MTJ sites on the strip) per bit."""
        c = self.card
        f = c.transistor.feature_size_m
        tr = c.transistor.area_for_current_m2(c.write.i_reset_a)
        site = c.heavy_metal.pitch_m * (c.heavy_metal.width_m + 2.0 * f)
        return (tr + c.write.n_mtj * site) / c.write.n_mtj

    # --- interface for the circuit layer ------------------------------------

    def actions(self) -> dict[str, ActionSpec]:
        w = self.card.write
        return {
            "read": ActionSpec(
                ActionCost(self.mtj.read_energy_j(self.card.read), self.card.read.t_read_s),
                "one MTJ read at V_read (cell energy only)", "read",
            ),
            "reset_pulse": ActionSpec(
                ActionCost(self.e_reset_j, w.t_reset_s), "SOT reset of one group through the HM line", "write_pulse"
            ),
            "set_pulse": ActionSpec(
                ActionCost(self.e_set_sot_j, w.t_set_s), "sub-critical SOT pulse of a group set", "write_pulse"
            ),
            "stt_assist": ActionSpec(
                ActionCost(self.e_stt_per_bit_j, 0.0), "STT current through one selected MTJ during a set", "write_assist"
            ),
        }

    def write_count_key(self) -> tuple | None:
        return ("sas_group", self.card.write.n_mtj)  # the group size shapes the writes; the rest only costs them

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        """Group writes needed to turn ``old_bits`` into ``new_bits``.

        Both arrays hold 0/1 cells with shape ``(..., n_cells_per_row)``; cells of a
        row are grouped ``n_mtj`` at a time (the last group may be partial). Only
        groups with a changed bit are rewritten; a rewritten group switches every
        bit that was 1 (reset) and every bit that ends at 1 (set).
        """
        old = np.asarray(old_bits, dtype=np.uint8)
        new = np.asarray(new_bits, dtype=np.uint8)
        if old.shape != new.shape:
            raise ValueError(f"old and new bits differ in shape: {old.shape} vs {new.shape}")
        cols = old.shape[-1] if old.ndim else 1
        rows_old = np.ascontiguousarray(old.reshape(-1, cols))
        rows_new = np.ascontiguousarray(new.reshape(-1, cols))
        resets, sets, stt, cell_writes = _group_writes(rows_old, rows_new, self.card.write.n_mtj)
        return WriteEvents(
            counts={"reset_pulse": int(resets), "set_pulse": int(sets), "stt_assist": int(stt)},
            cell_writes=cell_writes.reshape(old.shape),
        )

    def figures(self) -> dict[str, tuple[float, str]]:
        rd = self.card.read
        return {
            **self.mtj.read_figures(rd),
            "r_heavy_metal": (self.r_hm_ohm, "Ohm"),
            "ic0_sot": (self.ic0_sot_a, "A"),
            "ic0_stt": (self.mtj.ic0_stt_a, "A"),
            "reset_energy_per_group": (self.e_reset_j, "J"),
            "set_sot_energy_per_group": (self.e_set_sot_j, "J"),
            "stt_energy_per_set_bit": (self.e_stt_per_bit_j, "J"),
            "write_energy_per_bit_random_data": (self.mean_write_energy_per_bit_j(), "J"),
            "group_write_latency": (self.t_group_write_s, "s"),
            "reset_write_error_rate": (self.reset_wer(), ""),
            "set_write_error_rate": (self.set_wer(), ""),
            "half_select_disturb_probability": (self.half_select_disturb(), ""),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
        }


@numba.njit(cache=True, nogil=True)
def _group_writes(old, new, n):
    """Group rewrites of rows of cells, ``n`` cells a group (the last one may be partial).

    Returns (reset pulses, set pulses, STT-assisted bits, per-cell switching events).
    """
    rows, cols = old.shape
    cell_writes = np.zeros((rows, cols), dtype=np.int32)
    resets = 0
    sets = 0
    stt = 0
    for r in range(rows):
        for start in range(0, cols, n):
            stop = min(cols, start + n)
            changed = False
            for c in range(start, stop):
                if old[r, c] != new[r, c]:
                    changed = True
                    break
            if not changed:
                continue
            resets += 1
            ones = 0
            for c in range(start, stop):
                ones += new[r, c]
                cell_writes[r, c] = old[r, c] + new[r, c]
            if ones:
                sets += 1
                stt += ones
    return resets, sets, stt, cell_writes
