"""The task-sequence trainer: one loop for every workload kind and training method, functional or cost-only.

A workload kind supplies a :class:`Scenario` (its data, pretraining, model, tracing and tests); the card's
training method, found by name in :data:`imcsim.registry.METHODS`, decides what the model carries, what
trains and what happens per task (:mod:`imcsim.methods.base`). The trainer owns the rest:

* functional (:func:`run_functional`): the random streams of the seed, the method's trainable parameters,
  the traced step, deployment of every array layer, the step loop (INT8 forward and backward on the
  circuit, write-back of changed weights, the ops of the digital unit), the accuracy matrix after each
  task and the progress callback;
* cost-only (:func:`run_cost_only`): one step of the real-size model counted from shapes and operand
  statistics (:func:`imcsim.workloads.costonly.cost_only_step`), standing for every step of every task.

Data, pretraining and training draw from separate streams of the seed, so a method's result does not
depend on what ran before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BeforeValidator
from torch import nn

from imcsim.chip import macros_of
from imcsim.circuits.base import ArrayCircuit
from imcsim.errors import shorten
from imcsim.ops import OpRecord
from imcsim.registry import METHODS
from imcsim.workloads.costonly import ActivityStats, cost_only_step, elementwise_ops, weightless_ops
from imcsim.workloads.dataflow import LayerGraph
from imcsim.workloads.int8 import Hardware, IMCModule, WritePolicy, imc_modules
from imcsim.workloads.memory import TrainingMemory
from imcsim.workloads.traffic import Placement, place, with_traffic

Progress = Callable[[str, int, int], None]  # (task, steps done, steps in the run)


@dataclass
class ContinualResult:
    """What a task-sequence run produced (functional, or one counted step in cost-only mode)."""

    ops: list[OpRecord]
    graphs: dict[str, LayerGraph]  # per task: the layer dataflow of one training step
    task_names: list[str]
    accuracy: np.ndarray  # [after task i, on task j], NaN where j > i
    steps_per_task: list[int]
    trainable_params: int
    source_accuracy: float
    final_losses: list[float]
    step_scale: float = 1.0  # training steps each counted step stands for (cost-only: one step counted)
    memory: TrainingMemory | None = None  # training memory of one step (the largest over the tasks)
    task_repeats: int = 1  # cost-only: the one counted task stands for this many alike tasks
    repeat_names: tuple[str, ...] = ()  # cost-only: the names of the tasks it stands for, when they have names
    placements: dict[str, Placement] = field(default_factory=dict)  # per task: where its tensors live
    task_times_s: list[float] = field(default_factory=list)  # when each task trains, from deployment (functional)
    refreshes: int = 0  # times the array was re-verified because a task's accuracy fell below the threshold
    task_figures: list[dict[str, float]] = field(default_factory=list)  # per task: the method's figures (functional)

    @property
    def average_accuracy(self) -> float:
        return float(np.nanmean(self.accuracy[-1]))

    @property
    def forgetting(self) -> float:
        """Mean over all but the last task of (best accuracy ever - final accuracy)."""
        n = len(self.task_names)
        if n < 2:
            return 0.0
        drops = [np.nanmax(self.accuracy[j:-1, j]) - self.accuracy[-1, j] for j in range(n - 1)]
        return float(np.mean(drops))


# --- the card field ``method`` ------------------------------------------------------------------


def check_method(workload: str, name: object) -> str:
    """``name`` if it is a registered method that applies to the workload kind ``workload``; else the
    one-line error listing the valid names."""
    names = METHODS.names_for(workload)
    if not isinstance(name, str) or name not in names:
        quoted = [repr(n) for n in names]
        valid = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else "".join(quoted)
        got = "" if isinstance(name, dict | list) else f" (got {shorten(name)})"
        raise ValueError(f"must be one of {valid}{got}")
    return name


def method_field(workload: str) -> BeforeValidator:
    """The validator of a card field naming a method of ``workload`` (``Annotated[str, method_field(...)]``)."""
    return BeforeValidator(partial(check_method, workload))


def method_for(workload: str, name: str) -> Any:
    """The registered method ``name``; a method that does not apply to ``workload`` is a ValueError."""
    method = METHODS[name]
    if workload not in method.workloads:
        raise ValueError(f"method {name!r} does not apply to {workload} workloads")
    return method


def trained_parameters(model: nn.Module, method: Any) -> set[int]:
    """Mark what trains on any task (every task head and the method's parameters) and freeze the rest;
    return the ids of the trained parameters."""
    trained = {id(p) for p in (*model.heads.parameters(), *method.trainable(model))}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    return trained


# --- what a workload kind supplies ----------------------------------------------------------------


@dataclass(frozen=True)
class Streams:
    """The independent random streams of a seed: data, pretraining, training (batch order)."""

    data: np.random.Generator
    pretrain: np.random.Generator
    train: np.random.Generator

    @classmethod
    def of(cls, seed: int) -> Streams:
        return cls(*(np.random.default_rng([seed, i]) for i in range(3)))


@dataclass(frozen=True)
class Schedule:
    """How each task trains on the device: SGD over ``epochs`` of shuffled batches."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    stochastic_rounding: bool = False


@dataclass
class Prepared:
    """A scenario's model before deployment, with the method's attachments and every task's head."""

    model: nn.Module  # has ``heads`` (one per task) and ``task_parameters(task)``
    tasks: list[Any]  # name, x_train, y_train, x_test, y_test of each task, in order
    source_accuracy: float
    adapters: list[nn.Module]


@dataclass(frozen=True)
class CostOnlyPlan:
    """A scenario's cost-only step: the traced real-size model and what the step adds to its GEMMs."""

    task: str  # the counted task
    graph: LayerGraph
    memory: TrainingMemory
    activity: ActivityStats
    digital_params: int  # trainable values kept outside the array's matrices (biases, BN, coefficients)
    digital_layers: frozenset[str]  # layers whose GEMMs run in the digital unit
    ops: tuple[OpRecord, ...]  # weight-free ops of the step (attention)
    adapters: list[nn.Module]
    rows: int  # operand rows of the step
    samples: int
    steps_per_task: int
    tasks: int
    repeat_names: tuple[str, ...] = ()


class Scenario(ABC):
    """One workload kind's side of the trainer: data, pretraining, the model, tracing and tests."""

    kind: ClassVar[str]  # the workload kind (a card's ``kind``)
    small_params_layer: ClassVar[str]  # the layer name of the update of trainable values outside the array

    def __init__(self, card: Any):
        self.card = card
        self.method = method_for(self.kind, card.method)

    @property
    @abstractmethod
    def schedule(self) -> Schedule: ...

    @abstractmethod
    def prepare(self, streams: Streams, seed: int, device: torch.device, shared: dict | None) -> Prepared:
        """Data and pretraining (off-device), then the model with the method's attachments and the heads."""

    @abstractmethod
    def trace(self, model: nn.Module, tasks: list[Any]) -> tuple[dict[str, LayerGraph], TrainingMemory]:
        """Layer graphs and training memory of a step, traced on a meta copy (before deployment)."""

    @abstractmethod
    def accuracy(self, model: nn.Module, task: Any, device: torch.device) -> float: ...

    @abstractmethod
    def cost_only_plan(self, macro: ArrayCircuit) -> CostOnlyPlan: ...

    def digital_layers(self, model: nn.Module, adapters: list[nn.Module]) -> list[nn.Module]:
        """IMC layers kept in the digital unit, not stored in the array (default: the method's)."""
        return self.method.digital_layers(self.card, adapters)

    @property
    def write_policy(self) -> WritePolicy:
        """When trained weights in the array are rewritten (default: after every step)."""
        return WritePolicy()

    @property
    def task_interval_s(self) -> float:
        """Time from one task to the next, over which the array's conductances relax (default: none)."""
        return 0.0

    @property
    def refresh_below(self) -> float | None:
        """Re-verify the array when a task's accuracy right after training falls below this (default: never)."""
        return None

    def rows(self, samples: int) -> int:
        """Operand rows of a step on ``samples`` samples."""
        return samples

    def step_ops(self, macro: ArrayCircuit, model: nn.Module, digital: list[IMCModule], samples: int
                 ) -> list[OpRecord]:
        """Ops of a step in the digital unit besides the circuit's GEMMs: weight-free arithmetic and the
        trained ``digital`` layers (default: none)."""
        return []


# --- the trainer ----------------------------------------------------------------------------------


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    """Sample indices of one epoch in shuffled batches."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield torch.from_numpy(order[start : start + batch_size])


def clip_op(macro: ArrayCircuit, n: int, layer: str) -> OpRecord:
    """Clipping the gradient of ``n`` trained values to a global norm, in the digital unit: the norm (a multiply
    and an add per value) and the rescale (a multiply per value)."""
    return macro.digital_elementwise({"fp32_mul": 2 * n, "fp32_add": n}, "update", layer)


def run_functional(scenario: Scenario, macro: ArrayCircuit, seed: int, device: torch.device,
                   progress: Progress | None = None, shared: dict | None = None) -> ContinualResult:
    """Train the scenario's task sequence on ``macro`` with its method; see the module docstring."""
    method, sched = scenario.method, scenario.schedule
    streams = Streams.of(seed)
    prep = scenario.prepare(streams, seed, device, shared)
    model, tasks, adapters = prep.model, prep.tasks, prep.adapters
    trained = trained_parameters(model, method)
    graphs, memory = scenario.trace(model, tasks)
    placements = {name: place(g, memory, macro) for name, g in graphs.items()}  # a buffer too small: refused now
    macro.assign_layers({m.name: id(m.weight) in trained for m in imc_modules(model)})  # a chip's macro per layer
    step_samples: dict[int, int] = {}
    hw = Hardware(macro=macro, stochastic_rounding=sched.stochastic_rounding,
                  generator=torch.Generator().manual_seed(seed), task="deploy", write_policy=scenario.write_policy,
                  workers=1 if device.type == "cuda" else 0)  # on a GPU, count on the CPU meanwhile
    modules = imc_modules(model)
    digital = {id(m) for m in scenario.digital_layers(model, adapters)}
    for m in modules:
        if id(m) not in digital:
            m.deploy(hw)
    imc_weights = {id(m.weight) for m in modules}

    def task_params(name: str) -> list[nn.Parameter]:
        return [p for p in model.task_parameters(name) if id(p) in trained]

    n = len(tasks)
    acc = np.full((n, n), np.nan)
    saved: dict[str, dict[str, torch.Tensor]] = {}
    steps_per_task: list[int] = []
    losses: list[float] = []
    total = sum(sched.epochs * -(-len(t.y_train) // sched.batch_size) for t in tasks)
    done = 0
    task_times: list[float] = []
    figures: list[dict[str, float]] = []
    refreshes = 0
    for i, task in enumerate(tasks):
        hw.task = task.name
        task_times.append(i * scenario.task_interval_s)
        for m in macros_of(macro):
            if hasattr(m, "clock_s"):
                m.clock_s = task_times[-1]  # the array's conductances relax until this task
        params = task_params(task.name)
        used = {id(p) for p in params}
        for p in model.parameters():
            p.requires_grad_(id(p) in used)
        method.start_task(model, adapters)
        synced = [m for m in modules if id(m) not in digital and m.weight.requires_grad]
        weightless = [c for c in graphs[task.name].calls if c.weightless]  # products of activations (attention)
        elementwise = graphs[task.name].calls  # requantisation, norms, activations, pooling, adds
        digital_trained = [m for m in modules if id(m) in digital and m.weight.requires_grad]
        n_small = sum(p.numel() for p in params if id(p) not in imc_weights)  # biases, BN, coefficients
        opt = torch.optim.SGD(params, lr=sched.lr, momentum=sched.momentum)
        clip = method.max_grad_norm(scenario.card)
        n_trained = sum(p.numel() for p in params)
        steps = 0
        last_loss = float("nan")
        for _ in range(sched.epochs):
            method.train_mode(model)
            for idx in batches(len(task.y_train), sched.batch_size, streams.train):
                x, y = task.x_train[idx].to(device), task.y_train[idx].to(device)
                hw.step, hw.samples = done, len(idx)
                step_samples[done] = len(idx)
                opt.zero_grad()
                loss = F.cross_entropy(model(x, task.name), y)
                loss.backward()
                if clip is not None:  # the method's recipe: rescale the gradient to at most this global norm
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                with torch.no_grad():
                    for m in synced:
                        m.sync()
                ops = scenario.step_ops(macro, model, digital_trained, hw.samples)
                ops += [rec for c in weightless for rec in weightless_ops(macro, c, hw.samples)]
                ops += [rec for c in elementwise for rec in elementwise_ops(macro, c, hw.samples)]
                ops += method.step_ops(macro, adapters, scenario.rows(hw.samples), hw.samples)
                for rec in ops:
                    hw.emit(rec, rec.module)
                if n_small:
                    hw.emit(macro.update_digital(scenario.small_params_layer, n_small), scenario.small_params_layer)
                if clip is not None:
                    hw.emit(clip_op(macro, n_trained, scenario.small_params_layer), scenario.small_params_layer)
                last_loss = loss.item()
                steps += 1
                done += 1
                if progress is not None:
                    progress(task.name, done, total)
        if hw.write_policy.kind != "every_step":
            with torch.no_grad():
                for m in synced:
                    m.sync(commit=True)  # the task's pending changes, before it is tested
        steps_per_task.append(steps)
        losses.append(last_loss)
        figures.append(method.task_figures(model, adapters))
        saved[task.name] = method.task_state(model)
        hw.recording = False  # testing is not counted
        current = {k: v.detach().clone() for k, v in model.state_dict().items() if k in saved[task.name]}
        for j in range(i + 1):
            if saved[tasks[j].name]:  # the task's own state, switched in (not rewritten)
                model.load_state_dict(saved[tasks[j].name], strict=False)
            acc[i, j] = scenario.accuracy(model, tasks[j], device)
        if current:
            model.load_state_dict(current, strict=False)
        hw.recording = True
        threshold = scenario.refresh_below
        if threshold is not None and acc[i, i] < threshold:
            refreshes += 1
            hw.step = done - 1
            for m in macros_of(macro):
                for rec in getattr(m, "refresh", lambda: [])():
                    hw.emit(rec, rec.layer)
    return ContinualResult(
        ops=with_traffic(hw.ops, graphs, placements, macro, step_samples),
        graphs=graphs,
        task_names=[t.name for t in tasks],
        accuracy=acc,
        steps_per_task=steps_per_task,
        trainable_params=max(sum(p.numel() for p in task_params(t.name)) for t in tasks),
        source_accuracy=prep.source_accuracy,
        final_losses=losses,
        memory=memory,
        placements=placements,
        task_times_s=task_times,
        refreshes=refreshes,
        task_figures=figures,
    )


def run_cost_only(scenario: Scenario, macro: ArrayCircuit, seed: int) -> ContinualResult:
    """Count one training step of the scenario's real-size model (no data, no arithmetic); the totals
    stand for every step of every task."""
    plan = scenario.cost_only_plan(macro)
    placements = {plan.task: place(plan.graph, plan.memory, macro)}
    macro.assign_layers({c.name: c.trainable for c in plan.graph.calls if not c.weightless})
    extra = (*plan.ops, *scenario.method.step_ops(macro, plan.adapters, plan.rows, plan.samples))
    step = cost_only_step(macro, plan.graph, plan.activity, plan.digital_params, plan.task, seed,
                          digital_layers=plan.digital_layers, extra=extra)
    if scenario.method.max_grad_norm(scenario.card) is not None:  # as the functional step counts it
        layer = scenario.small_params_layer
        step.ops.append(clip_op(macro, step.trainable_params, layer).tagged(step=0, task=plan.task, module=layer))
    return ContinualResult(
        ops=with_traffic(step.ops, {plan.task: plan.graph}, placements, macro), graphs={plan.task: plan.graph},
        placements=placements, task_names=[plan.task], accuracy=np.full((1, 1), np.nan),
        steps_per_task=[1], trainable_params=step.trainable_params, source_accuracy=float("nan"),
        final_losses=[float("nan")], step_scale=float(plan.steps_per_task * plan.tasks), memory=plan.memory,
        task_repeats=plan.tasks, repeat_names=plan.repeat_names,
    )
