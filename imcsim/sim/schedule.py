"""Event schedule of a training step: tile operations on the macro's resources (simpy).

A step's op stream becomes a task graph:

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
  the buffer ports, and the pool of write drivers.
* **Dependencies** follow the layer dataflow (:mod:`imcsim.workloads.dataflow`):
  a layer's forward on sample s waits for its producers' forward on s (on every
  sample across a training-mode batch norm); a layer's gradients wait for its
  consumers' input gradients; the write-back of a layer waits for every read of
  it in the step and for its weight gradient.

:func:`simulate` runs the graph in a simpy environment, where requests are
granted first come, first served, and records the order in which each
resource was granted. That order is the step's static schedule: steps with the
same shape signature reuse it, and :func:`retime` replays it with each step's
own durations (a list schedule along the recorded order, which reproduces the
simpy times exactly when the durations are equal). The replay also records
which constraint set each segment's start, so the critical path is read off
and split by phase.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
import simpy

from imcsim.actions import ActionTable
from imcsim.circuits.macro import OpRecord
from imcsim.workloads.dataflow import LayerGraph

BUFFER = "buffer"
DIGITAL = "digital"
SCRATCH = "scratch"
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
    name: str
    phase: str
    layer: str
    segments: list[Segment]
    deps: list[int]
    op: int  # index of the op (in the step's op list) the task is part of
    chunk: int = -1  # the sample chunk it covers (-1: the whole op)
    main: int = 0  # index of the segment that does the task's work (the one its energy is spread over)


@dataclass
class Resources:
    """Capacities (units) and, for array blocks, the subarrays each one stands for."""

    capacity: dict[str, int]
    subarrays: dict[str, int] = field(default_factory=dict)


@dataclass
class TaskGraph:
    """A step's tasks (structure only) and, once filled from its ops, durations and energies."""

    tasks: list[Task]
    resources: Resources
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # per segment, cycles
    task_energy_j: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.seg_op = np.array([t.op for t in self.tasks for _ in t.segments], dtype=np.int64)
        self.seg_slot = np.array([s.slot for t in self.tasks for s in t.segments], dtype=np.int64)
        self.task_op = np.array([t.op for t in self.tasks], dtype=np.int64)
        self.task_chunk = np.array([t.chunk for t in self.tasks], dtype=np.int64)

    def signature(self) -> int:
        """Hash of the graph's shape: tasks, their resources and dependencies (not their durations)."""
        return hash(tuple(
            (t.phase, t.layer, tuple(s.resources for s in t.segments), tuple(t.deps)) for t in self.tasks
        ))

    def fill(self, ops: Sequence[OpRecord], view: MacroView) -> TaskGraph:
        """This structure with the durations and energies of ``ops`` (a step of the same shape signature)."""
        values, offsets, energy, chunk_total, n_chunks = op_values(ops, view)
        durations = values[offsets[self.seg_op] + self.seg_slot]
        chunked = self.task_chunk >= 0
        share = np.ones(len(self.tasks))
        if chunked.any():
            ops_c = self.task_op[chunked]
            cyc = values[offsets[ops_c] + SLOT_CHUNK0 + self.task_chunk[chunked]].astype(float)
            total = chunk_total[ops_c]
            share[chunked] = np.where(total > 0, cyc / np.where(total > 0, total, 1), 1.0 / n_chunks[ops_c])
        return TaskGraph(self.tasks, self.resources, durations, energy[self.task_op] * share)


def op_values(ops: Sequence[OpRecord], view: MacroView):
    """Per op: [input transfer, output transfer, whole-op cycles, chunk 0 cycles, ...] (flat), offsets,
    energies (J), chunk totals and chunk counts."""
    parts: list[np.ndarray] = []
    offsets = np.zeros(len(ops), dtype=np.int64)
    energy = np.zeros(len(ops))
    chunk_total = np.zeros(len(ops))
    n_chunks = np.ones(len(ops), dtype=np.int64)
    pos = 0
    for i, op in enumerate(ops):
        chunks = op.chunk_cycles if op.chunk_cycles is not None else np.array([op.cycles], dtype=np.int64)
        n = max(len(chunks), 1)
        if op.kind == "write":
            drivers = max(1, min(_write_drivers_for(op, view), view.write_drivers))
            pulse = _pulse_time_s(op, view)
            whole = math.ceil(pulse / drivers / view.t_cycle_s) if pulse else 0
        else:
            whole = op.cycles
        head = np.array([
            _io_cycles(op.counts.get(("input_buffer", "read_bit"), 0) / n, view),
            _io_cycles(op.counts.get(("output_buffer", "write_bit"), 0) / n, view),
            whole,
        ], dtype=np.int64)
        parts += [head, np.asarray(chunks, dtype=np.int64)]
        offsets[i] = pos
        pos += 3 + len(chunks)
        energy[i] = op_energy_j(op, view.actions)
        chunk_total[i] = float(np.sum(chunks))
        n_chunks[i] = n
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return values, offsets, energy, chunk_total, n_chunks


