"""STT-MRAM and SOT-MRAM cells built from the same MTJ model, for side-by-side comparison.

* STT-MRAM (1T1MTJ): the write current flows through the MTJ; switching follows Butler's precessional law
  against the STT critical current of the direction written (P->AP needs more than AP->P, see
  :mod:`imcsim.devices.mtj`). The barrier voltage of the write current is checked against breakdown, and
  the barrier's wear under it sets the endurance (:mod:`imcsim.devices.wear`).
* SOT-MRAM (2T1MTJ): the write current flows through the heavy-metal strip under the MTJ (one pitch long);
  switching follows the charge-limited SOT law (critical current rising as 1/t for short pulses). A write
  transistor sized for the SOT current plus a read transistor sized for the read current; the line's
  electromigration sets the endurance, the barrier sees only reads.

Energies are drawn from the supplies: a write pulse costs ``v_supply I t`` (the driver's rail, which must
deliver the current through the cell and the transistor: checked), a read ``vdd (I_cell + I_ref) t``.
Both write only the bits that change (one pulse per flipped bit, polarity by current direction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import NonVolatileCell, TransistorParams, WriteEvents, flipped_bits
from imcsim.devices.mtj import MTJ, MTJParams, ReadParams
from imcsim.devices.sot import HeavyMetalParams, check_geometry, check_sot_symmetry, supply_energy_j
from imcsim.devices.switching import WritePath, sot_critical_current_a, sot_time_s
from imcsim.devices.wear import WearParams, barrier_cycles, combined, line_cycles
from imcsim.errors import PhysicsError
from imcsim.params import CurrentA, Number, Params, TimeS, VoltageV


class BitWriteParams(Params):
    """Card section ``write``: one pulse per flipped bit."""

    i_write_a: CurrentA = Field(alias="i_write", ge=1e-6, le=5e-3)
    t_write_s: TimeS = Field(alias="t_write", gt=1e-12, le=1e-6)
    v_supply_v: VoltageV = Field(alias="v_supply", ge=0.3, le=3.3,
                                 description="rail of the write driver: the pulse energy is v_supply x I x t")
    max_error_rate: Number = Field(1e-6, gt=0.0, le=1.0,
                                   description="write error rate above which the operating point is reported")
    verify: bool = Field(False, description="write-verify-retry: read every written cell back and rewrite the "
                                            "wrong ones (the reads and retries are counted)")
    max_retries: int = Field(2, ge=0, le=16, description="rewrites of a cell that reads back wrong (verify)")


class _MRAMCardBase(Params):
    description: str
    references: dict[str, str]
    mtj: MTJParams
    read: ReadParams
    write: BitWriteParams
    transistor: TransistorParams
    wear: WearParams
    targets: dict[str, str] = Field(default_factory=dict,
                                    description="published values of derived figures (figure -> quantity), which "
                                                "imcsim device compares against")


class STTMRAMCard(_MRAMCardBase):
    """An STT-MRAM card (``kind: stt_mram``)."""

    kind: Literal["stt_mram"]


class SOTMRAMCard(_MRAMCardBase):
    """An SOT-MRAM card (``kind: sot_mram``)."""

    kind: Literal["sot_mram"]
    heavy_metal: HeavyMetalParams


def check_supply(v_supply: float, i_a: float, r_path_ohm: float, key: str) -> None:
    """A rail can drive ``i_a`` only through a path of at most ``v_supply / i_a``."""
    need = i_a * r_path_ohm
    if need > v_supply * (1.0 + 1e-9):  # a transistor sized to the headroom needs the rail exactly
        raise PhysicsError(f"{v_supply:g} V cannot drive {i_a * 1e6:.0f} uA through the {r_path_ohm:.0f} Ohm write path "
                           f"(it needs {need:.2f} V); raise it or lower the current", key=key)


def finite(figures: dict[str, tuple[float, str]]) -> dict[str, tuple[float, str]]:
    """The figures with a finite value (a wear mechanism without a law to follow reports none)."""
    return {k: v for k, v in figures.items() if math.isfinite(v[0])}


def rate_warning(key: str, what: str, value: float, limit: float) -> tuple[str, str] | None:
    if value > limit:
        return key, f"{what} {value:.3g} exceeds the limit {limit:.3g}"
    return None


@dataclass(frozen=True)
class _BitwiseMRAM(NonVolatileCell):
    """Shared part of the one-pulse-per-flipped-bit MRAM cells."""

    card: STTMRAMCard | SOTMRAMCard
    mtj: MTJ
    temperature_k: float
    bits_per_cell: int = 1

    def read_action(self) -> ActionSpec:
        rd = self.card.read
        e = self.mtj.read_energy_j(rd, self.card.transistor.vdd_v)  # the clamp holds v_read on the junction
        return ActionSpec(ActionCost(e, rd.t_read_s), "one MTJ read: cell and reference branches from the read rail", "read")

    def actions(self) -> dict[str, ActionSpec]:
        w = self.card.write
        return {
            "read": self.read_action(),
            "write_pulse": ActionSpec(ActionCost(self.e_write_j, w.t_write_s), "one flipped bit written", "write_pulse"),
        }

    @property
    def e_write_j(self) -> float:
        w = self.card.write
        return supply_energy_j(w.v_supply_v, w.i_write_a, w.t_write_s)

    def write_count_key(self) -> tuple | None:
        return ("flipped_bits", self.card.write.verify)  # one pulse per flipped bit, whatever the card

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        flips = flipped_bits(old_bits, new_bits)
        return WriteEvents(counts={"write_pulse": int(flips.sum())}, cell_writes=flips)

    def wer(self) -> float:
        """Write error rate of the harder direction at the operating point."""
        path = self.write_path()
        return float(path.wer(path.i_op_a, path.t_op_s))

    @property
    def read_cycles(self) -> float:
        """Reads the barrier survives at the read voltage (its wear under read stress)."""
        rd = self.card.read
        return barrier_cycles(self.card.wear, rd.v_read_v, rd.sense_s)

    def error_rates(self) -> dict[str, float]:
        """Per-event error probabilities the functional run injects (see :mod:`imcsim.devices.errors`): a 0 -> 1
        write is P -> AP, a 1 -> 0 write AP -> P."""
        set_, reset = self.direction_wers()
        return {"write_set": set_, "write_reset": reset,
                "read_disturb": self.mtj.read_disturb_probability(self.card.read)}

    def direction_wers(self) -> tuple[float, float]:
        wer = self.wer()
        return wer, wer

    def warnings(self) -> list[tuple[str, str]]:
        w = self.card.write
        out = [rate_warning("write.max_error_rate", "the write error rate", self.wer(), w.max_error_rate)]
        return [x for x in out if x is not None]

    def _common_figures(self) -> dict[str, tuple[float, str]]:
        w, tr = self.card.write, self.card.transistor
        return {
            **self.mtj.figures(self.card.read, tr.vdd_v),
            "write_energy_per_flipped_bit": (self.e_write_j, "J"),
            "write_latency": (w.t_write_s, "s"),
            "write_error_rate": (self.wer(), ""),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
            **finite({"endurance": (self.endurance_cycles, ""), "endurance_reads": (self.read_cycles, "")}),
        }


@dataclass(frozen=True)
class STTMRAM(_BitwiseMRAM):
    kind: str = "stt_mram"
    component: str = "stt_cell"

    @classmethod
    def from_card(cls, card: STTMRAMCard, temperature_k: float = 300.0) -> STTMRAM:
        dev = cls(card=card, mtj=MTJ.from_params(card.mtj, temperature_k), temperature_k=temperature_k)
        w, tr = card.write, card.transistor
        for direction, name in (("ap", "P->AP"), ("p", "AP->P")):
            ic = dev.mtj.ic0_a(direction)
            if w.i_write_a <= ic:
                raise PhysicsError(f"{w.i_write_a * 1e6:.0f} uA is below the {name} critical current {ic * 1e6:.0f} uA: "
                                   "the write never switches deterministically", key="write.i_write")
        v_ap = dev.mtj.check_barrier(w.i_write_a, "write.i_write")
        tr.check_rail(w.v_supply_v)
        check_supply(w.v_supply_v, w.i_write_a, v_ap / w.i_write_a + dev.r_transistor_ohm, "write.v_supply")
        dev.mtj.check_read(card.read)
        dev.mtj.check_read_rail(card.read, dev.r_transistor_ohm)
        return dev

    @property
    def headroom_v(self) -> float:
        """What the write rail leaves the transistor: the rail less the junction's voltage (AP state)."""
        return self.card.write.v_supply_v - self.barrier_voltage_v

    @property
    def r_transistor_ohm(self) -> float:
        return self.card.transistor.on_resistance_ohm(self.card.write.i_write_a, self.headroom_v)

    @property
    def barrier_voltage_v(self) -> float:
        """Barrier voltage of the write current in the AP state (the higher stress)."""
        return self.mtj.ap_voltage_at_current(self.card.write.i_write_a)

    def write_paths(self) -> dict[str, WritePath]:
        w, m = self.card.write, self.mtj
        return {d: WritePath(f"STT write {name} (through the MTJ)", m.ic0_a(d), w.i_write_a, w.t_write_s, m.delta,
                             m.params.tau0_s, m.tau_d_s, m.barrier_exponent)
                for d, name in (("ap", "P->AP"), ("p", "AP->P"))}

    def write_path(self) -> WritePath:
        return self.write_paths()["ap"]  # P->AP: the larger critical current

    def direction_wers(self) -> tuple[float, float]:
        w = self.card.write
        return tuple(float(p.wer(w.i_write_a, w.t_write_s)) for p in self.write_paths().values())

    @property
    def endurance_cycles(self) -> float:
        """Writes the barrier survives at the write's barrier voltage, reads' wear aside."""
        w = self.card.write
        return barrier_cycles(self.card.wear, self.barrier_voltage_v, w.t_write_s)

    @property
    def area_per_bit_m2(self) -> float:
        return self.card.transistor.area_for_current_m2(self.card.write.i_write_a, self.headroom_v)

    def figures(self) -> dict[str, tuple[float, str]]:
        paths = self.write_paths()
        w = self.card.write
        return {**self._common_figures(),
                "write_error_rate_ap_to_p": (float(paths["p"].wer(w.i_write_a, w.t_write_s)), ""),
                "barrier_voltage_write": (self.barrier_voltage_v, "V"),
                "transistor_width": (self.card.transistor.width_for_current_m(w.i_write_a, self.headroom_v), "m")}


