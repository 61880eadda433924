"""Where each training tensor lives, and the traffic of a step between the macro, the global buffer and DRAM.

Tensors (sizes from the layer graph traced on meta tensors, :mod:`imcsim.workloads.dataflow`, and the
training memory, :mod:`imcsim.workloads.memory`):

* **weights** stay in the arrays; deployment reads them from DRAM once;
* **working set** of a layer: its input and output activations (or errors) while it runs. A layer whose
  whole-batch working set does not fit the buffer streams the batch in sample tiles; one sample's must fit,
  else the run is refused (:class:`BufferTooSmall`). The circuit's ``memory.working_set`` says what is kept
  free for it: the largest whole-batch working set (``batch``, capped at the buffer) or the largest
  one-sample working set (``sample``: layers stream their batch sample by sample);
* **master weights and optimizer state** (32 bits each per trainable parameter) and the **activations kept
  for backward** (:attr:`LayerCall.kept_bits`: a trainable layer's input, batch-norm inputs, ReLU masks) are
  placed by the circuit's ``memory.policy``: ``on_chip_first`` keeps the master state, then the kept
  activations of the last layers first (the first the backward pass needs), in the buffer beside the
  reserve while they fit, and spills the rest to DRAM; ``dram`` puts all of them in DRAM; ``on_chip`` keeps
  all of them in the buffer and is refused when they do not fit.

Traffic of a step (counted per layer and phase, at 8 bits per activation or error):

* every layer reads its input from the buffer and writes its output (forward); reads the error of its
  output and writes that of its input where a gradient flows there (input gradient); reads its kept input
  and its output error for the weight gradient (``weight_grad``); each bit crosses the wires between the
  buffer and the macro (``interconnect``). Norms, activations and pooling work on the producing layer's
  output as it streams out (fused), so they move nothing more;
* a spilled kept activation is written to DRAM in the forward pass and read back before the layer's
  backward pass; master state in DRAM is read before the update and written after it; the step's input
  batch is read from DRAM once (8 bits per element of the largest input of the layers that read it: the
  image a Rep-Net backbone and its first side module share, or a transformer's embedded tokens, which its
  first projections share); deployment reads every stored weight from DRAM.

Buffer and wire counts are added to the op of the layer and phase that moves the data; DRAM transfers are ops
of their own (``kind="transfer"``) that the schedule runs on the DRAM channels
(:func:`imcsim.sim.graph.build_step_graph`), so a DRAM-bound layer lengthens the critical path.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imcsim.circuits.base import ArrayCircuit, CapacityError
from imcsim.ops import OpRecord
from imcsim.workloads.dataflow import LayerCall, LayerGraph
from imcsim.workloads.memory import MemoryBits, TrainingMemory

ACT_BITS = MemoryBits().activation_bits
BUFFER_KEY = "circuit.components.global_buffer.capacity_kib"


class BufferTooSmall(CapacityError):
    """The global buffer cannot hold what the run needs on chip (``key`` names the setting to raise)."""

    def __init__(self, message: str, key: str = BUFFER_KEY) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Placement:
    """Where a step's tensors live (bits)."""

    policy: str
    capacity_bits: int
    reserve_bits: int  # the largest whole-batch working set, capped at the buffer
    working_layer: str  # the layer with the largest working set
    master_bits: int  # master weights and optimizer state
    master_on_chip: bool
    kept_on_chip: Mapping[str, int] = field(default_factory=dict)
    kept_in_dram: Mapping[str, int] = field(default_factory=dict)

    @property
    def buffer_state_bits(self) -> int:
        """Bits of training state the buffer holds (master state if on chip, kept activations)."""
        return (self.master_bits if self.master_on_chip else 0) + sum(self.kept_on_chip.values())

    @property
    def dram_state_bits(self) -> int:
        return (0 if self.master_on_chip else self.master_bits) + sum(self.kept_in_dram.values())

    @property
    def master_dram_bits(self) -> int:
        return 0 if self.master_on_chip else self.master_bits


def _kib(bits: float) -> str:
    return f"{math.ceil(bits / 8192):,} KiB"


