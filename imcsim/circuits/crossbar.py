"""Analog crossbar for multi-level ReRAM: DAC inputs, column current sums, ADCs.

Mapping. An INT8 weight is stored as a differential pair of magnitudes,
``W = W+ - W-`` with ``W+ = max(W, 0)`` and ``W- = max(-W, 0)`` in [0, 128], each
split into ``S = ceil(8 / b)`` slices of ``b = bits_per_cell`` bits, one cell per
slice: a K x N matrix takes K rows and 2 N S columns. Small weights leave their
high slices at level 0 (g_min, never programmed), so programming error stays
proportional to |W|. A cell at level ``l`` has conductance
``g_min + l * spacing``; the crossbar uses the *programmed* conductances the
device reports (write-and-verify leaves each cell within its tolerance window,
not exactly on its level), so programming error reaches the results.

Inputs. An INT8 input is applied sign-magnitude: its magnitude |x| (0..128) in
``C = ceil(8 / d)`` cycles of ``d`` bits (``components.dac.bits``) (d = 1 is bit-serial), once for
the positive inputs and once for the negative ones; a sign with no input in a
GEMM is skipped (ReLU outputs need one pass). Zero inputs drive nothing, so they
add neither energy nor programming error.

Compute. In each cycle, each row tile of ``rows`` rows sums currents on every
column: ``I = V_read * sum_k x_c[k] G[k]``; a reference column of g_min cells
removes the g_min part, so the ADC sees ``sum_k x_c[k] (G[k] - g_min) / spacing``
in level units, quantized by a ``components.adc.bits`` ADC over the full scale
``rows * (2^d - 1) * (levels - 1)`` (an ADC with more codes than level sums
resolves every sum exactly). Shift-and-add combines slices (``+/- 2^(b s)``),
cycles (``2^(d c)``), input signs and row tiles digitally. With an ADC wide
enough for the full scale and exact conductances the result equals the integer
product; otherwise the error against the exact product is tallied
(:attr:`AnalogCrossbar.error`).

The input gradient ``dy @ W^T`` drives the columns and converts on the rows
(one slice of columns at a time, so each slice keeps its weight 2^(b s)).
"""

from __future__ import annotations

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
from imcsim.components.blocks import Adc, AdcCard, Dac, DacCard
from imcsim.devices.base import MemoryDevice
from imcsim.errors import PhysicsError
from imcsim.ops import OpRecord
from imcsim.params import Params


class AnalogParams(Params):
    """Card section ``analog``: how the converters are shared."""

    cols_per_adc: int = Field(1, ge=1, le=1 << 12, description="columns multiplexed onto one ADC")


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


