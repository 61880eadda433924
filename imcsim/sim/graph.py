"""Task graph of a training step: the model, the dependency rules, and what each op costs in time and energy.

A step's op stream becomes a task graph (:func:`build_step_graph`):

* **Tasks** are tile operations, never single MACs: one sample's bit-serial
  pass through a layer's subarray block (a GEMM op is split by sample so
  layers and samples pipeline), one sample's share of a digital GEMM, a
  row-write burst that rewrites a layer, a digital optimizer update.
* **Segments**: a task holds resources in sequence: a buffer port to load its
  operand, its compute resource, a buffer port to store its result. A write
  burst holds its subarray block (a write blocks reads of the same subarrays)
  and the write drivers it uses together.
* **Resources**: one per stored matrix (its block of subarrays), the scratch
  subarrays of the in-array weight gradient, the near-memory digital unit,
  the buffer ports, the pool of write drivers, and the DRAM channels (one
  transfer at a time, striped over every channel).
* **DRAM transfers** (:mod:`imcsim.workloads.traffic`): the step's input
  batch is read before the first layers' forward pass; a spilled kept
  activation is written sample by sample after its layer's forward pass on
  that sample and read back before its backward pass on it; master state is
  read before its update and written after.
* **Dependencies** follow the layer dataflow (:mod:`imcsim.workloads.dataflow`):
  a layer's forward on sample s waits for its producers' forward on s (on every
  sample across a training-mode batch norm); a layer's gradients wait for its
  consumers' input gradients; the write-back of a layer waits for every read of
  it in the step and for its weight gradient.

The structure depends only on the step's shape (:func:`step_key`); durations
and energies come from the ops' value vectors (:func:`op_values`), so a graph
built once is refilled (:meth:`TaskGraph.fill`) for every later step of the
same shape. :mod:`imcsim.sim.engine` schedules the graph.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imcsim.actions import ActionTable
from imcsim.ops import OpRecord, region_label
from imcsim.workloads.dataflow import LayerGraph

BUFFER = "buffer"
DIGITAL = "digital"
SCRATCH = "scratch"
DRAM = "dram"
WRITE_DRIVERS = "write_drivers"
ARRAY_PREFIX = "array:"


# Where a segment's duration comes from, in its op's value vector (see :func:`op_values`).
SLOT_IN, SLOT_OUT, SLOT_WHOLE, SLOT_CHUNK0 = 0, 1, 2, 3


@dataclass(frozen=True)
class Segment:
    """One hold of one or more resources (``(name, units)``); its duration is slot ``slot`` of its op's values."""

    resources: tuple[tuple[str, int], ...]
    slot: int


@dataclass
class Task:
    """One tile operation: its segments in order and the tasks (indices) it waits for."""

    name: str
    phase: str
    layer: str
    segments: list[Segment]
    deps: list[int]
    op: int  # index of the op (in the step's op list) the task is part of
    chunk: int = -1  # the sample chunk it covers (-1: the whole op)
    main: int = 0  # index of the segment that does the task's work (the one its energy is spread over)
    region: str = "weights"  # the cells of ``layer`` the task works on (see :mod:`imcsim.ops`)


@dataclass
class Resources:
    """Capacities (units) and, for array blocks, the subarrays each one stands for."""

    capacity: dict[str, int]
    subarrays: dict[str, int] = field(default_factory=dict)