def place(graph: LayerGraph, memory: TrainingMemory | None, macro: ArrayCircuit) -> Placement:
    """Place a step's tensors by the circuit's ``memory.policy`` (module docstring); refuses a buffer too small
    for one sample's working set of a layer, or (``on_chip``) for everything the policy keeps on chip."""
    capacity = macro.buffer.capacity_bits
    policy = macro.card.memory.policy
    batch_ws, per_sample_ws, layer = 0, 0, ""
    for c in graph.calls:
        ws = (c.in_elems + c.out_elems) * ACT_BITS
        if ws > batch_ws:
            batch_ws, layer = ws, c.name
        per_sample_ws = max(per_sample_ws, math.ceil(ws / max(1, c.samples)))
    if per_sample_ws > capacity:
        raise BufferTooSmall(f"the global buffer holds {_kib(capacity)} but layer {layer!r} needs "
                             f"{_kib(per_sample_ws)} for one sample's input and output; raise {BUFFER_KEY} to "
                             f"at least {math.ceil(per_sample_ws / 8192)}")
    reserve = min(batch_ws, capacity) if macro.card.memory.working_set == "batch" else per_sample_ws
    master = (memory.weights_trainable + memory.optimizer) if memory is not None else 0
    kept = [(c.name, c.kept_bits) for c in reversed(graph.calls) if c.kept_bits]
    if policy == "on_chip":
        need = reserve + master + sum(b for _, b in kept)
        if need > capacity:
            raise BufferTooSmall(f"memory.policy on_chip keeps {_kib(master)} of master weights and optimizer "
                                 f"state and {_kib(sum(b for _, b in kept))} of kept activations beside a "
                                 f"{_kib(reserve)} working set, {_kib(need)} in all, but the global buffer holds "
                                 f"{_kib(capacity)}; raise {BUFFER_KEY} to at least {math.ceil(need / 8192)} or "
                                 "use the policy on_chip_first")
        return Placement(policy, capacity, reserve, layer, master, True, dict(kept), {})
    free = capacity - reserve
    master_on = policy == "on_chip_first" and master <= free
    free -= master if master_on else 0
    on_chip: dict[str, int] = {}
    in_dram: dict[str, int] = {}
    for name, bits in kept:
        if policy == "on_chip_first" and bits <= free:
            on_chip[name] = bits
            free -= bits
        else:
            in_dram[name] = bits
    return Placement(policy, capacity, reserve, layer, master, master_on, on_chip, in_dram)


def _gb(read: float, write: float) -> Counter:
    r, w = round(read), round(write)
    return Counter({("global_buffer", "read_bit"): r, ("global_buffer", "write_bit"): w, ("interconnect", "bit"): r + w})


def buffer_traffic(c: LayerCall, scale: float) -> dict[str, Counter]:
    """Buffer and wire counts of one layer by phase (``scale``: samples of the step over the traced ones)."""
    x, y = c.in_elems * ACT_BITS * scale, c.out_elems * ACT_BITS * scale
    out = {"forward": _gb(x, y)}
    if c.input_grad:
        out["input_grad"] = _gb(y, x)
    if c.trainable:
        out["weight_grad"] = _gb(x + (0 if c.input_grad else y), 0)
    return out


def with_traffic(ops: Sequence[OpRecord], graphs: Mapping[str, LayerGraph], placements: Mapping[str, Placement],
                 macro: ArrayCircuit, samples_by_step: Mapping[int, int] | None = None) -> list[OpRecord]:
    """``ops`` with the traffic of every step (module docstring): buffer and wire counts added to the op of each
    layer and phase, DRAM transfers inserted where the schedule needs them, deployment reads from DRAM."""
    out: list[OpRecord] = []
    steps: dict[tuple[int, str], list[OpRecord]] = defaultdict(list)
    order: list[tuple[int, str]] = []
    for op in ops:
        if op.phase == "deploy":
            out.append(op)
            if op.kind == "write" and op.region == "weights":
                bits = math.prod(op.shape) * 8  # the whole matrix's INT8 weights (a sample's op has its shape)
                out.append(macro.dram_transfer(bits, 0, "deploy", op.layer, "weights").tagged(
                    module=op.module, task=op.task))
            continue
        key = (op.step, op.task)
        if key not in steps:
            order.append(key)
        steps[key].append(op)
    for key in order:
        step, task = key
        graph, placement = graphs.get(task), placements.get(task)
        if graph is None or placement is None:
            out += steps[key]
            continue
        samples = (samples_by_step or {}).get(step)
        out += _step_with_traffic(steps[key], graph, placement, macro, samples, step, task)
    return out


