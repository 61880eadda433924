"""The metrics registry: every figure a report carries, with its unit, basis, meaning and the function that
computes it from one run's :class:`RunContext`.

One list, read by the report (units in report.json, the console summary), the methods table, ``imcsim compare``
and ``imcsim sweep`` (their columns and plots), and the golden tests (every registered metric against its
golden, with :func:`within`: cost-only to :data:`EXACT`, functional within the spread stored in the golden). :func:`evaluate` computes every metric and the report's tables; :mod:`imcsim.api` only runs the
pipeline (execute, tally, schedule, cost) that fills the context.

Bases: ``run`` (a total over the whole run: every task, every step), ``step`` (per training step), ``task``
(per task), ``hardware`` (a property of the built hardware), ``schedule`` (bookkeeping of the event
simulation). Units are SI, from the name's suffix (:func:`unit_of`); ``1`` marks a plain number or a fraction.
A MAC is one multiply-accumulate, counted as 2 operations in TOPS/W.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from imcsim.chip import macros_of
from imcsim.circuits.base import LEVELS, ArrayCircuit
from imcsim.config import RunConfig
from imcsim.cost import CostResult, cost, static_cost
from imcsim.devices import MemoryDevice, device_warnings
from imcsim.errors import InputError
from imcsim.models.backbone import architecture_hash, model_provenance
from imcsim.ops import PHASES, TRAINING_PHASES, OpRecord
from imcsim.sim.tally import Tally, WriteStats, measured_activity, tally_ops
from imcsim.sim.timeline import RunTimeline, energy_over_time, step_power_profile
from imcsim.units import SECONDS_PER_YEAR, unit_of_name
from imcsim.workloads.continual import ContinualResult
from imcsim.workloads.traffic import Placement

BASES = ("run", "step", "task", "hardware", "schedule")
GEMM_PHASES = ("forward", "input_grad", "weight_grad")  # the phases whose MACs make a training step's


@dataclass(frozen=True)
class RunContext:
    """What one run produced, from which every metric and table is computed: the workload's result (ops,
    accuracy), its tally, its schedules, its training and deployment costs, the hardware and the config."""

    config: RunConfig
    device: MemoryDevice
    macro: ArrayCircuit
    result: ContinualResult
    tally: Tally
    timeline: RunTimeline
    train: CostResult  # training phases, scaled to every step the counted steps stand for
    deploy: CostResult

    @property
    def counted_steps(self) -> int:
        return sum(self.result.steps_per_task)

    @property
    def scale(self) -> float:
        """Training steps each counted step stands for (cost-only runs count one)."""
        return self.result.step_scale

    @property
    def steps(self) -> float:
        return self.counted_steps * self.scale

    @property
    def n_tasks(self) -> int:
        return len(self.result.task_names) * self.result.task_repeats

    @property
    def t_cycle_s(self) -> float:
        return self.macro.t_cycle_s

    def per_step(self, total: float) -> float:
        return total / self.steps if self.steps else 0.0

    @cached_property
    def write_stats(self) -> WriteStats:
        cells = (sum(s.values.size * self.macro.cells_per_weight for s in self.macro.matrices().values())
                 + sum(b.size for b in self.macro.scratch.values()))
        return self.tally.write_stats(cells)

    @cached_property
    def max_writes_per_step(self) -> float:
        """Writes of the hottest cell per step (cost-only: the hottest bit position's expected rate)."""
        if self.scale == 1.0:
            return self.write_stats.max_writes / self.steps if self.steps else 0.0
        return self.tally.pooled_max_write_rate(self.macro.cells_per_weight) / self.counted_steps

    @cached_property
    def _reads_per_cell_step(self) -> dict[tuple[str, str], tuple[str, float]]:
        """(layer, region) of each stored matrix -> (its macro, reads of one of its cells per counted step): the
        matrix's cell reads in the training phases spread over its cells (the bit-serial stream reads every cell
        of a matrix alike)."""
        held = self.macro.matrices()
        reads: dict[tuple[str, str], list] = {}
        for op in self.result.ops:
            if op.phase not in TRAINING_PHASES or (op.layer, op.region) not in held:
                continue
            n = sum(c for (comp, action), c in op.counts.items()
                    if action == "read" and comp in self.macro.device_components)
            if n:
                entry = reads.setdefault((op.layer, op.region), [self.macro.macro_of(op.home), 0.0])
                entry[1] += n
        out = {}
        for key, (macro, n) in reads.items():
            s = held[key]
            out[key] = (macro, n / (s.values.size * s.scale * self.macro.cells_per_weight) / max(1, self.counted_steps))
        return out

    def max_reads_per_step(self, macro: str | None = None) -> float:
        """Reads of the most read stored cell per step (on a chip, of the macro named)."""
        return max((r for m, r in self._reads_per_cell_step.values() if macro is None or m == macro), default=0.0)

    @cached_property
    def lifetime_steps(self) -> float:
        """Steps until the most worn cell wears out: the hottest cell's writes against the device's write
        endurance, plus the most read cell's reads against its read endurance (barrier wear under read stress;
        the damages add); on a chip of several macros, the macro that wears first. A device whose cells' endurance
        is a Weibull law (``endurance_shape``) gives, in a functional run, the array's median first failure from
        every written cell's wear rate (the weakest cell, not the mean, sets it; such a device has no read wear)."""
        circuits = getattr(self.macro, "circuits", None)
        if not circuits and self.scale == 1.0 and self.steps and getattr(
                getattr(self.device, "card", None), "endurance_shape", None) is not None:
            # cells of a Weibull endurance: the array's median first failure from every cell's wear rate
            parts = [(a.ravel() / self.steps * self.device.wear_per_pulse, self.tally.cell_scale.get(t, 1.0))
                     for t, a in self.tally.cell_writes.items() if t[1] != "operands"]
            if not parts:
                return math.inf
            rates = np.concatenate([r for r, _ in parts])
            weights = np.concatenate([np.full(r.size, s) for r, s in parts])
            return self.device.array_endurance(rates, weights)
        if not circuits:
            return _lifetime(self.max_writes_per_step, self.device, self.max_reads_per_step())
        best = math.inf
        for name, circuit in circuits.items():
            sub = tally_ops([op for op in self.result.ops if op.kind == "write"
                             and self.macro.macro_of(op.home) == name])
            rate = (sub.write_stats(0).max_writes / self.steps if self.scale == 1.0 and self.steps
                    else sub.pooled_max_write_rate(circuit.cells_per_weight) / max(1, self.counted_steps))
            best = min(best, _lifetime(rate, circuit.device, self.max_reads_per_step(name)))
        return best

    @cached_property
    def inter_macro_bits_per_step(self) -> float | None:
        """Activation and error bits per step whose producer and consumer layers sit in different macros."""
        if not getattr(self.macro, "others", None):
            return None
        graph = next(iter(self.result.graphs.values()), None)
        if graph is None:
            return 0.0
        bits = 0.0
        for c in graph.calls:
            home = self.macro.macro_of(c.name)
            if any(p in graph and self.macro.macro_of(p) != home for p, _ in c.producers):
                bits += c.in_elems * 8 * (2 if c.input_grad else 1)
        return bits

    @cached_property
    def phase_energy_j(self) -> dict[str, float]:
        """Training energy of each phase over the run."""
        return {p: cost(self.tally.counts((p,)), self.macro.actions, {}, self.t_cycle_s).scaled(self.scale)
                .total_energy_j for p in TRAINING_PHASES}

    def macs_per_step(self, phases: Iterable[str]) -> float:
        return sum(self.tally.macs_by_phase[p] for p in phases) / self.counted_steps if self.counted_steps else 0.0

    @cached_property
    def in_order_cycles(self) -> int:
        """Cycles of every training op run one after another: its own cycles and its buffer transfers."""
        bits = self.macro.card.buffer.bits_per_cycle
        return sum(self.timeline.in_order_cycles) + sum(
            transfer_cycles(op, bits) for op in self.result.ops if op.phase != "deploy")

    def energy_by_level(self, c: CostResult) -> dict[str, float]:
        """Energy of ``c`` by level (:data:`imcsim.circuits.base.LEVELS`)."""
        out = dict.fromkeys(LEVELS, 0.0)
        for (comp, _), e in c.energy_j.items():
            out[self.macro.level(comp)] += e
        return out

    @cached_property
    def forward_macro_j(self) -> float:
        """Forward-phase energy of the cells and their periphery over the run."""
        levels = self.energy_by_level(cost(self.tally.counts(("forward",)), self.macro.actions, {}, self.t_cycle_s))
        return (levels["array"] + levels["periphery"]) * self.scale

    def macro_throughput_density(self) -> float:
        """TOPS per mm^2 of the macro's arrays and periphery while they compute the forward pass: the arrays'
        forward GEMM operations over the time the arrays alone need, bounded above by the shorter of the
        scheduled forward time and their GEMMs' own cycles run one after another (each GEMM's subarray tiles in
        parallel), so a buffer or DRAM that stalls the chip does not count against the macro, as on a macro's
        test bench, where operands arrive in time."""
        t = self.tally.array_cycles.get("forward", 0) * self.t_cycle_s * self.scale
        t = min(t, self.train.latency_s.get("forward", 0.0))
        area = sum(m.array_area_m2() for m in macros_of(self.macro))
        if t <= 0 or area <= 0:
            return 0.0
        return 2.0 * self.tally.array_macs["forward"] * self.scale / t / (area * 1e6) / 1e12

    @cached_property
    def train_levels(self) -> dict[str, float]:
        return self.energy_by_level(self.train)

    @cached_property
    def placement(self) -> Placement | None:
        """Where the training tensors live (the task whose placement puts the most in DRAM)."""
        found = list(self.result.placements.values())
        return max(found, key=lambda p: p.dram_state_bits) if found else None

    @cached_property
    def traffic_bits_per_step(self) -> dict[str, float]:
        """Bits moved per training step: read from and written to DRAM, and to and from the global buffer."""
        keys = {"dram": (("dram", "read_bit"), ("dram", "write_bit")),
                "buffer": (("global_buffer", "read_bit"), ("global_buffer", "write_bit"))}
        counts = self.train.counts
        return {k: self.per_step(sum(counts.get(a, 0) for a in acts)) for k, acts in keys.items()}

    @cached_property
    def dram_static_j(self) -> float:
        """DRAM background energy over the training time."""
        return self.train.energy_j.get(("leakage", "dram"), 0.0)

    @cached_property
    def static_parts_w(self) -> dict[str, float]:
        """Static power with every block powered, by part."""
        return self.macro.static_power_w(self.config.run.temperature_k)

    @cached_property
    def static_mean_w(self) -> dict[str, float]:
        """Mean static power over the training time under power gating, by part (wake-ups included)."""
        static = self.timeline.static.get("train")
        seconds = self.timeline.total_cycles * self.t_cycle_s
        if static is None or seconds <= 0:
            return dict.fromkeys(self.static_parts_w, 0.0)
        return {k: v / seconds for k, v in static.energy_j.items()}

    @cached_property
    def resources(self) -> list[dict[str, Any]]:
        """Per resource group: busy share of the training time, energy by dynamic and static part, its share of
        the training energy; ``sets_step_time`` marks the busiest group (the one the step waits for)."""
        return resource_table(self)

    @cached_property
    def static_power_w(self) -> float:
        return sum(self.static_parts_w.values())

    @cached_property
    def idle_power_w(self) -> float:
        p = self.placement
        return self.macro.idle_power_w(self.config.run.temperature_k, p.buffer_state_bits if p else 0,
                                       p.dram_state_bits if p else 0)

    def energy_per_day_j(self) -> float:
        """A day of ``run.train_time_per_day`` training at the run's mean power, the rest holding the state."""
        t_train = self.train.total_latency_s
        day, busy = 86400.0, self.config.run.train_time_per_day_s
        power = self.train.total_energy_j / t_train if t_train else 0.0
        return power * busy + self.idle_power_w * (day - busy)

    @property
    def analog_error(self) -> Any:
        """The analog circuit's error against the exact products, None for a digital circuit."""
        return getattr(self.macro, "error", None)


def transfer_cycles(op: OpRecord, bits_per_cycle: int) -> int:
    """Buffer cycles the schedule charges an op: a GEMM or digital op (but an optimizer update or an in-array
    weight gradient) loads its operand through a buffer port and stores its result, once per sample chunk."""
    if op.kind == "write" or (op.kind == "digital" and op.phase == "update") or (
            op.kind == "gemm" and op.phase == "weight_grad"):
        return 0
    n = len(op.chunk_cycles) if op.chunk_cycles is not None else 1
    return n * sum(math.ceil(bits / n / bits_per_cycle) if bits > 0 else 0 for bits in (
        op.counts.get(("input_buffer", "read_bit"), 0), op.counts.get(("output_buffer", "write_bit"), 0)))


def _lifetime(write_rate: float, device, read_rate: float) -> float:
    """Steps a cell survives ``write_rate`` writes and ``read_rate`` reads per step (each against its device's
    endurance; inf where neither wears it)."""
    damage = 0.0
    endurance = device.endurance_cycles
    if write_rate > 0 and math.isfinite(endurance):
        damage += write_rate / endurance
    read_endurance = getattr(device, "read_cycles", math.inf)
    if read_rate > 0 and math.isfinite(read_endurance):
        damage += read_rate / read_endurance
    return 1.0 / damage if damage > 0 else math.inf


def _flips(c, mechanism: str) -> float | None:
    injectors = [m.errors for m in macros_of(c.macro) if m.errors is not None]
    if not injectors:
        return None
    return float(sum(inj.flips.get(mechanism, 0) for inj in injectors))


def _pulses(c: CostResult, macro: ArrayCircuit) -> int:
    """Device write pulses among the counted actions (the cells of every macro of a chip)."""
    cells = macro.device_components
    return round(sum(n for (comp, action), n in c.counts.items() if comp in cells and action.endswith("_pulse")))


Compute = Callable[[RunContext], Any]


@dataclass(frozen=True)
class Metric:
    """One registered metric. ``compute`` returns its value from a run, or None where it does not apply
    (``when`` says where it does). ``label``: a short column header; ``fraction``: shown as a percent;
    ``higher_is_better``: a figure of merit, not a cost. How far a rerun may move from a golden value is the
    golden's (measured, stored in the golden file), not the metric's."""

    name: str
    basis: str
    description: str
    compute: Compute
    when: str = ""
    label: str = ""
    fraction: bool = False
    higher_is_better: bool = False
    unit_override: str = ""

    @property
    def unit(self) -> str:
        return self.unit_override or unit_of_name(self.name) or "1"

    @property
    def header(self) -> str:
        return self.label or self.name


EXACT = 1e-12
"""Relative tolerance of a cost-only golden: counts x costs with no training, so a rerun on the same
releases reproduces every figure to the last bits (1e-12 leaves room for a sum in another order only)."""


def within(value: float, golden: float, rel: float) -> bool:
    """``value`` is within ``rel`` of ``golden`` (NaN matches NaN, infinity matches itself; a golden of 0
    takes ``rel`` as an absolute tolerance)."""
    if isinstance(golden, float) and math.isnan(golden):
        return isinstance(value, float) and math.isnan(value)
    if golden in (math.inf, -math.inf) or value in (math.inf, -math.inf):
        return value == golden
    return math.isclose(value, golden, rel_tol=rel, abs_tol=rel if golden == 0 else 0.0)


FUNCTIONAL = "functional runs (cost-only runs train nothing)"
MEMORY = "runs whose workload traces its training memory"


def _functional(value: Compute) -> Compute:
    return lambda c: None if c.config.run.mode == "cost_only" else value(c)


def _memory(name: str) -> Compute:
    return lambda c: None if c.result.memory is None else c.result.memory.as_bytes()[name]


def _utilization(group: str) -> Compute:
    return lambda c: c.timeline.utilization()[group] if c.timeline.capacity_by_group.get(group) else None


def _analog(value: Callable[[Any], float]) -> Compute:
    """An analog error figure; NaN where the run evaluated no analog arithmetic (cost-only)."""
    return lambda c: None if c.analog_error is None else (value(c.analog_error) if c.analog_error.outputs > 0
                                                          else math.nan)


LEVEL_WORDS = {
    "array": "the cells: reads, writes, verify",
    "periphery": "drivers, sensing, converters, adders, operand registers, write drivers",
    "buffer": "the global buffer's reads and writes",
    "dram": "DRAM reads and writes",
    "interconnect": "on-chip wires between buffer and macro",
    "digital": "the digital unit's MACs, updates and elementwise work",
    "leakage": "static power over the scheduled time under power gating, wake-ups and DRAM background included",
}
assert tuple(LEVEL_WORDS) == LEVELS


def _tops_per_watt(macs: float, energy_j: float) -> float:
    return 2 * macs / energy_j / 1e12 if energy_j else 0.0


_PHASE_WORDS = {"forward": "forward", "input_grad": "input-gradient", "weight_grad": "weight-gradient",
                "update": "update (write-back)"}


def _phase_metrics() -> list[Metric]:
    out = []
    for p in TRAINING_PHASES:
        w = _PHASE_WORDS[p]
        out += [
            Metric(f"energy_train_{p}_j", "run", f"training energy of the {w} phase over the run",
                   lambda c, p=p: c.phase_energy_j[p]),
            Metric(f"latency_train_{p}_s", "run", f"critical-path time in the {w} phase over the run (the four "
                   "phases add up to latency_train_s)", lambda c, p=p: c.train.latency_s.get(p, 0.0)),
            Metric(f"latency_per_step_{p}_s", "step", f"critical-path time in the {w} phase per training step",
                   lambda c, p=p: c.per_step(c.train.latency_s.get(p, 0.0))),
        ]
    return out


REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy_source", "run", "accuracy of the deployed model on its source (pretraining) task, 0..1",
           _functional(lambda c: c.result.source_accuracy), when=FUNCTIONAL, label="source acc.",
           fraction=True, higher_is_better=True),
    Metric("accuracy_average", "run", "mean accuracy over every task after the last one, 0..1",
           _functional(lambda c: c.result.average_accuracy), when=FUNCTIONAL, label="acc.",
           fraction=True, higher_is_better=True),
    Metric("forgetting", "run", "mean drop of each earlier task's accuracy from just after it was learned, 0..1",
           _functional(lambda c: c.result.forgetting), when=FUNCTIONAL, label="forget", fraction=True),
    Metric("trainable_params", "run", "parameters the method trains", lambda c: c.result.trainable_params,
           label="params"),
    Metric("memory_weights_bytes", "step", "training memory: weights (frozen at 8 bits, trainable at 32)",
           _memory("memory_weights_bytes"), when=MEMORY),
    Metric("memory_optimizer_bytes", "step", "training memory: optimizer state of the trainable weights",
           _memory("memory_optimizer_bytes"), when=MEMORY),
    Metric("memory_activations_kept_bytes", "step", "training memory: activations kept for the backward pass",
           _memory("memory_activations_kept_bytes"), when=MEMORY, label="kept act."),
    Metric("memory_kept_gemm_inputs_bytes", "step", "activations kept: inputs of trained conv and linear layers",
           _memory("memory_kept_gemm_inputs_bytes"), when=MEMORY, label="kept GEMM in"),
    Metric("memory_kept_norm_inputs_bytes", "step", "activations kept: inputs of batch norms (scale trains or batch "
           "statistics)", _memory("memory_kept_norm_inputs_bytes"), when=MEMORY, label="kept BN in"),
    Metric("memory_kept_masks_bytes", "step", "activations kept: 1-bit masks of ReLU-like activations",
           _memory("memory_kept_masks_bytes"), when=MEMORY, label="kept masks"),
    Metric("memory_kept_other_bytes", "step", "activations kept: values of smooth activations (GELU, softmax...) "
           "and operands of products of activations", _memory("memory_kept_other_bytes"), when=MEMORY,
           label="kept other"),
    Metric("memory_activations_peak_bytes", "step", "largest live activation and error set over the step",
           _memory("memory_activations_peak_bytes"), when=MEMORY),
    Metric("memory_peak_bytes", "step", "peak training memory: weights + optimizer state + live activations",
           _memory("memory_peak_bytes"), when=MEMORY, label="memory"),
    Metric("training_steps", "run", "training steps over every task", lambda c: round(c.steps)),
    Metric("energy_train_j", "run", "training energy over every task", lambda c: c.train.total_energy_j,
           label="energy"),
    Metric("energy_per_step_j", "step", "training energy per step", lambda c: c.per_step(c.train.total_energy_j)),
    Metric("energy_deploy_j", "run", "energy of deploying the weights into the array",
           lambda c: c.deploy.total_energy_j),
    *[Metric(f"energy_train_{level}_j", "run", f"training energy over the run at the {level} level ({what}; "
             "the levels add up to energy_train_j)", lambda c, level=level: c.train_levels[level])
      for level, what in LEVEL_WORDS.items()],
    Metric("power_static_w", "run", "static power while training: leakage of the occupied arrays (volatile cells), "
           "their peripheral logic, the buffer, and DRAM's background power, at run.temperature",
           lambda c: c.static_power_w),
    Metric("power_static_mean_w", "run", "mean static power over the training time with idle blocks power-gated "
           "and DRAM in power-down or self refresh between bursts (circuit.components.power_gating), wake-ups "
           "included", lambda c: sum(c.static_mean_w.values())),
    Metric("leakage_share_train", "run", "share of the training energy that is static (leakage, wake-ups, DRAM "
           "background)", lambda c: c.train_levels["leakage"] / c.train.total_energy_j if c.train.total_energy_j
           else 0.0, fraction=True, label="leakage"),
    Metric("gating_wakeups", "run", "wake-ups of power-gated blocks over the training time",
           lambda c: round(c.timeline.static["train"].wakes * c.scale) if "train" in c.timeline.static else 0),
    Metric("power_idle_w", "run", "power of holding the trained state between training sessions (volatile arrays, "
           "the buffer bits holding state, DRAM self refresh if it holds any; the rest power-gated)",
           lambda c: c.idle_power_w),
    Metric("energy_per_day_j", "run", "energy of one day: run.train_time_per_day of training at the run's mean "
           "power, the rest of the day at power_idle_w", lambda c: c.energy_per_day_j()),
    Metric("dram_traffic_per_step_bytes", "step", "bytes read from and written to DRAM per training step "
           "(input batch, spilled activations, master state in DRAM)",
           lambda c: c.traffic_bits_per_step["dram"] / 8, label="DRAM/step"),
    Metric("buffer_traffic_per_step_bytes", "step", "bytes read from and written to the global buffer per "
           "training step", lambda c: c.traffic_bits_per_step["buffer"] / 8),
    Metric("inter_macro_traffic_per_step_bytes", "step", "activations and errors per training step that pass "
           "between layers held in different macros of the chip (through the shared buffer)",
           lambda c: None if c.inter_macro_bits_per_step is None else c.inter_macro_bits_per_step / 8,
           when="chips of several macros (chip.macros)"),
    Metric("memory_dram_state_bytes", "step", "training state placed in DRAM: spilled kept activations, master "
           "weights and optimizer state when they do not stay on chip",
           lambda c: c.placement.dram_state_bits / 8 if c.placement else None, when=MEMORY),
    Metric("memory_buffer_state_bytes", "step", "training state kept in the global buffer beside the working set",
           lambda c: c.placement.buffer_state_bits / 8 if c.placement else None, when=MEMORY),
    Metric("energy_program_j", "run", "energy of the training write-backs",
           lambda c: cost(c.tally.program_counts, c.macro.actions, {}, c.t_cycle_s).total_energy_j * c.scale),
    Metric("macs_forward_per_step", "step", "multiply-accumulates of the forward pass per training step, as the "
           "circuits count them (every group of a grouped layer once, in the array and in the digital unit)",
           lambda c: c.macs_per_step(("forward",))),
    Metric("macs_train_per_step", "step", "multiply-accumulates of a whole training step: forward, input-gradient "
           "and weight-gradient GEMMs", lambda c: c.macs_per_step(GEMM_PHASES)),
    Metric("energy_per_mac_forward_j", "step", "forward-phase energy per forward MAC",
           lambda c: (c.per_step(c.phase_energy_j["forward"]) / c.macs_per_step(("forward",))
                      if c.macs_per_step(("forward",)) else 0.0)),
    Metric("energy_per_mac_train_j", "step", "training energy per step (every phase, write-backs included) per "
           "MAC of the step", lambda c: (c.per_step(c.train.total_energy_j) / c.macs_per_step(GEMM_PHASES)
                                         if c.macs_per_step(GEMM_PHASES) else 0.0)),
    Metric("tops_per_watt_forward", "step", "forward MACs x 2 operations per forward-phase energy, in TOPS/W "
           "(10^12 operations per joule; 1 MAC = 2 operations)",
           lambda c: _tops_per_watt(c.macs_per_step(("forward",)), c.per_step(c.phase_energy_j["forward"])),
           unit_override="TOPS/W", higher_is_better=True),
    Metric("tops_per_watt_macro_forward", "step", "forward MACs x 2 operations per forward energy of the macro "
           "alone, its cells and their periphery (no buffer, DRAM, wires, digital unit or static power), in TOPS/W: "
           "the figure a CIM macro paper reports", lambda c: _tops_per_watt(c.macs_per_step(("forward",)),
                                                                          c.per_step(c.forward_macro_j)),
           unit_override="TOPS/W", higher_is_better=True),
    Metric("tops_per_mm2_macro_forward", "step", "the arrays' forward GEMM operations per second of the time the "
           "arrays alone need (the shorter of the scheduled forward time and their GEMMs' cycles one after another: "
           "operands supplied in time, as on a macro's test bench) per mm^2 of the macro's arrays and periphery (no "
           "digital unit, write drivers or buffer), in TOPS/mm^2",
           lambda c: c.macro_throughput_density(), unit_override="TOPS/mm^2", higher_is_better=True),
    Metric("energy_per_mac_train_on_chip_j", "step", "training energy per step without DRAM (its transfers and "
           "background power) per MAC of the step",
           lambda c: (c.per_step(c.train.total_energy_j - c.train_levels["dram"] - c.dram_static_j)
                      / c.macs_per_step(GEMM_PHASES) if c.macs_per_step(GEMM_PHASES) else 0.0)),
    Metric("tops_per_watt_train_on_chip", "step", "training-step MACs x 2 operations per training energy per step "
           "without DRAM (its transfers and background power), in TOPS/W",
           lambda c: _tops_per_watt(c.macs_per_step(GEMM_PHASES),
                                    c.per_step(c.train.total_energy_j - c.train_levels["dram"] - c.dram_static_j)),
           unit_override="TOPS/W", higher_is_better=True),
    Metric("tops_per_watt_train", "step", "training-step MACs x 2 operations per training energy per step (every "
           "phase, write-backs included), in TOPS/W (1 MAC = 2 operations)",
           lambda c: _tops_per_watt(c.macs_per_step(GEMM_PHASES), c.per_step(c.train.total_energy_j)),
           unit_override="TOPS/W", higher_is_better=True),
    *[m for m in _phase_metrics() if m.name.startswith("energy_")],
    Metric("latency_train_s", "run", "scheduled training time over every task", lambda c: c.train.total_latency_s,
           label="latency"),
    Metric("latency_per_step_s", "step", "scheduled time per training step (the step's critical path)",
           lambda c: c.per_step(c.train.total_latency_s)),
    *[m for m in _phase_metrics() if m.name.startswith("latency_")],
    Metric("latency_in_order_per_step_s", "step", "time per step with every op run one after another, its buffer "
           "transfers included (no overlap)",
           lambda c: c.in_order_cycles * c.t_cycle_s / c.counted_steps if c.counted_steps else 0.0),
    Metric("latency_deploy_s", "run", "scheduled time of the deployment writes", lambda c: c.deploy.total_latency_s),
    Metric("latency_program_s", "run", "own duration of the training write-backs, before overlap",
           lambda c: c.tally.program_cycles * c.t_cycle_s * c.scale),
    Metric("utilization_array", "run", "busy fraction of the occupied subarrays over the training time",
           _utilization("array"), fraction=True),
    Metric("utilization_digital", "run", "busy fraction of the digital unit over the training time",
           _utilization("digital"), fraction=True),
    Metric("utilization_buffer", "run", "busy fraction of the buffer ports over the training time",
           _utilization("buffer"), fraction=True),
    Metric("utilization_write_drivers", "run", "busy fraction of the write drivers over the training time",
           _utilization("write_drivers"), fraction=True),
    Metric("utilization_dram", "run", "busy fraction of the DRAM channels over the training time (near 1: the "
           "step is DRAM-bound)", _utilization("dram"), fraction=True),
    Metric("utilization_scratch", "run", "busy fraction of the scratch subarrays (in-array weight gradient)",
           _utilization("scratch"), fraction=True, when="circuit.dataflow.weight_grad=in_array"),
    Metric("write_pulses", "run", "write pulses on the memory cells during training",
           lambda c: _pulses(c.train, c.macro), label="pulses"),
    Metric("write_pulses_deploy", "run", "write pulses of the deployment", lambda c: _pulses(c.deploy, c.macro)),
    Metric("cells_ever_written", "run", "cells written at least once during training (each counted once)",
           lambda c: c.write_stats.cells_ever_written, label="cells written"),
    Metric("writes_max_per_cell", "run", "writes of the most written cell over the run",
           lambda c: (c.write_stats.max_writes * c.scale if c.scale == 1.0
                      else c.max_writes_per_step * c.steps), label="max w/cell"),
    Metric("writes_mean_per_cell", "run", "mean writes per stored cell over the run",
           lambda c: c.write_stats.mean_writes * c.scale),
    Metric("reads_max_per_cell_per_step", "step", "reads of the most read stored cell per training step (its "
           "barrier's read-stress wear enters lifetime_steps)", lambda c: c.max_reads_per_step()),
    Metric("writes_max_per_cell_per_step", "step", "write rate of the most written cell per step",
           lambda c: c.max_writes_per_step),
    Metric("endurance_cycles", "hardware", "write endurance of the device's cells",
           lambda c: c.device.endurance_cycles),
    Metric("lifetime_steps", "run", "training steps until the most written cell reaches its endurance",
           lambda c: c.lifetime_steps, higher_is_better=True),
    Metric("lifetime_years", "run", "years of back-to-back training until the most written cell wears out",
           lambda c: c.lifetime_steps * c.per_step(c.train.total_latency_s) / SECONDS_PER_YEAR, label="lifetime y",
           higher_is_better=True),
    Metric("lifetime_tasks", "run", "tasks until the most written cell wears out",
           lambda c: c.lifetime_steps / (c.steps / c.n_tasks) if c.n_tasks and c.steps else math.inf,
           label="lifetime tasks", higher_is_better=True),
    *[Metric(f"error_flips_{mech}", "run", f"stored bits left wrong by {what} during the run (injected with a "
             "seeded generator from the device's rates at its operating point; functional runs with "
             "run.errors: inject)", lambda c, mech=mech: _flips(c, mech), when="functional runs with run.errors: "
             "inject")
      for mech, what in (("write", "failed write pulses"), ("half_select", "half-select disturbs of unselected cells"),
                         ("read_disturb", "read disturbs"),
                         ("retried", "write-verify-retry rewrites (cells read back wrong and rewritten)"))],
    Metric("cells_programmed", "run", "cells whose stored value changed, summed over the write-backs (a cell "
           "counts at every write-back that changes it)",
           lambda c: sum(c.tally.programmed_by_task.values()) * c.scale),
    Metric("cells_programmed_per_step", "step", "cells programmed per training step",
           lambda c: c.per_step(sum(c.tally.programmed_by_task.values()) * c.scale)),
    Metric("array_refreshes", "run", "times the array was re-verified because a task's accuracy after training fell "
           "below workload.refresh_below", _functional(lambda c: float(c.result.refreshes)),
           when=FUNCTIONAL),
    Metric("cells_programmed_per_task", "task", "cells programmed per task",
           lambda c: sum(c.tally.programmed_by_task.values()) * c.scale / c.n_tasks if c.n_tasks else 0.0,
           label="cells prog./task"),
    Metric("area_m2", "hardware", "chip area: the macro (cell arrays, peripherals, write drivers, the digital "
           "unit) and the global buffer", lambda c: c.macro.area_m2()),
    Metric("area_buffer_m2", "hardware", "area of the global buffer", lambda c: c.macro.buffer.area_m2),
    Metric("subarrays_used", "hardware", "subarrays (crossbars) holding weights", lambda c: c.macro.subarrays_used),
    Metric("utilization_cells", "hardware", "fraction of the occupied subarrays' cells holding weights",
           lambda c: c.macro.utilization(), fraction=True),
    Metric("cycle_time_s", "hardware", "clock period of the macro", lambda c: c.t_cycle_s),
    Metric("schedule_tasks", "schedule", "tile operations the event simulation scheduled",
           lambda c: c.timeline.tasks_scheduled),
    Metric("schedule_events", "schedule", "events the event simulation processed",
           lambda c: c.timeline.scheduler.events),
    Metric("schedules_simulated", "schedule", "step schedules simulated (the rest replayed by shape)",
           lambda c: c.timeline.scheduler.simulated),
    Metric("schedules_replayed", "schedule", "step schedules replayed from one of the same shape",
           lambda c: c.timeline.scheduler.replayed),
    Metric("analog_error_relative_rms", "run", "relative RMS error of the analog GEMMs against the exact "
           "products (not measured, NaN, in cost-only runs)", _analog(lambda e: e.relative_rms),
           when="analog circuits"),
    Metric("analog_error_max_abs", "run", "largest absolute error of an analog GEMM output (NaN in cost-only runs)",
           _analog(lambda e: e.max_abs_error), when="analog circuits"),
)}

