"""What every circuit shares: the array organisation, stored matrices, write accounting and the digital unit.

A circuit composes components (:mod:`imcsim.components`) around an array of a device's cells and implements
one protocol (:class:`ArrayCircuit`):

* store weights (:meth:`store`) and write back changed ones (:meth:`update_weights`), counted by the device;
* each training phase's GEMM with its counts, measured on real operands (``forward``, ``backward_input``,
  ``weight_grad``) or expected from operand statistics (``expected_forward``, ``expected_input_grad``,
  ``expected_weight_grad``) through the same counting code;
* digital work (:meth:`digital_gemm`, :meth:`update_digital`), the area, and the timing view the scheduler
  reads (cycle time, subarray blocks, write drivers, buffer ports).

Circuits do not subclass one another: the bit-serial macro and the analog crossbar each derive from this base
and build their own components.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from imcsim.actions import ActionSpec, ActionTable
from imcsim.circuits.activity import popcount8
from imcsim.circuits.bitplanes import N_BITS, int8_matmul
from imcsim.components import Component
from imcsim.components import memory as chip
from imcsim.components.blocks import (
    ACC_BITS,
    Buffer,
    DigitalUnit,
    DigitalUnitCard,
    FullAdderCard,
    RegisterCard,
    WriteDriver,
    WriteDriverCard,
    partial_sum,
    shift_add,
)
from imcsim.components.power import PowerGatingCard, ProcessCornerCard
from imcsim.devices.base import MemoryDevice
from imcsim.ops import OpRecord
from imcsim.params import Params


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


class MemoryParams(Params):
    """Where the training tensors live (see :mod:`imcsim.workloads.traffic`)."""

    policy: Literal["on_chip_first", "dram", "on_chip"] = Field(
        "on_chip_first",
        description="on_chip_first: master weights and optimizer state, then the activations kept for backward "
                    "(the last layer's first), stay in the global buffer while they fit beside the largest working "
                    "set, the rest goes to DRAM; dram: all of them in DRAM; on_chip: all in the buffer (refused "
                    "when they do not fit)")
    working_set: Literal["batch", "sample"] = Field(
        "batch",
        description="buffer space kept free for the layer that runs: the largest whole-batch working set (input and "
                    "output of every sample; capped at the buffer, a larger one streams the batch in sample tiles), "
                    "or the largest one-sample working set (layers stream their batch sample by sample)")


class SharedComponents(Params):
    """Blocks every circuit has: adder logic, operand buffers, write drivers, the digital unit, and the chip's
    memory: the global buffer, DRAM, the interconnect and the static power of logic."""

    adder_cell: FullAdderCard = Field(description="full-adder cell of the counters, adders and accumulators")
    register_bit: RegisterCard = Field(description="register bit of the operand buffers and accumulators")
    write_driver: WriteDriverCard
    digital_unit: DigitalUnitCard
    global_buffer: chip.GlobalBufferCard = Field(description="on-chip SRAM holding activations, errors, master weights")
    dram: chip.DramCard = Field(description="off-chip DRAM")
    interconnect: chip.InterconnectCard = Field(description="wires between the buffer, the macro and the digital unit")
    logic_leakage: chip.LogicLeakageCard = Field(description="leaking transistor width per area of logic")
    corner: ProcessCornerCard = Field(description="the chip's transistor corner: its logic leaks and runs at it")
    power_gating: PowerGatingCard = Field(description="which idle blocks are power-gated, and what gating costs")


LEVELS = ("array", "periphery", "buffer", "dram", "interconnect", "digital", "leakage")
"""Levels of the energy split: the cells, their peripheral circuits (drivers, sensing, converters, adders,
operand registers, write drivers), the global buffer, DRAM, on-chip wires, the digital unit, static power."""
_LEVEL_OF_ROLE = {"global_buffer": "buffer", "dram": "dram", "interconnect": "interconnect", "digital": "digital",
                  "leakage": "leakage"}


@dataclass(frozen=True)
class LeakDomain:
    """A block that leaks while powered, in the power domain that may gate it
    (:data:`imcsim.components.power.DOMAINS`)."""

    domain: str
    part: str  # the static part its energy is reported under: array, periphery or buffer
    matrix: tuple[str, str] | None  # the stored matrix whose subarrays it is (None: a shared block)
    power_w: float
    area_m2: float
    retentive: bool  # holds state while gated (retention voltage)


def powered_static_w(domains, dram: chip.DramCard) -> dict[str, float]:
    """Static power by part (array, periphery, buffer) of leaking blocks with every one powered, and DRAM's
    active standby."""
    out = {"array": 0.0, "periphery": 0.0, "buffer": 0.0}
    for d in domains:
        out[d.part] += d.power_w
    out["dram"] = dram.background_power_w
    return out


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
    scale: float = 1.0  # rows of the whole matrix per row held in ``values`` (>1: a programmed row sample)
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


class ArrayCircuit:
    """The shared protocol and bookkeeping of a circuit (see the module docstring).

    A circuit sets ``self.blocks`` (role -> :class:`Component`) in :meth:`_build_blocks`; its action table is
    the device's actions plus every block's, keyed ``(role, action)``.
    """

    exact = True  # results equal the integer product, so counting can be separated from computing
    memo_writes = False  # reuse write counts of matrices seen before (cost-only runs program the same ones)

    def __init__(self, card, device: MemoryDevice, t_cycle_s: float):
        self.card = card
        self.device = device
        self.t_cycle_s = t_cycle_s
        self.blocks: dict[str, Component] = self._build_blocks()
        if isinstance(self.blocks.get("interconnect"), chip.Interconnect):
            self.blocks["interconnect"].placed(self.area_m2())
        entries: dict[tuple[str, str], ActionSpec] = {(device.component, a): s for a, s in device.actions().items()}
        for role, block in self.blocks.items():
            entries.update({(role, action): spec for action, spec in block.actions().items()})
        self.actions = ActionTable(entries)
        self.stored: dict[str, StoredMatrix] = {}  # each layer's weights
        self.transposed: dict[str, StoredMatrix] = {}  # stored copies of W^T (``transposed_copy`` dataflow)
        self._used = 0  # subarrays the stored matrices occupy
        self.scratch: dict[str, np.ndarray] = {}  # operand bit planes left in scratch rows, per layer
        self.errors = None  # an ErrorInjector when a functional run injects the device's errors

    def _build_blocks(self) -> dict[str, Component]:
        raise NotImplementedError

    def _shared_blocks(self, c: SharedComponents) -> dict[str, Component]:
        tech = self.card.technology
        pulses = [a for a, spec in self.device.actions().items() if spec.kind == "write_pulse"]
        return {
            "shift_add": shift_add(c.adder_cell, tech, c.register_bit),
            "psum": partial_sum(c.adder_cell, tech),
            "input_buffer": Buffer("input_buffer", c.register_bit, tech, "read_bit"),
            "output_buffer": Buffer("output_buffer", c.register_bit, tech, "write_bit"),
            "write_driver": WriteDriver("write_driver", c.write_driver, tech, pulses),
            "digital": DigitalUnit("digital", c.digital_unit, tech),
            "global_buffer": chip.GlobalBuffer("global_buffer", c.global_buffer, tech),
            "dram": chip.Dram("dram", c.dram, tech),
            "interconnect": chip.Interconnect("interconnect", c.interconnect, tech),
            "logic_leakage": chip.LogicLeakage("logic_leakage", c.logic_leakage, tech, c.corner),
        }

    @property
    def device_components(self) -> frozenset[str]:
        """The components whose actions are the cells' (one per macro of a chip)."""
        return frozenset({self.device.component})

    def assign_layers(self, trainable: Mapping[str, bool]) -> None:
        """Give each layer its macro (a chip of several macros; one macro holds every layer)."""

    def macro_of(self, layer: str) -> str:
        return "main"

    def level(self, component: str) -> str:
        """The level of :data:`LEVELS` a component's energy belongs to."""
        if component == self.device.component:
            return "array"
        return _LEVEL_OF_ROLE.get(component, "periphery")

    # --- the chip's memory ----------------------------------------------------------

    @property
    def buffer(self) -> chip.GlobalBuffer:
        return self.blocks["global_buffer"]

    @property
    def dram(self) -> chip.Dram:
        return self.blocks["dram"]

    def dram_cycles(self, bits: float) -> int:
        """Cycles of moving ``bits`` over every DRAM channel at once."""
        per_cycle = self.dram.card.bits_per_s * self.t_cycle_s
        return math.ceil(bits / per_cycle) if bits > 0 else 0

    def dram_transfer(self, read_bits: int, write_bits: int, phase: str, layer: str, region: str) -> OpRecord:
        """A DRAM transfer: ``read_bits`` read from DRAM into the buffer and ``write_bits`` written out, over the
        chip's wires; its cycles are the channels' (the schedule runs it on the DRAM resource)."""
        bits = read_bits + write_bits
        return OpRecord(phase=phase, kind="transfer", layer=layer, region=region, shape=(bits,), counts={
            ("dram", "read_bit"): read_bits, ("dram", "write_bit"): write_bits, ("interconnect", "bit"): bits,
        }, cycles=self.dram_cycles(bits))

    def macro_area_m2(self) -> float:
        raise NotImplementedError

    def array_area_m2(self) -> float:
        """The macro's cell arrays with their periphery (no write drivers, digital unit or buffer)."""
        return self.macro_area_m2() - self._shared_area_m2()

    def area_m2(self) -> float:
        """Chip area: the macro (cell arrays, peripherals, drivers, digital unit) and the global buffer."""
        return self.macro_area_m2() + self.buffer.area_m2

    def static_power_w(self, temperature_k: float) -> dict[str, float]:
        """Static power with every block powered, by part: the occupied cell arrays (volatile cells only), their
        peripheral logic and the shared logic, the global buffer, and DRAM's active standby."""
        return powered_static_w(self.leakage_domains(temperature_k), self.dram.card)

    def _per_subarray(self, temperature_k: float) -> tuple[float, float, float]:
        """(periphery area m^2, periphery static power W, volatile cells' leakage W) of one subarray."""
        a = self.card.array
        cells = a.rows * a.cols
        area = max(0.0, self.array_area_m2() / a.n_subarrays
                   - cells * self.device.area_per_bit_m2)
        scale = self.card.components.global_buffer.leakage_scale(temperature_k, "temperature")
        return area, self.blocks["logic_leakage"].power_w(area, temperature_k), \
            self.device.leakage_per_bit_w * cells * scale

    def leakage_domains(self, temperature_k: float, shared: bool = True) -> list[LeakDomain]:
        """Every block that leaks while training, in the power domain that gates it: per stored matrix its
        subarrays' periphery (and volatile cells, which keep their state while gated), the macro's write
        drivers, and (``shared``: the macro that holds the chip's shared blocks) the digital unit and the
        global buffer."""
        area, periphery_w, cells_w = self._per_subarray(temperature_k)
        cell_area = self.card.array.rows * self.card.array.cols * self.device.area_per_bit_m2
        leak = self.blocks["logic_leakage"]
        out = []
        for key, s in self.matrices().items():
            n = s.row_tiles * s.col_tiles
            out.append(LeakDomain("periphery", "periphery", key, periphery_w * n, area * n, False))
            if cells_w > 0:
                out.append(LeakDomain("array", "array", key, cells_w * n, cell_area * n, True))
        drivers = self.write_driver_count * self.blocks["write_driver"].area_m2
        out.append(LeakDomain("write_drivers", "periphery", None, leak.power_w(drivers, temperature_k), drivers,
                              False))
        if shared:
            digital = self.blocks["digital"].area_m2
            gb = self.buffer
            out += [LeakDomain("digital", "periphery", None, leak.power_w(digital, temperature_k), digital, False),
                    LeakDomain("buffer", "buffer", None, gb.leakage_w(temperature_k), gb.area_m2, True)]
        return out

    def idle_power_w(self, temperature_k: float, buffer_bits: float, dram_bits: float) -> float:
        """Power of holding the trained state between training sessions: the occupied arrays if their cells are
        volatile, the buffer bits that hold state (master weights, optimizer state), DRAM in self refresh if it
        holds any; everything else power-gated."""
        gb = self.buffer
        return (self._array_leakage_w(temperature_k)
                + gb.leakage_w(temperature_k) * min(1.0, buffer_bits / gb.capacity_bits)
                + (self.dram.card.self_refresh_power_w if dram_bits > 0 else 0.0))

    def _array_leakage_w(self, temperature_k: float) -> float:
        """Leakage of the occupied cell arrays (zero for non-volatile cells); a volatile (6T) cell follows the
        buffer card's temperature law, the same cell's."""
        return self._per_subarray(temperature_k)[2] * self.subarrays_used

    @property
    def macs_per_cycle(self) -> int:
        return self.blocks["digital"].macs_per_cycle

    # --- mapping ----------------------------------------------------------------

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

    def matrices(self) -> dict[tuple[str, str], StoredMatrix]:
        """Every stored matrix by (layer, region): the weights, and the transposed copies if kept."""
        return {**{(k, "weights"): s for k, s in self.stored.items()},
                **{(k, "transposed"): s for k, s in self.transposed.items()}}

    unit = "subarrays"  # what the array's blocks are called in messages

    def _check_room(self, need: int, replacing: set[tuple[str, str]]) -> None:
        held = {"weights": self.stored, "transposed": self.transposed}
        used = self.subarrays_used - sum(held[region][layer].row_tiles * held[region][layer].col_tiles
                                         for layer, region in replacing if layer in held[region])
        if used + need > self.card.array.n_subarrays:
            raise CapacityError(f"weights need {used + need} {self.unit} but the circuit has "
                                f"{self.card.array.n_subarrays}")

    @property
    def write_driver_count(self) -> int:
        a = self.card.array
        return a.write_drivers if a.write_drivers is not None else a.n_subarrays * a.write_drivers_per_subarray

    @property
    def subarrays_used(self) -> int:
        """Subarrays the stored matrices occupy (a running total kept by :meth:`hold`)."""
        return self._used

    def hold(self, region: str, layer: str, matrix: StoredMatrix) -> None:
        """Keep ``matrix`` as the stored ``region`` (weights or transposed) of ``layer``, replacing any before."""
        held = self.stored if region == "weights" else self.transposed
        old = held.get(layer)
        if old is not None:
            self._used -= old.row_tiles * old.col_tiles
        held[layer] = matrix
        self._used += matrix.row_tiles * matrix.col_tiles

    def utilization(self) -> float:
        """Fraction of the cells of the used subarrays that hold weights."""
        a = self.card.array
        used = self.subarrays_used
        if used == 0:
            return 0.0
        cells = sum(s.values.size * self.cells_per_weight for s in self.matrices().values())
        return cells / (used * a.rows * a.cols)

    def _shared_area_m2(self) -> float:
        """Write drivers and the digital unit."""
        return self.write_driver_count * self.blocks["write_driver"].area_m2 + self.blocks["digital"].area_m2

    # --- writes -------------------------------------------------------------------

    def _write_counts(self, device_counts: dict[str, int]) -> dict[tuple[str, str], int]:
        """A write's device actions, and a write-driver action for each pulse the drivers issue."""
        dev = self.device.component
        counts = {(dev, action): c for action, c in device_counts.items()}
        for action, c in device_counts.items():
            if self.actions.kind((dev, action)) == "write_pulse":
                counts[("write_driver", action)] = c
        return counts

    def _write_cycles(self, device_counts: dict[str, int], drivers: int) -> int:
        """Cycles of a write: the pulses (and verify reads) of a region issued by its drivers one after another."""
        dev = self.device.component
        pulse_time = sum(self.actions.latency_s((dev, action)) * c for action, c in device_counts.items())
        return math.ceil(pulse_time / drivers / self.t_cycle_s) if pulse_time else 0

    @staticmethod
    def scaled_writes(s: StoredMatrix, counts: dict[str, int], changed: int) -> tuple[dict[str, int], int]:
        """Write counts of a programmed row sample scaled to the whole matrix (unchanged for a whole matrix)."""
        if s.scale == 1.0:
            return counts, changed
        return {a: round(c * s.scale) for a, c in counts.items()}, round(changed * s.scale)

    def retimed(self, op: OpRecord) -> OpRecord:
        """``op`` with its write cycles from this circuit's pulse latencies (the same write counts re-costed on
        a device whose write counts are the same; ops other than writes are returned as they are)."""
        if op.kind != "write" or not op.drivers:
            return op
        dev = self.device.component
        device_counts = {action: n for (comp, action), n in op.counts.items() if comp == dev}
        return dataclasses.replace(op, cycles=self._write_cycles(device_counts, op.drivers))

    # --- digital unit -------------------------------------------------------------

    def digital_gemm(self, m: int, k: int, n: int, phase: str, layer: str, samples: int = 1,
                     copies: int = 1, extra: dict | None = None, extra_cycles: int = 0,
                     per_sample: bool = False) -> OpRecord:
        """``copies`` INT8 GEMMs (m x k) @ (k x n) in the digital unit (a grouped layer, or one per head).

        ``extra`` are counts of work done first (weights read out of the array) taking ``extra_cycles``
        before the first sample's share; with ``per_sample`` each of ``samples`` samples takes an equal
        share of the cycles (the copies are split by sample, as attention heads of a batch are).
        """
        counts = Counter(extra or {})
        counts[("digital", "mac_int8")] += m * k * n * copies
        counts[("input_buffer", "read_bit")] += (m * k + k * n) * N_BITS * copies
        counts[("output_buffer", "write_bit")] += m * n * ACC_BITS * copies
        macs = self.macs_per_cycle
        cycles = math.ceil(m * k * n / macs) * copies
        if per_sample:
            chunks = np.full(samples, cycles // samples, dtype=np.int64)
            cycles = int(chunks.sum())
        else:
            chunks = np.array([math.ceil(c * k * n / macs) * copies for c in chunk_sizes(m, samples)],
                              dtype=np.int64)
        chunks[0] += extra_cycles
        return OpRecord(phase=phase, kind="digital", layer=layer, counts=counts, cycles=cycles + extra_cycles,
                        shape=(m, k, n), chunk_cycles=chunks, macs=m * k * n * copies)

    def digital_elementwise(self, ops: dict[str, int], phase: str, layer: str) -> OpRecord:
        """Elementary ops of weight-free work on activations in the digital unit (``ops``: count per action:
        ``compare``, ``fp32_add``, ``fp32_mul``, ``requant``), one per lane per cycle, as one burst (one schedule
        task per layer and phase: a model of thousands of layers stays cheap to schedule)."""
        n = sum(ops.values())
        return OpRecord(phase=phase, kind="digital", layer=layer, counts={("digital", k): v for k, v in ops.items()},
                        cycles=math.ceil(n / self.macs_per_cycle), shape=(n,))

    def weight_grad(self, x_int8: torch.Tensor, dy_int8: torch.Tensor, name: str, samples: int = 1
                    ) -> tuple[torch.Tensor, list[OpRecord]]:
        """``x^T @ dy`` (K x N) in the digital unit; exact."""
        dw = int8_matmul(x_int8.t().contiguous(), dy_int8)
        return dw, [self.digital_gemm(x_int8.shape[0], x_int8.shape[1], dy_int8.shape[1], phase="weight_grad",
                                      layer=name, samples=samples)]

    def expected_weight_grad(self, m: int, k: int, n: int, groups: int, samples: int, x_density: list[float],
                             dy_density: list[float], layer: str, rng: np.random.Generator) -> list[OpRecord]:
        """Counts of ``x^T @ dy`` in the digital unit (cost-only mode): the same op as :meth:`weight_grad`."""
        return [self.digital_gemm(m, k, n, phase="weight_grad", layer=layer, samples=samples, copies=groups)]

    def update_digital(self, name: str, n_params: int) -> OpRecord:
        """Counted FP32 optimizer step on ``n_params`` master weights kept in SRAM."""
        return OpRecord(phase="update", kind="digital", layer=name, shape=(n_params,), counts={
            ("digital", "fp32_update"): n_params,
            ("global_buffer", "read_bit"): n_params * 32,
            ("global_buffer", "write_bit"): n_params * 32,
        }, cycles=math.ceil(n_params / self.macs_per_cycle))


def chunk_sizes(m: int, samples: int) -> np.ndarray:
    """Vectors in each sample's chunk when ``m`` vectors belong to ``samples`` samples (in order)."""
    rows = math.ceil(m / max(1, samples)) if m else 1
    return np.array([min(rows, m - start) for start in range(0, m, rows)] or [0], dtype=np.int64)


class CapacityError(ValueError):
    """The workload's stored weights do not fit in the macro's subarrays."""


class MappingError(ValueError):
    """The circuit has no mapping for a layer of the workload."""
