"""Analog crossbar for multi-level ReRAM: DAC inputs, column current sums, ADCs.

Mapping (``analog.weight_encoding``). An INT8 weight occupies ``S = ceil(8 / b)``
cells of ``b = bits_per_cell`` bits per stored magnitude:

* ``differential``: ``W = W+ - W-`` with ``W+ = max(W, 0)``, ``W- = max(-W, 0)``
  in [0, 128]: 2 S cells, each column converted on its own (2 S conversions);
* ``subtract``: the same 2 S cells, the W- column's current subtracted from the
  W+ column's in analog before one ADC (S conversions over a signed range);
* ``offset``: the biased code ``W + 128`` in [0, 255] (ISAAC's encoding): S
  cells and S conversions; the bias ``128 sum_k x_k`` is removed digitally.

Small weights leave their high slices at level 0 (g_min, never programmed).
Each crossbar holds one slice of many weights (slice-major), the W+ columns of
a slice in one half of it and the W- columns in the other, so a matrix takes
``S x ceil(N / (cols / sides))`` crossbars per row tile and a column sums terms of one
weight: the input gradient (driving columns) converts row sums of every weight
of that crossbar, ``cols / sides`` terms each, not one slice's handful; each side's
columns are driven in a pass of their own, or, with ``subtract`` and
``analog.column_drive: bipolar``, the W- columns at the opposite polarity, so a
row sums W+ - W- in one pass and one conversion.

Inputs (``analog.input_encoding``), applied ``d = components.dac.bits`` bits per cycle:

* ``sign_magnitude``: |x| (0..128) in ``ceil(8 / d)`` cycles, once for the
  positive inputs and once for the negative ones (a sign with no input is
  skipped; ReLU outputs take one pass);
* ``twos_complement``: the low 7 bits in ``ceil(7 / d)`` cycles and the sign bit
  in one more, whose result is subtracted (weight -128): one pass.

Zero chunks drive nothing, so they add neither energy nor programming error.

Compute. In each cycle, each row tile sums currents on every column; a
reference column of g_min cells removes the g_min part, so the ADC sees
``sum_k x_c[k] (G[k] - g_min) / spacing`` in level units, quantized by a
``components.adc.bits`` ADC over the full scale ``rows * (2^d - 1) * (levels - 1)``
(signed for ``subtract``), after the ADC's own offset (``analog.adc_offset``,
LSB, drawn once per converter). The conductances are the device's: the
programmed ones (write-and-verify leaves each cell within its window), relaxed
for the time since programming and with fresh read noise per product
(:meth:`ReRAM.conductance_at`), and, with ``analog.wire``, each cell in series
with its wires to the row driver and the column's sense node (NeuroSim's
first-order IR drop: ``(j + 1) r_row + (rows - i) r_col``). Shift-and-add
combines slices, cycles, signs and tiles digitally. With exact conductances and
an ADC wide enough for the full scale the result equals the integer product;
otherwise its error is tallied (:attr:`AnalogCrossbar.error`).

Timing. One input cycle lasts the longer of the cell read (``t_read``: the
lines settle before the columns are sampled) and the ``cols_per_adc``
conversions that share an ADC; the read energy is charged for ``t_read``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from imcsim.circuits.activity import plane_ones
from imcsim.circuits.base import (
    ArrayCircuit,
    ArrayParams,
    BufferParams,
    MappingError,
    MemoryParams,
    SharedComponents,
    StoredMatrix,
    _compact,
    chunk_sizes,
)
from imcsim.circuits.bitplanes import N_BITS, int8_matmul
from imcsim.circuits.stream import ACC_BITS
from imcsim.components import Component, Technology
from imcsim.components.blocks import Adc, AdcCard, AdderLogic, Dac, DacCard
from imcsim.devices.base import MemoryDevice
from imcsim.errors import PhysicsError
from imcsim.ops import OpRecord
from imcsim.params import LengthM, Number, Params, ResistivityOhmM


class WireParams(Params):
    """Card section ``analog.wire``: the crossbar's row and column wires (NeuroSim's wire model)."""

    resistivity_ohm_m: ResistivityOhmM = Field(alias="resistivity", ge=1e-9, le=1e-5,
                                               description="wire resistivity at its width (size effects included)")
    width_m: LengthM = Field(alias="width", ge=5e-9, le=1e-6, description="wire width")
    aspect_ratio: Number = Field(ge=0.5, le=5.0, description="wire thickness / width")


class AnalogParams(Params):
    """Card section ``analog``: encodings, converter sharing, and the analog non-idealities."""

    cols_per_adc: int = Field(1, ge=1, le=1 << 12, description="columns multiplexed onto one ADC")
    weight_encoding: Literal["differential", "subtract", "offset"] = Field(
        "differential", description="how signed weights are stored and converted (see the module docstring)")
    input_encoding: Literal["sign_magnitude", "twos_complement"] = Field(
        "sign_magnitude", description="how signed inputs are applied: two magnitude passes or one two's-complement pass")
    column_drive: Literal["unipolar", "bipolar"] = Field(
        "unipolar", description="input gradient on the columns: each side's columns in a pass of their own, or the "
                                "W- columns driven at the opposite polarity so the row sums subtract (subtract only)")
    adc_offset: Number = Field(0.0, ge=0.0, le=8.0, description="std of each ADC's input offset, in LSB")
    wire: WireParams | None = Field(None, description="row/column wires for the IR drop (none: ideal wires)")


class CrossbarComponents(SharedComponents):
    """The blocks of an analog crossbar, each named by its component card (with per-field overrides)."""

    dac: DacCard = Field(description="input driver/DAC of a row (forward) or column (input gradient)")
    adc: AdcCard = Field(description="converter of a column (forward) or row (input gradient) sum")


class CrossbarDataflowParams(Params):
    input_grad: Literal["transposable_read", "digital"] = "transposable_read"
    weight_grad: Literal["digital"] = "digital"


class AnalogCrossbarCard(Params):
    """An analog crossbar card (``kind: analog_crossbar``)."""

    kind: Literal["analog_crossbar"]
    description: str
    references: dict[str, str]
    technology: Technology
    array: ArrayParams
    dataflow: CrossbarDataflowParams = CrossbarDataflowParams()
    buffer: BufferParams = BufferParams()
    memory: MemoryParams = MemoryParams()
    analog: AnalogParams = AnalogParams()
    components: CrossbarComponents


@dataclass
class ErrorStats:
    """Running error of analog results against the exact integer products."""

    outputs: int = 0
    sum_sq_error: float = 0.0
    sum_sq_exact: float = 0.0
    max_abs_error: float = 0.0
    history: list[float] = field(default_factory=list)

    def add(self, approx: torch.Tensor, exact: torch.Tensor) -> None:
        err = (approx.double() - exact.double())
        self.outputs += err.numel()
        self.sum_sq_error += float((err * err).sum())
        self.sum_sq_exact += float((exact.double() ** 2).sum())
        self.max_abs_error = max(self.max_abs_error, float(err.abs().max()) if err.numel() else 0.0)

    @property
    def relative_rms(self) -> float:
        """sqrt(sum err^2 / sum exact^2): 0 for exact results."""
        return math.sqrt(self.sum_sq_error / self.sum_sq_exact) if self.sum_sq_exact else 0.0


@dataclass
class _Cells:
    """The physical cells of one stored matrix, (K, N, C): programmed conductance (S), relaxation draw,
    time programmed (s), cells known to be stuck; their device-to-device draws (flattened)."""

    g: np.ndarray
    z: np.ndarray
    t_prog: np.ndarray
    bad: np.ndarray
    population: object
    version: int = 0
    cache: dict = field(default_factory=dict)


class AnalogCrossbar(ArrayCircuit):
    """A ReRAM crossbar with DAC inputs and ADC outputs; same interface as the digital macro."""

    exact = False  # results carry the analog path's error: computed and counted together
    unit = "crossbars"

    def __init__(self, card: AnalogCrossbarCard, device: MemoryDevice):
        if not hasattr(device, "program") or not hasattr(device, "level_spacing_siemens"):
            raise PhysicsError(
                f"an analog crossbar needs a multi-level conductance device (reram); got {device.kind}", key="kind"
            )
        an = card.analog
        self.levels = 2**device.bits_per_cell
        b = device.bits_per_cell
        self.per_side = math.ceil(N_BITS / b)  # magnitudes 0..128 and biased codes 0..255 both need 8 bits
        self.sides = 1 if an.weight_encoding == "offset" else 2
        self.slices = self.sides * self.per_side  # cells per weight
        mags = [float(2 ** (b * i)) for i in range(self.per_side)]
        self.slice_weights = torch.tensor(mags + [-m for m in mags] if self.sides == 2 else mags, dtype=torch.float64)
        d = card.components.dac.bits
        self.twos = an.input_encoding == "twos_complement"
        self.in_cycles = math.ceil((N_BITS - 1) / d) + 1 if self.twos else math.ceil(N_BITS / d)
        self.error = ErrorStats()
        self.cells: dict[str, _Cells] = {}
        self.clock_s = 0.0  # the crossbar's time: relaxation is evaluated at clock - time programmed
        self._rng = np.random.default_rng([getattr(device, "seed", 0), 0xAD0])
        # One conversion per cycle slot: the cycle is the slower of the clock and the ADC.
        super().__init__(card, device, max(1.0 / card.technology.clock_hz, card.components.adc.t_conversion_s))
        t_read = device.actions()["read"].cost.latency_s
        # an input cycle: the lines settle for t_read, then the columns sharing an ADC convert one after another
        self.cycles_per_input = max(an.cols_per_adc, math.ceil(t_read / self.t_cycle_s - 1e-9))

    # --- costs ------------------------------------------------------------------

    def _build_blocks(self) -> dict[str, Component]:
        c, tech = self.card.components, self.card.technology
        shared = self._shared_blocks(c)
        # a conversion's code enters the accumulator at its shift: adc.bits full adders and one carry out
        shared["shift_add"] = AdderLogic("shift_add", c.adder_cell, tech, "accumulate", c.adc.bits + 1,
                                         f"one {c.adc.bits}-bit converted code added at its shift into the "
                                         "accumulator", width_bits=ACC_BITS, register=c.register_bit)
        return {"dac": Dac("dac", c.dac, tech), "adc": Adc("adc", c.adc, tech), **shared}

    def macro_area_m2(self) -> float:
        """Crossbar area: cells, an ADC per ``cols_per_adc`` columns, a DAC per row, an accumulator per column,
        write drivers and the digital unit."""
        a, an, b = self.card.array, self.card.analog, self.blocks
        per_sub = (
            a.rows * a.cols * self.device.area_per_bit_m2 * self.device.bits_per_cell
            + math.ceil(a.cols / an.cols_per_adc) * b["adc"].area_m2
            + a.rows * b["dac"].area_m2
            + a.cols * b["shift_add"].area_m2
        )
        return a.n_subarrays * per_sub + self._shared_area_m2()

    @property
    def wire_resistance_ohm(self) -> float:
        """Resistance of one cell pitch of row or column wire (NeuroSim: rho / (w^2 AR) x pitch); 0 without wires."""
        w = self.card.analog.wire
        if w is None:
            return 0.0
        acc = self.device.card.access
        pitch = math.sqrt(acc.cell_area_f2) * acc.feature_size_m
        return w.resistivity_ohm_m / (w.width_m**2 * w.aspect_ratio) * pitch

    # --- mapping and programming ------------------------------------------------------

    def _levels_of(self, w: np.ndarray) -> np.ndarray:
        """(K, N) int8 -> (K, N, C) cell levels: slices of W+ then of W- (or of the biased code W + 128)."""
        w16 = w.astype(np.int32)
        b = self.device.bits_per_cell
        sides = [w16 + 128] if self.sides == 1 else [np.maximum(w16, 0), np.maximum(-w16, 0)]
        return np.stack([(m >> (b * i)) & (self.levels - 1) for m in sides for i in range(self.per_side)], axis=-1)

    @property
    def cells_per_weight(self) -> int:
        return self.slices

    @property
    def weights_per_crossbar_row(self) -> int:
        """Weights one crossbar row holds: a slice of ``cols / sides`` weights (their W+ and W- cells side by side)."""
        return max(1, self.card.array.cols // self.sides)

    def tiles_for(self, k: int, n: int, groups: int = 1) -> tuple[int, int]:
        """(row tiles, column tiles) of a K x N matrix laid out slice-major: each crossbar holds one slice of up to
        ``weights_per_crossbar_row`` weights, so a matrix takes ``per_side`` crossbars per group of them."""
        if groups > 1:
            return super().tiles_for(k, n, groups)
        return math.ceil(k / self.card.array.rows), self.per_side * math.ceil(n / self.weights_per_crossbar_row)

    def placement(self, name: str, k: int, n: int, groups: int = 1) -> dict[tuple[str, str], tuple[int, int]]:
        """What :meth:`store` programs for a K x N matrix: the matrix alone (no transposed copy), on
        crossbars of ``rows`` x ``cols`` cells. Grouped layers (``groups`` > 1) are not mapped."""
        if groups > 1:
            raise MappingError(f"layer {name} is a grouped convolution ({groups} groups), which the analog "
                               "crossbar does not map")
        return {(name, "weights"): self.tiles_for(k, n)}

    def set_levels(self, name: str, levels: np.ndarray) -> None:
        """Put the cells of ``name`` exactly at ``levels`` (level units), as if programmed without error."""
        c = self.cells[name]
        c.g = self.device.card.cell.g_min_siemens + np.asarray(levels, dtype=np.float64) * \
            self.device.level_spacing_siemens
        c.z = np.zeros_like(c.g)
        c.version += 1

    def store(self, name: str, w_int8: np.ndarray, rows: int | None = None) -> list[OpRecord]:
        """Program a K x N matrix by write-and-verify; ``rows``: ``w_int8`` is a row sample of a matrix with that
        many rows (the whole is placed, the sample programmed and its counts scaled to the whole)."""
        w = np.asarray(w_int8, dtype=np.int8)
        full = w.shape[0] if rows is None else rows
        rt, ct = self.placement(name, full, w.shape[1])[(name, "weights")]
        self._check_room(rt * ct, {(name, "weights")})
        fresh = np.zeros_like(w) if self.sides == 2 else np.full_like(w, -128)  # fresh cells: level 0 (g_min)
        self.hold("weights", name, StoredMatrix(name, fresh, rt, ct, scale=full / w.shape[0]))
        shape = (*w.shape, self.slices)
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        pop = self.device.population(int(np.prod(shape)), key)
        g0 = pop.lo.reshape(shape).copy()  # a fresh cell sits at its own g_min
        self.cells[name] = _Cells(g=g0, z=np.zeros(shape), t_prog=np.zeros(shape), bad=np.zeros(shape, bool),
                                  population=pop)
        return [self.write_back(name, w, phase="deploy")]

    def update_weights(self, name: str, new_int8: np.ndarray) -> list[OpRecord]:
        return [self.write_back(name, new_int8)]

    def write_back(self, name: str, new_int8: np.ndarray, phase: str = "update", region: str = "weights"
                   ) -> OpRecord:
        """Program the changed cells by write-and-verify, each from the conductance verified at its last write (the
        relaxation since is not seen by the loop; :meth:`refresh` starts from the relaxed value); keep the programmed
        conductances, draw their relaxation, and mark cells found stuck (not pulsed again, not relaxing)."""
        s = self.stored[name]
        c = self.cells[name]
        new = np.asarray(new_int8, dtype=np.int8)
        old_l, new_l = self._levels_of(s.values), self._levels_of(new)
        res = self.device.program(old_l, new_l, g_start=c.g, cells=c.population, skip=c.bad)
        c.bad |= res.failed & c.population.stuck.reshape(c.g.shape)  # found stuck: they do not move or relax
        changed = (old_l != new_l) & ~c.bad
        c.g = np.asarray(res.g_final_siemens, dtype=np.float64).reshape(c.g.shape)
        c.z[changed] = self._rng.standard_normal(int(changed.sum()))
        c.t_prog[changed] = self.clock_s
        c.version += 1
        rec = self._program_record(name, res, phase, changed=int((s.values != new).sum()))
        s.assign(new)
        return rec

    def _program_record(self, name: str, res, phase: str, checks: int = 0, changed: int = 0) -> OpRecord:
        """The write op of programming ``name``'s cells (``res``), with ``checks`` further verify reads; counts of a
        programmed row sample scaled to the whole matrix; every verify read is sensed through an ADC."""
        s = self.stored[name]
        counts = {"set_pulse": res.set_pulses, "reset_pulse": res.reset_pulses,
                  "verify_read": res.verify_reads + checks, "write_fail": res.failures}
        counts, changed_weights = self.scaled_writes(s, counts, changed)
        drivers = s.row_tiles * s.col_tiles * self.card.array.write_drivers_per_subarray
        write_counts = self._write_counts(counts)
        write_counts[("adc", "convert")] = counts["verify_read"]
        rows = s.values.shape[0]
        return OpRecord(phase=phase, kind="write", layer=name, shape=(round(rows * s.scale), s.values.shape[1]),
                        counts=write_counts, cycles=self._write_cycles(counts, drivers), drivers=drivers,
                        cell_writes=_compact(res.pulses.reshape(rows, -1)), cell_scale=s.scale,
                        changed_weights=changed_weights)

    def refresh(self, phase: str = "update") -> list[OpRecord]:
        """Re-verify every programmed cell at the crossbar's present time and reprogram those that relaxed out of
        their accept window (from where they are now); one verify read per programmed cell, the pulses and verify
        reads of the reprogrammed ones, counted per matrix."""
        dev = self.device
        recs = []
        half = dev.card.programming.tolerance * dev.level_spacing_siemens
        g_min, sp = dev.card.cell.g_min_siemens, dev.level_spacing_siemens
        for name, c in self.cells.items():
            s = self.stored[name]
            levels = self._levels_of(s.values)
            programmed = (c.z != 0.0) & ~c.bad
            g_now = dev.conductance_at(c.g, c.z, np.maximum(self.clock_s - c.t_prog, 0.0))
            out = programmed & (np.abs(g_now - (g_min + levels * sp)) > half)
            old = np.where(out, levels ^ 1, levels)  # a level other than the target makes the cell program
            res = dev.program(old, levels, g_start=np.where(out, g_now, c.g), cells=c.population, skip=c.bad)
            c.g = np.where(out, res.g_final_siemens, c.g)
            c.z[out] = self._rng.standard_normal(int(out.sum()))
            c.t_prog[out] = self.clock_s
            c.version += 1
            recs.append(self._program_record(name, res, phase, checks=int(programmed.sum())))
        return recs

    # --- the conductances a product sees ------------------------------------------

    def _wire_series(self, shape: tuple[int, int, int]) -> np.ndarray | None:
        """Series wire resistance of each cell (K, N, C) to its row driver and its column's sense node (Ohm)."""
        r = self.wire_resistance_ohm
        if r == 0.0:
            return None
        a = self.card.array
        k, n, c = shape
        row = np.arange(k) % a.rows
        per = max(1, a.cols // self.sides)  # weights of one slice side by side in a crossbar
        side = np.arange(c) // self.per_side
        col = (side[None, :] * per + (np.arange(n) % per)[:, None])  # (N, C)
        return (col[None, :, :] + 1) * r + (a.rows - row)[:, None, None] * r

    def _levels_now(self, name: str) -> np.ndarray:
        """Effective conductances of ``name`` in level units now: relaxed, with read noise, through the wires."""
        c = self.cells[name]
        dev = self.device
        noisy = bool(dev.card.read.noise)
        key = (c.version, self.clock_s)
        if not noisy and c.cache.get("key") == key:
            return c.cache["levels"]
        g = dev.conductance_at(c.g, c.z, np.maximum(self.clock_s - c.t_prog, 0.0), self._rng if noisy else None)
        series = self._wire_series(g.shape)
        if series is not None:
            g = g / (1.0 + g * series)
        levels = (g - dev.card.cell.g_min_siemens) / dev.level_spacing_siemens
        if not noisy:
            c.cache.update(key=key, levels=levels)
        return levels

    def _adc_offsets(self, name: str, direction: str, shape: tuple[int, int]) -> torch.Tensor | None:
        """Fixed input offsets (LSB) of the converters of ``name``'s conversions, (tiles, columns)."""
        sigma = self.card.analog.adc_offset
        if not sigma:
            return None
        c = self.cells[name]
        got = c.cache.get(("offset", direction))
        if got is None or got.shape != shape:
            seed = int.from_bytes(hashlib.sha256(f"{name}/{direction}".encode()).digest()[:8], "little")
            rng = np.random.default_rng([getattr(self.device, "seed", 0), seed])
            got = torch.from_numpy(sigma * rng.standard_normal(shape)).to(torch.float32)
            c.cache[("offset", direction)] = got
        return got

    # --- analog matrix-vector products ---------------------------------------------

    def _chunks(self, x16: torch.Tensor):
        """(factor, chunk) pairs of the input encoding: each chunk an unsigned DAC code per line."""
        d = self.card.components.dac.bits
        mask = 2**d - 1
        if self.twos:
            if not bool(x16.any()):
                return  # no input: nothing is driven
            low = x16 & 127
            for c in range(self.in_cycles - 1):
                yield float(2 ** (d * c)), (low >> (d * c)) & mask
            yield -128.0, (x16 < 0).to(torch.int16)
            return
        for sign in (1, -1):
            mag = (x16 * sign).clamp_(min=0)  # 0..128
            if not bool(mag.any()):
                continue  # no input of this sign: the pass is skipped
            for c in range(self.in_cycles):
                yield float(sign * 2 ** (d * c)), (mag >> (d * c)) & mask

    def _analog_mvm(self, inp: torch.Tensor, ell: np.ndarray, lines_per_tile: int, paired: bool,
                    offsets: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """Approximate ``inp @ W`` through DACs, line sums and ADCs (see the module docstring).

        ``inp``: int8 (M, L). ``ell``: effective levels (L, O, C). Lines are tiled ``lines_per_tile`` at a time;
        each tile's sums are converted separately; ``paired``: the W- column is subtracted from the W+ column
        before the ADC.
        """
        m, length = inp.shape
        _, n_out, slices = ell.shape
        tiles = math.ceil(length / lines_per_tile)
        pad = tiles * lines_per_tile - length
        x16 = inp.to(torch.int16)
        g = torch.from_numpy(ell.reshape(length, n_out * slices)).to(torch.float32)
        if pad:
            x16 = torch.nn.functional.pad(x16, (0, pad))
            g = torch.nn.functional.pad(g, (0, 0, 0, pad))
        g_t = g.reshape(tiles, lines_per_tile, n_out * slices)  # (T, R, O*C)
        d = self.card.components.dac.bits
        full_scale = lines_per_tile * (2**d - 1) * (self.levels - 1)
        span = 2.0 * full_scale if paired else full_scale
        lsb = max(1.0, span / (2**self.card.components.adc.bits - 1))
        conv = n_out * (self.per_side if paired else slices)
        out = torch.zeros((m, conv), dtype=torch.float64)
        sums = torch.empty((tiles, m, n_out * slices), dtype=torch.float32)
        nonzero_inputs = 0
        passes = set()
        for factor, chunk in self._chunks(x16):
            passes.add(factor > 0 or self.twos)
            chunk_t = chunk.reshape(m, tiles, lines_per_tile).transpose(0, 1).contiguous()  # (T, M, R)
            nonzero_inputs += int(torch.count_nonzero(chunk_t))
            torch.bmm(chunk_t.to(torch.float32), g_t, out=sums)  # line sums in level units
            if paired:
                s4 = sums.reshape(tiles, m, n_out, 2, self.per_side)
                val = (s4[:, :, :, 0] - s4[:, :, :, 1]).reshape(tiles, m, conv)
                lo = -full_scale
            else:
                val, lo = sums, 0.0
            if offsets is not None:
                val = val + offsets[:, None, :] * lsb
            q = val.clamp(lo, full_scale).div_(lsb).round_().mul_(lsb)  # the ADC
            out.add_(q.sum(dim=0), alpha=factor)
        weights = self.slice_weights[: self.per_side] if paired else self.slice_weights
        y = (out.reshape(m, n_out, -1) * weights).sum(dim=-1)
        if self.sides == 1:  # biased codes: remove 128 x the input sum, digitally
            y = y - 128.0 * inp.double().sum(dim=1, keepdim=True)
        stats = {"tiles": tiles, "nonzero_inputs": nonzero_inputs, "passes": len(passes) if not self.twos else
                 (1 if passes else 0)}
        return y, stats

    def _analog_gemm(self, inp: torch.Tensor, name: str, forward: bool, exact: torch.Tensor | None,
                     phase: str, count: bool, samples: int = 1) -> tuple[torch.Tensor, OpRecord | None]:
        m, length = inp.shape
        ell = self._levels_now(name)
        if not forward:
            ell = np.ascontiguousarray(ell.transpose(1, 0, 2))  # (N, K, C)
        lines = self._lines_per_tile(forward)
        paired = self._paired(forward)
        conv = ell.shape[1] * (self.per_side if paired else self.slices)
        offsets = self._adc_offsets(name, "fwd" if forward else "bwd", (math.ceil(length / lines), conv))
        y, st = self._analog_mvm(inp, ell, lines, paired, offsets)
        y_int = torch.round(y).clamp_(-(2**31), 2**31 - 1).to(torch.int32)
        if not count:
            return y_int, None
        self.error.add(y_int, exact)
        rec = self._analog_op(m, length, ell.shape[1], forward, st["passes"], st["nonzero_inputs"], phase, name,
                              samples)
        return y_int, rec.tagged(plane_ones=plane_ones(inp))

    def _paired(self, forward: bool) -> bool:
        """The W- current is subtracted from the W+ current before the ADC: forward with ``subtract``; on the
        columns (input gradient) too when they are driven at both polarities."""
        an = self.card.analog
        return an.weight_encoding == "subtract" and (forward or an.column_drive == "bipolar")

    def _lines_per_tile(self, forward: bool) -> int:
        """Lines summed by one conversion: the rows of a crossbar (forward), or the weights of one slice side in
        a crossbar's columns (input gradient)."""
        return self.card.array.rows if forward else self.weights_per_crossbar_row

    def _analog_op(self, m: int, length: int, n_out: int, forward: bool, passes: float, driven: float, phase: str,
                   layer: str, samples: int, copies: int = 1) -> OpRecord:
        """The op of an (m x length) @ (length x n_out) analog GEMM from its statistics: the input sign passes
        run (``passes``) and the DAC chunks that drive their line (``driven``, over cycles and passes).

        Lines are rows (``forward``) or columns (input gradient). Forward, a conversion takes one column
        (``differential``, ``offset``) or one W+/W- pair (``subtract``); on columns each side's columns are
        driven in a pass of their own and every cell column's row sum is converted, unless ``subtract`` columns
        are driven at both polarities (``column_drive: bipolar``): one pass, one conversion per W+/W- pair. Measured (functional) and
        expected (cost-only) statistics give their op through this one function.
        """
        a = self.card.array
        lines_per_tile = self._lines_per_tile(forward)
        tiles = math.ceil(length / lines_per_tile)
        paired = self._paired(forward)
        side_passes = 1 if forward or paired else self.sides
        per_weight = self.per_side if paired else self.slices  # the biased code has one side: slices == per_side
        other_tiles = (self.per_side * math.ceil(n_out / self.weights_per_crossbar_row) if forward
                       else math.ceil(n_out / a.rows))
        conversions = m * tiles * self.in_cycles * passes * n_out * per_weight
        counts = {
            ("dac", "convert"): m * length * self.in_cycles * passes * other_tiles * (1 if forward else self.slices),
            (self.device.component, "read"): driven * n_out * self.slices,
            ("adc", "convert"): conversions,
            ("shift_add", "accumulate"): conversions,
            ("psum", "add"): m * n_out * (tiles - 1) + (m * (length + n_out) if self.sides == 1 else 0),
            ("input_buffer", "read_bit"): m * length * N_BITS,
            ("output_buffer", "write_bit"): m * n_out * ACC_BITS,
        }
        # Crossbars of a layer work in parallel; in each, the vectors, signs, side passes and input cycles run
        # one after another, each input cycle settling the lines and converting its columns cols_per_adc at a time.
        per_vector = self.in_cycles * passes * side_passes * self.cycles_per_input * copies
        return OpRecord(phase=phase, kind="gemm", layer=layer, counts={k: round(v * copies) for k, v in counts.items()},
                        cycles=math.ceil(m * per_vector), shape=(m, length, n_out), macs=m * length * n_out * copies,
                        chunk_cycles=np.array([math.ceil(c * per_vector) for c in chunk_sizes(m, samples)],
                                              dtype=np.int64))

    def expected_gemm(self, m: int, length: int, n_out: int, density: list[float], phase: str, layer: str,
                      samples: int = 1, copies: int = 1) -> OpRecord:
        """Expected counts of an (m x length) @ (length x n_out) GEMM whose INT8 operand has bit ``i`` (LSB
        first, two's complement) set with probability ``density[i]`` (cost-only mode).

        Same actions as :meth:`_analog_gemm`, counted by the same function. Two's-complement inputs drive their
        own bits (one pass). Sign-magnitude: the sign bit's density is the share of negative inputs; a sign pass
        runs when some input has that sign. A DAC chunk drives its line when a bit of the input's magnitude in it
        is set: a non-negative input's magnitude bits are its own; a negative input's magnitude is NOT x + 1,
        whose bit b is set with probability (1 - p_b)(1 - C_b) + p_b C_b, C_b = prod_{j<b} (1 - p_j) being the
        chance that the +1 carries into it (bit 7 is set only for -128). Bits are taken as independent (exact
        for one-bit DACs).
        """
        d = self.card.components.dac.bits
        p = [float(v) for v in density]
        n_in = m * length

        def nonzero(bits: list[float], lo: int, hi: int) -> float:
            return 1.0 - math.prod(1.0 - bits[b] for b in range(lo, hi))

        if self.twos:
            passes = 1.0 - math.prod(1.0 - p[b] for b in range(N_BITS)) ** n_in
            live = sum(nonzero(p, c * d, min((c + 1) * d, N_BITS - 1)) for c in range(self.in_cycles - 1))
            live += p[N_BITS - 1]
        else:
            p_neg = p[N_BITS - 1]
            passes = (1.0 - p_neg**n_in) + (1.0 - (1.0 - p_neg) ** n_in)
            pos = [*p[: N_BITS - 1], 0.0]
            carry = [math.prod(1.0 - p[j] for j in range(b)) for b in range(N_BITS)]
            neg = [(1.0 - p[b]) * (1.0 - carry[b]) + p[b] * carry[b] for b in range(N_BITS - 1)] + [carry[N_BITS - 1]]
            live = sum((1.0 - p_neg) * nonzero(pos, c * d, min((c + 1) * d, N_BITS))
                       + p_neg * nonzero(neg, c * d, min((c + 1) * d, N_BITS)) for c in range(self.in_cycles))
        return self._analog_op(m, length, n_out, phase == "forward", passes, n_in * live, phase, layer, samples,
                               copies=copies)

    def expected_forward(self, m: int, k: int, n: int, groups: int, samples: int, density: list[float],
                         weight_bit_density: float, layer: str) -> OpRecord:
        """Expected counts of the forward pass (cost-only mode); grouped layers are not mapped."""
        self.placement(layer, k, n, groups)
        return self.expected_gemm(m, k, n, density, "forward", layer, samples)

    def expected_input_grad(self, m: int, k: int, n: int, groups: int, samples: int, density: list[float],
                            weight_bit_density: float, layer: str) -> OpRecord:
        """Expected counts of ``dy @ W^T`` (cost-only mode), per the card's input-gradient dataflow."""
        self.placement(layer, k, n, groups)
        if self.card.dataflow.input_grad == "digital":
            return self.digital_input_grad(m, k, n, groups, samples, layer)
        return self.expected_gemm(m, n, k, density, "input_grad", layer, samples)

    def digital_input_grad(self, m: int, k: int, n: int, groups: int, samples: int, layer: str) -> OpRecord:
        """``dy @ W^T`` in the digital unit: every cell of the weights is read out once through the ADCs,
        then the product is digital."""
        cells = k * n * self.slices * groups
        return self.digital_gemm(m, n, k, phase="input_grad", layer=layer, samples=samples, copies=groups,
                                 extra={(self.device.component, "read"): cells, ("adc", "convert"): cells})

    def forward(self, x_int8: torch.Tensor, name: str, phase: str = "forward", count: bool = True,
                samples: int = 1) -> tuple[torch.Tensor, OpRecord | None]:
        s = self.stored[name]
        exact = int8_matmul(x_int8, torch.from_numpy(s.values)) if count else None
        return self._analog_gemm(x_int8, name, True, exact, phase, count, samples)

    def backward_input(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> tuple[torch.Tensor, OpRecord]:
        s = self.stored[name]
        exact = int8_matmul(dy_int8, torch.from_numpy(np.ascontiguousarray(s.values.T)))
        if self.card.dataflow.input_grad == "digital":
            k, n = s.values.shape
            return exact, self.digital_input_grad(dy_int8.shape[0], k, n, 1, samples, name)
        return self._analog_gemm(dy_int8, name, False, exact, "input_grad", True, samples)
