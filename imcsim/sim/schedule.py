"""Event schedule of a training step: tile operations on the macro's resources.

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

:func:`simulate` runs the graph as a discrete-event simulation, where requests
are granted first come, first served, and records the order in which each
resource was granted. It runs either in a simpy environment or in a compiled
kernel that processes the same events in the same order (simpy's heap of
(time, priority, id), its queue disciplines for slot resources and containers);
the tests check the two agree grant for grant. That order is the step's static schedule: steps with the
same shape signature reuse it, and :func:`retime` replays it with each step's
own durations (a list schedule along the recorded order, which reproduces the
simpy times exactly when the durations are equal). The replay also records
which constraint set each segment's start, so the critical path is read off
and split by phase.
"""

from __future__ import annotations

import functools
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
    return sum(n * view.actions.latency_s(k) for k, n in op.counts.items() if k[0] == view.device_component)


def _io_cycles(bits: float, view: MacroView) -> int:
    return math.ceil(bits / view.buffer_bits_per_cycle) if bits > 0 else 0


def _write_region(op: OpRecord, view: MacroView) -> tuple[str, int]:
    """The resource a write blocks (the layer's subarray block, or the scratch subarrays) and its subarrays."""
    if op.layer.endswith("#operands"):
        return SCRATCH, view.scratch_subarrays
    return ARRAY_PREFIX + op.layer, view.subarrays.get(op.layer, 1)


def _write_drivers(op: OpRecord, view: MacroView) -> int:
    """Write drivers the written region can use at once: its subarrays' own, within the macro's pool."""
    return max(1, min(_write_region(op, view)[1] * view.drivers_per_subarray, view.write_drivers))


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
    consumers = layers.consumer_map() if layers is not None else {}

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
            drivers = _write_drivers(op, view)
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
            segs = [_LOAD, _segment(compute, slot), _STORE]
            idx = add(Task(f"{op.phase} {op.layer} #{s}", op.phase, op.layer, segs, deps, o,
                           chunk=s if op.chunk_cycles is not None else -1, main=1), module)
            if op.phase == "forward":
                fwd[module][s].append(idx)
            elif op.phase == "input_grad":
                grad[module][s].append(idx)
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
    name = op.layer
    if op.phase == "input_grad" and f"{name}^T" in view.subarrays:
        name = f"{name}^T"
    key = ARRAY_PREFIX + name
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, view.subarrays.get(name, 1))
    return key


def _write_target(op: OpRecord, view: MacroView, capacity: dict[str, int], subarrays: dict[str, int]) -> str:
    """Register the resource a write blocks and return its name."""
    key, n = _write_region(op, view)
    capacity.setdefault(key, 1)
    subarrays.setdefault(key, n)
    return key


# --- event simulation: find the grant order ------------------------------------------------

ENGINES = ("compiled", "simpy")


def simulate(graph: TaskGraph, engine: str = "compiled") -> tuple[list[int], int, np.ndarray]:
    """Run the graph as a discrete-event simulation.

    Returns the segments in the order their resources were granted, the number of
    events processed, and each segment's start time (cycles). ``engine="simpy"``
    runs it in a simpy environment; ``"compiled"`` (the default) runs the same
    events with the same semantics in a compiled kernel, which the tests check
    against simpy grant for grant, time for time and event for event.
    """
    if engine == "simpy":
        return _simulate_simpy(graph)
    if engine == "compiled":
        return _simulate_compiled(graph)
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


def _simulate_simpy(graph: TaskGraph) -> tuple[list[int], int, np.ndarray]:
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


# --- compiled engine: the same event semantics as simpy, in numba -----------------------

# Event kinds of the compiled engine (each is one simpy event of :func:`_simulate_simpy`).
_INIT, _DONE, _COND, _GRANT, _TIMEOUT, _RELEASE, _PUT = 0, 1, 2, 3, 4, 5, 6


@numba.njit(cache=True, nogil=True)
def _heap_less(ev, a, b):
    """Event ``a`` before event ``b``: by time, then priority, then id (ids grow with scheduling order)."""
    if ev[a, 0] != ev[b, 0]:
        return ev[a, 0] < ev[b, 0]
    if ev[a, 1] != ev[b, 1]:
        return ev[a, 1] < ev[b, 1]
    return a < b


@numba.njit(cache=True, nogil=True)
def _push(ev, n_ev, time, prio, kind, arg):
    """Schedule an event (row ``n_ev`` of ``ev``: time, priority, kind, argument); returns the next free row."""
    ev[n_ev, 0] = time
    ev[n_ev, 1] = prio
    ev[n_ev, 2] = kind
    ev[n_ev, 3] = arg
    return n_ev + 1


@numba.njit(cache=True, nogil=True)
def _append(head, tail, nxt, owner, node):
    """Append ``node`` to the FIFO list ``owner`` (``head``/``tail`` per owner, ``nxt`` per node)."""
    nxt[node] = -1
    if tail[owner] < 0:
        head[owner] = node
    else:
        nxt[tail[owner]] = node
    tail[owner] = node