@dataclass
class Schedule:
    """Times (cycles) of every segment of a task graph, and what they add up to."""

    graph: TaskGraph
    seg_task: np.ndarray  # task index of each segment (segments numbered task by task)
    start: np.ndarray
    end: np.ndarray
    critical_by_phase: dict[str, int]
    compiled: CompiledGraph

    @property
    def makespan(self) -> int:
        return int(self.end.max()) if self.end.size else 0

    def busy(self) -> dict[str, int]:
        """Unit-cycles each resource was held."""
        c = self.compiled
        held = np.repeat(self.end - self.start, np.diff(c.res_ptr))
        per = np.bincount(c.res_id, weights=held * c.res_units, minlength=len(c.resources))
        return {name: int(v) for name, v in zip(c.resources, per, strict=True) if v}

    def energy_profile(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """(bin edges in cycles, energy J in each bin): each task's energy spread over its main segment."""
        span = max(self.makespan, 1)
        edges = np.linspace(0.0, span, bins + 1)
        energy = np.zeros(bins)
        offsets = np.cumsum([0] + [len(t.segments) for t in self.graph.tasks])
        for i, t in enumerate(self.graph.tasks):
            e = float(self.graph.task_energy_j[i])
            if not e:
                continue
            k = offsets[i] + t.main
            a, b = float(self.start[k]), float(self.end[k])
            if b <= a:
                energy[min(int(a / span * bins), bins - 1)] += e
                continue
            overlap = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
            energy += e * overlap / (b - a)
        return edges, energy


# --- building the task graph of a step -------------------------------------------------


@dataclass(frozen=True)
class MacroView:
    """What the scheduler needs to know about the macro."""

    actions: ActionTable
    device_component: str
    t_cycle_s: float
    subarrays: Mapping[str, int]  # stored matrix -> subarrays it occupies
    drivers_per_subarray: int
    write_drivers: int  # the macro's write-driver pool
    scratch_subarrays: int
    buffer_ports: int
    buffer_bits_per_cycle: int


def op_energy_j(op: OpRecord, actions: ActionTable) -> float:
    return float(sum(n * actions.energy_j(k) for k, n in op.counts.items()))


def _pulse_time_s(op: OpRecord, view: MacroView) -> float:
    return sum(n * view.actions.latency_s(k) for k, n in op.counts.items() if k[0] == view.device_component)


def _io_cycles(bits: float, view: MacroView) -> int:
    return math.ceil(bits / view.buffer_bits_per_cycle) if bits > 0 else 0


def _write_drivers_for(op: OpRecord, view: MacroView) -> int:
    """Write drivers the written region can use at once (its subarrays' own drivers)."""
    if op.layer.endswith("#operands"):
        return view.scratch_subarrays * view.drivers_per_subarray
    return view.subarrays.get(op.layer, 1) * view.drivers_per_subarray


def step_key(ops: Sequence[OpRecord], layers: LayerGraph | None) -> tuple:
    """The shape signature of a step's ops: steps with equal keys have the same task graph."""
    return (id(layers), tuple(
        (op.phase, op.layer, op.module, op.kind, len(op.chunk_cycles) if op.chunk_cycles is not None else -1)
        for op in ops
    ))


def build_step_graph(ops: Sequence[OpRecord], layers: LayerGraph | None, view: MacroView) -> TaskGraph:
    """The task graph of one step's ops (see the module docstring), filled with their durations."""
    tasks: list[Task] = []
    capacity: dict[str, int] = {BUFFER: view.buffer_ports, DIGITAL: 1, WRITE_DRIVERS: view.write_drivers}
    subarrays: dict[str, int] = {}
    fwd: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    grad: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    wgrad: dict[str, list[int]] = defaultdict(list)
    by_module: dict[str, list[int]] = defaultdict(list)
    consumers = {c.name: layers.consumers(c.name) for c in layers.calls} if layers is not None else {}

    def pick(table: dict[int, list[int]], chunk: int, coupled: bool) -> list[int]:
        if not table:
            return []
        if coupled:
            return [i for ids in table.values() for i in ids]
        return table.get(min(chunk, max(table)), [])

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
        if op.kind == "write":
            target = _write_target(op, view, capacity, subarrays)
            drivers = max(1, min(_write_drivers_for(op, view), view.write_drivers))
            if op.phase == "update":
                deps = [i for i in by_module[module] if tasks[i].phase != "update"]
            else:  # operand planes of the in-array weight gradient: the whole batch of x and dy
                deps = dy_all(module) + pick(fwd.get(module, {}), 0, True)
            seg = Segment(((target, 1), (WRITE_DRIVERS, drivers)), SLOT_WHOLE)
            add(Task(f"write {op.layer}", op.phase, op.layer, [seg], deps, o), module)
            continue
        if op.kind == "digital" and op.phase == "update":
            if module in by_module:
                deps = list(wgrad.get(module, []))
            else:  # parameters kept only in the digital unit: after the whole backward pass
                needed = {d for t in tasks for d in t.deps}
                deps = [i for i, t in enumerate(tasks) if t.phase != "update" and i not in needed]
            add(Task(f"update {op.layer}", op.phase, op.layer, [Segment(((DIGITAL, 1),), SLOT_WHOLE)], deps, o),
                module)
            continue
        if op.kind == "gemm" and op.phase == "weight_grad":  # in-array: AND-sensing of the scratch planes
            deps = [i for i in by_module[module] if tasks[i].layer == f"{op.layer}#operands"]
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
            elif op.phase == "input_grad":
                deps = dy_ready(module, s)
            else:
                deps = dy_ready(module, s) + pick(fwd.get(module, {}), s, False)
            slot = SLOT_CHUNK0 + s if op.chunk_cycles is not None else SLOT_WHOLE
            segs = [Segment(((BUFFER, 1),), SLOT_IN), Segment(((compute, 1),), slot),
                    Segment(((BUFFER, 1),), SLOT_OUT)]
            idx = add(Task(f"{op.phase} {op.layer} #{s}", op.phase, op.layer, segs, deps, o,
                           chunk=s if op.chunk_cycles is not None else -1, main=1), module)
            if op.phase == "forward":
                fwd[module][s].append(idx)
            elif op.phase == "input_grad":
                grad[module][s].append(idx)
            else:
                wgrad[module].append(idx)
    return TaskGraph(tasks, Resources(capacity, subarrays)).fill(ops, view)


def _array(op: OpRecord, view: MacroView, capacity: dict[str, int], subarrays: dict[str, int]) -> str:
    """The array block an op streams through (its transposed copy when that dataflow is used)."""
    name = op.layer
    if op.phase == "input_grad" and f"{name}^T" in view.subarrays:
        name = f"{name}^T"
    key = ARRAY_PREFIX + name
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, view.subarrays.get(name, 1))
    return key


