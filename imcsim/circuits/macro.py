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
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec, ActionTable
from imcsim.circuits.activity import popcount8, stream_activity
from imcsim.circuits.bitplanes import N_BITS, bit_planes, int8_matmul
from imcsim.devices.base import MemoryDevice
from imcsim.errors import PhysicsError
from imcsim.params import AreaM2, EnergyJ, FrequencyHz, LengthM, Params, VoltageV

ACC_BITS = 32  # width of output accumulators (INT32 partial sums)
# A binary counter increment toggles 1 + 1/2 + 1/4 + ... < 2 bits on average.
COUNTER_TOGGLES_PER_INCREMENT = 2.0


class ComponentParams(Params):
    """A peripheral's cost at its reference node; scaled to the macro's node.

    Energy scales with switched capacitance (proportional to F) and V^2; area
    with F^2 (first-order CMOS scaling, Dennard et al., IEEE JSSC 9(5), 1974).
    """

    energy_j: EnergyJ = Field(alias="energy", ge=0.0, le=1e-9, description="energy per action")
    area_m2: AreaM2 = Field(alias="area", ge=0.0, le=1e-6, description="area per instance")
    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9, description="reference technology node")
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0, description="reference supply voltage")

    def scaled(self, node_m: float, vdd_v: float) -> tuple[float, float]:
        """(energy J, area m^2) at ``node_m`` and ``vdd_v``."""
        s = node_m / self.node_m
        return self.energy_j * s * (vdd_v / self.vdd_v) ** 2, self.area_m2 * s * s


class TechnologyParams(Params):
    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9)
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0)
    clock_hz: FrequencyHz = Field(alias="clock", gt=1e6, le=1e10)


class ArrayParams(Params):
    rows: int = Field(ge=2, le=1 << 16, description="cells per column of one subarray")
    cols: int = Field(ge=8, le=1 << 16, description="cells per row of one subarray")
    n_subarrays: int = Field(ge=1, le=1 << 24, description="subarrays in the macro")
    rows_per_sense: int = Field(1, ge=1, le=1 << 16, description="lines sensed together in one cycle")
    write_drivers_per_subarray: int = Field(1, ge=1, le=1 << 12)
    write_drivers: int | None = Field(
        None, ge=1, le=1 << 24,
        description="write drivers the macro has, shared by the subarrays through the write bus "
                    "(default: write_drivers_per_subarray for every subarray)",
    )
    scratch_subarrays: int = Field(
        16, ge=1, le=1 << 20, description="subarrays that hold operand bit planes for the in-array weight gradient"
    )


class BufferParams(Params):
    ports: int = Field(2, ge=1, le=1 << 10, description="buffer ports that move operands in and results out")
    bits_per_cycle: int = Field(256, ge=1, le=1 << 20, description="bits one port moves per cycle")


class DataflowParams(Params):
    skip_zero_planes: bool = Field(True, description="skip all-zero input planes (no cycle spent)")
    input_grad: Literal["transposable_read", "transposed_copy", "digital"] = Field(
        "transposable_read",
        description="dy @ W^T by reading W along its columns, from a second stored copy of W^T "
                    "(twice the cells and writes), or in the digital unit",
    )
    weight_grad: Literal["digital", "in_array"] = Field(
        "digital",
        description="x^T @ dy in the near-memory digital unit, or in array by AND-sensing pairs of operand "
                    "bit-plane rows written into scratch subarrays (the writes are counted)",
    )


class PeripheralParams(Params):
    sense_amp: ComponentParams = Field(description="one sense of one column")
    full_adder: ComponentParams = Field(description="one 1-bit full-adder operation")
    register_bit: ComponentParams = Field(description="one bit read or written in a buffer register")
    wordline_cell: ComponentParams = Field(description="driving a line: energy per cell on the line")
    write_driver: ComponentParams = Field(description="driver overhead of one write pulse")


class DigitalParams(Params):
    mac_int8: ComponentParams = Field(description="one INT8 multiply with INT32 accumulate")
    fp32_update: ComponentParams = Field(description="one FP32 SGD update of one parameter (mul + add)")
    sram_bit: ComponentParams = Field(description="one bit read or written in the master-weight SRAM")
    macs_per_cycle: int = Field(ge=1, le=1 << 20)


