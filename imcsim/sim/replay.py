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
