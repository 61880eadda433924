"""Bit-serial digital IMC macro: card, per-action costs, and counted GEMM execution.

Organisation (weight stationary). A stored INT8 matrix W (K x N) occupies K
rows and 8N one-bit columns, tiled onto subarrays of ``rows x cols`` cells.
A streamed INT8 operand is applied bit-serially, one two's-complement plane
at a time; a 1 bit activates a *line* of stored cells, 0 bits are skipped.

* Forward, ``X @ W`` (X: M x K): an active bit of x[m, k] activates row k; the
  sense amplifiers read its 8N cells (AND with the input bit), and per-column
  counters accumulate the popcount. After each plane the 8 weight-bit column
  counts are combined with their signed shifts (adder tree) and
  shift-accumulated with the plane's weight.
* Input gradient by transposable read, ``dY @ W^T`` (dY: M x N): an active bit
  of dy[m, n] activates the 8 bit-columns of weight column n one after the
  other; each reads K cells along the rows. Alternatives: a stored copy of W^T
  streamed like the forward pass (``transposed_copy``: twice the cells and
  writes), or the near-memory digital unit (``digital``).
* Weight gradient ``X^T @ dY``: in the digital unit, or in array
  (``in_array``): both operands are written as bit planes into scratch rows and
  pairs of planes are AND-sensed (see :meth:`BitSerialMacro._in_array_weight_grad`).
* Update: FP32 masters are updated digitally; :meth:`BitSerialMacro.write_back`
  rewrites only the cells whose INT8 bits changed, as the device counts them.

``rows_per_sense`` lines are sensed in one cycle (1 for MRAM, whose sense
amplifiers resolve one cell per column at a time). Counts therefore follow the
real operand activity, and the functional result is exact
(:func:`imcsim.circuits.bitplanes.int8_matmul`).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from imcsim.circuits import stream
from imcsim.circuits.base import (
    ArrayCircuit,
    ArrayParams,
    BufferParams,
    CapacityError,
    MappingError,
    MemoryParams,
    SharedComponents,
    StoredMatrix,
    _compact,
    chunk_sizes,
)
from imcsim.circuits.bitplanes import N_BITS, bit_planes, int8_matmul
from imcsim.circuits.stream import ACC_BITS, StreamGeometry, stream_op
from imcsim.components import Component, Technology
from imcsim.components.blocks import (
    CellGate,
    Latch,
    LineDriver,
    LineDriverCard,
    LogicGateCard,
    SenseAmp,
    SenseAmpCard,
    adder_tree,
    column_counter,
    popcount_tree,
)
from imcsim.devices.base import MemoryDevice
from imcsim.errors import PhysicsError
from imcsim.ops import OpRecord
from imcsim.params import Params

__all__ = ["ACC_BITS", "ArrayParams", "BitSerialMacro", "BitSerialMacroCard", "BufferParams", "CapacityError",
           "MappingError", "StoredMatrix", "chunk_sizes"]

# A binary counter increment toggles 1 + 1/2 + 1/4 + ... < 2 bits on average.
class DataflowParams(Params):
    skip_zero_planes: bool = Field(True, description="skip all-zero input planes (no cycle spent)")
    input_grad: Literal["transposable_read", "transposed_copy", "digital"] = Field(
        "transposable_read",
        description="dy @ W^T by reading W along its columns, from a second stored copy of W^T "
                    "(twice the cells and writes), or in the digital unit",
    )
    weight_reuse: Literal["resense", "latch", "in_cell"] = Field(
        "resense",
        description="resense: every active input bit re-senses its stored line; latch: each stored line is sensed "
                    "once into latches (one per cell of a subarray) per tile of batch_tile vectors that need it, "
                    "and the vectors AND their input bits with the latches at the logic clock; in_cell: a gate "
                    "beside each cell ANDs the input bit with the cell's own storage node, so nothing is sensed to "
                    "compute (digital SRAM CIM; needs a latch cell, an sram device, and components.cell_gate)")
    input_encoding: Literal["binary", "booth_radix4"] = Field(
        "binary",
        description="how the streamed operand drives the lines: one two's-complement bit plane per pass (8 "
                    "passes), or one radix-4 Booth digit per pass (4 passes of 2 input bits; a digit drives its "
                    "line when non-zero, adding the weight shifted or negated, one bit wider in the adder tree)")
    batch_tile: int = Field(8, ge=1, le=1 << 16, description="vectors that reuse one latching of the weights (latch)")
    weight_grad: Literal["digital", "in_array"] = Field(
        "digital",
        description="x^T @ dy in the near-memory digital unit, or in array by AND-sensing pairs of operand "
                    "bit-plane rows written into scratch subarrays (the writes are counted)",
    )


class MacroComponents(SharedComponents):
    """The blocks of a bit-serial macro, each named by its component card (with per-field overrides)."""

    sense_amp: SenseAmpCard
    line_driver: LineDriverCard = Field(description="row and bit-column lines: energy per cell on a line")
    cell_gate: LogicGateCard | None = Field(
        None, description="the gate beside each cell that in-cell compute uses (dataflow.weight_reuse: in_cell)")


class BitSerialMacroCard(Params):
    """A bit-serial digital IMC macro card (``kind: bitserial_macro``)."""

    kind: Literal["bitserial_macro"]
    description: str
    references: dict[str, str]
    technology: Technology
    array: ArrayParams
    dataflow: DataflowParams = DataflowParams()
    buffer: BufferParams = BufferParams()
    memory: MemoryParams = MemoryParams()
    components: MacroComponents


class BitSerialMacro(ArrayCircuit):
    """A macro built from a card and a device model; executes and counts GEMMs."""

    def __init__(self, card: BitSerialMacroCard, device: MemoryDevice):
        if device.bits_per_cell != 1:
            raise PhysicsError(
                f"a bit-serial digital macro senses one bit per cell; the device stores {device.bits_per_cell} "
                "bits per cell (use a 1-bit device card or an analog crossbar)",
                key="kind",
            )
        if card.dataflow.weight_reuse == "in_cell":
            if device.kind != "sram":
                raise PhysicsError(
                    f"in_cell computes with the cell's own storage node, which only a latch cell (an sram device) "
                    f"holds as a logic level; a {device.kind} cell must be sensed (use resense or latch)",
                    key="dataflow.weight_reuse")
            if card.components.cell_gate is None:
                raise PhysicsError("in_cell needs the gate beside each cell: name a logic_gate component card "
                                   "(e.g. and_gate_zigzag_28nm)", key="components.cell_gate")
            cycle = 1.0 / card.technology.clock_hz  # no cell is read to compute
        else:  # a sense cycle is the slower of the clock and the cell read
            cycle = max(1.0 / card.technology.clock_hz, device.actions()["read"].cost.latency_s)
        super().__init__(card, device, cycle)

    def _build_blocks(self) -> dict[str, Component]:
        c, a, tech = self.card.components, self.card.array, self.card.technology
        return {
            "sense_amp": SenseAmp("sense_amp", c.sense_amp, tech, self.t_cycle_s),
            "row_driver": LineDriver("row_driver", c.line_driver, tech, "activate_row", a.cols,
                                     "row line driven across a subarray"),
            "col_driver": LineDriver("col_driver", c.line_driver, tech, "activate_col", a.rows,
                                     "bit-column driven down a subarray"),
            "column_counter": column_counter(c.adder_cell, tech, a.rows, a.rows_per_sense),
            "adder_tree": adder_tree(c.adder_cell, tech, a.rows, extra_bits=int(self.booth)),
            "popcount_tree": popcount_tree(c.adder_cell, tech, a.cols),
            "latch": Latch("latch", c.register_bit, tech),
            **({"cell_gate": CellGate("cell_gate", c.cell_gate, tech)} if c.cell_gate is not None else {}),
            **self._shared_blocks(c),
        }

    @property
    def booth(self) -> bool:
        """The streamed operand drives the lines by radix-4 Booth digits (4 passes of 2 bits)."""
        return self.card.dataflow.input_encoding == "booth_radix4"

    @property
    def in_cell(self) -> bool:
        """Products are gated beside the cells, nothing sensed (digital SRAM CIM)."""
        return self.card.dataflow.weight_reuse == "in_cell"

    @property
    def gates_per_cell(self) -> int:
        """In-cell gates beside each cell: one ANDs the row's input bit; a transposable read drives the cells from
        their columns too, which takes a second gate on the column line."""
        return 2 if self.card.dataflow.input_grad == "transposable_read" else 1

    @property
    def latched(self) -> bool:
        """The weight-reuse dataflow: stored lines latched once per vector tile."""
        return self.card.dataflow.weight_reuse == "latch"

    @property
    def logic_ratio(self) -> float:
        """Sense cycles per logic-clock cycle (the latched AND-and-count runs at the clock)."""
        return (1.0 / self.card.technology.clock_hz) / self.t_cycle_s

    def placement(self, name: str, k: int, n: int, groups: int = 1) -> dict[tuple[str, str], tuple[int, int]]:
        """What :meth:`store` programs for ``groups`` K x N matrices under ``name``: each stored matrix's
        (row tiles, column tiles); with the ``transposed_copy`` input-gradient dataflow, W^T as well.

        The subarrays a matrix takes are the product of its tiles (see :meth:`tiles_for`).
        """
        placed = {(name, "weights"): self.tiles_for(k, n, groups)}
        if self.card.dataflow.input_grad == "transposed_copy":
            placed[(name, "transposed")] = self.tiles_for(n, k, groups)
        return placed

    def macro_area_m2(self) -> float:
        """Macro area: cell arrays, per-column sense amplifiers and counters, an adder tree and an accumulator per
        8 columns (one output), write drivers and the digital unit."""
        a, b = self.card.array, self.blocks
        per_col = b["sense_amp"].area_m2 + b["column_counter"].area_m2
        per_sub = a.rows * a.cols * self.device.area_per_bit_m2 + a.cols * per_col \
            + (a.cols // N_BITS) * (b["shift_add"].area_m2 + b["adder_tree"].area_m2)
        if self.latched:  # a latch per cell of the subarray
            per_sub += a.rows * a.cols * b["latch"].area_m2
        if self.in_cell:  # a gate per cell and direction the cell is driven from
            per_sub += a.rows * a.cols * b["cell_gate"].area_m2 * self.gates_per_cell
        return a.n_subarrays * per_sub + self._shared_area_m2()

    def store(self, name: str, w_int8: np.ndarray, groups: int = 1, rows: int | None = None) -> list[OpRecord]:
        """Program a K x N INT8 matrix (or ``groups`` of them stacked along the rows) into fresh subarrays.

        Counted as deployment writes. With the ``transposed_copy`` input-gradient
        dataflow, W^T (of each group) is stored as well. ``rows``: the matrix has that many rows and
        ``w_int8`` is a sample of them (cost-only runs at real sizes): the circuit places the whole
        matrix, programs the sample cell by cell and scales its write counts to the whole.
        """
        w = np.asarray(w_int8, dtype=np.int8)
        full = w.shape[0] if rows is None else rows
        kg, n = full // groups, w.shape[1]
        placed = self.placement(name, kg, n, groups)
        copies = {(name, "weights"): w}
        if (name, "transposed") in placed:
            copies[(name, "transposed")] = _transposed(w, groups) if rows is None else np.ascontiguousarray(w.T)
        self._check_room(sum(math.prod(tiles) for tiles in placed.values()), set(copies))
        for (layer, region), m in copies.items():
            self.hold(region, layer, StoredMatrix(layer, np.zeros_like(m), *placed[(layer, region)], groups=groups,
                                                  scale=full / w.shape[0]))
        return [self.write_back(layer, m, phase="deploy", region=region) for (layer, region), m in copies.items()]

    def update_weights(self, name: str, new_int8: np.ndarray) -> list[OpRecord]:
        """Write back a layer's new INT8 weights, and its transposed copy if one is kept."""
        recs = [self.write_back(name, new_int8)]
        if name in self.transposed:
            s = self.stored[name]
            t = _transposed(np.asarray(new_int8), s.groups) if s.scale == 1.0 else np.ascontiguousarray(new_int8.T)
            recs.append(self.write_back(name, t, region="transposed"))
        return recs

    # --- execution ------------------------------------------------------------

    def stream_geometry(self, phase: str, k: int, n: int, groups: int = 1, region: str = "weights"
                        ) -> tuple[StreamGeometry, int]:
        """How a GEMM phase on ``groups`` stored K x N matrices streams its operand, and the number of alike
        copies its counts stand for (groups not packed into one subarray run one after another).

        Forward (x @ W) and the input gradient from a stored transposed copy (dy @ W^T, ``region``
        ``transposed``) drive rows; the transposable read drives the 8 bit-columns of each weight column.
        Groups that fit one subarray side by side are packed block-diagonally (see :meth:`tiles_for`).
        """
        a = self.card.array
        cpw = self.cells_per_weight
        by_rows = phase == "forward" or region == "transposed"
        kk, nn = (k, n) if phase == "forward" else (n, k)  # lines along the stream, outputs
        if by_rows:
            per = self._packed(kk, nn, groups)
            if per:
                return StreamGeometry(groups * kk, per * kk, nn * N_BITS, 1, per * nn, groups * nn, 1, 1), 1
            return StreamGeometry(kk, a.rows, nn * N_BITS, 1, nn, nn, math.ceil(nn * cpw / a.cols),
                                  math.ceil(kk / a.rows)), groups
        per = self._packed(k, n, groups)
        if per:
            return StreamGeometry(groups * n, per * n, k, N_BITS, per * k, groups * k, 1, 1), 1
        per_row = max(1, a.cols // cpw)  # weights of one row of a tile
        return StreamGeometry(n, per_row, k, N_BITS, k, k, math.ceil(k / a.rows), math.ceil(n / per_row)), groups

    def _packed(self, k: int, n: int, groups: int) -> int:
        """Groups of K x N packed side by side in one subarray (0: not packed)."""
        a = self.card.array
        if groups > 1 and k <= a.rows and n * self.cells_per_weight <= a.cols:
            return min(a.rows // k, a.cols // (n * self.cells_per_weight), groups)
        return 0

    def _measured_op(self, x: torch.Tensor, phase: str, name: str, region: str, stored_ones: np.ndarray,
                     samples: int) -> OpRecord:
        s = (self.stored if region == "weights" else self.transposed)[name]
        k, n = s.values.shape if region == "weights" else s.values.shape[::-1]
        geom, _ = self.stream_geometry(phase, k, n, region=region)
        a = self.card.array
        u8 = x.numpy().view(np.uint8)
        flow = self.card.dataflow
        st = stream.measured(u8, geom, a.rows_per_sense, flow.skip_zero_planes, stored_ones, samples, self.booth)
        reuse = (stream.measured_reuse(u8, geom, a.rows_per_sense, flow.skip_zero_planes, flow.batch_tile)
                 if self.latched else None)
        rec = stream_op(geom, st, self.device.component, phase, name, region, macs=x.shape[0] * k * n, reuse=reuse,
                        logic_ratio=self.logic_ratio, in_cell=self.in_cell)
        if self.errors is not None and s.scale == 1.0:
            self._read_disturb(s, rec.counts.get((self.device.component, "read"), 0))
        return rec

    def _expected_op(self, phase: str, m: int, k: int, n: int, groups: int, samples: int, density: list[float],
                     weight_bit_density: float, layer: str, region: str = "weights") -> OpRecord:
        geom, copies = self.stream_geometry(phase, k, n, groups, region)
        a = self.card.array
        flow = self.card.dataflow
        st = stream.expected(m, geom, density, weight_bit_density, a.rows_per_sense, flow.skip_zero_planes, samples,
                             self.booth)
        reuse = (stream.expected_reuse(m, geom, density, a.rows_per_sense, flow.skip_zero_planes, flow.batch_tile)
                 if self.latched else None)
        return stream_op(geom, st, self.device.component, phase, layer, region, copies, macs=m * k * n * groups,
                         reuse=reuse, logic_ratio=self.logic_ratio, in_cell=self.in_cell)

    def forward(self, x_int8: torch.Tensor, name: str, phase: str = "forward", count: bool = True,
                samples: int = 1) -> tuple[torch.Tensor, OpRecord | None]:
        """``x @ W`` with W stored under ``name``: exact int32 result and its counts (if ``count``)."""
        y = int8_matmul(x_int8, torch.from_numpy(self.stored[name].values))
        return y, (self.forward_counts(x_int8, name, phase, samples) if count else None)

    def forward_counts(self, x_int8: torch.Tensor, name: str, phase: str = "forward", samples: int = 1) -> OpRecord:
        """The counts of ``x @ W`` (see :meth:`forward`) without computing the product."""
        return self._measured_op(x_int8, "forward", name, "weights", self.stored[name].ones(1),
                                 samples).tagged(phase=phase)

    def expected_forward(self, m: int, k: int, n: int, groups: int, samples: int, density: list[float],
                         weight_bit_density: float, layer: str) -> OpRecord:
        """Expected counts of the forward pass of ``groups`` K x N matrices on M vectors whose bit ``i`` is
        set with probability ``density[i]`` (cost-only mode): the same counting as :meth:`forward_counts`."""
        return self._expected_op("forward", m, k, n, groups, samples, density, weight_bit_density, layer)

    def backward_input(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> tuple[torch.Tensor, OpRecord]:
        """``dy @ W^T`` for W stored under ``name``, per the card's input-gradient dataflow."""
        dx = int8_matmul(dy_int8, torch.from_numpy(self.stored[name].values).t().contiguous())
        return dx, self.backward_input_counts(dy_int8, name, samples)

    def backward_input_counts(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> OpRecord:
        """The counts of ``dy @ W^T`` (see :meth:`backward_input`) without computing the product."""
        flow = self.card.dataflow.input_grad
        if flow == "transposable_read":
            return self._measured_op(dy_int8, "input_grad", name, "weights", self.stored[name].ones(0), samples)
        if flow == "transposed_copy":
            return self._measured_op(dy_int8, "input_grad", name, "transposed", self.transposed[name].ones(1),
                                     samples)
        k, n = self.stored[name].values.shape
        return self.digital_input_grad(dy_int8.shape[0], k, n, 1, samples, name)

    def expected_input_grad(self, m: int, k: int, n: int, groups: int, samples: int, density: list[float],
                            weight_bit_density: float, layer: str) -> OpRecord:
        """Expected counts of ``dy @ W^T`` (cost-only mode): the same counting as :meth:`backward_input_counts`."""
        flow = self.card.dataflow.input_grad
        if flow == "digital":
            return self.digital_input_grad(m, k, n, groups, samples, layer)
        region = "transposed" if flow == "transposed_copy" else "weights"
        return self._expected_op("input_grad", m, k, n, groups, samples, density, weight_bit_density, layer, region)

    def digital_input_grad(self, m: int, k: int, n: int, groups: int, samples: int, layer: str) -> OpRecord:
        """``dy @ W^T`` in the digital unit: the weights are read out of the array once (every row of every
        group, its row tiles in parallel), then multiplied digitally."""
        row_tiles, col_tiles = self.tiles_for(k, n)
        cells = k * n * N_BITS * groups
        return self.digital_gemm(m, n, k, phase="input_grad", layer=layer, samples=samples, copies=groups, extra={
            (self.device.component, "read"): cells,
            ("sense_amp", "sense"): cells,
            ("row_driver", "activate_row"): k * col_tiles * groups,
        }, extra_cycles=math.ceil(k / row_tiles) * groups)

    def weight_grad(self, x_int8: torch.Tensor, dy_int8: torch.Tensor, name: str, samples: int = 1
                    ) -> tuple[torch.Tensor, list[OpRecord]]:
        """``x^T @ dy`` (K x N), per the card's weight-gradient dataflow; exact either way."""
        if self.card.dataflow.weight_grad == "digital":
            return super().weight_grad(x_int8, dy_int8, name, samples)
        return int8_matmul(x_int8.t().contiguous(), dy_int8), self._in_array_weight_grad(x_int8, dy_int8, name)

    def _in_array_weight_grad(self, x: torch.Tensor, dy: torch.Tensor, name: str) -> list[OpRecord]:
        """Counts of x^T dy by in-array AND of operand bit planes.

        Layout: the batch dimension M runs along a subarray's columns. Each operand
        column (a column k of x, or n of dy) takes 8 rows, one per bit plane. A
        subarray holds a chunk of k_c x-columns and n_c dy-columns (8 (k_c + n_c) <= rows);
        covering all (k, n) pairs needs every x chunk beside every dy chunk, so x planes
        are written once per dy chunk and dy planes once per x chunk. For every pair of
        non-zero planes (x[:, k] plane i, dy[:, n] plane j) one dual-row activation
        AND-senses the M columns, a popcount tree reduces them, and the count is
        shifted by i + j (with the two's-complement signs) into the (k, n) accumulator.
        """
        m, k = x.shape
        n = dy.shape[1]
        xp = bit_planes(x.t().contiguous().numpy())  # (8, K, M)
        dp = bit_planes(dy.t().contiguous().numpy())  # (8, N, M)
        skip = self.card.dataflow.skip_zero_planes
        ax = int(xp.any(axis=2).sum()) if skip else k * N_BITS  # non-zero planes over the x columns
        bd = int(dp.any(axis=2).sum()) if skip else n * N_BITS
        # A smaller batch fills the first m columns; the others keep their old contents.
        operands = np.concatenate([xp.reshape(N_BITS * k, m), dp.reshape(N_BITS * n, m)])
        old_bits = self.scratch.get(name)
        width = max(m, old_bits.shape[1] if old_bits is not None else 0)
        if old_bits is None or old_bits.shape[0] != operands.shape[0]:
            old_bits = np.zeros((operands.shape[0], width), dtype=np.uint8)
        elif old_bits.shape[1] < width:
            old_bits = np.pad(old_bits, ((0, 0), (0, width - old_bits.shape[1])))
        new_bits = old_bits.copy()
        new_bits[:, :m] = operands
        self.scratch[name] = new_bits
        return self._in_array_ops(name, m, k, n, ax * bd, old_bits, new_bits, 1.0)

    def expected_weight_grad(self, m: int, k: int, n: int, groups: int, samples: int, x_density: list[float],
                             dy_density: list[float], layer: str, rng: np.random.Generator,
                             sample_columns: int = 2048) -> list[OpRecord]:
        """Expected counts of x^T dy (cost-only mode), per the card's weight-gradient dataflow.

        In array (each of ``groups`` groups in turn): a plane of an M-element operand column is non-zero with
        probability 1 - (1 - p_i)^M, so
        the expected plane pairs are (K sum_i P_x,i) (N sum_j P_dy,j). The scratch writes are counted by the
        device on operand planes drawn with the densities, replacing the previous step's (an independent
        draw: the steady state), on at most ``sample_columns`` batch columns scaled to M.
        """
        if self.card.dataflow.weight_grad == "digital":
            return super().expected_weight_grad(m, k, n, groups, samples, x_density, dy_density, layer, rng)
        skip = self.card.dataflow.skip_zero_planes

        def planes(density: list[float]) -> float:
            return sum(1.0 - (1.0 - p) ** m for p in density) if skip else float(N_BITS)

        cols = min(m, sample_columns)
        # rows: plane i of every x column (K rows per plane), then plane j of every dy column
        p = np.concatenate([np.repeat(np.asarray(x_density, dtype=float), k),
                            np.repeat(np.asarray(dy_density, dtype=float), n)])[:, None]
        old_bits = (rng.random((p.shape[0], cols)) < p).astype(np.uint8)
        new_bits = (rng.random((p.shape[0], cols)) < p).astype(np.uint8)
        self.scratch[layer] = new_bits
        pairs = round(k * planes(x_density) * n * planes(dy_density))
        ops = self._in_array_ops(layer, m, k, n, pairs, old_bits, new_bits, m / cols)
        if groups == 1:
            return ops
        # groups (as functional runs store them: one matrix each) take their turns on the scratch subarrays
        return [op.tagged(counts={key: c * groups for key, c in op.counts.items()}, cycles=op.cycles * groups,
                          macs=op.macs * groups) for op in ops]

    def _in_array_ops(self, name: str, m: int, k: int, n: int, pairs: int, old_bits: np.ndarray,
                      new_bits: np.ndarray, write_scale: float) -> list[OpRecord]:
        """The operand-plane writes and the AND-sensing of the in-array weight gradient (see
        :meth:`_in_array_weight_grad`), from the plane pairs and the scratch rows before and after; write counts
        are scaled by ``write_scale`` (a sample of the batch columns)."""
        a = self.card.array
        lines = a.rows // N_BITS
        if lines < 2:
            raise CapacityError(f"in-array weight gradient needs >= {2 * N_BITS} rows per subarray (has {a.rows})")
        k_c = min(k, max(1, round(lines * k / (k + n))), lines - 1)
        n_c = min(n, lines - k_c)
        groups_k, groups_n = math.ceil(k / k_c), math.ceil(n / n_c)
        col_tiles = math.ceil(m / a.cols)
        dev = self.device.component
        parallel = max(1, min(groups_k * groups_n * col_tiles, a.scratch_subarrays))
        rec = OpRecord(phase="weight_grad", kind="gemm", layer=name, region="operands", shape=(m, k, n), counts={
            ("row_driver", "activate_row"): 2 * pairs * col_tiles,
            (dev, "read"): 2 * pairs * m,
            ("sense_amp", "sense"): pairs * m,
            ("popcount_tree", "reduce"): pairs * col_tiles,
            ("shift_add", "accumulate"): pairs,
            ("psum", "add"): k * n * (col_tiles - 1),
            ("input_buffer", "read_bit"): (m * k + m * n) * N_BITS,
            ("output_buffer", "write_bit"): k * n * ACC_BITS,
        }, cycles=math.ceil(pairs * col_tiles / parallel) + (1 if pairs else 0), macs=m * k * n)
        # Operand writes into the scratch rows: one replica of each operand's planes is
        # tracked cell by cell; the replicas add the same counts again.
        ev_x = self.device.count_writes(old_bits[: N_BITS * k], new_bits[: N_BITS * k])
        ev_d = self.device.count_writes(old_bits[N_BITS * k :], new_bits[N_BITS * k :])
        writes = {action: round((ev_x.counts.get(action, 0) * groups_n + ev_d.counts.get(action, 0) * groups_k)
                                * write_scale)
                  for action in set(ev_x.counts) | set(ev_d.counts)}
        wrec = OpRecord(phase="weight_grad", kind="write", layer=name, region="operands", shape=new_bits.shape,
                        counts=self._write_counts(writes),
                        cycles=self._write_cycles(writes, parallel * a.write_drivers_per_subarray),
                        drivers=parallel * a.write_drivers_per_subarray,
                        cell_writes=_compact(np.concatenate([ev_x.cell_writes, ev_d.cell_writes])))
        return [wrec, rec]

    def write_back(self, name: str, new_int8: np.ndarray, phase: str = "update", region: str = "weights"
                   ) -> OpRecord:
        """Rewrite the stored matrix (``region``: its weights or its transposed copy) to ``new_int8``; only
        changed cells are written."""
        s = (self.stored if region == "weights" else self.transposed)[name]
        new = np.asarray(new_int8, dtype=np.int8)
        counts, cell_writes, changed = _WRITE_MEMO.get(self.device, s.values, new, remember=self.memo_writes)
        counts, changed = self.scaled_writes(s, counts, changed)
        stored = new
        verify = self.write_verify
        if verify is not None:  # every written cell is read back
            counts = {**counts, "read": counts.get("read", 0) + round(np.count_nonzero(cell_writes) * s.scale)}
        if self.errors is not None and s.scale == 1.0:
            stored, extra = self._written_with_errors(s.values, new, verify)
            counts = {a: counts.get(a, 0) + extra.get(a, 0) for a in set(counts) | set(extra)}
        # Pulses of a subarray are issued by its write drivers one after another.
        drivers = s.row_tiles * s.col_tiles * self.card.array.write_drivers_per_subarray
        shape = new.shape if s.scale == 1.0 else _whole(new.shape, s.scale, region)
        rec = OpRecord(phase=phase, kind="write", layer=name, region=region, shape=shape,
                       counts=self._write_counts(counts), cycles=self._write_cycles(counts, drivers), drivers=drivers,
                       cell_writes=cell_writes, cell_scale=s.scale, changed_weights=changed)
        s.assign(stored)
        return rec

    @property
    def write_verify(self) -> int | None:
        """Retries of the write-verify-retry policy (None: writes are not verified)."""
        w = getattr(self.device.card, "write", None)
        return w.max_retries if getattr(w, "verify", False) else None

    def _written_with_errors(self, old: np.ndarray, new: np.ndarray, retries: int | None
                             ) -> tuple[np.ndarray, dict[str, int]]:
        """The INT8 codes a rewrite leaves with the device's errors injected, and the retry writes and verify reads
        of the write-verify-retry policy (if any)."""
        stored = self.errors.write_matrix(old, new, _cell_bits, _from_cell_bits)
        extra: dict[str, int] = {}
        for _ in range(retries or 0):
            if np.array_equal(stored, new):
                break
            bits, target = _cell_bits(stored), _cell_bits(new)
            ev = self.device.count_writes(bits, target)
            for action, c in ev.counts.items():
                extra[action] = extra.get(action, 0) + c
            extra["read"] = extra.get("read", 0) + int(np.count_nonzero(ev.cell_writes))
            self.errors.flips["retried"] += int(np.count_nonzero(bits != target))
            stored = self.errors.write_matrix(stored, new, _cell_bits, _from_cell_bits)
        return stored, extra

    def _read_disturb(self, s: StoredMatrix, reads: int) -> None:
        """Inject the read-disturb flips of ``reads`` cell reads spread over a stored matrix."""
        after = self.errors.read_matrix(s.values, reads, _cell_bits, _from_cell_bits)
        if after is not None:
            s.assign(after)


class _WriteMemo:
    """Write counts of recent (old, new) INT8 matrices per device write-count key.

    A device whose :meth:`write_count_key` is not None counts the same writes for the
    same bits whatever its other parameters, so a sweep over pulse energies or
    latencies (which only cost the writes) reuses the counts of the weights it
    programs again and again. Keys hold digests of the matrices; the memo keeps
    at most ``budget`` bytes of per-cell counts, dropping the oldest entries.
    """

    def __init__(self, budget: int = 256 << 20):
        self.budget = budget
        self.entries: OrderedDict[tuple, tuple[dict[str, int], np.ndarray, int]] = OrderedDict()
        self.size = 0

    @staticmethod
    def _digest(a: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(a).data, digest_size=16).digest()

    def get(self, device, old: np.ndarray, new: np.ndarray, remember: bool = True
            ) -> tuple[dict[str, int], np.ndarray, int]:
        dev_key = device.write_count_key() if remember else None
        key = None if dev_key is None else (dev_key, old.shape, self._digest(old), self._digest(new))
        hit = self.entries.get(key) if key is not None else None
        if hit is not None:
            self.entries.move_to_end(key)
            return hit
        ev = device.count_writes(_cell_bits(old), _cell_bits(new))
        value = (dict(ev.counts), _compact(ev.cell_writes), int((old != new).sum()))
        if key is not None and value[1].nbytes <= self.budget:
            value[1].flags.writeable = False  # shared by every op that reuses it
            self.entries[key] = value
            self.size += value[1].nbytes
            while self.size > self.budget:
                _, dropped = self.entries.popitem(last=False)
                self.size -= dropped[1].nbytes
        return value


_WRITE_MEMO = _WriteMemo()


def _whole(shape: tuple[int, int], scale: float, region: str) -> tuple[int, int]:
    """The shape of a whole matrix whose row sample (its columns, for a transposed copy) has ``shape``."""
    return (round(shape[0] * scale), shape[1]) if region != "transposed" else (shape[0], round(shape[1] * scale))


def _transposed(w: np.ndarray, groups: int) -> np.ndarray:
    """The stored transposed copy of ``groups`` K x N matrices stacked along the rows: their N x K transposes."""
    kg, n = w.shape[0] // groups, w.shape[1]
    return np.ascontiguousarray(w.reshape(groups, kg, n).transpose(0, 2, 1).reshape(groups * n, kg))


def _from_cell_bits(bits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The K x N int8 matrix whose cells (:func:`_cell_bits`) are ``bits``."""
    planes = np.asarray(bits, dtype=np.uint8).reshape(shape[0], shape[1], N_BITS)
    u = (planes << np.arange(N_BITS, dtype=np.uint8)).sum(axis=-1, dtype=np.uint16).astype(np.uint8)
    return u.view(np.int8)


def _cell_bits(w: np.ndarray) -> np.ndarray:
    """Cell contents of a K x N int8 matrix laid out as K rows of 8N bit cells (LSB first)."""
    u = w.view(np.uint8)
    bits = (u[..., None] >> np.arange(N_BITS, dtype=np.uint8)) & 1
    return bits.reshape(w.shape[0], w.shape[1] * N_BITS)
