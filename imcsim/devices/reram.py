"""ReRAM (1T1R, multi-level) programmed by write-and-verify, built from its physical effects.

A cell stores ``levels`` conductance levels, equally spaced between ``g_min``
and ``g_max``::

    G_l = g_min + l / (levels - 1) * (g_max - g_min),   l = 0 .. levels - 1

so it holds ``log2(levels)`` bits. Each effect is its own part with its source
and the range it holds in:

* **Programming** (:class:`ProgrammingParams`): a program-and-verify loop, the
  scheme of multi-level oxide ReRAM (Wan et al., NeuRRAM, Nature 608:504, 2022;
  Milo et al., IRPS 2021). From the cell's present conductance: a SET pulse if
  G < G_target, else a RESET pulse; read G back (verify); stop when
  ``|G - G_target| <= tolerance * spacing``; after ``max_pulses`` pulses stop and
  count a failure. The change a pulse makes follows ``algorithm``:

  - ``fixed``: ``+/- step * (g_max - g_min)`` whatever G is;
  - ``nonlinear``: NeuroSim's per-pulse update (MLP+NeuroSim V3.0,
    ``formula.cpp``): along the potentiation curve ``G(P) = B (1 - exp(-P/A)) +
    g_lo`` a pulse moves the cell from pulse number P to P + 1, with
    ``B = (g_hi - g_lo) / (1 - exp(-P_max / A))`` and ``P_max = 1 / step``; the
    depression curve mirrors it from g_hi. A is set from NeuroSim's nonlinearity
    label (:func:`nonlinearity_a`): steps shrink towards the far end of the window;
  - ``ispp``: incremental step pulses: consecutive pulses in one direction rise
    in amplitude from ``ispp_start`` by ``ispp_increment`` up to the card's pulse
    voltage, and restart when the direction turns; a pulse's change is
    ``step x 10^((V - V_pulse) / volts_per_decade)`` (the exponential voltage
    dependence of filament growth, Menzel et al., Adv. Funct. Mater. 21:4487, 2011),
    so large moves take few pulses and the ramp restarts small after an overshoot.

  Cycle-to-cycle noise is drawn anew for every pulse: ``absolute``, a fraction
  of the window (NeuroSim, ``RealDevice::Write``), or ``relative``, a fraction of
  the pulse's own change (aihwkit's ``dw_min_std``). G is clipped to the cell's
  own window.
* **Device-to-device variation** (:class:`VariationParams`): each cell's g_min,
  g_max and step are drawn once per physical cell; a share of cells is stuck at
  its low or high conductance and does not move (a controller that saw a cell
  fail its verify marks it and stops pulsing it).
* **I-V nonlinearity** (:class:`IVParams`): the conductance a pulse meets is
  not the read conductance. NeuroSim's law ``I(V) = I(V_r) NL^((V - V_r) /
  (V_w / 2))`` (``NonlinearConductance`` in MLP+NeuroSim's ``formula.cpp``; NL is
  the current ratio ``I(V_w) / I(V_w / 2)``) holds for ``V_r <= V <= V_w``; a
  pulse of amplitude V and width t on a cell of read conductance G costs
  ``V^2 G(V) t`` with ``G(V) = G (V_r / V) NL^((V - V_r) / (V_w / 2))``.
  Without the section the cell is ohmic.
* **After programming** (:class:`RelaxationParams`): the conductance relaxes
  away from its verified value; the spread after time t since programming is
  Wan et al.'s fit (4th-order polynomial in G / 40 uS, in uS, at 1 s, 1 day,
  2 days, as tabulated in aihwkit's ``ReRamWan2022NoiseModel``), interpolated
  in log t between the fitted times and held for t < 1 s; each read adds read
  noise of ``read.noise`` x g_max (about 1 %, aihwkit's note on short-term read
  noise). :meth:`ReRAM.conductance_at` draws both.
* **Wear** (``endurance``, ``endurance_shape``): ``endurance`` is the median
  number of full SET/RESET cycles a cell survives. A pulse wears the cell in
  proportion to its Joule energy against that of a full cycle (a SET and a
  RESET pulse on a fully set cell): the energy-endurance trade-off of oxide
  ReRAM (Nail et al., IEDM 2016), so a small verify pulse is a fraction of a
  cycle and an ISPP ramp's low pulses wear less. Cell endurances follow a
  Weibull law of shape ``endurance_shape``; the weakest cell of an array sets
  its lifetime (:meth:`ReRAM.array_endurance`).

Energies are voltage-mode Joule work in the cell at the applied voltage; a
verify read costs ``V_read^2 G t_read``. Access transistor, driver and sense
losses belong to the circuit layer.

Random numbers are counter-based: each :meth:`ReRAM.program` call draws one
64-bit key from the device's seeded :class:`numpy.random.Generator`; the noise
of pulse k of cell i is the k-th draw of a SplitMix64 stream seeded by hashing
(key, i), turned into a normal variate by Doornik's ziggurat. Results
therefore depend only on the seed and the sequence of calls, not on how the
cells are split across threads.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numba
import numpy as np
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.devices.base import NonVolatileCell, WriteEvents
from imcsim.errors import PhysicsError
from imcsim.params import ConductanceS, LengthM, Number, Params, TimeS, VoltageV

# Monte Carlo size behind figures() and the expected action energies.
FIGURE_CELLS = 20_000
# A call programming at least this many cells is split across threads.
_PARALLEL_MIN_CELLS = 65_536
# Largest probability, under perfectly aimed pulses, that a write to an interior
# level fails; a card above it cannot be programmed (see _check_physics).
MAX_IDEAL_FAILURE = 0.5


# --- card ---------------------------------------------------------------------


class ReRAMCellParams(Params):
    """Card section ``cell``: the conductance window and how many levels it holds.

    Conductance attributes end in ``_siemens`` (not ``_s``, which would read as seconds).
    """

    g_min_siemens: ConductanceS = Field(alias="g_min", gt=1e-12, le=1e-2, description="lowest level (high-resistance state)")
    g_max_siemens: ConductanceS = Field(alias="g_max", gt=1e-12, le=1e-2, description="highest level (low-resistance state)")
    levels: int = Field(ge=2, le=256, description="conductance levels per cell (a power of two)")


class PulseParams(Params):
    """Card sections ``set_pulse`` / ``reset_pulse``: one programming pulse across the cell."""

    voltage_v: VoltageV = Field(alias="voltage", ge=0.05, le=10.0, description="pulse amplitude across the cell")
    width_s: TimeS = Field(alias="width", gt=1e-12, le=1e-3, description="pulse width")


class ProgrammingParams(Params):
    """Card section ``programming``: the write-and-verify loop.

    ``step`` and an ``absolute`` ``c2c_sigma`` are fractions of the range ``g_max - g_min``
    (a ``relative`` one is a fraction of each pulse's change); ``tolerance`` is a fraction of
    the level spacing (below 0.5 so the accept windows of neighbouring levels never overlap).
    """

    algorithm: Literal["fixed", "nonlinear", "ispp"] = Field(
        "fixed", description="how a pulse's change depends on the cell: fixed step, NeuroSim's nonlinear "
                             "update, or incremental step pulses")
    step: Number | Literal["auto"] = Field(
        "auto", description="nominal conductance change per pulse / (g_max - g_min), or auto: the largest step whose "
                            "largest pulse under the update moves at most half the accept window (tolerance x "
                            "level spacing), sized for the card's levels (see programming_step)")
    c2c_sigma: Number = Field(
        ge=0.0, le=1.0, description="cycle-to-cycle std of each pulse's change (see c2c_model)"
    )
    c2c_model: Literal["absolute", "relative"] = Field(
        "absolute", description="c2c_sigma as a fraction of the range (NeuroSim) or of the pulse's change (aihwkit)")
    tolerance: Number = Field(ge=1e-3, lt=0.5, description="accepted |G - G_target| / level spacing")
    max_pulses: int = Field(ge=1, le=100_000, description="pulses after which a write counts as failed")
    nonlinearity_ltp: Number = Field(0.0, ge=-9.0, le=9.0,
                                     description="NeuroSim nonlinearity label of the SET (potentiation) curve")
    nonlinearity_ltd: Number = Field(0.0, ge=-9.0, le=9.0,
                                     description="NeuroSim nonlinearity label of the RESET (depression) curve")
    ispp_start: VoltageV | None = Field(None, ge=0.05, le=10.0, description="first pulse amplitude of an ISPP ramp")
    ispp_increment: VoltageV | None = Field(None, gt=0.0, le=2.0, description="amplitude added per ISPP pulse")
    volts_per_decade: VoltageV | None = Field(
        None, ge=0.01, le=5.0, description="amplitude that changes a pulse's conductance step tenfold (ISPP)")


class ReRAMReadParams(Params):
    """Card section ``read``: the read (and verify-read) operation."""

    v_read_v: VoltageV = Field(alias="v_read", ge=0.01, le=2.0, description="read voltage across the cell")
    t_read_s: TimeS = Field(alias="t_read", gt=1e-12, le=1e-5, description="read pulse width")
    noise: Number = Field(0.0, ge=0.0, le=0.2, description="std of each read's conductance / g_max (read noise)")


class IVParams(Params):
    """Card section ``iv``: the cell's I-V nonlinearity (NeuroSim's law; see the module docstring)."""

    nonlinearity: Number = Field(ge=1.0, le=1000.0,
                                 description="current ratio I(V_w) / I(V_w / 2) at the write voltage")


class VariationParams(Params):
    """Card section ``variation``: device-to-device spread, drawn once per physical cell."""

    g_min_sigma: Number = Field(0.0, ge=0.0, le=0.5, description="std of a cell's g_min / g_min")
    g_max_sigma: Number = Field(0.0, ge=0.0, le=0.5, description="std of a cell's g_max / g_max")
    step_sigma: Number = Field(0.0, ge=0.0, le=1.0, description="std of ln(a cell's step / step)")
    stuck_low: Number = Field(0.0, ge=0.0, le=0.5, description="share of cells stuck at their g_min")
    stuck_high: Number = Field(0.0, ge=0.0, le=0.5, description="share of cells stuck at their g_max")


class RelaxationFit(Params):
    """One fitted time: the spread of programmed conductances that long after programming."""

    time_s: TimeS = Field(alias="time", ge=1e-3, le=1e9, description="time since programming")
    sigma: list[ConductanceS] = Field(min_length=1, max_length=8,
                                      description="polynomial coefficients c_i of sigma = sum c_i (G / g_fit)^i")


class RelaxationParams(Params):
    """Card section ``relaxation``: spread after programming as a polynomial in G per fitted time."""

    g_fit_siemens: ConductanceS = Field(alias="g_fit", gt=1e-9, le=1e-2,
                                        description="conductance scale of the fit (and its upper end)")
    scale: Literal["window", "absolute"] = Field(
        "window", description="window: the fit, made on a device of window [0, g_fit], is read at the same relative "
                              "position in this card's window and scaled by the windows' ratio; absolute: sigma(G) "
                              "in siemens as fitted")
    fits: list[RelaxationFit] = Field(min_length=1, max_length=16, description="the fitted times, ascending")
    max_time_s: TimeS = Field(alias="max_time", ge=1e-3, le=1e9,
                              description="longest time the fit is used for (log-t extrapolation up to it)")


class AccessParams(Params):
    """Card section ``access``: the 1T1R cell footprint."""

    feature_size_m: LengthM = Field(alias="feature_size", gt=1e-9, le=500e-9, description="technology node F")
    cell_area_f2: Number = Field(alias="cell_area_f2", ge=4.0, le=1000.0, description="1T1R cell area in F^2")


class ReRAMCard(Params):
    """A multi-level ReRAM device card (``kind: reram``)."""

    kind: Literal["reram"]
    description: str
    references: dict[str, str]
    cell: ReRAMCellParams
    set_pulse: PulseParams
    reset_pulse: PulseParams
    programming: ProgrammingParams
    read: ReRAMReadParams
    access: AccessParams
    iv: IVParams | None = None
    variation: VariationParams = VariationParams()
    relaxation: RelaxationParams | None = None
    endurance_cycles: Number = Field(alias="endurance", gt=1.0, le=1e20,
                                     description="median full SET/RESET cycles a cell survives")
    endurance_shape: Number | None = Field(None, ge=0.2, le=50.0,
                                           description="Weibull shape of the cells' endurance (none: all alike)")


# --- programming kernel -----------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_LOW7 = np.uint64(127)
_INV_2_53 = 1.0 / 9007199254740992.0


def _ziggurat_tables(blocks: int = 128, r: float = 3.442619855899, v: float = 9.91256303526217e-3):
    """Block edges x_i and ratios x_{i+1}/x_i of Doornik's ZIGNOR normal ziggurat.

    J. A. Doornik, "An Improved Ziggurat Method to Generate Normal Random
    Samples", 2005: 128 blocks of area ``v``, the base block reaching to ``r``.
    """
    x = np.zeros(blocks + 1)
    f = math.exp(-0.5 * r * r)
    x[0] = v / f
    x[1] = r
    for i in range(2, blocks):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    return x, x[1:] / x[:-1]


_ZIG_R = 3.442619855899
_ZIG_X, _ZIG_RATIO = _ziggurat_tables()


@numba.njit(cache=True, nogil=True, inline="always")
def _mix64(z):
    """SplitMix64 finaliser (Steele, Lea, Flood, OOPSLA 2014): uint64 -> uint64."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(state):
    """Next value of a SplitMix64 stream as a float in (0, 1); returns (u, new state)."""
    state += _GOLDEN
    return (float(np.int64(_mix64(state) >> _S11)) + 0.5) * _INV_2_53, state


