"""Tally of an op stream: action counts by phase, task and workload module, MACs, and per-cell writes.

Time is not tallied here: :mod:`imcsim.sim.replay` schedules the ops.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from imcsim.ops import TRAINING_PHASES, OpRecord, region_label


@dataclass(frozen=True)
class WriteStats:
    """Per-cell write statistics over the training ops (deployment excluded)."""

    cells: int
    cells_ever_written: int  # cells written at least once
    max_writes: int
    mean_writes: float
    histogram: tuple[tuple[int, int], ...]  # (writes, number of cells)
    per_layer_max: dict[str, int]


@dataclass
class Tally:
    """Counts of an op stream, grouped by phase and by task, and per-cell writes."""

    # per (phase, task, module ``OpRecord.home``): [counts, own cycles, MACs], one update per op; the views by
    # phase, task and module add them up
    by_key: dict[tuple[str, str, str], list] = field(default_factory=dict)
    module_of: dict[str, str] = field(default_factory=dict)  # stored layer -> its module
    shape_of: dict[str, tuple[int, ...]] = field(default_factory=dict)  # module -> its first forward GEMM's shape
    cell_writes: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (layer, region) -> writes
    changed_weights: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> [changed, written]
    cell_scale: dict[tuple[str, str], float] = field(default_factory=dict)  # cells per entry of a sampled region
    # training write-backs: cells whose value changed (summed over write-backs) per task, their counts, cycles
    programmed_by_task: Counter = field(default_factory=Counter)
    program_counts: Counter = field(default_factory=Counter)
    program_cycles: int = 0
    # the arrays' own GEMMs per phase: their MACs and cycles (tiles in parallel, ops one after another)
    array_macs: Counter = field(default_factory=Counter)
    array_cycles: Counter = field(default_factory=Counter)
    n_ops: int = 0
    _views: dict | None = field(default=None, init=False, repr=False)  # see :meth:`_view`

    def add(self, op: OpRecord) -> None:
        module = op.home
        key = (op.phase, op.task, module)
        acc = self.by_key.get(key)
        if acc is None:
            self.by_key[key] = [dict(op.counts), op.cycles, op_macs(op)]
        else:
            counts = acc[0]
            for k, n in op.counts.items():
                counts[k] = counts.get(k, 0) + n
            acc[1] += op.cycles
            acc[2] += op_macs(op)
        self._views = None
        if op.kind == "gemm":
            self.array_macs[op.phase] += op_macs(op)
            self.array_cycles[op.phase] += op.cycles
        self.module_of.setdefault(op.layer, module)
        if op.phase == "forward" and op.kind in ("gemm", "digital") and len(op.shape) == 3:
            self.shape_of.setdefault(module, op.shape)
        if op.cell_writes is not None and op.phase != "deploy" and op.kind == "write":
            self.programmed_by_task[op.task] += int(np.count_nonzero(op.cell_writes)) * op.cell_scale
            self.program_counts.update(op.counts)
            self.program_cycles += op.cycles
        if op.cell_writes is not None and op.phase != "deploy":
            seen = self.changed_weights.setdefault(op.target, [0, 0])
            seen[0] += op.changed_weights
            seen[1] += math.prod(op.shape)
            self.cell_scale[op.target] = op.cell_scale
            acc = self.cell_writes.get(op.target)
            if acc is None:
                self.cell_writes[op.target] = op.cell_writes.astype(np.int64)
            elif acc.shape == op.cell_writes.shape:
                acc += op.cell_writes
            else:  # a region that grew (e.g. scratch rows for a larger batch): pad both to the union
                shape = tuple(max(a, b) for a, b in zip(acc.shape, op.cell_writes.shape, strict=True))
                grown = np.zeros(shape, dtype=np.int64)
                grown[tuple(slice(0, d) for d in acc.shape)] += acc
                grown[tuple(slice(0, d) for d in op.cell_writes.shape)] += op.cell_writes
                self.cell_writes[op.target] = grown
        self.n_ops += 1

    def _view(self) -> dict:
        """Counts by phase, by task (training ops) and by module and phase; cycles and MACs by module and phase;
        MACs by phase. Computed once after the last :meth:`add`."""
        if self._views is None:
            v = {name: defaultdict(Counter) for name in ("phase", "task", "cycles", "macs")}
            v["module"] = defaultdict(lambda: defaultdict(Counter))
            v["macs_phase"] = Counter()
            for (phase, task, module), (counts, cycles, macs) in self.by_key.items():
                v["phase"][phase].update(counts)
                if phase != "deploy":
                    v["task"][task].update(counts)
                v["module"][module][phase].update(counts)
                v["cycles"][module][phase] += cycles
                v["macs"][module][phase] += macs
                v["macs_phase"][phase] += macs
            self._views = v
        return self._views

    @property
    def counts_by_phase(self) -> dict[str, Counter]:
        return self._view()["phase"]

    @property
    def counts_by_task(self) -> dict[str, Counter]:
        """Counts of each task's training ops (deployment left out)."""
        return self._view()["task"]

    @property
    def counts_by_module(self) -> dict[str, dict[str, Counter]]:
        """Counts per workload module and phase, deployment included."""
        return self._view()["module"]

    @property
    def cycles_by_module(self) -> dict[str, Counter]:
        """Own cycles per workload module and phase."""
        return self._view()["cycles"]

    @property
    def macs_by_module(self) -> dict[str, Counter]:
        return self._view()["macs"]

    @property
    def macs_by_phase(self) -> Counter:
        return self._view()["macs_phase"]

    def counts(self, phases: Iterable[str] = TRAINING_PHASES) -> Counter:
        by_phase = self.counts_by_phase
        out: Counter = Counter()
        for p in phases:
            out.update(by_phase.get(p, Counter()))
        return out

    def pooled_max_write_rate(self, cells_per_weight: int) -> float:
        """Highest expected writes of a cell per counted step when every layer shares one distribution of
        writes per changed weight (cost-only steps: synthetic weights drawn alike for every layer).

        Pools the writes at each bit position over all layers, per changed weight, and scales by the
        busiest layer's share of changed weights: the mean over a small layer's few weights would be
        dominated by the heavy tail of write-and-verify pulse counts. Operand planes of the in-array weight
        gradient are rewritten whole every step: their hottest cell's writes in the counted step count as they are.
        """
        per_position = np.zeros(cells_per_weight)
        changed = 0
        share = 0.0
        operands = 0.0
        for (layer, region), a in self.cell_writes.items():
            if region == "operands":
                operands = max(operands, float(a.max(initial=0)))
                continue
            c, n = self.changed_weights.get((layer, region), (0, 0))
            rows = a.reshape(-1, a.shape[-1])
            if not a.size or not n or rows.shape[1] % cells_per_weight:
                continue
            per_position += rows.reshape(rows.shape[0], -1, cells_per_weight).sum(axis=(0, 1)) * self.cell_scale.get(
                (layer, region), 1.0)
            changed += c
            share = max(share, c / n)
        return max(float(per_position.max() / changed * share) if changed else 0.0, operands)

    def write_stats(self, all_cells: int) -> WriteStats:
        """Statistics over every stored cell (``all_cells``), never-written cells included."""
        freq = np.zeros(1, dtype=np.int64)  # freq[w]: cells written w times
        size = 0
        for target, a in self.cell_writes.items():
            if a.size:
                scale = self.cell_scale.get(target, 1.0)  # a programmed sample stands for this many cells each
                counts = np.rint(np.bincount(a.ravel()) * scale).astype(np.int64)
                if len(counts) > len(freq):
                    freq = np.pad(freq, (0, len(counts) - len(freq)))
                freq[: len(counts)] += counts
                size += round(a.size * scale)
        freq[0] += max(all_cells - size, 0)
        hist = Counter({w: int(f) for w, f in enumerate(freq.tolist()) if f})
        total = int(np.dot(np.arange(len(freq)), freq))
        return WriteStats(
            cells=all_cells,
            cells_ever_written=int(freq[1:].sum()),
            max_writes=int(np.flatnonzero(freq)[-1]) if size and freq[1:].any() else 0,
            mean_writes=total / all_cells if all_cells else 0.0,
            histogram=tuple(sorted((int(k), int(v)) for k, v in hist.items() if v)),
            per_layer_max={region_label(*k): int(v.max()) for k, v in self.cell_writes.items()},
        )