def _write_target(op: OpRecord, view: MacroView, capacity: dict[str, int], subarrays: dict[str, int]) -> str:
    """The resource a write blocks: the layer's subarray block, or the scratch subarrays."""
    if op.layer.endswith("#operands"):
        capacity.setdefault(SCRATCH, 1)
        subarrays.setdefault(SCRATCH, view.scratch_subarrays)
        return SCRATCH
    key = ARRAY_PREFIX + op.layer
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, view.subarrays.get(op.layer, 1))
    return key


# --- simpy: find the grant order --------------------------------------------------------


def simulate(graph: TaskGraph) -> tuple[list[int], int, np.ndarray]:
    """Run the graph in simpy.

    Returns the segments in the order their resources were granted, the number of
    events processed, and each segment's start time (cycles).
    """
    env = simpy.Environment()
    pools: dict[str, simpy.Container] = {}
    slots: dict[str, simpy.Resource] = {}
    for name, cap in graph.resources.capacity.items():
        if name == WRITE_DRIVERS:
            pools[name] = simpy.Container(env, capacity=cap, init=cap)
        else:
            slots[name] = simpy.Resource(env, capacity=cap)
    order: list[int] = []
    durations = graph.durations
    started = np.zeros(len(durations), dtype=np.int64)
    offsets = np.cumsum([0] + [len(t.segments) for t in graph.tasks]).tolist()
    done: list[simpy.Process] = []

    def run_task(i: int):
        task = graph.tasks[i]
        if task.deps:
            yield env.all_of([done[d] for d in task.deps])
        for j, seg in enumerate(task.segments):
            held = []
            for name, units in seg.resources:
                if name in pools:
                    yield pools[name].get(units)
                    held.append((name, units, None))
                else:
                    req = slots[name].request()
                    yield req
                    held.append((name, units, req))
            k = offsets[i] + j
            order.append(k)
            started[k] = int(env.now)
            if durations[k]:
                yield env.timeout(int(durations[k]))
            for name, units, req in held:
                if req is None:
                    pools[name].put(units)
                else:
                    slots[name].release(req)

    for i in range(len(graph.tasks)):
        done.append(env.process(run_task(i)))
    events = 0
    while True:
        try:
            env.step()
        except simpy.core.EmptySchedule:
            break
        events += 1
    return order, events, started