class BitSerialMacroCard(Params):
    """A bit-serial digital IMC macro card (``kind: bitserial_macro``)."""

    kind: Literal["bitserial_macro"]
    description: str
    references: dict[str, str]
    technology: TechnologyParams
    array: ArrayParams
    dataflow: DataflowParams = DataflowParams()
    buffer: BufferParams = BufferParams()
    peripherals: PeripheralParams
    digital: DigitalParams


@dataclass
class OpRecord:
    """One counted operation of the op stream (a GEMM phase, a write-back, digital work)."""

    phase: str
    layer: str
    kind: str
    counts: Counter = field(default_factory=Counter)
    cycles: int = 0
    shape: tuple[int, ...] = ()
    cell_writes: np.ndarray | None = None
    task: str = ""
    module: str = ""  # the workload layer the op belongs to
    step: int = -1  # training step (-1: deployment)
    # Cycles of each sample's share of the op (operands split by sample), for the event schedule;
    # None: the op is one indivisible burst of ``cycles``.
    chunk_cycles: np.ndarray | None = None
    plane_ones: np.ndarray | None = None  # 1 bits per plane of the streamed operand (activity statistics)
    changed_weights: int = 0  # write-back: weights whose INT8 code changed


def _compact(counts: np.ndarray) -> np.ndarray:
    """Per-cell write counts in the smallest unsigned type that holds them (a run keeps one per write op)."""
    top = int(counts.max()) if counts.size else 0
    return counts.astype(np.min_scalar_type(top), copy=False) if counts.min(initial=0) >= 0 else counts


@dataclass
class StoredMatrix:
    """An INT8 matrix held in the array: its layout and current bits."""

    name: str
    values: np.ndarray  # int8, K x N (groups: their K x N matrices stacked along the rows)
    row_tiles: int
    col_tiles: int
    groups: int = 1
    _ones: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def ones(self, axis: int) -> np.ndarray:
        """1 bits of the stored codes summed along ``axis`` (1: per row, 0: per column); cached until a write."""
        cached = self._ones.get(axis)
        if cached is None:
            cached = self._ones[axis] = popcount8(self.values.view(np.uint8)).sum(axis=axis)
        return cached

    def assign(self, new: np.ndarray) -> None:
        """Replace the stored codes (the caller counts the writes)."""
        self.values[...] = new
        self._ones.clear()


