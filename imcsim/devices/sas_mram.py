"""SAS-MRAM: STT-assisted SOT MRAM with N MTJs on one shared heavy-metal line.

The seed system (Zhang et al., IEEE TCAD 2024) puts N = 4 MTJs (100 nm x 50 nm) on one heavy-metal (HM)
strip driven by one write transistor at its near end. A group write is

1. a *reset* pulse: SOT current ``i_reset`` through the strip for ``t_reset`` switches every MTJ of the group
   to the parallel (0) state (the charge-limited SOT law, :func:`~imcsim.devices.switching.sot_error_rate`);
2. a *set* pulse: a sub-critical SOT current ``i_set_sot`` for ``t_set`` while an STT current ``i_stt`` flows
   through the selected MTJs only, writing P -> AP (the hard direction, its own critical current).

How the torques combine follows the card's geometry (``heavy_metal.assist``): *orthogonal* for the
perpendicular free layer (type z): the SOT lowers the barrier, linearly in its strength ``s = I_SOT /
I_c,SOT(t)`` (Lee et al., APL 104, 072413 (2014)), and the STT critical current falls with it (``I_c0`` is
proportional to the barrier), so a selected MTJ switches by Butler's law at ``i = I_STT / (I_c0 (1 - s))``
with the barrier ``Delta (1 - s)``; *collinear* for an in-plane type-y layer: the anti-damping torques add,
``i = s + I_STT / I_c0`` (Liu et al., Science 2012).

The STT currents of the selected MTJs return through the line toward the transistor, so the line under an
MTJ carries ``i_set_sot`` plus the STT currents of every selected MTJ beyond it: the half-select disturb of
an unselected MTJ is taken at the worst case (the nearest MTJ with all others selected), the set error at the
farthest (no return current helping), and the transistor is sized for the larger of the reset current and
``i_set_sot + N i_stt``.

Energies are drawn from the write rail (``v_supply I t`` per pulse, the STT currents included) and, for
reads, from ``vdd`` with the sense reference branch (:mod:`imcsim.devices.mtj`).

The group read is a resistive network (:meth:`SASMRAM.read_margins_a`): the bitlines clamp ``v_read`` on the
MTJs' top electrodes and the read currents return through the shared line segments and transistor, so
sensing every MTJ of a group at once lets the others' currents lift the line under each. ``read.scheme``:
``concurrent`` (allowed only where every worst-case margin clears ``read.min_margin``), ``sequential`` (one
MTJ of a group at a time: N sense passes per line activation, counted as N times the read latency) or
``across_rows`` (the MTJs of a group lie in N different rows, so one row activation reads one MTJ per group:
a group then holds the same bit of N weights in consecutive rows, and updates rewrite groups accordingly).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Literal

import numba
import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import NonVolatileCell, TransistorParams, WriteEvents
from imcsim.devices.mram import check_supply, finite, rate_warning
from imcsim.devices.mtj import MTJ, MTJParams, ReadParams
from imcsim.devices.sot import HeavyMetalParams, check_geometry, check_sot_symmetry, supply_energy_j
from imcsim.devices.switching import (
    WritePath,
    sot_critical_current_a,
    sot_error_rate,
    sot_time_s,
    thermal_switch_probability,
    write_error_rate,
)
from imcsim.devices.wear import WearParams, barrier_cycles, combined, line_cycles
from imcsim.errors import PhysicsError
from imcsim.params import CurrentA, Number, Params, TimeS, VoltageV


class GroupWriteParams(Params):
    """Card section ``write``: the two pulses of a group write."""

    n_mtj: int = Field(ge=1, le=64, description="MTJs sharing one HM line and write transistor")
    i_reset_a: CurrentA = Field(alias="i_reset", ge=1e-6, le=5e-3)
    t_reset_s: TimeS = Field(alias="t_reset", gt=1e-12, le=1e-6)
    i_set_sot_a: CurrentA = Field(alias="i_set_sot", ge=1e-6, le=5e-3)
    i_stt_a: CurrentA = Field(alias="i_stt", ge=1e-6, le=1e-3)
    t_set_s: TimeS = Field(alias="t_set", gt=1e-12, le=1e-6)
    v_supply_v: VoltageV = Field(alias="v_supply", ge=0.3, le=3.3,
                                 description="rail of the write drivers: each pulse costs v_supply x I x t")
    max_error_rate: Number = Field(1e-6, gt=0.0, le=1.0,
                                   description="reset, set or half-select error rate above which the operating "
                                               "point is reported")
    verify: bool = Field(False, description="write-verify-retry: read every written cell back and rewrite the "
                                            "wrong ones (the reads and retries are counted)")
    max_retries: int = Field(2, ge=0, le=16, description="rewrites of a cell that reads back wrong (verify)")


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
    wear: WearParams
    targets: dict[str, str] = Field(default_factory=dict,
                                    description="published values of derived figures (figure -> quantity), which "
                                                "imcsim device compares against")


MAX_ENUMERATED_GROUP = 10  # read margins enumerate the other MTJs' states up to this group size


@dataclass(frozen=True)
class SASMRAM(NonVolatileCell):
    """Derived SAS-MRAM group model. Build with :meth:`from_card`."""

    card: SASMRAMCard
    mtj: MTJ
    temperature_k: float
    r_hm_ohm: float
    ic0_sot_a: float
    scheme: str = "concurrent"
    kind: str = "sas_mram"
    component: str = "sas_group"
    bits_per_cell: int = 1

    @classmethod
    def from_card(cls, card: SASMRAMCard, temperature_k: float = 300.0) -> SASMRAM:
        hm = card.heavy_metal
        dev = cls(card=card, mtj=MTJ.from_params(card.mtj, temperature_k), temperature_k=temperature_k,
                  r_hm_ohm=hm.resistance_ohm(card.write.n_mtj, temperature_k), ic0_sot_a=hm.ic0_a)
        dev._check_physics()
        scheme = card.read.scheme
        if scheme == "auto":
            scheme = "concurrent" if min(dev.read_margins_a("concurrent")) >= card.read.min_margin_a else "sequential"
        object.__setattr__(dev, "scheme", scheme)
        dev._check_read()
        return dev

    # --- physics checks -----------------------------------------------------

    def _check_physics(self) -> None:
        c = self.card
        check_geometry(c.heavy_metal, c.mtj)
        check_sot_symmetry(c.heavy_metal, c.mtj, "the reset", c.references)
        along = c.mtj.width_m if c.heavy_metal.assist == "collinear" else c.mtj.length_m
        if c.heavy_metal.pitch_m < along:
            raise PhysicsError(
                f"must be >= the MTJ's extent along the line {along * 1e9:.0f} nm so pillars do not overlap "
                f"(got {c.heavy_metal.pitch_m * 1e9:.0f} nm)", key="heavy_metal.pitch")
        w, tr = c.write, c.transistor
        if w.i_reset_a <= self.ic0_sot_a:
            raise PhysicsError(f"{w.i_reset_a * 1e6:.0f} uA is below the SOT critical current {self.ic0_sot_a * 1e6:.0f} "
                               "uA: the reset never switches deterministically", key="write.i_reset")
        self.mtj.check_barrier(w.i_stt_a, "write.i_stt")
        s_worst = self.sot_strength(self.half_select_line_current_a)
        if s_worst >= 1.0:
            returns = (w.n_mtj - 1) * w.i_stt_a
            raise PhysicsError(
                f"the set pulse ({w.i_set_sot_a * 1e6:.0f} uA) plus the STT currents of the {w.n_mtj - 1} other selected "
                f"MTJs returning through the line ({(w.n_mtj - 1) * w.i_stt_a * 1e6:.0f} uA) reach {s_worst:.2f} x the "
                f"SOT critical current of a {w.t_set_s * 1e9:g} ns pulse under the nearest MTJ, which then switches "
                "unselected; lower write.i_set_sot or write.i_stt",
                key="write.i_stt" if returns > w.i_set_sot_a else "write.i_set_sot")
        tr.check_rail(w.v_supply_v)
        check_supply(w.v_supply_v, w.i_reset_a, self.r_hm_ohm + self.r_transistor_ohm, "write.v_supply")
        check_supply(w.v_supply_v, w.i_stt_a, self.stt_path_voltage_v() / w.i_stt_a, "write.v_supply")

    def _check_read(self) -> None:
        rd = self.card.read
        margins = self.read_margins_a(self.scheme)
        if min(margins) < rd.min_margin_a:
            worst = int(np.argmin(margins))
            raise PhysicsError(
                f"the {self.scheme} read of a {self.card.write.n_mtj}-MTJ group leaves MTJ {worst} (0: nearest the "
                f"transistor) a worst-case margin of {margins[worst] * 1e6:.1f} uA, below the "
                f"{rd.min_margin_a * 1e6:.1f} uA the sense amplifier resolves; use read.scheme sequential or "
                "across_rows", key="read.scheme")
        self.mtj.check_read_rule(rd)
        self.mtj.check_read_rail(rd, self.r_transistor_ohm + self.r_hm_ohm)

    # --- the line and the transistor -------------------------------------------

    @property
    def r_segment_ohm(self) -> float:
        return self.card.heavy_metal.resistance_ohm(1, self.temperature_k)

    @property
    def i_transistor_a(self) -> float:
        """The largest current the write transistor sinks: the reset, or the set with every MTJ selected."""
        w = self.card.write
        return max(w.i_reset_a, w.i_set_sot_a + w.n_mtj * w.i_stt_a)

    @property
    def headroom_v(self) -> float:
        """The drop the write rail leaves the transistor at its largest current: the smaller on resistance of
        the reset path (the whole line) and the set path (the farthest MTJ's barrier and the line), times that
        current."""
        w = self.card.write
        r_reset = (w.v_supply_v - w.i_reset_a * self.r_hm_ohm) / w.i_reset_a
        i_set = w.i_set_sot_a + w.n_mtj * w.i_stt_a
        r_set = (w.v_supply_v - self._stt_path_without_transistor_v()) / i_set
        return min(r_reset, r_set) * self.i_transistor_a

    @property
    def r_transistor_ohm(self) -> float:
        return self.card.transistor.on_resistance_ohm(self.i_transistor_a, self.headroom_v)

    def _stt_path_without_transistor_v(self) -> float:
        w = self.card.write
        v = self.mtj.ap_voltage_at_current(w.i_stt_a)
        for j in range(w.n_mtj):  # segment j carries the SOT current and the STT currents of MTJs >= j
            v += (w.i_set_sot_a + (w.n_mtj - j) * w.i_stt_a) * self.r_segment_ohm
        return v

    def stt_path_voltage_v(self) -> float:
        """Rail voltage the STT current of the farthest MTJ needs with every MTJ selected: its barrier (AP
        state), the line back to the transistor carrying the others' returns, and the transistor."""
        w = self.card.write
        return self._stt_path_without_transistor_v() + (w.i_set_sot_a + w.n_mtj * w.i_stt_a) * self.r_transistor_ohm

    @property
    def half_select_line_current_a(self) -> float:
        """Line current under the nearest MTJ when it is unselected and every other MTJ is set."""
        w = self.card.write
        return w.i_set_sot_a + (w.n_mtj - 1) * w.i_stt_a

    @property
    def tau_sot_s(self) -> float:
        return float(sot_time_s(self.mtj.mu0_hk_t))

    def sot_strength(self, i_a: float, t_s: float | None = None) -> float:
        """SOT current over the critical current of a pulse of width ``t`` (the set pulse's by default)."""
        t = self.card.write.t_set_s if t_s is None else t_s
        return i_a / float(sot_critical_current_a(self.ic0_sot_a, t, self.tau_sot_s))

    # --- derived write figures -----------------------------------------------

    def _energy(self, i_a: float, t_s: float) -> float:
        return supply_energy_j(self.card.write.v_supply_v, i_a, t_s)

    @property
    def e_reset_j(self) -> float:
        w = self.card.write
        return self._energy(w.i_reset_a, w.t_reset_s)

    @property
    def e_set_sot_j(self) -> float:
        w = self.card.write
        return self._energy(w.i_set_sot_a, w.t_set_s)

    @property
    def e_stt_per_bit_j(self) -> float:
        w = self.card.write
        return self._energy(w.i_stt_a, w.t_set_s)

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
        w = self.card.write
        return float(sot_error_rate(self.sot_strength(w.i_reset_a, w.t_reset_s), w.t_reset_s, self.mtj.delta,
                                    self.mtj.params.tau0_s))

    def set_wer(self) -> float:
        """Failure of a selected MTJ's set, at the farthest MTJ (only the set pulse's SOT current under it)."""
        w, m = self.card.write, self.mtj
        s = self.sot_strength(w.i_set_sot_a)
        ic = m.ic0_p_to_ap_a
        if self.card.heavy_metal.assist == "orthogonal":
            return float(write_error_rate(w.i_stt_a / (ic * (1.0 - s)), w.t_set_s, m.delta * (1.0 - s),
                                          m.params.tau0_s, m.tau_d_s, m.barrier_exponent))
        return float(write_error_rate(s + w.i_stt_a / ic, w.t_set_s, m.delta, m.params.tau0_s, m.tau_d_s,
                                      m.barrier_exponent))

    def write_path(self) -> WritePath:
        """The SOT reset path through the shared heavy-metal line."""
        w, m = self.card.write, self.mtj
        return WritePath("SOT reset (shared line)", self.ic0_sot_a, w.i_reset_a, w.t_reset_s, m.delta,
                         m.params.tau0_s, self.tau_sot_s, 1.0, torque="sot")

    def half_select_disturb(self) -> float:
        """Probability that the set pulse switches an unselected MTJ, worst case: the nearest one, with the other
        N - 1 MTJs selected and their STT currents returning under it (see :meth:`half_select_by_returns`)."""
        return self.half_select_by_returns()[-1]

    # --- the group read ---------------------------------------------------------

    def _line_currents(self, states: tuple[int, ...], active: tuple[bool, ...]) -> np.ndarray:
        """Read currents of the MTJs of one group for the given states (0 P, 1 AP) with the ``active`` ones
        biased at v_read: a nodal solution of the line (nodes under each MTJ, one segment between neighbours
        and from the nearest to the transistor)."""
        n = len(states)
        v_read = self.card.read.v_read_v
        g_seg = 1.0 / self.r_segment_ohm
        g_end = 1.0 / (self.r_segment_ohm + self.r_transistor_ohm)
        g_mtj = np.array([(1.0 / (self.mtj.r_ap_at(v_read) if s else self.mtj.r_p_ohm)) if a else 0.0
                          for s, a in zip(states, active, strict=True)])
        lap = np.zeros((n, n))
        rhs = g_mtj * v_read
        for j in range(n):
            lap[j, j] += g_mtj[j]
            if j == 0:
                lap[0, 0] += g_end
            if j + 1 < n:
                lap[j, j] += g_seg
                lap[j + 1, j + 1] += g_seg
                lap[j, j + 1] -= g_seg
                lap[j + 1, j] -= g_seg
        v_node = np.linalg.solve(lap, rhs)
        return g_mtj * (v_read - v_node)

    def read_margins_a(self, scheme: str | None = None) -> list[float]:
        """Worst-case sense margin (I_P - I_AP) of each MTJ position (0: nearest the transistor) under a read
        scheme: the P current with the other biased MTJs in the state that lifts the line most (all P), less the
        AP current with them in the state that lifts it least (all AP); the line voltage is monotone in the
        others' conductances, so the two extremes bound every combination (checked by enumeration for small
        groups in the tests)."""
        scheme = self.scheme if scheme is None else scheme
        n = self.card.write.n_mtj
        margins = []
        for k in range(n):
            active = tuple(j == k or scheme == "concurrent" for j in range(n))  # an idle MTJ draws no current
            i_p = self._line_currents((0,) * n, active)[k]
            i_ap = self._line_currents((1,) * n, active)[k]
            margins.append(float(i_p - i_ap))
        return margins

    def enumerated_margins_a(self, scheme: str) -> list[float]:
        """The margins of :meth:`read_margins_a` by enumerating every state of the other MTJs (small groups)."""
        n = self.card.write.n_mtj
        if n > MAX_ENUMERATED_GROUP:
            raise ValueError(f"enumeration covers groups up to {MAX_ENUMERATED_GROUP} MTJs")
        out = []
        for k in range(n):
            active = tuple(j == k or scheme == "concurrent" for j in range(n))
            i_p, i_ap = [], []
            for others in itertools.product((0, 1), repeat=n - 1):
                states = list(others)
                states.insert(k, 0)
                i_p.append(self._line_currents(tuple(states), active)[k])
                states[k] = 1
                i_ap.append(self._line_currents(tuple(states), active)[k])
            out.append(float(min(i_p) - max(i_ap)))
        return out

    @property
    def read_passes(self) -> int:
        """Sense passes per line activation: N for the sequential scheme, else 1."""
        return self.card.write.n_mtj if self.scheme == "sequential" else 1

    # --- wear ------------------------------------------------------------------

    def endurance_by_mechanism(self) -> dict[str, float]:
        """Cell write events each mechanism allows: the barrier under the STT assist (one set pulse per two cell
        events on random data: a rewrite resets the 1s and sets the new 1s) and the line under the reset and set
        pulses of the group rewrite each cell event belongs to."""
        w, hm, wear = self.card.write, self.card.heavy_metal, self.card.wear
        barrier = 2.0 * barrier_cycles(wear, self.mtj.ap_voltage_at_current(w.i_stt_a), w.t_set_s)
        line = combined(line_cycles(wear, hm.current_density(w.i_reset_a), w.t_reset_s, self.temperature_k),
                        line_cycles(wear, hm.current_density(self.half_select_line_current_a + w.i_stt_a), w.t_set_s,
                                    self.temperature_k))
        return {"barrier": barrier, "line": line}

    @property
    def endurance_cycles(self) -> float:
        return combined(*self.endurance_by_mechanism().values())

    @property
    def read_cycles(self) -> float:
        """Reads the barrier survives at the read voltage (its wear under read stress)."""
        rd = self.card.read
        return barrier_cycles(self.card.wear, rd.v_read_v, rd.sense_s)

    @property
    def area_per_bit_m2(self) -> float:
        """Group area (one write transistor + N MTJ sites on the strip) per bit."""
        c = self.card
        f = c.transistor.feature_size_m
        tr = c.transistor.area_for_current_m2(self.i_transistor_a, self.headroom_v)
        site = c.heavy_metal.pitch_m * (c.heavy_metal.width_m + 2.0 * f)
        return (tr + c.write.n_mtj * site) / c.write.n_mtj

    # --- interface for the circuit layer ------------------------------------

    def actions(self) -> dict[str, ActionSpec]:
        w, rd = self.card.write, self.card.read
        e_read = self.mtj.read_energy_j(rd, self.card.transistor.vdd_v)
        return {
            "read": ActionSpec(
                ActionCost(e_read, rd.t_read_s * self.read_passes),
                f"one MTJ read ({self.scheme}): cell and reference branches from the read rail", "read",
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
        # the group size and the layout shape the writes; the rest only costs them
        return ("sas_group", self.card.write.n_mtj, self.scheme == "across_rows", self.card.write.verify)

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        """Group writes needed to turn ``old_bits`` into ``new_bits``.

        Both arrays hold 0/1 cells with shape ``(..., n_cells_per_row)``; cells of a row are grouped ``n_mtj``
        at a time (the last group may be partial), or, with the ``across_rows`` read scheme, cells of a column
        ``n_mtj`` rows at a time. Only groups with a changed bit are rewritten; a rewritten group switches every
        bit that was 1 (reset) and every bit that ends at 1 (set).
        """
        old = np.asarray(old_bits, dtype=np.uint8)
        new = np.asarray(new_bits, dtype=np.uint8)
        if old.shape != new.shape:
            raise ValueError(f"old and new bits differ in shape: {old.shape} vs {new.shape}")
        cols = old.shape[-1] if old.ndim else 1
        rows_old = old.reshape(-1, cols)
        rows_new = new.reshape(-1, cols)
        across = self.scheme == "across_rows"
        if across:
            rows_old, rows_new = rows_old.T, rows_new.T
        resets, sets, stt, cell_writes = _group_writes(np.ascontiguousarray(rows_old), np.ascontiguousarray(rows_new),
                                                       self.card.write.n_mtj)
        if across:
            cell_writes = cell_writes.T
        return WriteEvents(
            counts={"reset_pulse": int(resets), "set_pulse": int(sets), "stt_assist": int(stt)},
            cell_writes=np.ascontiguousarray(cell_writes).reshape(old.shape),
        )

    @property
    def group_size(self) -> int:
        return self.card.write.n_mtj

    @property
    def groups_across_rows(self) -> bool:
        return self.scheme == "across_rows"

    def half_select_by_returns(self) -> list[float]:
        """Half-select disturb of an unselected MTJ with k = 0 .. N-1 selected MTJs beyond it, whose STT currents
        return through the line under it."""
        w, m = self.card.write, self.mtj
        return [float(thermal_switch_probability(self.sot_strength(w.i_set_sot_a + k * w.i_stt_a), w.t_set_s,
                                                 m.delta, m.params.tau0_s, 1.0)) for k in range(w.n_mtj)]

    def error_rates(self) -> dict[str, float]:
        """Per-event error probabilities the functional run injects (see :mod:`imcsim.devices.errors`)."""
        return {"reset": self.reset_wer(), "set": self.set_wer(), "half_select": self.half_select_disturb(),
                "read_disturb": self.mtj.read_disturb_probability(self.card.read)}

    def warnings(self) -> list[tuple[str, str]]:
        limit = self.card.write.max_error_rate
        out = [rate_warning("write.max_error_rate", "the reset write error rate", self.reset_wer(), limit),
               rate_warning("write.max_error_rate", "the set write error rate", self.set_wer(), limit),
               rate_warning("write.max_error_rate", "the half-select disturb rate", self.half_select_disturb(), limit)]
        return [x for x in out if x is not None]

    def figures(self) -> dict[str, tuple[float, str]]:
        rd, w = self.card.read, self.card.write
        margins = self.read_margins_a()
        wear = self.endurance_by_mechanism()
        return {
            **self.mtj.figures(rd, self.card.transistor.vdd_v),
            "r_heavy_metal": (self.r_hm_ohm, "Ohm"),
            "r_write_transistor": (self.r_transistor_ohm, "Ohm"),
            "ic0_sot": (self.ic0_sot_a, "A"),
            "tau_sot": (self.tau_sot_s, "s"),
            "sot_strength_set": (self.sot_strength(w.i_set_sot_a), ""),
            "read_scheme_concurrent_ok": (float(min(self.read_margins_a("concurrent")) >= rd.min_margin_a), ""),
            "read_margin_worst": (min(margins), "A"),
            "reset_energy_per_group": (self.e_reset_j, "J"),
            "set_sot_energy_per_group": (self.e_set_sot_j, "J"),
            "stt_energy_per_set_bit": (self.e_stt_per_bit_j, "J"),
            "write_energy_per_bit_random_data": (self.mean_write_energy_per_bit_j(), "J"),
            "group_write_latency": (self.t_group_write_s, "s"),
            "reset_write_error_rate": (self.reset_wer(), ""),
            "set_write_error_rate": (self.set_wer(), ""),
            "half_select_disturb_probability": (self.half_select_disturb(), ""),
            "barrier_voltage_stt": (self.mtj.ap_voltage_at_current(w.i_stt_a), "V"),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
            **finite({"endurance_barrier": (wear["barrier"], ""), "endurance_line": (wear["line"], ""),
                      "endurance": (self.endurance_cycles, ""), "endurance_reads": (self.read_cycles, "")}),
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