@numba.njit(cache=True, nogil=True)
def _grant(r, now, ev, n_ev, is_pool, capacity, users, level, q_head, q_tail, q_next, q_task, q_units):
    """Grant waiting requests of resource ``r`` as simpy triggers them: a slot resource grants its
    queue's head at most once; a container grants from the head while its level allows."""
    while q_head[r] >= 0:
        h = q_head[r]
        if is_pool[r]:
            if level[r] < q_units[h]:
                break
            level[r] -= q_units[h]
        else:
            if users[r] >= capacity[r]:
                break
            users[r] += 1
        q_head[r] = q_next[h]
        if q_head[r] < 0:
            q_tail[r] = -1
        n_ev = _push(ev, n_ev, now, 1, _GRANT, q_task[h])
        if not is_pool[r]:
            break
    return n_ev


@numba.njit(cache=True, nogil=True)
def _des_kernel(dur, seg_ptr, dep_ptr, dep_idx, res_ptr, res_id, res_units, capacity, is_pool):
    """Discrete-event run of a task graph with simpy's semantics, event for event.

    Mirrors :func:`_simulate_simpy`: every task is a process started in task order
    (an urgent initialize event); it waits for an all-of condition over its
    dependencies' process events, then, segment by segment, requests each resource
    in turn (first come, first served; see :func:`_grant`), holds them for the
    segment's duration (a timeout), releases them (a release or put event, whose
    processing grants waiting requests) and ends with its process event. Events are
    processed in (time, priority, id) order, as simpy's heap does, so grants, times
    and the event count are equal.
    """
    n_tasks = dep_ptr.shape[0] - 1
    n_seg = dur.shape[0]
    n_res = capacity.shape[0]
    n_entries = res_id.shape[0]
    cap_events = 3 * n_tasks + n_seg + 2 * n_entries + 1
    ev = np.zeros((cap_events, 4), dtype=np.int64)  # time, priority, kind, argument
    heap = np.zeros(cap_events, dtype=np.int64)
    n_heap = 0
    n_ev = 0
    # per task: current segment, current resource entry, dependency count reached, process event processed
    cur_seg = np.zeros(n_tasks, dtype=np.int64)
    cur_entry = np.zeros(n_tasks, dtype=np.int64)
    cond_count = np.zeros(n_tasks, dtype=np.int64)
    done = np.zeros(n_tasks, dtype=np.bool_)
    # condition callbacks on each task's process event, in the order they were added
    w_head = np.full(n_tasks, -1, dtype=np.int64)
    w_tail = np.full(n_tasks, -1, dtype=np.int64)
    w_next = np.full(dep_idx.shape[0] + 1, -1, dtype=np.int64)
    w_task = np.zeros(dep_idx.shape[0] + 1, dtype=np.int64)
    n_w = 0
    # per resource: FIFO queue of waiting requests (task, units), users (slots) or level (containers)
    q_head = np.full(n_res, -1, dtype=np.int64)
    q_tail = np.full(n_res, -1, dtype=np.int64)
    q_next = np.full(n_entries + 1, -1, dtype=np.int64)
    q_task = np.zeros(n_entries + 1, dtype=np.int64)
    q_units = np.zeros(n_entries + 1, dtype=np.int64)
    n_q = 0
    users = np.zeros(n_res, dtype=np.int64)
    level = capacity.copy()
    order = np.zeros(n_seg, dtype=np.int64)
    n_order = 0
    started = np.zeros(n_seg, dtype=np.int64)
    processed = 0

    for i in range(n_tasks):  # initialize events: urgent, time 0, task order (ids increase: already a heap)
        heap[n_heap] = n_ev
        n_heap += 1
        n_ev = _push(ev, n_ev, 0, 0, _INIT, i)

    while n_heap > 0:
        e = heap[0]
        n_heap -= 1
        if n_heap > 0:  # sift the last event down from the root
            last = heap[n_heap]
            pos = 0
            while True:
                child = 2 * pos + 1
                if child >= n_heap:
                    break
                if child + 1 < n_heap and _heap_less(ev, heap[child + 1], heap[child]):
                    child += 1
                if not _heap_less(ev, heap[child], last):
                    break
                heap[pos] = heap[child]
                pos = child
            heap[pos] = last
        now, kind, arg = ev[e, 0], ev[e, 2], ev[e, 3]
        processed += 1
        resume = -1  # the process that resumes, if any
        releasing = False  # it resumes after a hold (release, then next segment) rather than to request
        new_first = n_ev
        if kind in (_INIT, _COND):
            nd = dep_ptr[arg + 1] - dep_ptr[arg]
            if kind == _INIT and nd > 0:  # build the all-of condition over the dependencies
                for q in range(dep_ptr[arg], dep_ptr[arg + 1]):
                    d = dep_idx[q]
                    if done[d]:
                        cond_count[arg] += 1
                    else:
                        w_task[n_w] = arg
                        _append(w_head, w_tail, w_next, d, n_w)
                        n_w += 1
                if cond_count[arg] == nd:
                    n_ev = _push(ev, n_ev, now, 1, _COND, arg)
            else:
                resume = arg
                cur_seg[arg] = seg_ptr[arg]
                cur_entry[arg] = res_ptr[seg_ptr[arg]]
        elif kind == _DONE:
            done[arg] = True
            w = w_head[arg]
            while w >= 0:
                t = w_task[w]
                cond_count[t] += 1
                if cond_count[t] == dep_ptr[t + 1] - dep_ptr[t]:
                    n_ev = _push(ev, n_ev, now, 1, _COND, t)
                w = w_next[w]
        elif kind == _GRANT:
            resume = arg
            cur_entry[arg] += 1
        elif kind == _TIMEOUT:
            resume = arg
            releasing = True
        else:  # _RELEASE or _PUT: units came back, waiting requests may be granted
            n_ev = _grant(arg, now, ev, n_ev, is_pool, capacity, users, level, q_head, q_tail, q_next, q_task,
                          q_units)
        # run the resumed process until it waits again
        while resume >= 0:
            i = resume
            k = cur_seg[i]
            if releasing:  # its segment's hold ended: release in order, then on to the next segment
                for q in range(res_ptr[k], res_ptr[k + 1]):
                    r = res_id[q]
                    if is_pool[r]:
                        level[r] += res_units[q]
                        n_ev = _push(ev, n_ev, now, 1, _PUT, r)
                    else:
                        users[r] -= 1
                        n_ev = _push(ev, n_ev, now, 1, _RELEASE, r)
                if k + 1 < seg_ptr[i + 1]:
                    cur_seg[i] = k + 1
                    cur_entry[i] = res_ptr[k + 1]
                    releasing = False
                    continue
                n_ev = _push(ev, n_ev, now, 1, _DONE, i)
                break
            q = cur_entry[i]
            if q < res_ptr[k + 1]:  # request the next resource of the segment and wait for it
                r = res_id[q]
                q_task[n_q] = i
                q_units[n_q] = res_units[q]
                _append(q_head, q_tail, q_next, r, n_q)
                n_q += 1
                n_ev = _grant(r, now, ev, n_ev, is_pool, capacity, users, level, q_head, q_tail, q_next, q_task,
                              q_units)
                break
            # every resource of the segment is held: it starts now
            order[n_order] = k
            n_order += 1
            started[k] = now
            if dur[k] > 0:
                n_ev = _push(ev, n_ev, now + dur[k], 1, _TIMEOUT, i)
                break
            releasing = True
        # push the events scheduled while processing this one
        for x in range(new_first, n_ev):
            pos = n_heap
            n_heap += 1
            while pos > 0:
                parent = (pos - 1) // 2
                if not _heap_less(ev, x, heap[parent]):
                    break
                heap[pos] = heap[parent]
                pos = parent
            heap[pos] = x
    return order[:n_order], processed, started