class BitSerialMacro:
    """A macro built from a card and a device model; executes and counts GEMMs."""

    exact = True  # results equal the integer product, so counting can be separated from computing
    memo_writes = False  # reuse write counts of matrices seen before (cost-only runs program the same ones)

    def __init__(self, card: BitSerialMacroCard, device: MemoryDevice, _check_bits: bool = True):
        if _check_bits and device.bits_per_cell != 1:
            raise PhysicsError(
                f"a bit-serial digital macro senses one bit per cell; the device stores {device.bits_per_cell} "
                "bits per cell (use a 1-bit device card or an analog crossbar)",
                key="kind",
            )
        self.card = card
        self.device = device
        tech = card.technology
        self.t_cycle_s = max(1.0 / tech.clock_hz, device.actions()["read"].cost.latency_s)
        components = {
            name: getattr(group, name)
            for group in (card.peripherals, card.digital)
            for name in type(group).model_fields
            if isinstance(getattr(group, name), ComponentParams)
        }
        components.update(self._extra_components())
        self._scaled = {name: c.scaled(tech.node_m, tech.vdd_v) for name, c in components.items()}
        self.actions = self._build_actions()
        self.stored: dict[str, StoredMatrix] = {}
        self.scratch: dict[str, np.ndarray] = {}  # operand bit planes left in scratch rows, per layer

    # --- costs ----------------------------------------------------------------

    def _extra_components(self) -> dict[str, ComponentParams]:
        """Components a subclass's card adds beyond ``peripherals`` and ``digital``."""
        return {}

    def energy(self, name: str) -> float:
        return self._scaled[name][0]

    def area(self, name: str) -> float:
        return self._scaled[name][1]

    @property
    def counter_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.card.array.rows + 1)))

    def _build_actions(self) -> ActionTable:
        a = self.card.array
        e_fa = self.energy("full_adder")
        t = self.t_cycle_s
        dev = self.device
        entries: dict[tuple[str, str], ActionSpec] = {}
        for action, spec in dev.actions().items():
            entries[(dev.component, action)] = spec
        wd = self.energy("write_driver")
        for action in dev.actions():
            if action.endswith("_pulse"):
                entries[("write_driver", action)] = ActionSpec(
                    ActionCost(wd, 0.0), f"driver overhead of one {action.replace('_', ' ')}"
                )
        combine_bits = (N_BITS - 1) * (self.counter_bits + N_BITS)
        entries.update(
            {
                ("sense_amp", "sense"): ActionSpec(ActionCost(self.energy("sense_amp"), t), "one column sensed"),
                ("row_driver", "activate_row"): ActionSpec(
                    ActionCost(self.energy("wordline_cell") * a.cols, 0.0), "one row line driven across a subarray"
                ),
                ("col_driver", "activate_col"): ActionSpec(
                    ActionCost(self.energy("wordline_cell") * a.rows, 0.0), "one bit-column driven down a subarray"
                ),
                ("column_counter", "increment"): ActionSpec(
                    ActionCost(e_fa * COUNTER_TOGGLES_PER_INCREMENT, 0.0),
                    "a sensed AND result of 1 increments a column popcount counter",
                ),
                ("adder_tree", "combine"): ActionSpec(
                    ActionCost(e_fa * combine_bits, 0.0), "8 weight-bit counts of one output combined with shifts"
                ),
                ("shift_add", "accumulate"): ActionSpec(
                    ActionCost(e_fa * ACC_BITS, 0.0), "one plane result shifted into a 32-bit accumulator"
                ),
                ("psum", "add"): ActionSpec(ActionCost(e_fa * ACC_BITS, 0.0), "32-bit partial sum across row tiles"),
                ("popcount_tree", "reduce"): ActionSpec(
                    ActionCost(e_fa * popcount_tree_bit_adds(a.cols), 0.0),
                    "popcount of one row of AND results across a subarray's columns",
                ),
                ("input_buffer", "read_bit"): ActionSpec(ActionCost(self.energy("register_bit"), 0.0), "one bit"),
                ("output_buffer", "write_bit"): ActionSpec(ActionCost(self.energy("register_bit"), 0.0), "one bit"),
                ("digital", "mac_int8"): ActionSpec(ActionCost(self.energy("mac_int8"), 0.0), "INT8 MAC"),
                ("digital", "fp32_update"): ActionSpec(
                    ActionCost(self.energy("fp32_update"), 0.0), "FP32 SGD update of one parameter"
                ),
                ("sram", "read_bit"): ActionSpec(ActionCost(self.energy("sram_bit"), 0.0), "master weight bit"),
                ("sram", "write_bit"): ActionSpec(ActionCost(self.energy("sram_bit"), 0.0), "master weight bit"),
            }
        )
        return ActionTable(entries)

    # --- mapping --------------------------------------------------------------

    @property
    def cells_per_weight(self) -> int:
        """Cells one INT8 weight occupies."""
        return math.ceil(N_BITS / self.device.bits_per_cell)

    def tiles_for(self, k: int, n: int, groups: int = 1) -> tuple[int, int]:
        """(row tiles, column tiles) of ``groups`` K x N matrices.

        Groups that fit in one subarray are packed block-diagonally, as many side by
        side as rows and columns allow; larger groups are tiled one after another.
        """
        a = self.card.array
        cpw = self.cells_per_weight
        if groups > 1 and k <= a.rows and n * cpw <= a.cols:
            per = min(a.rows // k, a.cols // (n * cpw))
            return math.ceil(groups / per), 1
        return groups * math.ceil(k / a.rows), math.ceil(n * cpw / a.cols)

    def placement(self, name: str, k: int, n: int, groups: int = 1) -> dict[str, tuple[int, int]]:
        """What :meth:`store` programs for ``groups`` K x N matrices under ``name``: each stored matrix's
        (row tiles, column tiles); with the ``transposed_copy`` input-gradient dataflow, W^T as well.

        The subarrays a matrix takes are the product of its tiles (see :meth:`tiles_for`).
        """
        placed = {name: self.tiles_for(k, n, groups)}
        if self.card.dataflow.input_grad == "transposed_copy":
            placed[transposed_name(name)] = self.tiles_for(n, k, groups)
        return placed

    def store(self, name: str, w_int8: np.ndarray, groups: int = 1) -> list[OpRecord]:
        """Program a K x N INT8 matrix (or ``groups`` of them stacked along the rows) into fresh subarrays.

        Counted as deployment writes. With the ``transposed_copy`` input-gradient
        dataflow, W^T (of each group) is stored as well.
        """
        w = np.asarray(w_int8, dtype=np.int8)
        kg, n = w.shape[0] // groups, w.shape[1]
        placed = self.placement(name, kg, n, groups)
        copies = {name: w}
        if transposed_name(name) in placed:
            copies[transposed_name(name)] = np.ascontiguousarray(
                w.reshape(groups, kg, n).transpose(0, 2, 1).reshape(groups * n, kg))
        need = sum(math.prod(tiles) for tiles in placed.values())
        used = sum(s.row_tiles * s.col_tiles for s in self.stored.values() if s.name not in copies)
        if used + need > self.card.array.n_subarrays:
            raise CapacityError(
                f"weights need {used + need} subarrays but the macro has {self.card.array.n_subarrays}"
            )
        for key, m in copies.items():
            self.stored[key] = StoredMatrix(key, np.zeros_like(m), *placed[key], groups=groups)
        return [self.write_back(key, m, phase="deploy") for key, m in copies.items()]

    def update_weights(self, name: str, new_int8: np.ndarray) -> list[OpRecord]:
        """Write back a layer's new INT8 weights, and its transposed copy if one is kept."""
        recs = [self.write_back(name, new_int8)]
        t_name = transposed_name(name)
        if t_name in self.stored:
            g = self.stored[name].groups
            w = np.asarray(new_int8)
            kg, n = w.shape[0] // g, w.shape[1]
            recs.append(self.write_back(t_name, np.ascontiguousarray(
                w.reshape(g, kg, n).transpose(0, 2, 1).reshape(g * n, kg))))
        return recs

    @property
    def write_driver_count(self) -> int:
        a = self.card.array
        return a.write_drivers if a.write_drivers is not None else a.n_subarrays * a.write_drivers_per_subarray

    @property
    def subarrays_used(self) -> int:
        return sum(s.row_tiles * s.col_tiles for s in self.stored.values())

    def utilization(self) -> float:
        """Fraction of the cells of the used subarrays that hold weights."""
        a = self.card.array
        used = self.subarrays_used
        if used == 0:
            return 0.0
        cells = sum(s.values.size * self.cells_per_weight for s in self.stored.values())
        return cells / (used * a.rows * a.cols)

    def area_m2(self) -> float:
        """Macro area: cell arrays, per-column peripherals, and the digital unit."""
        a = self.card.array
        per_col = self.area("sense_amp") + self.counter_bits * self.area("full_adder")
        per_sub = (
            a.rows * a.cols * self.device.area_per_bit_m2
            + a.cols * per_col
            + (a.cols // N_BITS) * ACC_BITS * (self.area("full_adder") + self.area("register_bit"))
        )
        digital = self.card.digital.macs_per_cycle * self.area("mac_int8")
        return a.n_subarrays * per_sub + self.write_driver_count * self.area("write_driver") + digital

    # --- execution ------------------------------------------------------------

    def _stream_counts(
        self, x: torch.Tensor, line_len: int, cells_per_line: int, lines_per_bit: int, n_out: int, phase: str,
        layer: str, other_tiles: int, stored_ones: np.ndarray, samples: int = 1,
    ) -> OpRecord:
        """Counts of streaming int8 ``x`` (M x line_len) bit-serially against stored lines.

        ``stored_ones[l]`` is the number of 1 cells a 1 bit of ``x[:, l]`` meets (summed over
        the lines it activates): each such AND result increments a column counter.
        """
        a = self.card.array
        m = x.shape[0]
        # Lines are rows (forward: a.rows per subarray) or bit-columns (transposed: a.cols).
        lines_per_tile = a.rows if lines_per_bit == 1 else a.cols
        tile_len = max(1, lines_per_tile // lines_per_bit)
        tiles_along = math.ceil(line_len / tile_len)
        plane_ones, active_passes, cycles, increments = stream_activity(
            x.numpy().view(np.uint8), tile_len, a.rows_per_sense, lines_per_bit, stored_ones,
            self.card.dataflow.skip_zero_planes, chunk_rows=math.ceil(m / max(1, samples)),
        )
        cycles_per_tile = cycles.sum(axis=0)
        ones = int(plane_ones.sum())
        lines = ones * lines_per_bit
        rec = OpRecord(phase=phase, layer=layer, kind="gemm", shape=(m, line_len, n_out))
        dev = self.device.component
        line_action = ("row_driver", "activate_row") if lines_per_bit == 1 else ("col_driver", "activate_col")
        rec.counts[line_action] = lines * other_tiles
        rec.counts[(dev, "read")] = lines * cells_per_line
        rec.counts[("sense_amp", "sense")] = int(cycles_per_tile.sum()) * cells_per_line
        rec.counts[("column_counter", "increment")] = int(increments)
        rec.counts[("adder_tree", "combine")] = int(active_passes) * n_out
        rec.counts[("shift_add", "accumulate")] = int(active_passes) * n_out
        rec.counts[("psum", "add")] = m * n_out * (tiles_along - 1)
        rec.counts[("input_buffer", "read_bit")] = m * line_len * N_BITS
        rec.counts[("output_buffer", "write_bit")] = m * n_out * ACC_BITS
        # Tiles along the stream run in parallel subarrays; the slowest one sets the time,
        # plus one cycle for the combine/accumulate pipeline to drain.
        rec.cycles = int(cycles_per_tile.max()) + 1 if active_passes else 0
        per_chunk = cycles.max(axis=1)
        rec.chunk_cycles = per_chunk + (per_chunk > 0)
        rec.plane_ones = plane_ones
        return rec

    def forward(self, x_int8: torch.Tensor, name: str, phase: str = "forward", count: bool = True,
                samples: int = 1) -> tuple[torch.Tensor, OpRecord | None]:
        """``x @ W`` with W stored under ``name``: exact int32 result and its counts (if ``count``)."""
        y = int8_matmul(x_int8, torch.from_numpy(self.stored[name].values))
        return y, (self.forward_counts(x_int8, name, phase, samples) if count else None)

    def forward_counts(self, x_int8: torch.Tensor, name: str, phase: str = "forward", samples: int = 1) -> OpRecord:
        """The counts of ``x @ W`` (see :meth:`forward`) without computing the product."""
        s = self.stored[name]
        k, n = s.values.shape
        return self._stream_counts(
            x_int8, line_len=k, cells_per_line=n * N_BITS, lines_per_bit=1, n_out=n, phase=phase, layer=name,
            other_tiles=s.col_tiles, stored_ones=s.ones(1), samples=samples,
        )

    def backward_input(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> tuple[torch.Tensor, OpRecord]:
        """``dy @ W^T`` for W stored under ``name``, per the card's input-gradient dataflow."""
        dx = int8_matmul(dy_int8, torch.from_numpy(self.stored[name].values).t().contiguous())
        return dx, self.backward_input_counts(dy_int8, name, samples)

    def backward_input_counts(self, dy_int8: torch.Tensor, name: str, samples: int = 1) -> OpRecord:
        """The counts of ``dy @ W^T`` (see :meth:`backward_input`) without computing the product."""
        s = self.stored[name]
        k, n = s.values.shape
        flow = self.card.dataflow.input_grad
        if flow == "transposable_read":
            rec = self._stream_counts(
                dy_int8, line_len=n, cells_per_line=k, lines_per_bit=N_BITS, n_out=k, phase="input_grad",
                layer=name, other_tiles=s.row_tiles, stored_ones=s.ones(0),
                samples=samples,
            )
        elif flow == "transposed_copy":
            t = self.stored[transposed_name(name)]
            rec = self._stream_counts(
                dy_int8, line_len=n, cells_per_line=k * N_BITS, lines_per_bit=1, n_out=k, phase="input_grad",
                layer=name, other_tiles=t.col_tiles, stored_ones=t.ones(1),
                samples=samples,
            )
        else:
            m = dy_int8.shape[0]
            rec = self.digital_gemm(m, n, k, phase="input_grad", layer=name, samples=samples)
            rec.counts[(self.device.component, "read")] += k * n * N_BITS
            rec.counts[("sense_amp", "sense")] += k * n * N_BITS
            rec.counts[("row_driver", "activate_row")] += k * s.col_tiles
            read = math.ceil(k / s.row_tiles) if s.row_tiles else 0  # weights read out once, row tiles in parallel
            rec.cycles += read
            rec.chunk_cycles[0] += read
        return rec

    def digital_gemm(self, m: int, k: int, n: int, phase: str, layer: str, samples: int = 1,
                      copies: int = 1) -> OpRecord:
        """``copies`` INT8 GEMMs (m x k) @ (k x n) in the digital unit (a grouped layer, or one per head)."""
        rec = OpRecord(phase=phase, layer=layer, kind="digital", shape=(m, k, n))
        rec.counts[("digital", "mac_int8")] = m * k * n * copies
        rec.counts[("input_buffer", "read_bit")] = (m * k + k * n) * N_BITS * copies
        rec.counts[("output_buffer", "write_bit")] = m * n * ACC_BITS * copies
        macs = self.card.digital.macs_per_cycle
        rec.cycles = math.ceil(m * k * n / macs) * copies
        rec.chunk_cycles = np.array([math.ceil(c * k * n / macs) * copies for c in chunk_sizes(m, samples)],
                                    dtype=np.int64)
        return rec

    def weight_grad(self, x_int8: torch.Tensor, dy_int8: torch.Tensor, name: str, samples: int = 1
                    ) -> tuple[torch.Tensor, list[OpRecord]]:
        """``x^T @ dy`` (K x N), per the card's weight-gradient dataflow; exact either way."""
        dw = int8_matmul(x_int8.t().contiguous(), dy_int8)
        m, k = x_int8.shape
        n = dy_int8.shape[1]
        if self.card.dataflow.weight_grad == "digital":
            return dw, [self.digital_gemm(m, k, n, phase="weight_grad", layer=name, samples=samples)]
        return dw, self._in_array_weight_grad(x_int8, dy_int8, name)

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
        a = self.card.array
        m, k = x.shape
        n = dy.shape[1]
        lines = a.rows // N_BITS
        if lines < 2:
            raise CapacityError(f"in-array weight gradient needs >= {2 * N_BITS} rows per subarray (has {a.rows})")
        k_c = min(k, max(1, round(lines * k / (k + n))), lines - 1)
        n_c = min(n, lines - k_c)
        groups_k, groups_n = math.ceil(k / k_c), math.ceil(n / n_c)
        col_tiles = math.ceil(m / a.cols)
        xp = bit_planes(x.t().contiguous().numpy())  # (8, K, M)
        dp = bit_planes(dy.t().contiguous().numpy())  # (8, N, M)
        skip = self.card.dataflow.skip_zero_planes
        ax = xp.any(axis=2).sum(axis=0) if skip else np.full(k, N_BITS)  # non-zero planes per x column
        bd = dp.any(axis=2).sum(axis=0) if skip else np.full(n, N_BITS)
        pairs = int(ax.sum()) * int(bd.sum())
        rec = OpRecord(phase="weight_grad", layer=name, kind="gemm", shape=(m, k, n))
        dev = self.device.component
        rec.counts[("row_driver", "activate_row")] = 2 * pairs * col_tiles
        rec.counts[(dev, "read")] = 2 * pairs * m
        rec.counts[("sense_amp", "sense")] = pairs * m
        rec.counts[("popcount_tree", "reduce")] = pairs * col_tiles
        rec.counts[("shift_add", "accumulate")] = pairs
        rec.counts[("psum", "add")] = k * n * (col_tiles - 1)
        rec.counts[("input_buffer", "read_bit")] = (m * k + m * n) * N_BITS
        rec.counts[("output_buffer", "write_bit")] = k * n * ACC_BITS
        parallel = max(1, min(groups_k * groups_n * col_tiles, a.scratch_subarrays))
        rec.cycles = math.ceil(pairs * col_tiles / parallel) + (1 if pairs else 0)
        # Operand writes into the scratch rows: one replica of each operand's planes is
        # tracked cell by cell; the replicas add the same counts again.
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
        ev_x = self.device.count_writes(old_bits[: N_BITS * k], new_bits[: N_BITS * k])
        ev_d = self.device.count_writes(old_bits[N_BITS * k :], new_bits[N_BITS * k :])
        wrec = OpRecord(phase="weight_grad", layer=f"{name}#operands", kind="write", shape=new_bits.shape,
                        cell_writes=_compact(np.concatenate([ev_x.cell_writes, ev_d.cell_writes])))
        for action in set(ev_x.counts) | set(ev_d.counts):
            c = ev_x.counts.get(action, 0) * groups_n + ev_d.counts.get(action, 0) * groups_k
            wrec.counts[(dev, action)] = c
            if action.endswith("_pulse"):
                wrec.counts[("write_driver", action)] = c
        pulse_time = sum(self.actions[(comp, act)].cost.latency_s * c for (comp, act), c in wrec.counts.items()
                         if comp == dev)
        drivers = parallel * a.write_drivers_per_subarray
        wrec.cycles = math.ceil(pulse_time / drivers / self.t_cycle_s) if pulse_time else 0
        return [wrec, rec]

    def update_digital(self, name: str, n_params: int) -> OpRecord:
        """Counted FP32 optimizer step on ``n_params`` master weights kept in SRAM."""
        rec = OpRecord(phase="update", layer=name, kind="digital", shape=(n_params,))
        rec.counts[("digital", "fp32_update")] = n_params
        rec.counts[("sram", "read_bit")] = n_params * 32
        rec.counts[("sram", "write_bit")] = n_params * 32
        rec.cycles = math.ceil(n_params / self.card.digital.macs_per_cycle)
        return rec

    def write_back(self, name: str, new_int8: np.ndarray, phase: str = "update") -> OpRecord:
        """Rewrite the stored matrix to ``new_int8``; only changed cells are written."""
        s = self.stored[name]
        new = np.asarray(new_int8, dtype=np.int8)
        k, n = new.shape
        counts, cell_writes, changed = _WRITE_MEMO.get(self.device, s.values, new, remember=self.memo_writes)
        rec = OpRecord(phase=phase, layer=name, kind="write", shape=(k, n), cell_writes=cell_writes,
                       changed_weights=changed)
        comp = self.device.component
        for action, count in counts.items():
            rec.counts[(comp, action)] = count
            if action.endswith("_pulse"):
                rec.counts[("write_driver", action)] = count
        # Write latency: pulses of a subarray are issued by its write drivers one after another.
        drivers = s.row_tiles * s.col_tiles * self.card.array.write_drivers_per_subarray
        pulse_time = sum(self.actions[(comp, a)].cost.latency_s * c for a, c in counts.items())
        rec.cycles = math.ceil(pulse_time / drivers / self.t_cycle_s) if pulse_time else 0
        s.assign(new)
        return rec


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


def chunk_sizes(m: int, samples: int) -> np.ndarray:
    """Vectors in each sample's chunk when ``m`` vectors belong to ``samples`` samples (in order)."""
    rows = math.ceil(m / max(1, samples)) if m else 1
    return np.array([min(rows, m - start) for start in range(0, m, rows)] or [0], dtype=np.int64)


def popcount_tree_bit_adds(width: int) -> int:
    """Full-adder operations of a binary popcount tree over ``width`` bits.

    Level l (1-based) adds width / 2^l pairs of l-bit numbers: sum_l (width / 2^l) * l.
    """
    total, level, inputs = 0, 1, width
    while inputs > 1:
        pairs = inputs // 2
        total += pairs * level
        inputs = pairs + inputs % 2
        level += 1
    return total


def transposed_name(name: str) -> str:
    """Name under which the transposed copy of stored matrix ``name`` is kept."""
    return f"{name}^T"


class CapacityError(ValueError):
    """The workload's stored weights do not fit in the macro's subarrays."""


class MappingError(ValueError):
    """The circuit has no mapping for a layer of the workload."""


def _cell_bits(w: np.ndarray) -> np.ndarray:
    """Cell contents of a K x N int8 matrix laid out as K rows of 8N bit cells (LSB first)."""
    u = w.view(np.uint8)
    bits = (u[..., None] >> np.arange(N_BITS, dtype=np.uint8)) & 1
    return bits.reshape(w.shape[0], w.shape[1] * N_BITS)