# --- replay along a recorded order --------------------------------------------------------


@dataclass
class CompiledGraph:
    """A task graph's structure as flat arrays for the compiled replay."""

    seg_task: np.ndarray
    seg_first: np.ndarray
    dep_ptr: np.ndarray
    dep_idx: np.ndarray
    res_ptr: np.ndarray  # per segment: its (resource, units) entries
    res_id: np.ndarray
    res_units: np.ndarray
    unit_ptr: np.ndarray  # per resource: its units in the flat free-time array
    task_phase: np.ndarray
    phases: list[str]
    resources: list[str]
    order: np.ndarray
    events: int


def compile_graph(graph: TaskGraph, order: Sequence[int], events: int) -> CompiledGraph:
    tasks = graph.tasks
    names = list(graph.resources.capacity)
    rid = {n: i for i, n in enumerate(names)}
    counts = [len(t.segments) for t in tasks]
    seg_task = np.repeat(np.arange(len(tasks), dtype=np.int64), counts)
    seg_first = np.zeros(len(seg_task), dtype=np.bool_)
    seg_first[np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)] = len(tasks) > 0
    dep_ptr = np.concatenate([[0], np.cumsum([len(t.deps) for t in tasks])]).astype(np.int64)
    dep_idx = np.array([d for t in tasks for d in t.deps], dtype=np.int64)
    entries = [s.resources for t in tasks for s in t.segments]
    res_ptr = np.concatenate([[0], np.cumsum([len(e) for e in entries])]).astype(np.int64)
    res_id = np.array([rid[n] for e in entries for n, _ in e], dtype=np.int64)
    res_units = np.array([min(u, graph.resources.capacity[n]) for e in entries for n, u in e], dtype=np.int64)
    unit_ptr = np.concatenate([[0], np.cumsum([graph.resources.capacity[n] for n in names])]).astype(np.int64)
    phases = sorted({t.phase for t in tasks})
    task_phase = np.array([phases.index(t.phase) for t in tasks], dtype=np.int64)
    return CompiledGraph(seg_task, seg_first, dep_ptr, dep_idx, res_ptr, res_id, res_units, unit_ptr, task_phase,
                         phases, names, np.asarray(order, dtype=np.int64), events)