def _simulate_compiled(graph: TaskGraph) -> tuple[list[int], int, np.ndarray]:
    f = graph.flat
    order, events, started = _des_kernel(np.asarray(graph.durations, dtype=np.int64), f.seg_ptr, f.dep_ptr,
                                         f.dep_idx, f.res_ptr, f.res_id, f.res_units, f.capacity, f.is_pool)
    return order.tolist(), int(events), started


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
    f = graph.flat
    n_seg = int(f.seg_ptr[-1])
    seg_task = np.repeat(np.arange(len(graph.tasks), dtype=np.int64), np.diff(f.seg_ptr))
    seg_first = np.zeros(n_seg, dtype=np.bool_)
    seg_first[f.seg_ptr[:-1][np.diff(f.seg_ptr) > 0]] = True
    res_units = np.minimum(f.res_units, f.capacity[f.res_id])
    unit_ptr = np.zeros(len(f.names) + 1, dtype=np.int64)
    np.cumsum(f.capacity, out=unit_ptr[1:])
    phases = sorted({t.phase for t in graph.tasks})
    index = {p: i for i, p in enumerate(phases)}
    task_phase = np.fromiter((index[t.phase] for t in graph.tasks), dtype=np.int64, count=len(graph.tasks))
    return CompiledGraph(seg_task, seg_first, f.dep_ptr, f.dep_idx, f.res_ptr, f.res_id, res_units, unit_ptr,
                         task_phase, phases, f.names, np.asarray(order, dtype=np.int64), events)


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
    """Schedules steps: each new shape signature is simulated once, later steps replay its order.

    ``engine`` picks the event simulation of new signatures (see :func:`simulate`).
    """

    def __init__(self, view: MacroView, engine: str = "compiled") -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
        self.view = view
        self.engine = engine
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
            order, events, _ = simulate(graph, self.engine)
            compiled = compile_graph(graph, order, events)
            self._cache[key] = (graph, compiled)
            self.simulated += 1
            self.events += events
        else:
            template, compiled = cached
            graph = template.fill(ops, self.view)
            self.replayed += 1
        return retime(graph, compiled)
