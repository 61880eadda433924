"""Step schedules by shape: each new shape signature is simulated once, later steps replay its grant order.

Steps of one run mostly repeat a few shapes (every training step of a task has
the same ops with different counts). The first step of a shape builds its task
graph (:mod:`imcsim.sim.graph`) and runs the event engine
(:func:`imcsim.sim.engine.simulate`); every later step of that shape refills
the cached graph with its own durations and energies and replays the recorded
order (:func:`imcsim.sim.engine.retime`).
"""

from __future__ import annotations

from collections.abc import Sequence

from imcsim.ops import OpRecord
from imcsim.sim.engine import CompiledGraph, Schedule, compile_graph, retime, simulate
from imcsim.sim.graph import MacroView, TaskGraph, build_step_graph, step_key
from imcsim.workloads.dataflow import LayerGraph

_TEMPLATES: dict[tuple, tuple[TaskGraph, LayerGraph | None]] = {}
"""Task-graph structures by shape signature and macro layout, shared by the runs of a process (a sweep's
points): a structure is built once and filled with each step's durations; the layer graph is kept alive
with it, so the id in the signature stays its own."""
TEMPLATES_KEPT = 64


def _layout(view: MacroView) -> tuple:
    """What a task graph's structure takes from the macro: resources and their capacities."""
    return (view.buffer_ports, view.write_drivers, view.scratch_subarrays, view.drivers_per_subarray,
            tuple(sorted(view.subarrays.items())))


def _structure(ops: Sequence[OpRecord], layers: LayerGraph | None, view: MacroView, key: tuple) -> TaskGraph:
    """The step's task graph with its own durations: a known structure refilled, or a new one built."""
    full = (key, _layout(view))
    known = _TEMPLATES.get(full)
    if known is not None:
        return known[0].fill(ops, view)
    graph = build_step_graph(ops, layers, view)
    if len(_TEMPLATES) >= TEMPLATES_KEPT:
        _TEMPLATES.pop(next(iter(_TEMPLATES)))
    _TEMPLATES[full] = (graph, layers)
    return graph


class Scheduler:
    """Schedules steps on one macro, caching each shape signature's graph and grant order."""

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
            graph = _structure(ops, layers, self.view, key)
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
