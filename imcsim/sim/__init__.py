"""Event layer: turns a workload's op stream into a tally of counts, cycles and cell writes, and a schedule.

``tally`` counts; ``graph`` builds a step's task graph, ``engine`` simulates and
retimes it, ``replay`` caches schedules by step shape, ``timeline`` schedules a
whole run and ``chrome`` exports a step's trace. ``oracle`` (simpy) serves tests
and benchmarks only.
"""

from imcsim.sim.tally import TRAINING_PHASES, Tally, WriteStats, tally_ops

__all__ = ["TRAINING_PHASES", "Tally", "WriteStats", "tally_ops"]
