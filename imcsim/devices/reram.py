"""ReRAM (1T1R, multi-level) programmed by write-and-verify.

A cell stores ``levels`` conductance levels, equally spaced between ``g_min``
and ``g_max``::

    G_l = g_min + l / (levels - 1) * (g_max - g_min),   l = 0 .. levels - 1

so it holds ``log2(levels)`` bits. Writing a new level is an iterative
program-and-verify loop, the scheme used for multi-level oxide ReRAM (e.g.
Wan et al., NeuRRAM, Nature 608:504, 2022; incremental pulses after Wang et
al., Nanoscale Res. Lett.). Starting from the old level's conductance:

1. apply a SET pulse if G < G_target, else a RESET pulse. A pulse changes G by
   ``+/- step * (g_max - g_min)`` plus cycle-to-cycle noise
   ``N(0, c2c_sigma * (g_max - g_min))``, drawn anew for every pulse, as in
   NeuroSim's device model (MLP+NeuroSim V3.0, ``RealDevice::Write``: the
   per-pulse sigma is a fraction of the conductance range). G is clipped to
   ``[g_min, g_max]``;
2. read G back (verify read);
3. stop when ``|G - G_target| <= tolerance * spacing`` (spacing = G_1 - G_0);
   after ``max_pulses`` pulses stop anyway and count a write failure.

Energies are the Joule work in the cell at the applied voltage (voltage-mode
pulses): a pulse of voltage V and width t on a cell of conductance G costs
``V^2 G t``, with G the conductance before the pulse; a verify read
costs ``V_read^2 G t_read`` with G the conductance just programmed. Access
transistor and driver losses belong to the circuit layer.

Random numbers are counter-based: each :meth:`ReRAM.program` call draws one
64-bit key from the device's seeded :class:`numpy.random.Generator`; the noise
of pulse k of cell i is the k-th draw of a SplitMix64 stream seeded by hashing
(key, i), turned into a normal variate by Doornik's ziggurat. Results
therefore depend only on the seed and the sequence of calls, not on how the
cells are split across threads.
"""

from __future__ import annotations