@numba.njit(cache=True, nogil=True)
def _normal_slow(state, u, i):
    """Ziggurat wedge or tail for a first draw (u, i) that missed block i's rectangle.

    Returns (z, new state); loops back to fresh (u, i) draws on rejection.
    """
    while True:
        if i == 0:  # base block: sample the tail beyond R (Marsaglia 1964)
            while True:
                a, state = _uniform(state)
                b, state = _uniform(state)
                x = math.log(a) / _ZIG_R
                if -2.0 * math.log(b) >= x * x:
                    break
            return (x - _ZIG_R if u < 0.0 else _ZIG_R - x), state
        x = u * _ZIG_X[i]
        f0 = math.exp(-0.5 * (_ZIG_X[i] * _ZIG_X[i] - x * x))
        f1 = math.exp(-0.5 * (_ZIG_X[i + 1] * _ZIG_X[i + 1] - x * x))
        c, state = _uniform(state)
        if f1 + c * (f0 - f1) < 1.0:
            return x, state
        u, i, state = _block_draw(state)
        if abs(u) < _ZIG_RATIO[i]:
            return u * _ZIG_X[i], state


@numba.njit(cache=True, nogil=True, inline="always")
def _block_draw(state):
    """One 64-bit draw split into a uniform in (-1, 1) and a ziggurat block index; returns (u, block, state)."""
    state += _GOLDEN
    h = _mix64(state)
    return 2.0 * (float(np.int64(h >> _S11)) + 0.5) * _INV_2_53 - 1.0, int(h & _LOW7), state