@dataclass(frozen=True)
class SOTMRAM(_BitwiseMRAM):
    kind: str = "sot_mram"
    component: str = "sot_cell"

    @classmethod
    def from_card(cls, card: SOTMRAMCard, temperature_k: float = 300.0) -> SOTMRAM:
        dev = cls(card=card, mtj=MTJ.from_params(card.mtj, temperature_k), temperature_k=temperature_k)
        hm, w, tr = card.heavy_metal, card.write, card.transistor
        check_geometry(hm, card.mtj)
        check_sot_symmetry(hm, card.mtj, "the SOT write", card.references)
        if w.i_write_a <= hm.ic0_a:
            raise PhysicsError(f"{w.i_write_a * 1e6:.0f} uA is below the SOT critical current {hm.ic0_a * 1e6:.0f} uA: "
                               "the write never switches deterministically", key="write.i_write")
        tr.check_rail(w.v_supply_v)
        check_supply(w.v_supply_v, w.i_write_a, dev.r_hm_ohm + dev.r_transistor_ohm, "write.v_supply")
        dev.mtj.check_read(card.read)
        dev.mtj.check_read_rail(card.read, dev.r_read_transistor_ohm)
        return dev

    @property
    def headroom_v(self) -> float:
        """What the write rail leaves the write transistor: the rail less the strip's drop."""
        return self.card.write.v_supply_v - self.card.write.i_write_a * self.r_hm_ohm

    @property
    def r_transistor_ohm(self) -> float:
        return self.card.transistor.on_resistance_ohm(self.card.write.i_write_a, self.headroom_v)

    @property
    def i_read_a(self) -> float:
        return self.card.read.v_read_v / self.mtj.r_p_ohm

    @property
    def read_headroom_v(self) -> float:
        """What the read rail leaves the read transistor over the junction's read voltage."""
        rd = self.card.read
        return rd.rail_v(self.card.transistor.vdd_v) - rd.v_read_v

    @property
    def r_read_transistor_ohm(self) -> float:
        return self.card.transistor.on_resistance_ohm(self.i_read_a, self.read_headroom_v)

    @property
    def r_hm_ohm(self) -> float:
        return self.card.heavy_metal.resistance_ohm(1, self.temperature_k)

    @property
    def tau_sot_s(self) -> float:
        return float(sot_time_s(self.mtj.mu0_hk_t))

    def write_path(self) -> WritePath:
        w, m, hm = self.card.write, self.mtj, self.card.heavy_metal
        return WritePath("SOT write (heavy-metal strip)", hm.ic0_a, w.i_write_a, w.t_write_s, m.delta,
                         m.params.tau0_s, self.tau_sot_s, 1.0, torque="sot")

    @property
    def endurance_cycles(self) -> float:
        """Writes the strip survives (electromigration at the write's current density)."""
        w, hm = self.card.write, self.card.heavy_metal
        return combined(line_cycles(self.card.wear, hm.current_density(w.i_write_a), w.t_write_s,
                                    self.temperature_k))

    @property
    def area_per_bit_m2(self) -> float:
        tr = self.card.transistor
        return (tr.area_for_current_m2(self.card.write.i_write_a, self.headroom_v)
                + tr.area_for_current_m2(self.i_read_a, self.read_headroom_v))

    def figures(self) -> dict[str, tuple[float, str]]:
        w, hm = self.card.write, self.card.heavy_metal
        return {**self._common_figures(), "r_heavy_metal": (self.r_hm_ohm, "Ohm"),
                "ic0_sot": (hm.ic0_a, "A"),
                "ic_sot_at_pulse": (float(sot_critical_current_a(hm.ic0_a, w.t_write_s, self.tau_sot_s)), "A"),
                "tau_sot": (self.tau_sot_s, "s"),
                "line_current_density": (hm.current_density(w.i_write_a), "A/m^2")}
