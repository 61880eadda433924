"""The event engine of a step's task graph and the replay of its grant order.

:func:`simulate` runs a task graph (:mod:`imcsim.sim.graph`) as a discrete-event
simulation in a compiled kernel: requests are granted first come, first served,
and the order in which segments got their resources is recorded. The kernel
processes simpy's events in simpy's order (its heap of (time, priority, id),
its queue disciplines for slot resources and containers); the tests check it
against :mod:`imcsim.sim.oracle`, which runs the same graph in simpy, grant for
grant and time for time.

That order is the step's static schedule. :func:`retime` replays it with a
step's own durations (a list schedule along the recorded order, which
reproduces the simulated times exactly when the durations are equal) and
records which constraint set each segment's start, so the critical path is
read off and split by phase. :class:`imcsim.sim.replay.Scheduler` simulates
each new step shape once and replays the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from imcsim.sim.graph import TaskGraph

# --- event simulation: find the grant order --------------------------------------------

# Event kinds of the compiled engine (each is one simpy event of :func:`imcsim.sim.oracle.simulate_simpy`).
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

    Mirrors :func:`imcsim.sim.oracle.simulate_simpy`: every task is a process started in task order
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


def simulate(graph: TaskGraph) -> tuple[list[int], int, np.ndarray]:
    """Run the graph as a discrete-event simulation: the segments in the order their resources were
    granted, the number of events processed, and each segment's start time (cycles)."""
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
    is_pool: np.ndarray  # per resource: interchangeable units (the write-driver pool)
    task_phase: np.ndarray
    phases: list[str]
    resources: list[str]
    order: np.ndarray
    events: int


def compile_graph(graph: TaskGraph, order: Sequence[int], events: int) -> CompiledGraph:
    """The replay arrays of ``graph``, with the grant ``order`` and the ``events`` its simulation processed."""
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
                         np.asarray(f.is_pool, dtype=np.bool_), task_phase, phases, f.names,
                         np.asarray(order, dtype=np.int64), events)


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
        mains = offsets[:-1] + np.fromiter((t.main for t in self.graph.tasks), dtype=np.int64,
                                           count=len(self.graph.tasks))
        e = np.asarray(self.graph.task_energy_j, dtype=float)
        keep = e != 0
        e, a, b = e[keep], self.start[mains[keep]].astype(float), self.end[mains[keep]].astype(float)
        point = b <= a  # an instant: all of its energy in the bin it falls in
        np.add.at(energy, np.minimum((a[point] / span * bins).astype(np.int64), bins - 1), e[point])
        a, b, e = a[~point], b[~point], e[~point]
        for lo in range(0, len(e), 4096):  # tasks x bins overlaps, a block of tasks at a time
            sl = slice(lo, lo + 4096)
            overlap = np.clip(np.minimum(edges[1:], b[sl, None]) - np.maximum(edges[:-1], a[sl, None]), 0.0, None)
            energy += (e[sl, None] * overlap / (b[sl] - a[sl])[:, None]).sum(axis=0)
        return edges, energy


@numba.njit(cache=True, nogil=True)
def _release_pool(lo, hi, taken, t_end, k, pf, pl, pid):
    """Units ``lo .. lo + taken`` of a sorted pool become free at ``t_end`` (held by segment ``k``): merge them
    back so the pool stays sorted by (free time, unit id)."""
    ids = np.sort(pid[lo:lo + taken].copy())
    rest = pf[lo + taken:hi]
    p1 = np.searchsorted(rest, t_end, side="left")
    p2 = np.searchsorted(rest, t_end, side="right")
    tie_ids = pid[lo + taken + p1:lo + taken + p2].copy()
    tie_last = pl[lo + taken + p1:lo + taken + p2].copy()
    for j in range(p1):  # units free before t_end move ahead of the released ones
        pf[lo + j] = pf[lo + taken + j]
        pl[lo + j] = pl[lo + taken + j]
        pid[lo + j] = pid[lo + taken + j]
    a = 0
    b = 0
    out = lo + p1
    while a < taken or b < p2 - p1:  # released and equally free units, by unit id
        if b >= p2 - p1 or (a < taken and ids[a] < tie_ids[b]):
            pid[out] = ids[a]
            pl[out] = k
            a += 1
        else:
            pid[out] = tie_ids[b]
            pl[out] = tie_last[b]
            b += 1
        pf[out] = t_end
        out += 1


@numba.njit(cache=True, nogil=True)
def _retime_kernel(order, dur, seg_task, seg_first, dep_ptr, dep_idx, res_ptr, res_id, res_units, unit_ptr,
                   is_pool, task_phase, n_phases):
    n_seg = dur.shape[0]
    n_tasks = dep_ptr.shape[0] - 1
    n_units = unit_ptr[-1]
    start = np.zeros(n_seg, dtype=np.int64)
    end = np.zeros(n_seg, dtype=np.int64)
    binding = np.full(n_seg, -1, dtype=np.int64)
    free = np.zeros(n_units, dtype=np.int64)
    free_last = np.full(n_units, -1, dtype=np.int64)
    unit_id = np.arange(n_units, dtype=np.int64)  # a pool's units are kept sorted by (free time, id)
    taken = np.zeros(is_pool.shape[0], dtype=np.int64)
    task_end = np.zeros(n_tasks, dtype=np.int64)
    task_last = np.full(n_tasks, -1, dtype=np.int64)
    chosen = np.zeros(n_units, dtype=np.bool_)
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
            if is_pool[r]:  # the earliest-free units are the first of the sorted pool
                lo = unit_ptr[r] + taken[r]
                for u in range(lo, lo + res_units[q]):
                    if free[u] > t0:
                        t0 = free[u]
                        b = free_last[u]
                taken[r] += res_units[q]
                continue
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
            if is_pool[r]:
                if taken[r]:
                    _release_pool(unit_ptr[r], unit_ptr[r + 1], taken[r], end[k], k, free, free_last, unit_id)
                    taken[r] = 0
                continue
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
                                          c.res_id, c.res_units, c.unit_ptr, c.is_pool, c.task_phase, len(c.phases))
    by_phase = {p: int(v) for p, v in zip(c.phases, critical, strict=True) if v}
    return Schedule(graph, c.seg_task, start, end, by_phase, c)