class AnalogCrossbar(ArrayCircuit):
    """A ReRAM crossbar with DAC inputs and ADC outputs; same interface as the digital macro."""

    exact = False  # results carry the analog path's error: computed and counted together
    unit = "crossbars"

    def __init__(self, card: AnalogCrossbarCard, device: MemoryDevice):
        if not hasattr(device, "program") or not hasattr(device, "level_spacing_siemens"):
            raise PhysicsError(
                f"an analog crossbar needs a multi-level conductance device (reram); got {device.kind}", key="kind"
            )
        self.levels = 2**device.bits_per_cell
        b = device.bits_per_cell
        per_side = math.ceil(N_BITS / b)
        self.slices = 2 * per_side  # cells per weight: W+ slices then W- slices
        mags = [float(2 ** (b * i)) for i in range(per_side)]
        self.slice_weights = torch.tensor(mags + [-m for m in mags], dtype=torch.float64)
        self.in_cycles = math.ceil(N_BITS / card.components.dac.bits)
        self.error = ErrorStats()
        self.ell: dict[str, np.ndarray] = {}  # programmed conductances in level units, (K, N, S)
        # One conversion per cycle slot: the cycle is the slower of the clock and the ADC.
        super().__init__(card, device, max(1.0 / card.technology.clock_hz, card.components.adc.t_conversion_s))

    # --- costs ------------------------------------------------------------------

    def _build_blocks(self) -> dict[str, Component]:
        c, tech = self.card.components, self.card.technology
        return {"dac": Dac("dac", c.dac, tech), "adc": Adc("adc", c.adc, tech), **self._shared_blocks(c)}

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

    # --- mapping and programming ------------------------------------------------------

    def _levels_of(self, w: np.ndarray) -> np.ndarray:
        """(K, N) int8 -> (K, N, 2S) cell levels: slices of W+ then of W-."""
        w16 = w.astype(np.int32)
        b = self.device.bits_per_cell
        per_side = self.slices // 2
        sides = [np.maximum(w16, 0), np.maximum(-w16, 0)]
        return np.stack([(m >> (b * i)) & (self.levels - 1) for m in sides for i in range(per_side)], axis=-1)

    @property
    def cells_per_weight(self) -> int:
        """Differential pair of magnitude slices."""
        return self.slices

    def placement(self, name: str, k: int, n: int, groups: int = 1) -> dict[tuple[str, str], tuple[int, int]]:
        """What :meth:`store` programs for a K x N matrix: the matrix alone (no transposed copy), on
        crossbars of ``rows`` x ``cols`` cells. Grouped layers (``groups`` > 1) are not mapped."""
        if groups > 1:
            raise MappingError(f"layer {name} is a grouped convolution ({groups} groups), which the analog "
                               "crossbar does not map")
        return {(name, "weights"): self.tiles_for(k, n)}

    def store(self, name: str, w_int8: np.ndarray, rows: int | None = None) -> list[OpRecord]:
        """Program a K x N matrix by write-and-verify; ``rows``: ``w_int8`` is a row sample of a matrix with that
        many rows (the whole is placed, the sample programmed and its counts scaled to the whole)."""
        w = np.asarray(w_int8, dtype=np.int8)
        full = w.shape[0] if rows is None else rows
        rt, ct = self.placement(name, full, w.shape[1])[(name, "weights")]
        self._check_room(rt * ct, {(name, "weights")})
        self.hold("weights", name, StoredMatrix(name, np.zeros_like(w), rt, ct,  # fresh cells: level 0 (g_min)
                                                scale=full / w.shape[0]))
        self.ell[name] = np.zeros((*w.shape, self.slices))
        return [self.write_back(name, w, phase="deploy")]

    def update_weights(self, name: str, new_int8: np.ndarray) -> list[OpRecord]:
        return [self.write_back(name, new_int8)]

    def write_back(self, name: str, new_int8: np.ndarray, phase: str = "update", region: str = "weights"
                   ) -> OpRecord:
        """Program the changed cells by write-and-verify; keep their programmed conductances."""
        s = self.stored[name]
        new = np.asarray(new_int8, dtype=np.int8)
        old_l, new_l = self._levels_of(s.values), self._levels_of(new)
        res = self.device.program(old_l, new_l)
        changed = old_l != new_l
        g_min = self.device.card.cell.g_min_siemens
        ell = self.ell[name]
        ell[changed] = (res.g_final_siemens[changed] - g_min) / self.device.level_spacing_siemens
        counts = {"set_pulse": res.set_pulses, "reset_pulse": res.reset_pulses, "verify_read": res.verify_reads,
                  "write_fail": res.failures}
        counts, changed_weights = self.scaled_writes(s, counts, int((s.values != new).sum()))
        drivers = s.row_tiles * s.col_tiles * self.card.array.write_drivers_per_subarray
        rec = OpRecord(phase=phase, kind="write", layer=name, shape=(round(new.shape[0] * s.scale), new.shape[1]),
                       counts=self._write_counts(counts), cycles=self._write_cycles(counts, drivers), drivers=drivers,
                       cell_writes=_compact(res.pulses.reshape(new.shape[0], -1)), cell_scale=s.scale,
                       changed_weights=changed_weights)
        s.assign(new)
        return rec

    # --- analog matrix-vector products ---------------------------------------------

    def _analog_mvm(self, inp: torch.Tensor, ell: np.ndarray, lines_per_tile: int) -> tuple[torch.Tensor, dict]:
        """Approximate ``inp @ W`` through DACs, line sums and ADCs (see the module docstring).

        ``inp``: int8 (M, L). ``ell``: programmed levels (L, O, 2S) of the differential
        slices. Lines are tiled ``lines_per_tile`` at a time; each tile's sums are
        converted separately.
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
        g_t = g.reshape(tiles, lines_per_tile, n_out * slices)  # (T, R, O*S)
        d = self.card.components.dac.bits
        mask = 2**d - 1
        full_scale = lines_per_tile * mask * (self.levels - 1)
        lsb = max(1.0, full_scale / (2**self.card.components.adc.bits - 1))
        out = torch.zeros((m, n_out * slices), dtype=torch.float64)
        sums = torch.empty((tiles, m, n_out * slices), dtype=torch.float32)
        nonzero_inputs = 0
        passes = 0
        for sign in (1, -1):
            mag = (x16 * sign).clamp_(min=0)  # 0..128
            if not bool(mag.any()):
                continue  # no input of this sign: the pass is skipped
            passes += 1
            mag_t = mag.reshape(m, tiles, lines_per_tile).transpose(0, 1).contiguous()  # (T, M, R)
            for c in range(self.in_cycles):
                chunk = (mag_t >> (d * c)) & mask
                nonzero_inputs += int(torch.count_nonzero(chunk))
                torch.bmm(chunk.to(torch.float32), g_t, out=sums)  # line sums in level units
                sums.clamp_(0.0, full_scale).div_(lsb).round_().mul_(lsb)  # the ADC
                out.add_(sums.sum(dim=0), alpha=float(sign * 2 ** (d * c)))
        y = (out.reshape(m, n_out, slices) * self.slice_weights).sum(dim=-1)
        stats = {"tiles": tiles, "nonzero_inputs": nonzero_inputs, "passes": passes,
                 "conversions": m * tiles * self.in_cycles * passes * n_out * slices}
        return y, stats

    def _analog_gemm(self, inp: torch.Tensor, ell: np.ndarray, lines_per_tile: int, exact: torch.Tensor | None,
                     phase: str, layer: str, count: bool, samples: int = 1, slice_serial: bool = False
                     ) -> tuple[torch.Tensor, OpRecord | None]:
        m, length = inp.shape
        y, st = self._analog_mvm(inp, ell, lines_per_tile)
        y_int = torch.round(y).clamp_(-(2**31), 2**31 - 1).to(torch.int32)
        if not count:
            return y_int, None
        self.error.add(y_int, exact)
        n_out = ell.shape[1]
        rec = self._analog_op(m, length, n_out, not slice_serial, st["passes"],
                              st["nonzero_inputs"], phase, layer, samples, slice_serial=slice_serial)
        return y_int, rec.tagged(plane_ones=plane_ones(inp))

    def _analog_op(self, m: int, length: int, n_out: int, by_rows: bool, passes: float, driven: float, phase: str,
                   layer: str, samples: int, slice_serial: bool = False, copies: int = 1) -> OpRecord:
        """The op of an (m x length) @ (length x n_out) analog GEMM from its statistics: the input sign passes
        run (``passes``) and the DAC chunks that drive their line (``driven``, over cycles and passes).

        Lines are rows (``by_rows``: forward) or columns (input gradient); on columns one slice of the
        differential weights is driven at a time (``slice_serial``), so each input cycle runs once per slice.
        Measured (functional) and expected (cost-only) statistics give their op through this one function.
        """
        an, a = self.card.analog, self.card.array
        lines_per_tile = a.rows if by_rows else max(1, a.cols // self.slices)
        tiles = math.ceil(length / lines_per_tile)
        per_slice = self.slices if slice_serial else 1
        other_tiles = math.ceil(n_out * self.slices / (a.cols if by_rows else a.rows))
        conversions = m * tiles * self.in_cycles * passes * n_out * self.slices
        counts = {
            ("dac", "convert"): m * length * self.in_cycles * passes * other_tiles * per_slice,
            (self.device.component, "read"): driven * n_out * self.slices,
            ("adc", "convert"): conversions,
            ("shift_add", "accumulate"): conversions,
            ("psum", "add"): m * n_out * (tiles - 1),
            ("input_buffer", "read_bit"): m * length * N_BITS,
            ("output_buffer", "write_bit"): m * n_out * ACC_BITS,
        }
        # Crossbars of a layer work in parallel; in each, the vectors, signs and input cycles
        # run one after another and each cycle converts its columns cols_per_adc at a time.
        per_vector = self.in_cycles * passes * an.cols_per_adc * per_slice * copies
        return OpRecord(phase=phase, kind="gemm", layer=layer, counts={k: round(v * copies) for k, v in counts.items()},
                        cycles=math.ceil(m * per_vector), shape=(m, length, n_out), macs=m * length * n_out * copies,
                        chunk_cycles=np.array([math.ceil(c * per_vector) for c in chunk_sizes(m, samples)],
                                              dtype=np.int64))

    def expected_gemm(self, m: int, length: int, n_out: int, density: list[float], phase: str, layer: str,
                      samples: int = 1, copies: int = 1) -> OpRecord:
        """Expected counts of an (m x length) @ (length x n_out) GEMM whose INT8 operand has bit ``i`` (LSB
        first, two's complement) set with probability ``density[i]`` (cost-only mode).

        Same actions as :meth:`_analog_gemm`, counted by the same function. The sign bit's density is the
        share of negative inputs; a sign pass runs when some input has that sign. A DAC chunk drives its
        line when a bit of the input's magnitude in it is set: a non-negative input's magnitude bits are its
        own; a negative input's magnitude is NOT x + 1, whose bit b is set with probability
        (1 - p_b)(1 - C_b) + p_b C_b, C_b = prod_{j<b} (1 - p_j) being the chance that the +1 carries into
        it (bit 7 is set only for -128). Bits are taken as independent (exact for one-bit DACs).
        """
        d = self.card.components.dac.bits
        p = [float(v) for v in density]
        p_neg = p[N_BITS - 1]
        n_in = m * length
        passes = (1.0 - p_neg**n_in) + (1.0 - (1.0 - p_neg) ** n_in)
        pos = [*p[: N_BITS - 1], 0.0]
        carry = [math.prod(1.0 - p[j] for j in range(b)) for b in range(N_BITS)]
        neg = [(1.0 - p[b]) * (1.0 - carry[b]) + p[b] * carry[b] for b in range(N_BITS - 1)] + [carry[N_BITS - 1]]

        def nonzero(bits: list[float], c: int) -> float:
            return 1.0 - math.prod(1.0 - bits[b] for b in range(c * d, min((c + 1) * d, N_BITS)))

        live = sum((1.0 - p_neg) * nonzero(pos, c) + p_neg * nonzero(neg, c) for c in range(self.in_cycles))
        forward = phase == "forward"
        return self._analog_op(m, length, n_out, forward, passes, n_in * live, phase, layer, samples,
                               slice_serial=not forward, copies=copies)

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
        return self._analog_gemm(x_int8, self.ell[name], self.card.array.rows, exact, phase, name, count, samples)

    def backward_input(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> tuple[torch.Tensor, OpRecord]:
        s = self.stored[name]
        exact = int8_matmul(dy_int8, torch.from_numpy(np.ascontiguousarray(s.values.T)))
        if self.card.dataflow.input_grad == "digital":
            k, n = s.values.shape
            return exact, self.digital_input_grad(dy_int8.shape[0], k, n, 1, samples, name)
        ell_t = np.ascontiguousarray(self.ell[name].transpose(1, 0, 2))  # (N, K, 2S)
        per_tile = max(1, self.card.array.cols // self.slices)
        return self._analog_gemm(dy_int8, ell_t, per_tile, exact, "input_grad", name, True, samples,
                                 slice_serial=True)
