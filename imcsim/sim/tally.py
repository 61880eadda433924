"""Tally of an op stream: action counts by phase and task, cycles, per-cell writes.

Schedule model: ops run in program order on the macro (each op's tiles run in
parallel in their own subarrays; an op's ``cycles`` is its slowest tile), so a
phase's latency is the sum of its ops' cycles times the macro cycle time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from imcsim.circuits.macro import OpRecord

TRAINING_PHASES = ("forward", "input_grad", "weight_grad", "update")


@dataclass(frozen=True)
class WriteStats:
    """Per-cell write statistics over the training ops (deployment excluded)."""

    cells: int
    cells_written: int
    max_writes: int
    mean_writes: float
    histogram: tuple[tuple[int, int], ...]  # (writes, number of cells)
    per_layer_max: dict[str, int]


@dataclass
class Tally:
    """Counts and cycles of an op stream, grouped by phase and by task."""

    counts_by_phase: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    counts_by_task: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    cycles_by_phase: Counter = field(default_factory=Counter)
    cycles_by_task: Counter = field(default_factory=Counter)
    cell_writes: dict[str, np.ndarray] = field(default_factory=dict)
    n_ops: int = 0

    def add(self, op: OpRecord) -> None:
        self.counts_by_phase[op.phase].update(op.counts)
        if op.phase != "deploy":
            self.counts_by_task[op.task].update(op.counts)
            self.cycles_by_task[op.task] += op.cycles
        self.cycles_by_phase[op.phase] += op.cycles
        if op.cell_writes is not None and op.phase != "deploy":
            acc = self.cell_writes.get(op.layer)
            if acc is None:
                self.cell_writes[op.layer] = op.cell_writes.astype(np.int64)
            elif acc.shape == op.cell_writes.shape:
                acc += op.cell_writes
            else:  # a region that grew (e.g. scratch rows for a larger batch): pad both to the union
                shape = tuple(max(a, b) for a, b in zip(acc.shape, op.cell_writes.shape, strict=True))
                grown = np.zeros(shape, dtype=np.int64)
                grown[tuple(slice(0, d) for d in acc.shape)] += acc
                grown[tuple(slice(0, d) for d in op.cell_writes.shape)] += op.cell_writes
                self.cell_writes[op.layer] = grown
        self.n_ops += 1

    def counts(self, phases: Iterable[str] = TRAINING_PHASES) -> Counter:
        out: Counter = Counter()
        for p in phases:
            out.update(self.counts_by_phase.get(p, Counter()))
        return out

    def write_stats(self, all_cells: int) -> WriteStats:
        """Statistics over every stored cell (``all_cells``), never-written cells included."""
        if self.cell_writes:
            flat = np.concatenate([a.ravel() for a in self.cell_writes.values()])
        else:
            flat = np.zeros(0, dtype=np.int64)
        unwritten = max(all_cells - flat.size, 0)
        values, freq = np.unique(flat, return_counts=True)
        hist = Counter(dict(zip(values.tolist(), freq.tolist(), strict=True)))
        hist[0] += unwritten
        total = int(flat.sum())
        return WriteStats(
            cells=all_cells,
            cells_written=int((flat > 0).sum()),
            max_writes=int(flat.max()) if flat.size else 0,
            mean_writes=total / all_cells if all_cells else 0.0,
            histogram=tuple(sorted((int(k), int(v)) for k, v in hist.items() if v)),
            per_layer_max={k: int(v.max()) for k, v in self.cell_writes.items()},
        )


def tally_ops(ops: Iterable[OpRecord]) -> Tally:
    t = Tally()
    for op in ops:
        t.add(op)
    return t