@numba.njit(cache=True, nogil=True, inline="always")
def _normal(state):
    """Next standard normal of a SplitMix64 stream by Doornik's ziggurat; returns (z, new state)."""
    u, j, state = _block_draw(state)
    if abs(u) < _ZIG_RATIO[j]:
        return u * _ZIG_X[j], state
    return _normal_slow(state, u, j)


@numba.njit(cache=True, nogil=True, inline="always")
def _iv_ratio(v, v_read, v_write, ln_nl):
    """G(V) / G(V_read) by NeuroSim's law (1 for an ohmic cell, ln_nl = 0)."""
    if ln_nl == 0.0:
        return 1.0
    return (v_read / v) * math.exp(ln_nl * (v - v_read) / (0.5 * v_write))


@numba.njit(cache=True, nogil=True)
def _program_kernel(old, new, g_start, lo, hi, stepm, skip, first_index, key, g_min, spacing,
                    mode, step, sigma, relative, a_up, a_dn, p_max,
                    v_set, t_set, v_reset, t_reset, v_start, v_inc, v_decade, v_read, ln_nl,
                    half_window, max_pulses, k_read, inv_cycle,
                    pulses, sets, failed, g_out, e_set, e_reset, e_verify, wear):
    """Write-and-verify for cells ``old[i] -> new[i]`` (levels); fills the per-cell outputs.

    Per cell: ``g_start`` its conductance now, ``lo``/``hi`` its own window, ``stepm`` its
    step multiplier, ``skip`` a known stuck cell (not pulsed). Conductances in S; ``step``,
    ``sigma`` (absolute) and ``half_window`` in S; ``relative``: sigma is a fraction of each
    pulse's change. ``mode``: 0 fixed, 1 nonlinear (``a_up``/``a_dn``: NeuroSim's A / P_max,
    0 for a linear curve), 2 ISPP. A pulse of amplitude V and width t on read conductance G
    costs ``V^2 t G ratio(V)``; its wear is that energy times ``inv_cycle``. ``first_index``
    is the global index of cell 0 of this slice, so the noise of a cell does not depend on the
    slicing.
    """
    for i in range(old.shape[0]):
        g = g_start[i]
        pulses[i] = 0
        sets[i] = 0
        e_set[i] = 0.0
        e_reset[i] = 0.0
        e_verify[i] = 0.0
        wear[i] = 0.0
        target = g_min + new[i] * spacing
        if old[i] == new[i] or skip[i]:
            failed[i] = old[i] != new[i] and abs(g - target) > half_window
            g_out[i] = g
            continue
        state = _mix64(key ^ _mix64(np.uint64(first_index + i) + _GOLDEN))
        width = hi[i] - lo[i]
        n = 0
        n_set = 0
        es = 0.0
        er = 0.0
        ev = 0.0
        w = 0.0
        ramp = 0
        last_up = True
        ok = False
        pm = p_max / stepm[i]
        # nonlinear curves: along G(P) = B (1 - exp(-P/A)) + g_lo one pulse moves G by (B - (G - g_lo)) q,
        # q = 1 - exp(-1/A) (and mirrored from g_hi for depression), with no logarithm per pulse
        b_up = b_dn = q_up = q_dn = 0.0
        if mode == 1 and width > 0.0:
            for k in range(2):
                a = a_up if k == 0 else a_dn
                if a > 0.0:
                    big_a = a * p_max
                    b = width / (1.0 - math.exp(-pm / big_a))
                    q = 1.0 - math.exp(-1.0 / big_a)
                else:
                    b, q = 0.0, 0.0
                if k == 0:
                    b_up, q_up = b, q
                else:
                    b_dn, q_dn = b, q
        r_set = _iv_ratio(v_set, v_read, v_set, ln_nl)
        r_reset = _iv_ratio(v_reset, v_read, v_reset, ln_nl)
        while n < max_pulses:
            z, state = _normal(state)
            up = g < target
            ramp = ramp + 1 if (n > 0 and up == last_up) else 0
            last_up = up
            v_top = v_set if up else v_reset
            v = v_top
            ratio = r_set if up else r_reset
            if mode == 0:
                d = step * stepm[i]
            elif mode == 1:
                q = q_up if up else q_dn
                if q == 0.0:
                    d = width / pm if width > 0.0 else 0.0
                else:
                    b = b_up if up else b_dn
                    d = q * max(b - ((g - lo[i]) if up else (hi[i] - g)), 0.0)
            else:
                v = min(v_start + ramp * v_inc, v_top)
                d = step * stepm[i] * 10.0 ** ((v - v_top) / v_decade)
                ratio = _iv_ratio(v, v_read, v_top, ln_nl)
            e = v * v * g * ratio * (t_set if up else t_reset)
            if up:
                es += e
                n_set += 1
            else:
                er += e
            w += e * inv_cycle
            noise = sigma * d if relative else sigma
            g += (d if up else -d) + noise * z
            g = min(max(g, lo[i]), hi[i])
            n += 1
            ev += k_read * g
            if abs(g - target) <= half_window:
                ok = True
                break
        pulses[i] = n
        sets[i] = n_set
        failed[i] = not ok
        g_out[i] = g
        e_set[i] = es
        e_reset[i] = er
        e_verify[i] = ev
        wear[i] = w


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramResult:
    """Outcome of one :meth:`ReRAM.program` call.

    Per-cell arrays have the shape of the level arrays given; totals are over
    all cells. Energies in J, conductances in S, wear in full-cycle equivalents.
    """

    pulses: np.ndarray  # int32: SET + RESET pulses applied to each cell
    failed: np.ndarray  # bool: the cell was not inside its accept window after max_pulses
    g_final_siemens: np.ndarray  # float64: conductance after the last pulse
    wear: np.ndarray  # float64: the cell's wear by this write, in full SET/RESET cycles
    set_pulses: int
    reset_pulses: int
    verify_reads: int  # one after every pulse
    failures: int
    set_energy_j: float
    reset_energy_j: float
    verify_energy_j: float

    @property
    def pulse_energy_j(self) -> float:
        """Energy of all SET and RESET pulses (J)."""
        return self.set_energy_j + self.reset_energy_j

    @property
    def energy_j(self) -> float:
        """Pulse plus verify-read energy (J)."""
        return self.pulse_energy_j + self.verify_energy_j