RENAMED = {
    "latency_forward_s": "latency_train_forward_s",
    "latency_input_grad_s": "latency_train_input_grad_s",
    "latency_weight_grad_s": "latency_train_weight_grad_s",
    "latency_update_s": "latency_train_update_s",
    "utilization": "utilization_cells",
    "energy_array_leakage_train_j": "energy_train_leakage_j",
    "cells_written": "cells_ever_written",
}
"""Former metric names and the names that replaced them."""

COMPARE_METRICS = (
    "accuracy_average", "forgetting", "trainable_params", "memory_peak_bytes", "training_steps",
    "energy_train_j", "energy_per_step_j", "energy_deploy_j", "energy_per_mac_train_j", "tops_per_watt_train",
    "latency_train_s", "latency_per_step_s", "write_pulses", "write_pulses_deploy", "cells_ever_written",
    "cells_programmed_per_step", "cells_programmed_per_task", "energy_program_j", "latency_program_s",
    "writes_max_per_cell", "writes_max_per_cell_per_step", "lifetime_steps", "lifetime_tasks", "lifetime_years",
    "energy_train_dram_j", "energy_train_buffer_j", "energy_train_leakage_j", "dram_traffic_per_step_bytes",
    "tops_per_watt_train_on_chip", "power_idle_w", "energy_per_day_j", "area_m2", "subarrays_used",
)
"""Columns of ``imcsim compare``, in order."""
SWEEP_METRICS = ("accuracy_source", *COMPARE_METRICS, "analog_error_relative_rms")
"""Columns of a sweep's results, in order (a resumed sweep's table keeps them)."""
METHOD_COLUMNS = (
    "trainable_params", "accuracy_average", "forgetting", "memory_peak_bytes", "memory_activations_kept_bytes",
    "memory_kept_gemm_inputs_bytes", "memory_kept_norm_inputs_bytes", "memory_kept_masks_bytes",
    "memory_kept_other_bytes", "energy_train_j", "energy_train_array_j", "energy_train_periphery_j", "energy_train_buffer_j",
    "energy_train_dram_j", "energy_train_interconnect_j", "energy_train_digital_j", "energy_train_leakage_j",
    "dram_traffic_per_step_bytes", "latency_train_s", "write_pulses", "cells_ever_written",
    "cells_programmed_per_task", "writes_max_per_cell", "lifetime_tasks", "lifetime_years",
)
"""Columns of the methods (baselines) table, in order."""
SUMMARY_METHOD_COLUMNS = (
    "trainable_params", "accuracy_average", "forgetting", "memory_peak_bytes", "dram_traffic_per_step_bytes",
    "energy_train_j", "latency_train_s", "write_pulses", "writes_max_per_cell", "lifetime_years",
)
"""The methods table's columns the console summary shows."""
_unregistered = [n for n in {*SWEEP_METRICS, *METHOD_COLUMNS, *SUMMARY_METHOD_COLUMNS, *RENAMED.values()}
                 if n not in REGISTRY]