@dataclass
class FlatGraph:
    """A task graph's structure as flat arrays (computed once per structure, shared by its fills)."""

    seg_ptr: np.ndarray  # per task: its segments
    seg_op: np.ndarray
    seg_slot: np.ndarray
    task_op: np.ndarray
    task_chunk: np.ndarray
    dep_ptr: np.ndarray
    dep_idx: np.ndarray
    res_ptr: np.ndarray  # per segment: its (resource, units) entries
    res_id: np.ndarray
    res_units: np.ndarray  # as requested
    names: list[str]  # resources, in capacity order
    capacity: np.ndarray
    is_pool: np.ndarray

    @classmethod
    def of(cls, tasks: Sequence[Task], resources: Resources) -> FlatGraph:
        names = list(resources.capacity)
        rid = {n: i for i, n in enumerate(names)}
        seg_counts = [len(t.segments) for t in tasks]
        segs = [s for t in tasks for s in t.segments]
        entries = [e for s in segs for e in s.resources]

        def ptr(counts) -> np.ndarray:
            out = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=out[1:])
            return out

        seg_ptr = ptr(seg_counts)
        task_op = np.array([t.op for t in tasks], dtype=np.int64)
        return cls(
            seg_ptr=seg_ptr,
            seg_op=np.repeat(task_op, seg_counts),
            seg_slot=np.array([s.slot for s in segs], dtype=np.int64),
            task_op=task_op,
            task_chunk=np.array([t.chunk for t in tasks], dtype=np.int64),
            dep_ptr=ptr([len(t.deps) for t in tasks]),
            dep_idx=np.array([d for t in tasks for d in t.deps], dtype=np.int64),
            res_ptr=ptr([len(s.resources) for s in segs]),
            res_id=np.array([rid[n] for n, _ in entries], dtype=np.int64),
            res_units=np.array([u for _, u in entries], dtype=np.int64),
            names=names,
            capacity=np.array([resources.capacity[n] for n in names], dtype=np.int64),
            is_pool=np.array([n == WRITE_DRIVERS for n in names], dtype=np.bool_),
        )


@dataclass
class TaskGraph:
    """A step's tasks (structure only) and, once filled from its ops, durations and energies."""

    tasks: list[Task]
    resources: Resources
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per segment, cycles
    task_energy_j: np.ndarray = field(default_factory=lambda: np.zeros(0))
    flat: FlatGraph | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.flat is None:
            self.flat = FlatGraph.of(self.tasks, self.resources)

    def signature(self) -> int:
        """Hash of the graph's shape: tasks, their resources and dependencies (not their durations)."""
        return hash(tuple(
            (t.phase, t.layer, tuple(s.resources for s in t.segments), tuple(t.deps)) for t in self.tasks
        ))

    def fill(self, ops: Sequence[OpRecord], view: MacroView) -> TaskGraph:
        """This structure with the durations and energies of ``ops`` (a step of the same shape signature)."""
        f = self.flat
        values, offsets, energy, chunk_total, n_chunks = op_values(ops, view)
        durations = values[offsets[f.seg_op] + f.seg_slot]
        chunked = f.task_chunk >= 0
        share = np.ones(len(self.tasks))
        if chunked.any():
            ops_c = f.task_op[chunked]
            cyc = values[offsets[ops_c] + SLOT_CHUNK0 + f.task_chunk[chunked]].astype(float)
            total = chunk_total[ops_c]
            share[chunked] = np.where(total > 0, cyc / np.where(total > 0, total, 1), 1.0 / n_chunks[ops_c])
        return TaskGraph(self.tasks, self.resources, durations, energy[f.task_op] * share, f)