@dataclass(frozen=True)
class Population:
    """Device-to-device draws of a set of physical cells: their own window, step multiplier and stuck flag."""

    lo: np.ndarray  # S
    hi: np.ndarray  # S
    step: np.ndarray  # multiplier of the nominal step
    stuck: np.ndarray  # bool: the cell does not move (lo == hi)

    def __len__(self) -> int:
        return self.lo.size


@dataclass(frozen=True)
class _ProgrammingStats:
    """Monte Carlo statistics of the card's programming (see :meth:`ReRAM.figures`)."""

    one_level_mean: float
    one_level_p99: float
    full_range_mean: float
    full_range_p99: float
    full_range_failure_rate: float
    random_mean: float
    random_failure_rate: float
    random_energy_j: float
    residual_rms: float  # rms of (G_final - G_target) / spacing over successful random writes
    set_energy_per_pulse_j: float
    reset_energy_per_pulse_j: float
    verify_energy_per_read_j: float
    wear_per_pulse: float  # mean wear of a pulse, in full cycles
    wear_per_write: float  # mean wear of a random transition, in full cycles


def _card_seed(card: ReRAMCard) -> int:
    """A 64-bit seed derived from the card's physical content (so figures depend on the card's numbers only, not on
    its description or the wording of its references)."""
    blob = card.model_dump_json(by_alias=True, exclude={"description", "references"}).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


# The nonlinearity labels of NeuroSim's table (MLP+NeuroSim V3.0, formula.cpp, getParamA) are the largest
# deviation of the normalised update curve from the straight line, in units of this fraction of the
# window: checked against the table's entries in tests/test_reram_effects.py.
_NL_LABEL_UNIT = 0.0989949


def _curve_deviation(a: float) -> float:
    """Largest deviation of (1 - exp(-u/a)) / (1 - exp(-1/a)) from u over u in [0, 1]."""
    norm = -math.expm1(-1.0 / a)
    u = -a * math.log(a * norm)
    return -math.expm1(-u / a) / norm - u


@functools.lru_cache(maxsize=256)
def nonlinearity_a(label: float) -> float:
    """NeuroSim's normalised A (A / P_max) of a nonlinearity label (0: a straight line, returned as 0).

    Solved by bisection in log A for a curve whose largest deviation from the line is
    ``|label| * 0.0989949`` of the window; labels 0.01 .. 9 (the range of NeuroSim's table).
    """
    target = abs(label) * _NL_LABEL_UNIT
    if target == 0.0:
        return 0.0
    lo, hi = math.log(1e-3), math.log(1e4)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _curve_deviation(math.exp(mid)) > target:
            lo = mid  # too curved: a larger A straightens it
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


