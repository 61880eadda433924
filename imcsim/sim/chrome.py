"""Chrome trace-event export of a step's schedule (open it in https://ui.perfetto.dev or chrome://tracing).

One track per resource unit (a layer's subarray block, each buffer port, the
digital unit, the scratch subarrays); each segment is a complete ("X") event
named after its task, with its phase as category. A write burst appears on
the block it writes (it also holds write drivers, noted in its arguments). A
counter track draws the step's power over time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from imcsim import __version__
from imcsim.files import SIGNATURE, atomic_write
from imcsim.sim.engine import Schedule

_US = 1e6


def chrome_trace(sched: Schedule, t_cycle_s: float, title: str, power: list[tuple[float, float]] | None = None
                 ) -> dict:
    """The trace-event JSON object of one schedule (times in microseconds)."""
    graph = sched.graph
    c = sched.compiled
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": title}}]
    tids: dict[tuple[str, int], int] = {}
    unit_free: dict[str, list[int]] = {}
    order = np.lexsort((np.arange(len(sched.start)), sched.start))
    offsets = np.concatenate([[0], np.cumsum([len(t.segments) for t in graph.tasks])])
    seg_index = {}  # segment -> (task, position)
    for i, t in enumerate(graph.tasks):
        for j in range(len(t.segments)):
            seg_index[offsets[i] + j] = (i, j)
    for k in order.tolist():
        i, j = seg_index[k]
        task = graph.tasks[i]
        seg = task.segments[j]
        resource = seg.resources[0][0]
        free = unit_free.setdefault(resource, [0] * graph.resources.capacity.get(resource, 1))
        unit = next((u for u, f in enumerate(free) if f <= sched.start[k]), 0)
        free[unit] = int(sched.end[k])
        key = (resource, unit)
        if key not in tids:
            tids[key] = len(tids) + 1
            label = resource if len(free) == 1 else f"{resource} port {unit}"
            events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tids[key], "args": {"name": label}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tids[key],
                           "args": {"sort_index": tids[key]}})
        args = {"layer": task.layer, "cycles": int(sched.end[k] - sched.start[k])}
        if j == task.main:
            args["energy_pJ"] = float(graph.task_energy_j[i]) * 1e12
        if len(seg.resources) > 1:
            args["also_holds"] = {name: units for name, units in seg.resources[1:]}
        events.append({
            "name": task.name, "cat": task.phase, "ph": "X", "pid": 1, "tid": tids[key],
            "ts": float(sched.start[k]) * t_cycle_s * _US, "dur": float(sched.end[k] - sched.start[k]) * t_cycle_s * _US,
            "args": args,
        })
    for t, watts in power or []:
        events.append({"name": "power", "ph": "C", "pid": 1, "ts": t * _US, "args": {"W": watts}})
    return {"otherData": {"generator": f"{SIGNATURE.decode()} {__version__}", "makespan_cycles": sched.makespan,
                          "cycle_time_s": t_cycle_s, "critical_path_cycles_by_phase": sched.critical_by_phase,
                          "simpy_events": c.events},
            "displayTimeUnit": "ns", "traceEvents": events}


def write_chrome_trace(trace: dict, path: str | os.PathLike) -> Path:
    """Write ``trace`` to ``path`` atomically (a temporary file renamed into place); ``otherData.generator``
    comes first in the file, so imcsim recognises the file as its own (:func:`imcsim.files.is_imcsim_file`)."""
    return atomic_write(path, json.dumps(trace).encode())
