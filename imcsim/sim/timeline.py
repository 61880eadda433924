"""Schedule a whole run step by step and add up what the schedules say.

Ops are grouped by training step (``OpRecord.step``); each step's task graph is
scheduled (:mod:`imcsim.sim.replay`) and the steps run one after another (a
step's forward needs the weights the previous step wrote back). Deployment
writes form a schedule of their own.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imcsim.circuits.base import ArrayCircuit
from imcsim.ops import OpRecord
from imcsim.sim.engine import Schedule
from imcsim.sim.gating import IdleRecord, StaticEnergy
from imcsim.sim.graph import ARRAY_PREFIX, MacroView
from imcsim.sim.replay import Scheduler
from imcsim.workloads.dataflow import LayerGraph


def macro_view(macro: ArrayCircuit) -> MacroView:
    a = macro.card.array
    return MacroView(
        actions=macro.actions,
        device_components=macro.device_components,
        t_cycle_s=macro.t_cycle_s,
        subarrays={key: s.row_tiles * s.col_tiles for key, s in macro.matrices().items()},
        drivers_per_subarray=a.write_drivers_per_subarray,
        write_drivers=macro.write_driver_count,
        scratch_subarrays=a.scratch_subarrays,
        buffer_ports=macro.card.buffer.ports,
        buffer_bits_per_cycle=macro.card.buffer.bits_per_cycle,
    )


RESOURCE_GROUPS = ("array", "digital", "buffer", "write_drivers", "scratch", "dram")


def resource_group(name: str) -> str:
    return "array" if name.startswith(ARRAY_PREFIX) else name


@dataclass
class RunTimeline:
    """Per-step schedules of a run, added up."""

    t_cycle_s: float
    step_cycles: list[int] = field(default_factory=list)
    step_energy_j: list[float] = field(default_factory=list)
    step_task: list[str] = field(default_factory=list)
    in_order_cycles: list[int] = field(default_factory=list)
    critical_by_phase: Counter = field(default_factory=Counter)
    busy_by_group: Counter = field(default_factory=Counter)  # unit-cycles (array: subarray-cycles)
    capacity_by_group: dict[str, int] = field(default_factory=dict)
    deploy_cycles: int = 0
    first_step: Schedule | None = None
    scheduler: Scheduler | None = None
    tasks_scheduled: int = 0
    trace_step: int = 1  # the training step (1-based) whose schedule is kept for a trace
    traced: Schedule | None = None  # that step's schedule (the last step when the run has fewer)
    traced_index: int = 0  # its step number
    idle: IdleRecord = field(default_factory=IdleRecord)  # idle intervals per resource over the training steps
    deploy_idle: IdleRecord = field(default_factory=IdleRecord)  # the same over the deployment
    static: dict[str, StaticEnergy] = field(default_factory=dict)  # "train", "deploy": static energy once costed

    @property
    def total_cycles(self) -> int:
        return int(sum(self.step_cycles))

    def utilization(self) -> dict[str, float]:
        """Busy fraction of each resource group over the training steps."""
        total = self.total_cycles
        out = {}
        for g, cap in self.capacity_by_group.items():
            out[g] = self.busy_by_group.get(g, 0) / (cap * total) if cap and total else 0.0
        return out

    def add_step(self, sched: Schedule, task: str, in_order: int) -> None:
        self.step_cycles.append(sched.makespan)
        self.step_energy_j.append(float(sched.graph.task_energy_j.sum()))
        self.step_task.append(task)
        self.in_order_cycles.append(in_order)
        self.critical_by_phase.update(sched.critical_by_phase)
        self.tasks_scheduled += len(sched.graph.tasks)
        self.idle.add(sched, resource_group)
        sub = sched.graph.resources.subarrays
        for name, busy in sched.busy().items():
            self.busy_by_group[resource_group(name)] += busy * sub.get(name, 1)
        if self.first_step is None:
            self.first_step = sched
        if len(self.step_cycles) <= self.trace_step:
            self.traced, self.traced_index = sched, len(self.step_cycles)


def group_capacity(macro: ArrayCircuit) -> dict[str, int]:
    """Units of each resource group: subarrays in use, 1 digital unit, buffer ports, drivers, scratch."""
    a = macro.card.array
    return {
        "array": max(macro.subarrays_used, 1),
        "digital": 1,
        "buffer": macro.card.buffer.ports,
        "write_drivers": macro.write_driver_count,
        "scratch": a.scratch_subarrays if macro.card.dataflow.weight_grad == "in_array" else 0,
        "dram": 1,
    }


def split_steps(ops: Sequence[OpRecord]) -> tuple[list[OpRecord], dict[int, list[OpRecord]]]:
    """(deployment ops, training ops by step)."""
    deploy: list[OpRecord] = []
    steps: dict[int, list[OpRecord]] = defaultdict(list)
    for op in ops:
        if op.phase == "deploy":
            deploy.append(op)
        else:
            steps[op.step].append(op)
    return deploy, dict(sorted(steps.items()))


def schedule_run(ops: Sequence[OpRecord], graphs: Mapping[str, LayerGraph], macro: ArrayCircuit,
                 trace_step: int = 1) -> RunTimeline:
    """Schedule every training step of ``ops`` (and the deployment) on ``macro``; keep the schedule of
    training step ``trace_step`` (1-based; the last step when there are fewer)."""
    scheduler = Scheduler(macro_view(macro))
    timeline = RunTimeline(macro.t_cycle_s, capacity_by_group=group_capacity(macro), scheduler=scheduler,
                           trace_step=trace_step)
    deploy, steps = split_steps(ops)
    if deploy:
        sched = scheduler.schedule(deploy, None)
        timeline.deploy_cycles = sched.makespan
        timeline.deploy_idle.add(sched)
    for step_ops in steps.values():
        task = step_ops[0].task
        sched = scheduler.schedule(step_ops, graphs.get(task))
        timeline.add_step(sched, task, sum(op.cycles for op in step_ops))
    return timeline


def energy_over_time(timeline: RunTimeline) -> list[tuple[float, float]]:
    """(time s, cumulative training energy J) at the end of every step."""
    t = np.cumsum(timeline.step_cycles) * timeline.t_cycle_s
    e = np.cumsum(timeline.step_energy_j)
    return [(float(a), float(b)) for a, b in zip(t, e, strict=True)]


def step_power_profile(sched: Schedule, t_cycle_s: float, bins: int = 48) -> list[tuple[float, float]]:
    """(bin start s, mean power W in the bin) over one step's schedule."""
    edges, energy = sched.energy_profile(bins)
    width = (edges[1] - edges[0]) * t_cycle_s
    return [(float(edges[i] * t_cycle_s), float(energy[i] / width) if width else 0.0) for i in range(bins)]