assert not _unregistered, _unregistered


def unit_of(name: str) -> str:
    """The unit of a metric: the registered one, else from its name's suffix; ``1`` for a plain number."""
    metric = REGISTRY.get(name)
    return metric.unit if metric is not None else unit_of_name(name) or "1"


def check_metric(name: str, option: str, among: Iterable[str] = REGISTRY) -> str:
    """``name`` if it is one of ``among``; an input error naming ``option`` otherwise (the new name of a
    renamed metric, or the choices)."""
    among = tuple(among)
    if name in among:
        return name
    if name in RENAMED:
        raise InputError(f"metric {name} was renamed {RENAMED[name]}; use {RENAMED[name]}", key=option)
    raise InputError(f"unknown metric {name!r}; choose one of {', '.join(among)}", key=option)


def evaluate(ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every registered metric that applies to the run (registry order) and the report's tables."""
    metrics = {}
    for name, metric in REGISTRY.items():
        value = metric.compute(ctx)
        if value is not None:
            metrics[name] = value
    return metrics, tables(ctx)


VS_FULL = {"memory_peak_vs_full": "memory_peak_bytes", "memory_kept_vs_full": "memory_activations_kept_bytes"}
"""Columns the methods table gains when it holds full fine-tuning: each method's figure over full fine-tuning's
(same backbone, batch and hardware)."""


def against_full(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The methods table's rows with :data:`VS_FULL` ratios to the ``full`` row's figures (rows as they are when
    there is no ``full`` row)."""
    full = next((r for r in rows if r["method"] == "full"), None)
    if full is None:
        return rows
    out = []
    for row in rows:
        extra = {col: row[key] / full[key] for col, key in VS_FULL.items() if row.get(key) is not None
                 and full.get(key)}
        out.append({**row, **extra})
    return out


def method_row(method: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the methods table: the method's figures named in :data:`METHOD_COLUMNS`."""
    return {"method": method, **{k: metrics[k] for k in METHOD_COLUMNS if k in metrics}}


def tables(ctx: RunContext) -> dict[str, Any]:
    """The report's tables: accuracy matrix, cost per task, per layer, write histogram, device figures with
    their units, measured operand activity, energy over time and the first step's power profile."""
    result, macro, timeline = ctx.result, ctx.macro, ctx.timeline
    ws = ctx.write_stats
    return {
        "tasks": result.task_names,
        "accuracy_matrix": result.accuracy.tolist(),
        "per_task": per_task_table(ctx),
        "layers": layer_table(ctx),
        "write_histogram": [list(p) for p in ws.histogram],
        "writes_max_per_layer": ws.per_layer_max,
        "device_figures": {k: {"value": v, "unit": u or "1"} for k, (v, u) in ctx.device.figures().items()},
        "device_warnings": [f"device.{k}: {m}" for k, m in device_warnings(ctx.device)],
        "model": model_table(ctx),
        "activity": measured_activity(result.ops, [s.values for s in macro.stored.values()])
        if ctx.config.run.mode == "functional" else {},
        "traffic": traffic_table(ctx),
        "macros": macro_table(ctx),
        "resources": ctx.resources,
        "energy_levels": {p: ctx.energy_by_level(cost(ctx.tally.counts((p,)), macro.actions, {}, ctx.t_cycle_s)
                                                 .scaled(1.0 if p == "deploy" else ctx.scale))
                          for p in PHASES} | {"train": ctx.train_levels},
        "energy_over_time": [list(p) for p in energy_over_time(timeline)],
        "step_power_profile": [list(p) for p in step_power_profile(timeline.first_step, ctx.t_cycle_s)]
        if timeline.first_step is not None else [],
    }


_GB_READ, _GB_WRITE = ("global_buffer", "read_bit"), ("global_buffer", "write_bit")
_DRAM_READ, _DRAM_WRITE = ("dram", "read_bit"), ("dram", "write_bit")
_TENSOR_OF_REGION = {"input": "input batch", "spill": "kept activations", "fill": "kept activations",
                     "master_read": "master weights and optimizer state",
                     "master_write": "master weights and optimizer state", "weights": "weights"}
_TENSOR_OF_PHASE = {"forward": "activations", "input_grad": "errors", "weight_grad": "kept activations and errors",
                    "update": "master weights and optimizer state"}


def traffic_table(ctx: RunContext) -> list[dict[str, Any]]:
    """Bytes each kind of tensor moves through the global buffer and DRAM: per training step (deployment: once)."""
    rows: dict[tuple[str, str], Counter] = {}
    for op in ctx.result.ops:
        tensor = _TENSOR_OF_REGION[op.region] if op.kind == "transfer" else _TENSOR_OF_PHASE.get(op.phase)
        if tensor is None:
            continue
        when = "deploy" if op.phase == "deploy" else "step"
        acc = rows.setdefault((tensor, when), Counter())
        for key in (_GB_READ, _GB_WRITE, _DRAM_READ, _DRAM_WRITE):
            acc[key] += op.counts.get(key, 0)
    steps = ctx.counted_steps or 1
    out = []
    for (tensor, when), c in sorted(rows.items()):
        per = 1 if when == "deploy" else steps
        if not any(c.values()):
            continue
        out.append({"tensor": tensor, "basis": "deployment" if when == "deploy" else "per step",
                    "buffer_read_bytes": c[_GB_READ] / 8 / per, "buffer_write_bytes": c[_GB_WRITE] / 8 / per,
                    "dram_read_bytes": c[_DRAM_READ] / 8 / per, "dram_write_bytes": c[_DRAM_WRITE] / 8 / per})
    return out


def macro_table(ctx: RunContext) -> list[dict[str, Any]]:
    """Per macro of the chip (one row for a single macro): its device, how many stored matrices it holds, subarrays
    used, area (its arrays and periphery; the shared buffer and digital unit are the main macro's), static power
    with every block powered (its occupied arrays' leakage, their periphery's and its write drivers'; the main
    macro's also the digital unit's), and its cells' writes in training (scaled
    to every step) and deployment. A hybrid chip's cost of its second technology and the writes it saves read
    here."""
    macro = ctx.macro
    others = getattr(macro, "others", {})
    home = getattr(macro, "macro_of", lambda _layer: "main")
    layers = Counter(home(name) for name in macro.stored)
    rows = []
    for name, m in (("main", getattr(macro, "main", macro)), *others.items()):
        comp = m.device.component if name == "main" else f"{name}.{m.device.component}"
        own = m.leakage_domains(ctx.config.run.temperature_k, shared=name == "main")
        rows.append({"macro": name, "device": m.device.component, "stored_matrices": layers.get(name, 0),
                     "subarrays_used": m.subarrays_used, "area_m2": m.macro_area_m2(),
                     "static_power_w": sum(d.power_w for d in own if d.part in ("array", "periphery")),
                     "cell_writes_train": _cell_writes(ctx.train, comp),
                     "cell_writes_deploy": _cell_writes(ctx.deploy, comp)})
    return rows


_STATIC_GROUP = {"periphery": "array", "array": "array", "digital": "digital", "write_drivers": "write_drivers",
                 "buffer": "buffer", "dram": "dram"}


def resource_table(ctx: RunContext) -> list[dict[str, Any]]:
    """Per resource group of the schedule (the subarrays, the digital unit, the buffer, the write drivers, DRAM;
    the wires have no resource): the share of the training time in which any of its units is busy, its dynamic
    energy (the actions of its components), its static energy under power gating and with every block powered,
    and its share of the training energy. The busiest group sets the step time (``sets_step_time``); a group
    whose static energy exceeds its dynamic energy leaks more than it computes (``leaks_more_than_computes``)."""
    idle = ctx.timeline.idle
    static = ctx.timeline.static.get("train")
    dynamic: dict[str, float] = {}
    for (comp, _), e in ctx.train.energy_j.items():
        level = ctx.macro.level(comp)
        if level == "leakage":
            continue
        group = ("write_drivers" if comp.rsplit(".", 1)[-1] == "write_driver"
                 else {"periphery": "array"}.get(level, level))
        dynamic[group] = dynamic.get(group, 0.0) + e
    gated: dict[str, float] = {}
    ungated: dict[str, float] = {}
    for domain, (e, e_on) in (static.by_domain.items() if static else ()):
        g = _STATIC_GROUP[domain]
        gated[g] = gated.get(g, 0.0) + e * ctx.scale
        ungated[g] = ungated.get(g, 0.0) + e_on * ctx.scale
    total = ctx.train.total_energy_j
    groups = [g for g in ("array", "digital", "buffer", "write_drivers", "dram", "interconnect")
              if g in dynamic or g in gated]
    rows = []
    for g in groups:
        busy = idle.busy.get(g, 0) / idle.cycles if idle.cycles and g != "interconnect" else None
        e = dynamic.get(g, 0.0) + gated.get(g, 0.0)
        rows.append({"resource": g, "busy_share": busy, "energy_dynamic_j": dynamic.get(g, 0.0),
                     "energy_static_j": gated.get(g, 0.0), "energy_static_ungated_j": ungated.get(g, 0.0),
                     "energy_share": e / total if total else 0.0,
                     "leaks_more_than_computes": gated.get(g, 0.0) > dynamic.get(g, 0.0)})
    busiest = max((r for r in rows if r["busy_share"] is not None), key=lambda r: r["busy_share"], default=None)
    for r in rows:
        r["sets_step_time"] = r is busiest
    return rows


def _cell_writes(c: CostResult, component: str) -> int:
    """Writes of a macro's cells among the counted actions: a non-volatile cell's pulses, an SRAM cell's bit
    writes."""
    return round(sum(n for (k, a), n in c.counts.items() if k == component and (a.endswith("_pulse") or a == "write_bit")))


def model_table(ctx: RunContext) -> dict[str, Any]:
    """The model's provenance (source, zoo name and arguments, factory or ONNX file with its SHA-256) and an
    architecture hash of its traced layers (names, GEMM shapes per sample, groups, trainable or frozen)."""
    out = dict(model_provenance(ctx.config.workload, ctx.config.run.mode))
    graph = next(iter(ctx.result.graphs.values()), None)
    if graph is not None:
        rows = [(c.name, c.m // max(1, c.samples), c.k, c.n, c.groups // (max(1, c.samples) if c.weightless else 1),
                 c.trainable, c.weightless) for c in graph.calls]
        out["architecture_hash"] = architecture_hash(rows)
        out["array_layers"] = sum(1 for c in graph.calls if not c.weightless)
        out["array_params"] = sum(c.groups * c.k * c.n for c in graph.calls if not c.weightless)
    return out


def per_task_table(ctx: RunContext) -> list[dict[str, Any]]:
    """Per task: steps, energy, scheduled time, write pulses and cells programmed, and the method's own figures
    of the task (functional; e.g. how far LoRAFusion's coefficients moved) (cost-only: the counted task stands
    for ``task_repeats`` alike tasks, each a row)."""
    result, tally = ctx.result, ctx.tally
    cycles: dict[str, int] = {}
    for task, cyc in zip(ctx.timeline.step_task, ctx.timeline.step_cycles, strict=True):
        cycles[task] = cycles.get(task, 0) + cyc
    reps = result.task_repeats
    share = ctx.scale / reps
    rows = []
    by_task = tally.counts_by_task
    times = dict(zip(result.task_names, result.task_times_s, strict=False)) if any(result.task_times_s) else {}
    figures = dict(zip(result.task_names, result.task_figures, strict=False))
    for name, steps in zip(result.task_names, result.steps_per_task, strict=True):
        c = (cost(by_task[name], ctx.macro.actions, {"all": cycles.get(name, 0)}, ctx.t_cycle_s)
             + static_cost(ctx.static_mean_w, cycles.get(name, 0), ctx.t_cycle_s)).scaled(share)
        labels = list(result.repeat_names) or ([name] if reps == 1 else [f"{name}#{i + 1}" for i in range(reps)])
        for label in labels:
            rows.append({"task": label, "steps": steps * share, "energy_j": c.total_energy_j,
                         "latency_s": c.total_latency_s, "write_pulses": _pulses(c, ctx.macro),
                         "cells_programmed": round(tally.programmed_by_task[name] * share),
                         **({"time_s": times[name]} if name in times else {}), **figures.get(name, {})})
    return rows


LAYER_COLUMNS = ("module", "shape", "params", "trainable", "macs_forward_per_step", "macs_train_per_step", "subarrays",
                 *(f"energy_{p}_j" for p in PHASES), *(f"energy_train_{lv}_j" for lv in LEVELS if lv != "leakage"),
                 "buffer_traffic_per_step_bytes", "dram_traffic_per_step_bytes", *(f"latency_{p}_s" for p in PHASES))
"""Columns of ``tables.layers`` and layers.csv: energies over the run (per phase, and the training phases' by
level; static power is the chip's, not a layer's); latencies are the own time of the module's ops (before the
schedule overlaps them) over the run."""


def layer_table(ctx: RunContext) -> list[dict[str, Any]]:
    """Per workload module: its forward GEMM shape (m x k x n), MACs per step, subarrays, and per phase its
    energy and own op time over the run (training phases scaled to every step, deployment once)."""
    tally, macro = ctx.tally, ctx.macro
    subarrays: dict[str, int] = {}
    for (layer, _region), s in macro.matrices().items():
        module = tally.module_of.get(layer, layer)
        subarrays[module] = subarrays.get(module, 0) + s.row_tiles * s.col_tiles
    steps = ctx.counted_steps
    calls = {c.name: c for g in ctx.result.graphs.values() for c in g.calls}
    rows = []
    for module, by_phase in tally.counts_by_module.items():
        call = calls.get(module)
        row: dict[str, Any] = {"module": module, "shape": " x ".join(map(str, tally.shape_of.get(module, ()))),
                               "params": 0 if call is None or call.weightless else call.groups * call.k * call.n,
                               "trainable": bool(call is not None and call.trainable),
                               "macs_forward_per_step": tally.macs_by_module[module]["forward"] / steps if steps else 0,
                               "macs_train_per_step": sum(tally.macs_by_module[module][p] for p in GEMM_PHASES) / steps
                               if steps else 0, "subarrays": subarrays.get(module, 0)}
        levels = dict.fromkeys(LEVELS, 0.0)
        for p in PHASES:
            scale = 1.0 if p == "deploy" else ctx.scale
            c = cost(by_phase.get(p, {}), macro.actions, {}, ctx.t_cycle_s)
            row[f"energy_{p}_j"] = c.total_energy_j * scale
            if p != "deploy":
                for level, e in ctx.energy_by_level(c).items():
                    levels[level] += e * scale
        row.update({f"energy_train_{lv}_j": levels[lv] for lv in LEVELS if lv != "leakage"})
        moved = Counter()
        for p in TRAINING_PHASES:
            moved.update(by_phase.get(p, {}))
        row["buffer_traffic_per_step_bytes"] = (moved[_GB_READ] + moved[_GB_WRITE]) / 8 / steps if steps else 0.0
        row["dram_traffic_per_step_bytes"] = (moved[_DRAM_READ] + moved[_DRAM_WRITE]) / 8 / steps if steps else 0.0
        for p in PHASES:
            row[f"latency_{p}_s"] = tally.cycles_by_module[module][p] * ctx.t_cycle_s * (
                1.0 if p == "deploy" else ctx.scale)
        rows.append(row)
    return rows

