"""Event layer: turns a workload's op stream into a tally of counts, cycles and cell writes."""

from imcsim.sim.tally import TRAINING_PHASES, Tally, WriteStats, tally_ops

__all__ = ["TRAINING_PHASES", "Tally", "WriteStats", "tally_ops"]