def op_values(ops: Sequence[OpRecord], view: MacroView):
    """Per op: [input transfer, output transfer, whole-op cycles, chunk 0 cycles, ...] (flat), offsets,
    energies (J), chunk totals and chunk counts."""
    parts: list[np.ndarray] = []
    energy = np.zeros(len(ops))
    n_chunks = np.ones(len(ops), dtype=np.int64)
    per_key: dict = {}
    for i, op in enumerate(ops):
        chunks = op.chunk_cycles if op.chunk_cycles is not None else np.array([op.cycles], dtype=np.int64)
        n = max(len(chunks), 1)
        if op.kind == "write":
            drivers = _write_drivers(op, view)
            pulse = _pulse_time_s(op, view)
            whole = math.ceil(pulse / drivers / view.t_cycle_s) if pulse else 0
        else:
            whole = op.cycles
        parts.append(np.array([
            _io_cycles(op.counts.get(("input_buffer", "read_bit"), 0) / n, view),
            _io_cycles(op.counts.get(("output_buffer", "write_bit"), 0) / n, view),
            whole,
        ], dtype=np.int64))
        parts.append(np.asarray(chunks, dtype=np.int64))
        energy[i] = op_energy_j(op, view.actions, per_key)
        n_chunks[i] = n
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), energy, np.zeros(0), n_chunks
    offsets = np.zeros(len(ops), dtype=np.int64)
    np.cumsum(3 + n_chunks[:-1], out=offsets[1:])
    values = np.concatenate(parts)
    running = np.zeros(len(values) + 1)
    np.cumsum(values, out=running[1:])
    chunk_total = running[offsets + 3 + n_chunks] - running[offsets + 3]
    return values, offsets, energy, chunk_total, n_chunks


@dataclass(frozen=True)
class MacroView:
    """What the scheduler needs to know about the macro."""

    actions: ActionTable
    device_components: frozenset[str]  # the cells' components (a write op's pulse time is theirs)
    t_cycle_s: float
    subarrays: Mapping[tuple[str, str], int]  # stored matrix (layer, region) -> subarrays it occupies
    drivers_per_subarray: int
    write_drivers: int  # the macro's write-driver pool
    scratch_subarrays: int
    buffer_ports: int
    buffer_bits_per_cycle: int


def op_energy_j(op: OpRecord, actions: ActionTable, per_key: dict | None = None) -> float:
    """Counted actions x per-action energies; ``per_key`` caches the energies across ops."""
    if per_key is None:
        per_key = {}
    e = 0.0
    for k, n in op.counts.items():
        ek = per_key.get(k)
        if ek is None:
            ek = per_key[k] = actions.energy_j(k)
        e += n * ek
    return float(e)


def _pulse_time_s(op: OpRecord, view: MacroView) -> float:
    return sum(n * view.actions.latency_s(k) for k, n in op.counts.items() if k[0] in view.device_components)


def _io_cycles(bits: float, view: MacroView) -> int:
    return math.ceil(bits / view.buffer_bits_per_cycle) if bits > 0 else 0


def _write_region(op: OpRecord, view: MacroView) -> tuple[str, int]:
    """The resource a write blocks (the layer's subarray block, or the scratch subarrays) and its subarrays."""
    if op.region == "operands":
        return SCRATCH, view.scratch_subarrays
    return ARRAY_PREFIX + region_label(*op.target), view.subarrays.get(op.target, 1)


def _write_drivers(op: OpRecord, view: MacroView) -> int:
    """Write drivers the written region can use at once: its subarrays' own, within the macro's pool."""
    return max(1, min(_write_region(op, view)[1] * view.drivers_per_subarray, view.write_drivers))


def step_key(ops: Sequence[OpRecord], layers: LayerGraph | None) -> tuple:
    """The shape signature of a step's ops: steps with equal keys have the same task graph."""
    return (id(layers), tuple(
        (op.phase, op.layer, op.region, op.module, op.kind,
         len(op.chunk_cycles) if op.chunk_cycles is not None else -1)
        for op in ops
    ))


class _Chunks(dict):
    """Task indices by sample chunk, with the highest chunk seen (``top``)."""

    top = -1

    def at(self, chunk: int) -> list[int]:
        """The list of ``chunk`` (made on first use)."""
        if chunk > self.top:
            self.top = chunk
        return self.setdefault(chunk, [])