@numba.njit(cache=True, nogil=True)
def _retime_kernel(order, dur, seg_task, seg_first, dep_ptr, dep_idx, res_ptr, res_id, res_units, unit_ptr,
                   task_phase, n_phases):
    n_seg = dur.shape[0]
    n_tasks = dep_ptr.shape[0] - 1
    start = np.zeros(n_seg, dtype=np.int64)
    end = np.zeros(n_seg, dtype=np.int64)
    binding = np.full(n_seg, -1, dtype=np.int64)
    free = np.zeros(unit_ptr[-1], dtype=np.int64)
    free_last = np.full(unit_ptr[-1], -1, dtype=np.int64)
    task_end = np.zeros(n_tasks, dtype=np.int64)
    task_last = np.full(n_tasks, -1, dtype=np.int64)
    chosen = np.zeros(unit_ptr[-1], dtype=np.bool_)
    for k in order:
        i = seg_task[k]
        t0 = 0
        b = -1
        if seg_first[k]:
            for q in range(dep_ptr[i], dep_ptr[i + 1]):
                d = dep_idx[q]
                if task_end[d] > t0 or (b < 0 and task_end[d] == t0 and task_last[d] >= 0):
                    t0 = task_end[d]
                    b = task_last[d]
        else:
            t0 = end[k - 1]
            b = k - 1
        for q in range(res_ptr[k], res_ptr[k + 1]):
            r = res_id[q]
            for _ in range(res_units[q]):  # take the earliest-free units
                best = -1
                for u in range(unit_ptr[r], unit_ptr[r + 1]):
                    if not chosen[u] and (best < 0 or free[u] < free[best]):
                        best = u
                chosen[best] = True
                if free[best] > t0:
                    t0 = free[best]
                    b = free_last[best]
        start[k] = t0
        end[k] = t0 + dur[k]
        binding[k] = b
        for q in range(res_ptr[k], res_ptr[k + 1]):
            r = res_id[q]
            for u in range(unit_ptr[r], unit_ptr[r + 1]):
                if chosen[u]:
                    chosen[u] = False
                    free[u] = end[k]
                    free_last[u] = k
        if k + 1 == n_seg or seg_first[k + 1]:
            task_end[i] = end[k]
            task_last[i] = k
    critical = np.zeros(n_phases, dtype=np.int64)
    if n_seg:
        k = np.argmax(end)
        while k >= 0:
            critical[task_phase[seg_task[k]]] += end[k] - start[k]
            k = binding[k]
    return start, end, critical


def retime(graph: TaskGraph, compiled: CompiledGraph, durations: np.ndarray | None = None) -> Schedule:
    """List-schedule the segments in the compiled order with ``durations`` (default: the graph's own).

    Each segment starts when its task's previous segment (or, for the first, every
    dependency) has ended and its resources are free; a pool gives its earliest-free
    units. The constraint that set each start is kept, and the critical path is
    walked back from the last segment to split the step's latency by phase.
    """
    c = compiled
    dur = graph.durations if durations is None else np.asarray(durations, dtype=np.int64)
    start, end, critical = _retime_kernel(c.order, dur, c.seg_task, c.seg_first, c.dep_ptr, c.dep_idx, c.res_ptr,
                                          c.res_id, c.res_units, c.unit_ptr, c.task_phase, len(c.phases))
    by_phase = {p: int(v) for p, v in zip(c.phases, critical, strict=True) if v}
    return Schedule(graph, c.seg_task, start, end, by_phase, c)


def critical_path_bound(graph: TaskGraph) -> int:
    """Latency with unlimited resources: the longest dependency chain of task durations."""
    finish = np.zeros(len(graph.tasks), dtype=np.int64)
    offsets = np.cumsum([0] + [len(t.segments) for t in graph.tasks])
    for i, t in enumerate(graph.tasks):
        ready = max((finish[d] for d in t.deps), default=0)
        finish[i] = ready + int(graph.durations[offsets[i]:offsets[i + 1]].sum())
    return int(finish.max()) if len(finish) else 0


class Scheduler:
    """Schedules steps: each new shape signature is simulated once (simpy), later steps replay its order."""

    def __init__(self, view: MacroView) -> None:
        self.view = view
        self._cache: dict[object, tuple[TaskGraph, CompiledGraph]] = {}
        self.simulated = 0
        self.replayed = 0
        self.events = 0

    def schedule(self, ops: Sequence[OpRecord], layers: LayerGraph | None) -> Schedule:
        """Schedule one step's ``ops`` (dependencies from ``layers``)."""
        key = step_key(ops, layers)
        cached = self._cache.get(key)
        if cached is None:
            graph = build_step_graph(ops, layers, self.view)
            order, events, _ = simulate(graph)
            compiled = compile_graph(graph, order, events)
            self._cache[key] = (graph, compiled)
            self.simulated += 1
            self.events += events
        else:
            template, compiled = cached
            graph = template.fill(ops, self.view)
            self.replayed += 1
        return retime(graph, compiled)