_PHASE_GROUP = {"forward": 0, "input_grad": 1, "weight_grad": 1, "update": 2}


def _step_with_traffic(ops: list[OpRecord], graph: LayerGraph, placement: Placement, macro: ArrayCircuit,
                       samples: int | None, step: int, task: str) -> list[OpRecord]:
    tag = dict(step=step, task=task)
    extra: dict[tuple[str, str], Counter] = {}
    first_inputs = 0.0
    known = {c.name for c in graph.calls}
    for c in graph.calls:
        scale = (samples / c.samples) if samples else 1.0
        for phase, counts in buffer_traffic(c, scale).items():
            extra[(c.name, phase)] = counts
        if not any(p in known for p, _ in c.producers):  # the layers that read the input share one read of it
            first_inputs = max(first_inputs, c.in_elems * ACT_BITS * scale)
    merged: list[OpRecord] = []
    for op in ops:
        counts = extra.pop((op.home, op.phase), None) if op.kind in ("gemm", "digital") else None
        if counts:
            total = Counter(op.counts)
            total.update(counts)
            op = dataclasses.replace(op, counts=dict(total))
        merged.append(op)
    groups: list[list[OpRecord]] = [[], [], []]
    for op in merged:  # forward, backward, update: the order the step's task graph is built in
        groups[_PHASE_GROUP.get(op.phase, 1)].append(op)
    scale = (samples / graph.calls[0].samples) if samples and graph.calls else 1.0
    first = graph.calls[0].name if graph.calls else "input"
    inputs = [macro.dram_transfer(round(first_inputs), 0, "forward", first, "input").tagged(module=first, **tag)]
    chunks = samples or (graph.calls[0].samples if graph.calls else 1)
    spills = [_dram(macro, 0, bits * scale, "forward", name, "spill", tag, chunks=chunks) for name, bits in
              placement.kept_in_dram.items()]
    fills = [_dram(macro, bits * scale, 0, "weight_grad", name, "fill", tag, chunks=chunks) for name, bits in
             placement.kept_in_dram.items()]
    master = placement.master_dram_bits
    updates = [op for op in groups[2] if op.kind == "digital"]
    m_read, m_write = [], []
    if master and updates:
        total = sum(math.prod(op.shape) for op in updates) or 1
        for op in updates:  # each update's share of the master state, read before it and written after
            share = master * math.prod(op.shape) / total
            m_read.append(_dram(macro, share, 0, "update", op.layer, "master_read", tag, op.module))
            m_write.append(_dram(macro, 0, share, "update", op.layer, "master_write", tag, op.module))
    return [*inputs, *groups[0], *spills, *fills, *groups[1], *m_read, *groups[2], *m_write]


def _dram(macro: ArrayCircuit, read: float, write: float, phase: str, layer: str, region: str, tag: dict,
          module: str | None = None, chunks: int = 1) -> OpRecord:
    """A DRAM transfer op; with ``chunks`` > 1 it moves sample by sample (one schedule task per sample)."""
    op = macro.dram_transfer(round(read), round(write), phase, layer, region)
    if chunks > 1:
        per = np.full(chunks, op.cycles // chunks, dtype=np.int64)
        per[: op.cycles % chunks] += 1
        op = dataclasses.replace(op, chunk_cycles=per)
    if region in ("spill", "fill"):  # the buffer side of a spill (read out) or a fill (written in)
        extra = Counter(op.counts)
        extra.update({("global_buffer", "read_bit"): round(write), ("global_buffer", "write_bit"): round(read)})
        op = dataclasses.replace(op, counts=dict(extra))
    return op.tagged(module=module or layer, **tag)