def op_macs(op: OpRecord) -> int:
    """Multiply-accumulates of an op, as the circuit that made it counted them (every group and copy of a
    GEMM; none for writes and optimizer updates)."""
    return op.macs


def tally_ops(ops: Iterable[OpRecord]) -> Tally:
    t = Tally()
    for op in ops:
        t.add(op)
    return t


def measured_activity(ops: Iterable[OpRecord], stored: Iterable[np.ndarray] = ()) -> dict[str, object]:
    """Operand statistics of a functional run, in the form cost-only runs take them.

    Plane densities: 1 bits per plane over the streamed elements of the forward
    pass (activations) and of the input-gradient pass (errors). Weight bit
    density over the ``stored`` INT8 matrices; change fraction: weights whose
    INT8 code changed per write-back, overall and per layer-name suffix (the
    last dotted part, when there are several kinds); the standard deviation of
    the stored codes (LSB).
    """
    ones = {"forward": np.zeros(8), "input_grad": np.zeros(8)}
    elements = {"forward": 0, "input_grad": 0}
    for op in ops:
        if op.plane_ones is not None and op.phase in ones:
            ones[op.phase] += op.plane_ones
            elements[op.phase] += op.shape[0] * op.shape[1]
    changed = weights = 0
    by_kind: dict[str, list[int]] = {}  # layer-name suffix -> [changed, weights]
    for op in ops:
        if op.phase == "update" and op.kind == "write" and op.region == "weights":
            changed += op.changed_weights
            weights += op.shape[0] * op.shape[1]
            acc = by_kind.setdefault("." + op.layer.rsplit(".", 1)[-1], [0, 0])
            acc[0] += op.changed_weights
            acc[1] += op.shape[0] * op.shape[1]
    out: dict[str, object] = {}
    if weights:
        out["weight_change_fraction"] = round(changed / weights, 4)
    if len(by_kind) > 1:  # layers of different kinds (e.g. LoRA's A and B) change at different rates
        out["weight_change_by_layer"] = {k: round(c / w, 4) for k, (c, w) in sorted(by_kind.items()) if w}
    stored = [np.ascontiguousarray(v) for v in stored]
    values = [v.view(np.uint8) for v in stored]
    if values:
        bits = sum(int(np.unpackbits(v.ravel()).sum()) for v in values)
        out["weight_bit_density"] = round(bits / (8 * sum(v.size for v in values)), 4)
        codes = np.concatenate([v.ravel().astype(np.float64) for v in stored])
        out["weight_std_lsb"] = round(float(codes.std()), 2)
    for phase, key in (("forward", "forward_plane_density"), ("input_grad", "error_plane_density")):
        if elements[phase]:
            out[key] = [round(float(v), 4) for v in ones[phase] / elements[phase]]
    return out