def build_step_graph(ops: Sequence[OpRecord], layers: LayerGraph | None, view: MacroView) -> TaskGraph:
    """The task graph of one step's ops (see the module docstring), filled with their durations."""
    tasks: list[Task] = []
    capacity: dict[str, int] = {BUFFER: view.buffer_ports, DIGITAL: 1, WRITE_DRIVERS: view.write_drivers}
    subarrays: dict[str, int] = {}
    fwd: dict[str, _Chunks] = defaultdict(_Chunks)
    grad: dict[str, _Chunks] = defaultdict(_Chunks)
    wgrad: dict[str, list[int]] = defaultdict(list)
    by_module: dict[str, list[int]] = defaultdict(list)
    spilled: dict[str, _Chunks] = defaultdict(_Chunks)  # DRAM transfers by module: kept activations written out
    filled: dict[str, _Chunks] = defaultdict(_Chunks)  # ... read back
    master_reads: dict[str, list[int]] = defaultdict(list)  # ... master state read before its update
    inputs: list[int] = []  # the step's input batch read from DRAM
    consumers = layers.consumer_map() if layers is not None else {}

    def pick(table: _Chunks, chunk: int, coupled: bool) -> list[int]:
        if not table:
            return []
        if coupled:
            return [i for ids in table.values() for i in ids]
        return table.get(min(chunk, table.top), [])

    def dy_ready(module: str, chunk: int) -> list[int]:
        if module not in consumers:
            return []
        deps: list[int] = []
        for c, coupled in consumers[module]:
            deps += pick(grad.get(c, {}), chunk, coupled)
        if not consumers[module]:  # a loss layer: its gradient is known once its own output is
            deps += pick(fwd.get(module, {}), chunk, False)
        return deps

    def dy_all(module: str) -> list[int]:
        chunks = max(len(fwd.get(module, {})), 1)
        return sorted({i for s in range(chunks) for i in dy_ready(module, s)})

    def fwd_ready(module: str, chunk: int) -> list[int]:
        if module not in consumers:
            return []
        deps: list[int] = []
        for p, coupled in layers[module].producers:
            deps += pick(fwd.get(p, {}), chunk, coupled)
        return deps

    def add(task: Task, module: str) -> int:
        idx = len(tasks)
        task.deps = sorted(set(task.deps))
        tasks.append(task)
        by_module[module].append(idx)
        return idx

    for o, op in enumerate(ops):
        module = op.module or op.layer
        if op.kind == "transfer":
            capacity.setdefault(DRAM, 1)
            n = len(op.chunk_cycles) if op.chunk_cycles is not None else 1
            for s in range(n):  # a kept activation moves sample by sample, so layers and samples still pipeline
                if op.region == "spill":
                    deps = pick(fwd.get(module, {}), s, False)
                elif op.region == "fill":
                    deps = pick(spilled.get(module, {}), s, False)
                elif op.region == "master_write":
                    deps = [i for i in by_module[module] if tasks[i].phase == "update"]
                else:  # the input batch, master state read before its update, deployment reads
                    deps = []
                slot = SLOT_CHUNK0 + s if op.chunk_cycles is not None else SLOT_WHOLE
                idx = add(Task(f"dram {op.region} {op.layer}" + (f" #{s}" if n > 1 else ""), op.phase, op.layer,
                               [_segment(DRAM, slot)], deps, o, chunk=s if op.chunk_cycles is not None else -1,
                               region=op.region), f"{module} (dram)")
                if op.region == "input":
                    inputs.append(idx)
                elif op.region in ("spill", "fill"):
                    (spilled if op.region == "spill" else filled)[module].at(s).append(idx)
                elif op.region == "master_read":
                    master_reads[module].append(idx)
            continue
        if op.kind == "write":
            target = _write_target(op, view, capacity, subarrays)
            drivers = _write_drivers(op, view)
            if op.phase == "update":
                deps = [i for i in by_module[module] if tasks[i].phase != "update"]
            else:  # operand planes of the in-array weight gradient: the whole batch of x and dy
                deps = dy_all(module) + pick(fwd.get(module, {}), 0, True)
            seg = Segment(((target, 1), (WRITE_DRIVERS, drivers)), SLOT_WHOLE)
            add(Task(f"write {region_label(*op.target)}", op.phase, op.layer, [seg], deps, o, region=op.region),
                module)
            continue
        if op.kind == "digital" and op.phase == "update":
            if module in by_module:
                deps = list(wgrad.get(module, []))
            else:  # parameters kept only in the digital unit: after the whole backward pass
                needed = {d for t in tasks for d in t.deps}
                deps = [i for i, t in enumerate(tasks) if t.phase != "update" and i not in needed]
            add(Task(f"update {op.layer}", op.phase, op.layer, [Segment(((DIGITAL, 1),), SLOT_WHOLE)],
                     deps + master_reads.get(module, []), o), module)
            continue
        if op.kind == "gemm" and op.phase == "weight_grad":  # in-array: AND-sensing of the scratch planes
            deps = [i for i in by_module[module] if tasks[i].layer == op.layer and tasks[i].region == "operands"]
            capacity.setdefault(SCRATCH, 1)
            subarrays.setdefault(SCRATCH, view.scratch_subarrays)
            idx = add(Task(f"weight_grad {op.layer}", op.phase, op.layer, [Segment(((SCRATCH, 1),), SLOT_WHOLE)],
                           deps, o), module)
            wgrad[module].append(idx)
            continue
        compute = DIGITAL if op.kind == "digital" else _array(op, view, capacity, subarrays)
        n = len(op.chunk_cycles) if op.chunk_cycles is not None else 1
        for s in range(n):
            if op.phase == "forward":
                deps = fwd_ready(module, s)
                if inputs and not any(p in fwd for p, _ in (layers[module].producers if module in consumers
                                                             else ())):
                    deps = deps + inputs  # a first layer reads the input batch
            elif op.phase == "input_grad":
                deps = dy_ready(module, s) + pick(filled.get(module, {}), s, False)
            else:
                deps = (dy_ready(module, s) + pick(fwd.get(module, {}), s, False)
                        + pick(filled.get(module, {}), s, False))
            slot = SLOT_CHUNK0 + s if op.chunk_cycles is not None else SLOT_WHOLE
            segs = [_LOAD, _segment(compute, slot), _STORE]
            idx = add(Task(f"{op.phase} {op.layer} #{s}", op.phase, op.layer, segs, deps, o,
                           chunk=s if op.chunk_cycles is not None else -1, main=1), module)
            if op.phase == "forward":
                fwd[module].at(s).append(idx)
            elif op.phase == "input_grad":
                grad[module].at(s).append(idx)
            else:
                wgrad[module].append(idx)
    return TaskGraph(tasks, Resources(capacity, subarrays)).fill(ops, view)


