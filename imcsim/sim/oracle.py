"""simpy run of a step's task graph: the reference the compiled engine is tested against.

:mod:`imcsim.sim.engine` processes the events this simulation processes, in the
same order; the tests compare the two grant for grant, time for time and event
for event. Only tests and benchmarks import this module; simpy is imported when
a simulation runs, so the run path never needs it.
"""

from __future__ import annotations

import numpy as np

from imcsim.sim.graph import WRITE_DRIVERS, TaskGraph


def simulate_simpy(graph: TaskGraph) -> tuple[list[int], int, np.ndarray]:
    """Run the graph in a simpy environment; returns what :func:`imcsim.sim.engine.simulate` returns.

    Every task is a process that waits for all its dependencies, then requests
    its segments' resources in turn (a :class:`simpy.Resource` per slot resource,
    a :class:`simpy.Container` for the write-driver pool), holds them for the
    segment's duration and releases them.
    """
    import simpy

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