import hashlib
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

    ``step`` and ``c2c_sigma`` are fractions of the range ``g_max - g_min``;
    ``tolerance`` is a fraction of the level spacing (below 0.5 so the accept
    windows of neighbouring levels never overlap).
    """

    step: Number = Field(ge=1e-4, le=1.0, description="nominal conductance change per pulse / (g_max - g_min)")
    c2c_sigma: Number = Field(
        ge=0.0, le=1.0, description="cycle-to-cycle std of each pulse's change / (g_max - g_min) (NeuroSim)"
    )
    tolerance: Number = Field(ge=1e-3, lt=0.5, description="accepted |G - G_target| / level spacing")
    max_pulses: int = Field(ge=1, le=100_000, description="pulses after which a write counts as failed")


class ReRAMReadParams(Params):
    """Card section ``read``: the read (and verify-read) operation."""

    v_read_v: VoltageV = Field(alias="v_read", ge=0.01, le=2.0, description="read voltage across the cell")
    t_read_s: TimeS = Field(alias="t_read", gt=1e-12, le=1e-5, description="read pulse width")


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
    endurance_cycles: Number = Field(alias="endurance", gt=1.0, le=1e20, description="write cycles a cell survives")


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
        state += _GOLDEN
        h = _mix64(state)
        u = 2.0 * (float(np.int64(h >> _S11)) + 0.5) * _INV_2_53 - 1.0
        i = int(h & _LOW7)
        if abs(u) < _ZIG_RATIO[i]:
            return u * _ZIG_X[i], state


@numba.njit(cache=True, nogil=True)
def _program_kernel(old, new, first_index, key, g_min, spacing, step, sigma, g_lo, g_hi, half_window,
                    max_pulses, k_set, k_reset, k_read,
                    pulses, sets, failed, g_out, e_set, e_reset, e_verify):
    """Write-and-verify for cells ``old[i] -> new[i]`` (levels); fills the per-cell outputs.

    Conductances in S; ``step``, ``sigma``, ``half_window`` already in S;
    ``k_set = V_set^2 t_set`` (so a pulse costs ``k_set * G``), likewise ``k_reset``
    and ``k_read = V_read^2 t_read``. ``first_index`` is the global index of
    cell 0 of this slice, so the noise of a cell does not depend on the slicing.
    Each pulse's noise is a standard normal from the cell's SplitMix64 stream
    (seeded by hashing ``key`` and the cell index) by Doornik's ziggurat: one
    64-bit draw, a table look-up and a compare in about 98 % of pulses.
    """
    for i in range(old.shape[0]):
        g = g_min + old[i] * spacing
        if old[i] == new[i]:
            pulses[i] = 0
            sets[i] = 0
            failed[i] = False
            g_out[i] = g
            e_set[i] = 0.0
            e_reset[i] = 0.0
            e_verify[i] = 0.0
            continue
        target = g_min + new[i] * spacing
        state = _mix64(key ^ _mix64(np.uint64(first_index + i) + _GOLDEN))
        n = 0
        n_set = 0
        es = 0.0
        er = 0.0
        ev = 0.0
        ok = False
        while n < max_pulses:
            state += _GOLDEN
            h = _mix64(state)
            u = 2.0 * (float(np.int64(h >> _S11)) + 0.5) * _INV_2_53 - 1.0
            j = int(h & _LOW7)
            if abs(u) < _ZIG_RATIO[j]:
                z = u * _ZIG_X[j]
            else:
                z, state = _normal_slow(state, u, j)
            up = g < target
            if up:
                es += k_set * g
                n_set += 1
            else:
                er += k_reset * g
            g += (step if up else -step) + sigma * z
            g = min(max(g, g_lo), g_hi)
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


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramResult:
    """Outcome of one :meth:`ReRAM.program` call.

    Per-cell arrays have the shape of the level arrays given; totals are over
    all cells. Energies in J, conductances in S.
    """

    pulses: np.ndarray  # int32: SET + RESET pulses applied to each cell
    failed: np.ndarray  # bool: the cell was not inside its accept window after max_pulses
    g_final_siemens: np.ndarray  # float64: conductance after the last pulse
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
    g_mean_set_siemens: float
    g_mean_reset_siemens: float
    g_mean_verify_siemens: float


def _card_seed(card: ReRAMCard) -> int:
    """A 64-bit seed derived from the card's content (so figures depend on the card only)."""
    blob = card.model_dump_json(by_alias=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


# --- device -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReRAM(NonVolatileCell):
    """Derived multi-level ReRAM model. Build with :meth:`from_card`.

    ``rng`` is the device's own seeded generator (the global NumPy RNG is never
    used); each :meth:`program` call advances it by one 64-bit draw.
    """

    card: ReRAMCard
    rng: np.random.Generator = field(repr=False, compare=False)
    bits_per_cell: int = 1
    kind: str = "reram"
    component: str = "reram_cell"

    @classmethod
    def from_card(cls, card: ReRAMCard, seed: int = 0) -> ReRAM:
        """Build the model; raises :class:`PhysicsError` for an unphysical or unprogrammable card."""
        _check_physics(card)
        bits = int(card.cell.levels).bit_length() - 1
        return cls(card=card, rng=np.random.default_rng(seed), bits_per_cell=bits)

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

    def set_pulse_energy_j(self, g_siemens: float) -> float:
        """Energy of one SET pulse on a cell of conductance ``g_siemens``: V_set^2 G t_set (J)."""
        p = self.card.set_pulse
        return p.voltage_v**2 * g_siemens * p.width_s

    def reset_pulse_energy_j(self, g_siemens: float) -> float:
        """Energy of one RESET pulse on a cell of conductance ``g_siemens``: V_reset^2 G t_reset (J)."""
        p = self.card.reset_pulse
        return p.voltage_v**2 * g_siemens * p.width_s

    def read_energy_j(self, g_siemens: float) -> float:
        """Energy of one (verify) read of a cell of conductance ``g_siemens``: V_read^2 G t_read (J)."""
        r = self.card.read
        return r.v_read_v**2 * g_siemens * r.t_read_s

    @property
    def area_per_bit_m2(self) -> float:
        """1T1R cell area (cell_area_f2 x F^2) divided by the bits it stores (m^2)."""
        a = self.card.access
        return a.cell_area_f2 * a.feature_size_m**2 / self.bits_per_cell

    # --- programming --------------------------------------------------------------

    def program(self, old_levels: np.ndarray, new_levels: np.ndarray) -> ProgramResult:
        """Write-and-verify every cell from level ``old_levels`` to ``new_levels``.

        Both arrays hold integer levels in ``[0, levels)`` and have the same shape.
        Unchanged cells take no pulse, no read and no energy. See the module
        docstring for the loop and the energy rules.
        """
        key = np.uint64(self.rng.integers(0, 2**64, dtype=np.uint64))
        return _program(self.card, self.level_spacing_siemens, old_levels, new_levels, key)

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

    def pulse_samples(self, cells: int = 20_000) -> dict[int, np.ndarray]:
        """Pulses per transition for upward moves of each level distance, from level 0.

        Uses a generator seeded from the card (not the device's), so the samples are
        the same every time for the same card.
        """
        rng = np.random.default_rng(_card_seed(self.card) + 1)
        spacing = self.level_spacing_siemens
        out: dict[int, np.ndarray] = {}
        for d in range(1, self.card.cell.levels):
            old = np.zeros(cells, dtype=np.int32)
            new = np.full(cells, d, dtype=np.int32)
            key = np.uint64(rng.integers(0, 2**64, dtype=np.uint64))
            out[d] = _program(self.card, spacing, old, new, key).pulses
        return out

    @cached_property
    def _stats(self) -> _ProgrammingStats:
        """Monte Carlo of the card's programming with a generator seeded from the card."""
        rng = np.random.default_rng(_card_seed(self.card))
        top = self.card.cell.levels - 1
        n = FIGURE_CELLS
        spacing = self.level_spacing_siemens

        def run(old: np.ndarray, new: np.ndarray) -> ProgramResult:
            return _program(self.card, spacing, old, new, np.uint64(rng.integers(0, 2**64, dtype=np.uint64)))

        start = rng.integers(0, top, n)
        up = rng.random(n) < 0.5
        one = run(np.where(up, start, start + 1), np.where(up, start + 1, start))
        full_up = np.arange(n) % 2 == 0
        full = run(np.where(full_up, 0, top), np.where(full_up, top, 0))
        old = rng.integers(0, top + 1, n)
        new = (old + rng.integers(1, top + 1, n)) % (top + 1)  # uniform over levels != old
        rnd = run(old, new)
        ok = ~rnd.failed
        target = self.card.cell.g_min_siemens + new[ok] * spacing
        residual = (rnd.g_final_siemens[ok] - target) / spacing
        set_p, reset_p = self.card.set_pulse, self.card.reset_pulse
        r = self.card.read

        def mean_g(energy: float, count: int, per_siemens: float) -> float:
            return energy / (count * per_siemens) if count else self.g_mean_siemens

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
            g_mean_set_siemens=mean_g(rnd.set_energy_j, rnd.set_pulses, set_p.voltage_v**2 * set_p.width_s),
            g_mean_reset_siemens=mean_g(rnd.reset_energy_j, rnd.reset_pulses, reset_p.voltage_v**2 * reset_p.width_s),
            g_mean_verify_siemens=mean_g(rnd.verify_energy_j, rnd.verify_reads, r.v_read_v**2 * r.t_read_s),
        )

    def actions(self) -> dict[str, ActionSpec]:
        """Per-action costs for the circuit layer.

        A pulse's energy depends on the conductance it meets, which a cost
        table cannot know; each entry is therefore the *expected* energy at the
        mean programming conductance of that action: the mean G before a SET
        pulse, before a RESET pulse, and after a pulse (verify read), over
        uniformly random level transitions in the card's seeded Monte Carlo
        (``FIGURE_CELLS`` cells). Counts from :meth:`count_writes` times these
        energies match :meth:`program`'s exact energies in expectation for
        uniformly random data. A plain ``read`` is costed at the mean level
        conductance (g_min + g_max) / 2. Latencies: pulse widths and t_read.
        ``write_fail`` is free: it marks a failed write whose pulses and reads
        are already counted, so that every key of :meth:`count_writes` has a cost.
        """
        s = self._stats
        set_p, reset_p, r = self.card.set_pulse, self.card.reset_pulse, self.card.read
        return {
            "read": ActionSpec(
                ActionCost(self.read_energy_j(self.g_mean_siemens), r.t_read_s),
                "one cell read at V_read (cell energy at the mean level conductance)", "read",
            ),
            "set_pulse": ActionSpec(
                ActionCost(self.set_pulse_energy_j(s.g_mean_set_siemens), set_p.width_s),
                "one SET pulse of write-and-verify (expected energy over random transitions)", "write_pulse",
            ),
            "reset_pulse": ActionSpec(
                ActionCost(self.reset_pulse_energy_j(s.g_mean_reset_siemens), reset_p.width_s),
                "one RESET pulse of write-and-verify (expected energy over random transitions)", "write_pulse",
            ),
            "verify_read": ActionSpec(
                ActionCost(self.read_energy_j(s.g_mean_verify_siemens), r.t_read_s),
                "one verify read after a programming pulse", "verify",
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
        return {
            "r_on": (1.0 / c.g_max_siemens, "Ohm"),
            "r_off": (1.0 / c.g_min_siemens, "Ohm"),
            "on_off_ratio": (c.g_max_siemens / c.g_min_siemens, ""),
            "bits_per_cell": (float(self.bits_per_cell), ""),
            "level_spacing": (self.level_spacing_siemens, "S"),
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
            "area_per_bit": (self.area_per_bit_m2, "m^2"),
            "endurance": (self.endurance_cycles, ""),
        }


# --- helpers ----------------------------------------------------------------------------


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
      fail more often than succeed however the pulses were aimed.
    * ``programming.step``: the nominal step must not exceed the window width
      ``2 h``, or a pulse from just outside the window jumps over it and the loop
      oscillates around the target, ending only by chance.
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
    spacing_frac = 1.0 / (c.levels - 1)  # spacing / range
    half_window = p.tolerance * spacing_frac  # in units of the range
    if p.c2c_sigma > 0.0:
        p_hit = math.erf(half_window / (p.c2c_sigma * math.sqrt(2.0)))
        ideal_fail = (1.0 - p_hit) ** p.max_pulses
        if ideal_fail > MAX_IDEAL_FAILURE:
            raise PhysicsError(
                f"accept window +/-{half_window:.3g} x range is too narrow for c2c_sigma = {p.c2c_sigma:.3g} x range "
                f"with max_pulses = {p.max_pulses}: even perfectly aimed pulses fail "
                f"{100 * ideal_fail:.0f} % of writes (limit {100 * MAX_IDEAL_FAILURE:.0f} %)",
                key="programming.tolerance",
            )
    if p.step > 2.0 * half_window:
        raise PhysicsError(
            f"must not exceed the accept window width 2 x tolerance x spacing = {2 * half_window:.3g} x range "
            f"(got {p.step:.3g}), or pulses jump over the window",
            key="programming.step",
        )


def _program(card: ReRAMCard, spacing: float, old_levels, new_levels, key: np.uint64) -> ProgramResult:
    """Run the kernel on flattened levels, in parallel slices for large inputs."""
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
    pulses = np.empty(n, dtype=np.int32)
    sets = np.empty(n, dtype=np.int32)
    failed = np.empty(n, dtype=np.bool_)
    g_out = np.empty(n, dtype=np.float64)
    e_set = np.empty(n, dtype=np.float64)
    e_reset = np.empty(n, dtype=np.float64)
    e_verify = np.empty(n, dtype=np.float64)
    c, p = card.cell, card.programming
    rng_s = c.g_max_siemens - c.g_min_siemens
    sp, rp, rd = card.set_pulse, card.reset_pulse, card.read
    params = (
        key,
        c.g_min_siemens,
        spacing,
        p.step * rng_s,
        p.c2c_sigma * rng_s,
        c.g_min_siemens,
        c.g_max_siemens,
        p.tolerance * spacing,
        p.max_pulses,
        sp.voltage_v**2 * sp.width_s,
        rp.voltage_v**2 * rp.width_s,
        rd.v_read_v**2 * rd.t_read_s,
    )

    def run(lo: int, hi: int) -> None:
        _program_kernel(old[lo:hi], new[lo:hi], lo, *params, pulses[lo:hi], sets[lo:hi], failed[lo:hi],
                        g_out[lo:hi], e_set[lo:hi], e_reset[lo:hi], e_verify[lo:hi])

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
        set_pulses=n_set,
        reset_pulses=total - n_set,
        verify_reads=total,
        failures=int(failed.sum()),
        set_energy_j=float(e_set.sum()),
        reset_energy_j=float(e_reset.sum()),
        verify_energy_j=float(e_verify.sum()),
    )