_LOAD = Segment(((BUFFER, 1),), SLOT_IN)
_STORE = Segment(((BUFFER, 1),), SLOT_OUT)


@functools.lru_cache(maxsize=4096)
def _segment(resource: str, slot: int) -> Segment:
    return Segment(((resource, 1),), slot)


def _array(op: OpRecord, view: MacroView, capacity: dict[str, int], subarrays: dict[str, int]) -> str:
    """The array block an op streams through (its transposed copy when that dataflow is used)."""
    key = ARRAY_PREFIX + region_label(*op.target)
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, view.subarrays.get(op.target, 1))
    return key


def _write_target(op: OpRecord, view: MacroView, capacity: dict[str, int], subarrays: dict[str, int]) -> str:
    """Register the resource a write blocks and return its name."""
    key, n = _write_region(op, view)
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, n)
    return key


def critical_path_bound(graph: TaskGraph) -> int:
    """Latency with unlimited resources: the longest dependency chain of task durations."""
    finish = np.zeros(len(graph.tasks), dtype=np.int64)
    offsets = np.cumsum([0] + [len(t.segments) for t in graph.tasks])
    for i, t in enumerate(graph.tasks):
        ready = max((finish[d] for d in t.deps), default=0)
        finish[i] = ready + int(graph.durations[offsets[i]:offsets[i + 1]].sum())
    return int(finish.max()) if len(finish) else 0