# --- device -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReRAM(NonVolatileCell):
    """Derived multi-level ReRAM model. Build with :meth:`from_card`.

    ``rng`` is the device's own seeded generator (the global NumPy RNG is never
    used); each :meth:`program` call advances it by one 64-bit draw.
    """

    card: ReRAMCard
    rng: np.random.Generator = field(repr=False, compare=False)
    seed: int = 0
    bits_per_cell: int = 1
    kind: str = "reram"
    component: str = "reram_cell"

    @classmethod
    def from_card(cls, card: ReRAMCard, seed: int = 0) -> ReRAM:
        """Build the model; raises :class:`PhysicsError` for an unphysical or unprogrammable card."""
        _check_physics(card)
        bits = int(card.cell.levels).bit_length() - 1
        return cls(card=card, rng=np.random.default_rng(seed), seed=seed, bits_per_cell=bits)

    # --- derived figures ------------------------------------------------------

    @property
    def g_range_siemens(self) -> float:
        """g_max - g_min (S)."""
        c = self.card.cell
        return c.g_max_siemens - c.g_min_siemens

    @property
    def level_spacing_siemens(self) -> float:
        """Conductance step between neighbouring levels (S)."""
        return self.g_range_siemens / (self.card.cell.levels - 1)

    def level_conductances_siemens(self) -> np.ndarray:
        """G_l for l = 0 .. levels - 1 (S)."""
        c = self.card.cell
        return c.g_min_siemens + np.arange(c.levels) * self.level_spacing_siemens

    @property
    def g_mean_siemens(self) -> float:
        """Mean level conductance, (g_min + g_max) / 2 (S): the mean stored G for uniform data."""
        c = self.card.cell
        return 0.5 * (c.g_min_siemens + c.g_max_siemens)

    def iv_ratio(self, v: float, v_write: float) -> float:
        """G(V) / G(V_read) for a pulse of amplitude ``v`` against write voltage ``v_write`` (1: ohmic)."""
        if self.card.iv is None:
            return 1.0
        return float(_iv_ratio(v, self.card.read.v_read_v, v_write, math.log(self.card.iv.nonlinearity)))

    def _pulse_energy_j(self, p: PulseParams, g_siemens: float) -> float:
        return p.voltage_v**2 * g_siemens * self.iv_ratio(p.voltage_v, p.voltage_v) * p.width_s

    def set_pulse_energy_j(self, g_siemens: float) -> float:
        """One full-amplitude SET pulse on a cell of read conductance ``g_siemens``: V_set^2 G(V_set) t_set (J)."""
        return self._pulse_energy_j(self.card.set_pulse, g_siemens)

    def reset_pulse_energy_j(self, g_siemens: float) -> float:
        """One full-amplitude RESET pulse on read conductance ``g_siemens``: V_reset^2 G(V_reset) t_reset (J)."""
        return self._pulse_energy_j(self.card.reset_pulse, g_siemens)

    def read_energy_j(self, g_siemens: float) -> float:
        """Energy of one (verify) read of a cell of conductance ``g_siemens``: V_read^2 G t_read (J)."""
        r = self.card.read
        return r.v_read_v**2 * g_siemens * r.t_read_s

    @property
    def cycle_energy_j(self) -> float:
        """Joule energy of one full endurance cycle: a SET and a RESET pulse on a fully set cell (J)."""
        g = self.card.cell.g_max_siemens
        return self.set_pulse_energy_j(g) + self.reset_pulse_energy_j(g)

    @property
    def area_per_bit_m2(self) -> float:
        """1T1R cell area (cell_area_f2 x F^2) divided by the bits it stores (m^2)."""
        a = self.card.access
        return a.cell_area_f2 * a.feature_size_m**2 / self.bits_per_cell

    # --- cells, variation and time ------------------------------------------------

    def population(self, n: int, key: int = 0) -> Population:
        """Device-to-device draws of ``n`` physical cells, fixed by the device seed and ``key`` (a block of cells:
        the same key gives the same cells)."""
        c, v = self.card.cell, self.card.variation
        rng = np.random.default_rng([self.seed, key & (2**63 - 1), 0x5EED])
        lo = np.full(n, c.g_min_siemens)
        hi = np.full(n, c.g_max_siemens)
        if v.g_min_sigma:
            lo = np.clip(lo * (1.0 + v.g_min_sigma * rng.standard_normal(n)), 0.1 * c.g_min_siemens, None)
        if v.g_max_sigma:
            hi = hi * (1.0 + v.g_max_sigma * rng.standard_normal(n))
        hi = np.maximum(hi, lo)
        step = np.exp(v.step_sigma * rng.standard_normal(n)) if v.step_sigma else np.ones(n)
        stuck = np.zeros(n, dtype=bool)
        if v.stuck_low or v.stuck_high:
            u = rng.random(n)
            low, high = u < v.stuck_low, (u >= v.stuck_low) & (u < v.stuck_low + v.stuck_high)
            hi = np.where(low, lo, hi)
            lo = np.where(high, hi, lo)
            stuck = low | high
        return Population(lo, hi, step, stuck)

    def spread_siemens(self, g_siemens: np.ndarray | float, t_s: np.ndarray | float) -> np.ndarray:
        """Std of a programmed conductance ``t_s`` seconds after programming (S): the relaxation fit at G,
        interpolated in log t between fitted times, held below the first; 0 without a relaxation section.
        ``g_siemens`` and ``t_s`` broadcast against each other."""
        g = np.asarray(g_siemens, dtype=np.float64)
        t = np.asarray(t_s, dtype=np.float64)
        rel = self.card.relaxation
        if rel is None:
            return np.zeros(np.broadcast_shapes(g.shape, t.shape))
        if t.size and float(t.max()) > rel.max_time_s:
            raise PhysicsError(f"{float(t.max()):.3g} s after programming is beyond the relaxation fit's range "
                               f"({rel.max_time_s:.3g} s)", key="relaxation.max_time")
        c = self.card.cell
        if rel.scale == "window":  # the same fraction of the window at the same place in it
            x = np.clip((g - c.g_min_siemens) / self.g_range_siemens, 0.0, 1.0)
            ratio = self.g_range_siemens / rel.g_fit_siemens
        else:
            x, ratio = np.clip(g / rel.g_fit_siemens, 0.0, 1.0), 1.0
        fits = rel.fits
        curves = [ratio * np.clip(np.polyval(f.sigma[::-1], x), 0.0, None) for f in fits]
        if len(fits) == 1:
            return np.broadcast_to(curves[0], np.broadcast_shapes(g.shape, t.shape)).copy()
        shape = np.broadcast_shapes(g.shape, t.shape)
        times = np.log([f.time_s for f in fits])
        lt = np.broadcast_to(np.log(np.maximum(t, fits[0].time_s)), shape)
        j = np.clip(np.searchsorted(times, lt, side="left"), 1, len(fits) - 1)
        w = (lt - times[j - 1]) / (times[j] - times[j - 1])
        stack = np.stack([np.broadcast_to(cv, shape) for cv in curves])
        lo = np.take_along_axis(stack, (j - 1)[None], 0)[0]
        hi = np.take_along_axis(stack, j[None], 0)[0]
        return np.clip(lo + w * (hi - lo), 0.0, None)

    def conductance_at(self, g_programmed: np.ndarray, z: np.ndarray, t_s: float,
                       rng: np.random.Generator | None = None) -> np.ndarray:
        """Conductances ``t_s`` after programming: each cell's relaxation draw ``z`` (a fixed standard normal per
        programming, so a cell's deviation grows with the spread) scaled by the spread at its conductance, plus a
        fresh read-noise draw when ``rng`` is given; clipped at zero (S)."""
        g = np.asarray(g_programmed, dtype=np.float64)
        out = g + self.spread_siemens(g, t_s) * z
        if rng is not None and self.card.read.noise:
            out = out + self.card.read.noise * self.card.cell.g_max_siemens * rng.standard_normal(g.shape)
        return np.clip(out, 0.0, None)

    def array_endurance(self, rates: np.ndarray, weights: np.ndarray | None = None) -> float:
        """Median steps until the first cell of an array fails, its cells worn ``rates`` cycles per step (each
        entry standing for ``weights`` cells, default 1).

        Weibull cells (shape k, scale eta with median ``endurance``): the array survives n steps with
        probability exp(-sum_i (n r_i / eta)^k), so its median life is eta (ln 2 / sum_i r_i^k)^(1/k)
        (the weakest cell, not the mean, sets it). Without a shape, every cell lasts ``endurance``:
        endurance / max r_i.
        """
        r = np.asarray(rates, dtype=np.float64)
        w = np.ones(r.size) if weights is None else np.broadcast_to(np.asarray(weights, dtype=np.float64),
                                                                    r.shape).ravel()
        r = r.ravel()
        live = r > 0
        r, w = r[live], w[live]
        if not r.size:
            return math.inf
        k = self.card.endurance_shape
        if k is None:
            return self.card.endurance_cycles / float(r.max())
        eta = self.card.endurance_cycles / math.log(2.0) ** (1.0 / k)
        top = float(r.max())
        return eta / top * (math.log(2.0) / float(np.sum(w * (r / top) ** k))) ** (1.0 / k)

    @property
    def wear_per_pulse(self) -> float:
        """Mean wear of one programming pulse of this card, in full cycles."""
        return self._stats.wear_per_pulse

    @property
    def endurance_cycles(self) -> float:
        """Median pulses a cell survives: the card's full cycles over the mean wear of a programming pulse."""
        return self.card.endurance_cycles / self._stats.wear_per_pulse

    # --- programming --------------------------------------------------------------

    def program(self, old_levels: np.ndarray, new_levels: np.ndarray, g_start: np.ndarray | None = None,
                cells: Population | None = None, skip: np.ndarray | None = None) -> ProgramResult:
        """Write-and-verify every cell from level ``old_levels`` to ``new_levels``.

        Both arrays hold integer levels in ``[0, levels)`` and have the same shape. ``g_start``: the cells'
        present conductances (S; default: their old levels exactly); ``cells``: their device-to-device draws
        (default: a fresh population); ``skip``: cells known to be stuck, not pulsed. Unchanged cells take no
        pulse, no read and no energy. See the module docstring for the loop and the energy rules.
        """
        key = np.uint64(self.rng.integers(0, 2**64, dtype=np.uint64))
        if cells is None:
            cells = self.population(np.size(old_levels), int(key))
        return _program(self, old_levels, new_levels, key, g_start, cells, skip)

    def write_count_key(self) -> tuple | None:
        return None  # stochastic write-and-verify: every write draws new pulses

    def count_writes(self, old_bits: np.ndarray, new_bits: np.ndarray) -> WriteEvents:
        """Write-and-verify actions to turn stored bits ``old_bits`` into ``new_bits``.

        Inputs are 0/1 arrays of shape ``(..., n_bit_columns)`` as the digital
        macro lays out weights (LSB first along the last axis). Each run of
        ``bits_per_cell`` consecutive bits is one cell, its first bit the
        level's LSB; the last cell is padded with zero bits. Counts:
        ``set_pulse``, ``reset_pulse``, ``verify_read`` (one per pulse) and
        ``write_fail`` (cells that missed their window after ``max_pulses``).
        ``cell_writes`` holds the pulses each cell took, shape ``(..., n_cells)``.
        """
        old = self.levels_from_bits(old_bits)
        new = self.levels_from_bits(new_bits)
        if old.shape != new.shape:
            raise ValueError(f"old and new bits differ in shape: {np.shape(old_bits)} vs {np.shape(new_bits)}")
        res = self.program(old, new)
        return WriteEvents(
            counts={
                "set_pulse": res.set_pulses,
                "reset_pulse": res.reset_pulses,
                "verify_read": res.verify_reads,
                "write_fail": res.failures,
            },
            cell_writes=res.pulses,
        )

    def levels_from_bits(self, bits: np.ndarray) -> np.ndarray:
        """Pack 0/1 bits ``(..., n_bit_columns)`` into cell levels ``(..., n_cells)`` (LSB first)."""
        b = np.asarray(bits, dtype=np.uint8)
        if b.ndim == 0:
            raise ValueError("bits must have at least one axis (the bit columns)")
        k = self.bits_per_cell
        pad = (-b.shape[-1]) % k
        if pad:
            b = np.pad(b, [(0, 0)] * (b.ndim - 1) + [(0, pad)])
        grouped = b.reshape(*b.shape[:-1], b.shape[-1] // k, k).astype(np.int32)
        return (grouped << np.arange(k, dtype=np.int32)).sum(axis=-1, dtype=np.int32)

    # --- costs and figures ---------------------------------------------------------

    def _figure_run(self, rng: np.random.Generator, old: np.ndarray, new: np.ndarray) -> ProgramResult:
        """A Monte Carlo programming run for the figures, on nominal cells (the card's own programming)."""
        n = old.size
        nominal = Population(np.full(n, self.card.cell.g_min_siemens), np.full(n, self.card.cell.g_max_siemens),
                             np.ones(n), np.zeros(n, dtype=bool))
        return _program(self, old, new, np.uint64(rng.integers(0, 2**64, dtype=np.uint64)), None, nominal, None)

    def pulse_samples(self, cells: int = 20_000) -> dict[int, np.ndarray]:
        """Pulses per transition for upward moves of each level distance, from level 0.

        Uses a generator seeded from the card (not the device's), so the samples are
        the same every time for the same card.
        """
        rng = np.random.default_rng(_card_seed(self.card) + 1)
        out: dict[int, np.ndarray] = {}
        for d in range(1, self.card.cell.levels):
            out[d] = self._figure_run(rng, np.zeros(cells, dtype=np.int32), np.full(cells, d, dtype=np.int32)).pulses
        return out

    @cached_property
    def _stats(self) -> _ProgrammingStats:
        """Monte Carlo of the card's programming with a generator seeded from the card."""
        rng = np.random.default_rng(_card_seed(self.card))
        top = self.card.cell.levels - 1
        n = FIGURE_CELLS
        spacing = self.level_spacing_siemens
        start = rng.integers(0, top, n)
        up = rng.random(n) < 0.5
        one = self._figure_run(rng, np.where(up, start, start + 1), np.where(up, start + 1, start))
        full_up = np.arange(n) % 2 == 0
        full = self._figure_run(rng, np.where(full_up, 0, top), np.where(full_up, top, 0))
        old = rng.integers(0, top + 1, n)
        new = (old + rng.integers(1, top + 1, n)) % (top + 1)  # uniform over levels != old
        rnd = self._figure_run(rng, old, new)
        ok = ~rnd.failed
        target = self.card.cell.g_min_siemens + new[ok] * spacing
        residual = (rnd.g_final_siemens[ok] - target) / spacing
        pulses = rnd.set_pulses + rnd.reset_pulses
        return _ProgrammingStats(
            one_level_mean=float(one.pulses.mean()),
            one_level_p99=float(np.percentile(one.pulses, 99)),
            full_range_mean=float(full.pulses.mean()),
            full_range_p99=float(np.percentile(full.pulses, 99)),
            full_range_failure_rate=full.failures / n,
            random_mean=float(rnd.pulses.mean()),
            random_failure_rate=rnd.failures / n,
            random_energy_j=rnd.energy_j / n,
            residual_rms=float(np.sqrt(np.mean(residual**2))) if residual.size else math.nan,
            set_energy_per_pulse_j=(rnd.set_energy_j / rnd.set_pulses if rnd.set_pulses
                                    else self.set_pulse_energy_j(self.g_mean_siemens)),
            reset_energy_per_pulse_j=(rnd.reset_energy_j / rnd.reset_pulses if rnd.reset_pulses
                                      else self.reset_pulse_energy_j(self.g_mean_siemens)),
            verify_energy_per_read_j=(rnd.verify_energy_j / rnd.verify_reads if rnd.verify_reads
                                      else self.read_energy_j(self.g_mean_siemens)),
            wear_per_pulse=float(rnd.wear.sum() / pulses) if pulses else 1.0,
            wear_per_write=float(rnd.wear.mean()),
        )

    def actions(self) -> dict[str, ActionSpec]:
        """Per-action costs for the circuit layer.

        A pulse's energy depends on the conductance it meets (and, under ISPP, on
        its amplitude), which a cost table cannot know; each entry is therefore the
        *expected* energy per SET pulse, RESET pulse and verify read over uniformly
        random level transitions in the card's seeded Monte Carlo (``FIGURE_CELLS``
        cells). Counts from :meth:`count_writes` times these energies match
        :meth:`program`'s exact energies in expectation for uniformly random data.
        A plain ``read`` is costed at the mean level conductance (g_min + g_max) / 2.
        Latencies: pulse widths and t_read. ``write_fail`` is free: it marks a failed
        write whose pulses and reads are already counted.
        """
        s = self._stats
        set_p, reset_p, r = self.card.set_pulse, self.card.reset_pulse, self.card.read
        return {
            "read": ActionSpec(
                ActionCost(self.read_energy_j(self.g_mean_siemens), r.t_read_s),
                "one cell read at V_read (cell energy at the mean level conductance)", "read",
            ),
            "set_pulse": ActionSpec(
                ActionCost(s.set_energy_per_pulse_j, set_p.width_s),
                "one SET pulse of write-and-verify (expected energy over random transitions)", "write_pulse",
            ),
            "reset_pulse": ActionSpec(
                ActionCost(s.reset_energy_per_pulse_j, reset_p.width_s),
                "one RESET pulse of write-and-verify (expected energy over random transitions)", "write_pulse",
            ),
            "verify_read": ActionSpec(
                ActionCost(s.verify_energy_per_read_j, r.t_read_s),
                "one verify read after a programming pulse (cell energy)", "verify",
            ),
            "write_fail": ActionSpec(
                ActionCost(0.0, 0.0),
                "a cell still outside its window after max_pulses (its pulses and reads are costed above)", "event",
            ),
        }

    def figures(self) -> dict[str, tuple[float, str]]:
        """Derived figures (name -> (value, SI unit)); pulse statistics from the seeded Monte Carlo."""
        c = self.card.cell
        s = self._stats
        out = {
            "r_on": (1.0 / c.g_max_siemens, "Ohm"),
            "r_off": (1.0 / c.g_min_siemens, "Ohm"),
            "on_off_ratio": (c.g_max_siemens / c.g_min_siemens, ""),
            "bits_per_cell": (float(self.bits_per_cell), ""),
            "level_spacing": (self.level_spacing_siemens, "S"),
            "programming_step_of_range": (programming_step(self.card), ""),
            "conductance_ratio_at_set_voltage": (self.iv_ratio(self.card.set_pulse.voltage_v,
                                                               self.card.set_pulse.voltage_v), ""),
            "set_pulse_energy_at_g_max": (self.set_pulse_energy_j(c.g_max_siemens), "J"),
            "set_pulse_energy_at_g_min": (self.set_pulse_energy_j(c.g_min_siemens), "J"),
            "reset_pulse_energy_at_g_max": (self.reset_pulse_energy_j(c.g_max_siemens), "J"),
            "reset_pulse_energy_at_g_min": (self.reset_pulse_energy_j(c.g_min_siemens), "J"),
            "read_energy_mean_level": (self.read_energy_j(self.g_mean_siemens), "J"),
            "read_energy_at_g_max": (self.read_energy_j(c.g_max_siemens), "J"),
            "pulses_one_level_mean": (s.one_level_mean, ""),
            "pulses_one_level_p99": (s.one_level_p99, ""),
            "pulses_full_range_mean": (s.full_range_mean, ""),
            "pulses_full_range_p99": (s.full_range_p99, ""),
            "pulses_random_transition_mean": (s.random_mean, ""),
            "write_failure_rate_random": (s.random_failure_rate, ""),
            "write_failure_rate_full_range": (s.full_range_failure_rate, ""),
            "programmed_error_rms_per_spacing": (s.residual_rms, ""),
            "write_energy_random_transition": (s.random_energy_j, "J"),
            "write_energy_per_bit_random_transition": (s.random_energy_j / self.bits_per_cell, "J"),
            "wear_per_pulse_cycles": (s.wear_per_pulse, ""),
            "wear_per_write_cycles": (s.wear_per_write, ""),
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
            "endurance_full_cycles": (self.card.endurance_cycles, ""),
            "endurance": (self.endurance_cycles, ""),
        }
        if self.card.relaxation is not None:
            top = c.g_max_siemens
            out["spread_1s_at_g_max"] = (float(self.spread_siemens(top, 1.0)), "S")
            out["spread_1s_at_g_min"] = (float(self.spread_siemens(c.g_min_siemens, 1.0)), "S")
            out["spread_1s_per_spacing_at_g_max"] = (float(self.spread_siemens(top, 1.0)) / self.level_spacing_siemens,
                                                     "")
        if self.card.read.noise:
            out["read_noise_sigma"] = (self.card.read.noise * c.g_max_siemens, "S")
        if self.card.endurance_shape is not None:
            out["endurance_weakest_of_1e6_cells"] = (self.weakest_of(1e6), "")
        return out

    def weakest_of(self, cells: float) -> float:
        """Median full-cycle endurance of the weakest of ``cells`` Weibull cells (the card's median without a
        shape): eta (ln 2 / cells)^(1/k)."""
        k = self.card.endurance_shape
        if k is None:
            return self.card.endurance_cycles
        eta = self.card.endurance_cycles / math.log(2.0) ** (1.0 / k)
        return eta * (math.log(2.0) / cells) ** (1.0 / k)


# --- helpers ----------------------------------------------------------------------------


def _curve_labels(p: ProgrammingParams) -> tuple[float, ...]:
    """The nonlinearity labels that shape a pulse's change: NeuroSim's two under the nonlinear update, else none."""
    return (p.nonlinearity_ltp, p.nonlinearity_ltd) if p.algorithm == "nonlinear" else ()


def _largest_pulse(labels: tuple[float, ...], step: float) -> float:
    """The largest change one pulse makes, in units of the range: the nominal step, or along a nonlinear update
    curve (its ``labels``) the first pulse from the window's end, larger than the mean step."""
    largest = step
    for label in labels:
        a = nonlinearity_a(label) / step  # A in pulses
        if a > 0.0:
            largest = max(largest, -math.expm1(-1.0 / a) / -math.expm1(-1.0 / (step * a)))
    return largest


def programming_step(card: ReRAMCard) -> float:
    """The nominal step of a pulse / range: the card's number, or for ``auto`` the largest step whose largest pulse
    moves at most half the accept window, h = tolerance x spacing (a pulse sequence approaching a level then
    cannot pass the window's centre by more than h, leaving the other half of the window to the pulse's noise;
    the physics check refuses a step whose largest pulse exceeds the whole window, 2 h). Found by bisection
    (the largest pulse grows with the step)."""
    p = card.programming
    if p.step != "auto":
        return float(p.step)
    return _auto_step(_curve_labels(p), p.tolerance / (card.cell.levels - 1))


@functools.lru_cache(maxsize=64)
def _auto_step(labels: tuple[float, ...], h: float) -> float:
    """:func:`programming_step`'s bisection for an update curve (its ``labels``) and half-window ``h``."""
    lo, hi = 1e-6, h
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _largest_pulse(labels, mid) > h:
            hi = mid
        else:
            lo = mid
    return lo


def _check_physics(card: ReRAMCard) -> None:
    """Cross-field checks that single-field constraints cannot express.

    * ``cell.g_max`` must exceed ``cell.g_min``.
    * ``cell.levels`` must be a power of two (the cell stores whole bits).
    * ``read.v_read`` must stay below both pulse voltages, or reads would program.
    * ``programming.tolerance``: even if every pulse were aimed perfectly at the
      target, it lands in the accept window ``+/- h`` (h = tolerance x spacing)
      only with probability ``p = erf(h / (sigma sqrt 2))`` (sigma = c2c_sigma x
      range). A write to an interior level (no clipping to help) then fails with
      probability at least ``(1 - p)^max_pulses``; the card is rejected when
      this bound exceeds ``MAX_IDEAL_FAILURE`` (1/2), i.e. when verify would
      fail more often than succeed however the pulses were aimed. (A relative
      c2c shrinks with the pulse and is checked at the nominal step.)
    * ``programming.step``: the nominal step must not exceed the window width
      ``2 h``, or a pulse from just outside the window jumps over it and the loop
      oscillates around the target, ending only by chance.
    * ``programming.algorithm: ispp`` needs ``ispp_start`` (below both pulse
      voltages), ``ispp_increment`` and ``volts_per_decade``.
    * ``relaxation.fits`` must be in ascending time, within ``max_time``.
    """
    c = card.cell
    if c.g_max_siemens <= c.g_min_siemens:
        raise PhysicsError(
            f"must exceed g_min = {c.g_min_siemens * 1e6:.4g} uS (got {c.g_max_siemens * 1e6:.4g} uS)",
            key="cell.g_max",
        )
    if c.levels & (c.levels - 1):
        raise PhysicsError(f"must be a power of two so a cell stores whole bits (got {c.levels})", key="cell.levels")
    v_pulse = min(card.set_pulse.voltage_v, card.reset_pulse.voltage_v)
    if card.read.v_read_v >= v_pulse:
        raise PhysicsError(
            f"must stay below the programming voltages ({v_pulse:.3g} V) or reads disturb the cell "
            f"(got {card.read.v_read_v:.3g} V)",
            key="read.v_read",
        )
    p = card.programming
    step = programming_step(card)
    spacing_frac = 1.0 / (c.levels - 1)  # spacing / range
    half_window = p.tolerance * spacing_frac  # in units of the range
    sigma = p.c2c_sigma * (step if p.c2c_model == "relative" else 1.0)
    if sigma > 0.0:
        p_hit = math.erf(half_window / (sigma * math.sqrt(2.0)))
        ideal_fail = (1.0 - p_hit) ** p.max_pulses
        if ideal_fail > MAX_IDEAL_FAILURE:
            raise PhysicsError(
                f"accept window +/-{half_window:.3g} x range is too narrow for a per-pulse noise of "
                f"{sigma:.3g} x range with max_pulses = {p.max_pulses}: even perfectly aimed pulses fail "
                f"{100 * ideal_fail:.0f} % of writes (limit {100 * MAX_IDEAL_FAILURE:.0f} %)",
                key="programming.tolerance",
            )
    largest = _largest_pulse(_curve_labels(p), step)
    if largest > 2.0 * half_window:
        raise PhysicsError(
            f"must not exceed the accept window width 2 x tolerance x spacing = {2 * half_window:.3g} x range "
            f"(got {step:.3g}, whose largest pulse under the {p.algorithm} update moves {largest:.3g} x range), "
            "or pulses jump over the window",
            key="programming.step",
        )
    if p.algorithm == "ispp":
        for name in ("ispp_start", "ispp_increment", "volts_per_decade"):
            if getattr(p, name) is None:
                raise PhysicsError("is required by algorithm: ispp", key=f"programming.{name}")
        if p.ispp_start >= v_pulse:
            raise PhysicsError(f"must lie below the pulse voltages ({v_pulse:.3g} V), where the ramp ends "
                               f"(got {p.ispp_start:.3g} V)", key="programming.ispp_start")
        if p.ispp_start <= card.read.v_read_v:
            raise PhysicsError(f"must lie above the read voltage {card.read.v_read_v:.3g} V, where the I-V law "
                               f"starts (got {p.ispp_start:.3g} V)", key="programming.ispp_start")
    rel = card.relaxation
    if rel is not None:
        times = [f.time_s for f in rel.fits]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise PhysicsError(f"fitted times must ascend (got {times})", key="relaxation.fits")
        if rel.max_time_s < times[-1]:
            raise PhysicsError(f"must reach the last fitted time {times[-1]:.3g} s (got {rel.max_time_s:.3g} s)",
                               key="relaxation.max_time")


def _program(dev: ReRAM, old_levels, new_levels, key: np.uint64, g_start, cells: Population,
             skip) -> ProgramResult:
    """Run the kernel on flattened levels, in parallel slices for large inputs."""
    card = dev.card
    spacing = dev.level_spacing_siemens
    old_a = np.asarray(old_levels)
    new_a = np.asarray(new_levels)
    if old_a.shape != new_a.shape:
        raise ValueError(f"old and new levels differ in shape: {old_a.shape} vs {new_a.shape}")
    top = card.cell.levels - 1
    for name, a in (("old_levels", old_a), ("new_levels", new_a)):
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > top):
            raise ValueError(f"{name} must lie in [0, {top}]")
    shape = old_a.shape
    old = np.ascontiguousarray(old_a, dtype=np.int32).ravel()
    new = np.ascontiguousarray(new_a, dtype=np.int32).ravel()
    n = old.size
    if len(cells) != n:
        raise ValueError(f"{len(cells)} cells drawn for {n} levels")
    c, p = card.cell, card.programming
    if g_start is None:
        g0 = np.clip(c.g_min_siemens + old * spacing, cells.lo, cells.hi)
    else:
        g0 = np.ascontiguousarray(np.asarray(g_start, dtype=np.float64).ravel())
    sk = np.zeros(n, dtype=np.bool_) if skip is None else np.ascontiguousarray(np.asarray(skip, bool).ravel())
    if g0.size != n or sk.size != n:
        raise ValueError(f"g_start ({g0.size}) and skip ({sk.size}) must give one value per cell ({n})")
    outs = (np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32), np.empty(n, dtype=np.bool_),
            *(np.empty(n, dtype=np.float64) for _ in range(5)))
    pulses, sets, failed, g_out, e_set, e_reset, e_verify, wear = outs
    rng_s = c.g_max_siemens - c.g_min_siemens
    step = programming_step(card)
    sp, rp, rd = card.set_pulse, card.reset_pulse, card.read
    relative = p.c2c_model == "relative"
    params = (
        key, c.g_min_siemens, spacing,
        {"fixed": 0, "nonlinear": 1, "ispp": 2}[p.algorithm],
        step * rng_s,
        p.c2c_sigma if relative else p.c2c_sigma * rng_s,
        relative,
        nonlinearity_a(p.nonlinearity_ltp), nonlinearity_a(p.nonlinearity_ltd), 1.0 / step,
        sp.voltage_v, sp.width_s, rp.voltage_v, rp.width_s,
        p.ispp_start or 0.0, p.ispp_increment or 0.0, p.volts_per_decade or 1.0,
        rd.v_read_v, math.log(card.iv.nonlinearity) if card.iv is not None else 0.0,
        p.tolerance * spacing, p.max_pulses, rd.v_read_v**2 * rd.t_read_s, 1.0 / dev.cycle_energy_j,
    )
    lo_a, hi_a, st_a = (np.ascontiguousarray(x, dtype=np.float64) for x in (cells.lo, cells.hi, cells.step))

    def run(lo: int, hi: int) -> None:
        _program_kernel(old[lo:hi], new[lo:hi], g0[lo:hi], lo_a[lo:hi], hi_a[lo:hi], st_a[lo:hi], sk[lo:hi], lo,
                        *params, *(o[lo:hi] for o in outs))

    workers = min(os.cpu_count() or 1, 16)
    if n >= _PARALLEL_MIN_CELLS and workers > 1:
        # More slices than threads balances cells that need many pulses.
        bounds = np.linspace(0, n, 4 * workers + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, bounds[:-1].tolist(), bounds[1:].tolist()))
    else:
        run(0, n)
    total = int(pulses.sum(dtype=np.int64))
    n_set = int(sets.sum(dtype=np.int64))
    return ProgramResult(
        pulses=pulses.reshape(shape),
        failed=failed.reshape(shape),
        g_final_siemens=g_out.reshape(shape),
        wear=wear.reshape(shape),
        set_pulses=n_set,
        reset_pulses=total - n_set,
        verify_reads=total,
        failures=int(failed.sum()),
        set_energy_j=float(e_set.sum()),
        reset_energy_j=float(e_reset.sum()),
        verify_energy_j=float(e_verify.sum()),
    )
