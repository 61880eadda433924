"""Continual learning on the IMC macro: pretrain and freeze a backbone, then learn tasks.

Flow of one run (functional mode):

1. Build the source task and pretrain the backbone in float (off-device; this
   stands for the pretrained model shipped with the device; it is not counted).
2. Deploy: program every INT8 weight into the macro (counted as ``deploy``).
3. For each task: add a head, train the method's trainable parameters in INT8
   on the macro (forward, input gradient, weight gradient, update and
   write-back, all counted), then test every task seen so far (the accuracy
   matrix). With ``repnet.per_task`` (the default) each task has its own side
   modules, like its head; otherwise the side modules are shared, and later
   tasks can overwrite what earlier ones learned. Methods that train backbone
   parameters (``full``, the BN biases of ``bias_only`` and ``repnet_bias``)
   share them across tasks. Forgetting is measured, not assumed.

Methods: ``repnet`` (side modules + heads), ``repnet_bias`` (plus backbone BN
biases), ``last_layer`` (heads only), ``bias_only`` (backbone BN biases + heads,
TinyTL-style), ``full`` (everything).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from imcsim.circuits.macro import BitSerialMacro, OpRecord
from imcsim.errors import FieldError
from imcsim.params import Params
from imcsim.workloads.backbones import build_backbone
from imcsim.workloads.costonly import DIGITAL_PARAMS, CostOnlySpec, cost_only_step
from imcsim.workloads.data import DataError, TaskData, make_task
from imcsim.workloads.dataflow import LayerGraph, trace_dataflow
from imcsim.workloads.int8 import ArrayLayer, Hardware, array_layers_of, imc_modules
from imcsim.workloads.memory import TrainingMemory, training_memory
from imcsim.workloads.models import RepNet, TinyCNN

Method = Literal["repnet", "repnet_bias", "last_layer", "bias_only", "full"]


class TaskSpec(Params):
    name: str = Field(min_length=1)
    classes: list[int] = Field(min_length=2, description="classes of the source in this task (0..9 for digits "
                               "and cifar10; class-folder numbers, in sorted name order, for image_folder)")
    transform: Literal["none", "rotate90", "invert", "noise"] = "none"
    source: Literal["digits", "cifar10", "image_folder"] = Field(
        "digits", description="digits (bundled), cifar10 (local python batches) or image_folder (PATH/<class>/...)"
    )
    path: str | None = Field(None, description="cifar10 / image_folder data on disk (relative to the working folder)")
    max_per_class: int | None = Field(None, ge=1, description="use at most this many images of each class")

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[int]) -> list[int]:
        if any(c < 0 for c in classes):
            raise ValueError(f"classes must be >= 0 (got {classes})")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must not repeat (got {classes})")
        return classes

    @model_validator(mode="after")
    def _check_source(self) -> TaskSpec:
        if self.source in ("digits", "cifar10") and any(c > 9 for c in self.classes):
            raise FieldError("classes", f"{self.source} classes are 0..9 (got {self.classes})")
        if self.source != "digits" and not self.path:
            raise FieldError("path", f"source {self.source} needs a path to the data")
        return self


ARCH_BLOCKS = {"tiny_cnn": 4, "mobilenet_v2": 19, "proxylessnas_mobile": 22}


class ModelSpec(Params):
    arch: Literal["tiny_cnn", "mobilenet_v2", "proxylessnas_mobile"] = "tiny_cnn"
    width: int = Field(16, ge=2, le=512)
    image_size: int = Field(16, ge=8, le=256)


class RepNetSpec(Params):
    side_blocks: list[int] = Field(description="backbone blocks (0 = stem) that get a side module")
    width: int = Field(16, ge=2, le=1024, description="channels inside a side module")
    per_task: bool = Field(True, description="each task gets its own side modules (else all tasks share one set)")

    @field_validator("side_blocks")
    @classmethod
    def _check_blocks(cls, blocks: list[int]) -> list[int]:
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"side_blocks must not repeat (got {blocks})")
        return blocks


class TrainSpec(Params):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    lr: float = Field(gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    stochastic_rounding: bool = False


class PretrainSpec(Params):
    task: TaskSpec
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    lr: float = Field(gt=0.0, le=10.0)


class ContinualCard(Params):
    """A continual-learning workload card (``kind: continual_learning``)."""

    kind: Literal["continual_learning"]
    description: str
    references: dict[str, str] = Field(default_factory=dict)
    model: ModelSpec = ModelSpec()
    method: Method = "repnet"
    baselines: list[Method] = Field(
        default_factory=list,
        description="other methods to run on the same scenario and hardware; the report gets a methods table",
    )
    repnet: RepNetSpec
    pretrain: PretrainSpec
    tasks: list[TaskSpec] = Field(min_length=1)
    train: TrainSpec
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    cost_only: CostOnlySpec | None = Field(None, description="shapes and activity statistics for run.mode=cost_only")

    @model_validator(mode="after")
    def _blocks_exist(self) -> ContinualCard:
        n = ARCH_BLOCKS[self.model.arch]
        bad = [b for b in self.repnet.side_blocks if not 0 <= b < n]
        if bad:
            raise FieldError("repnet.side_blocks",
                             f"must be {self.model.arch} block indices 0..{n - 1} (got {bad})")
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique (got {names})")
        return tasks


@dataclass
class ContinualResult:
    """What a functional continual-learning run produced."""

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


def side_blocks(card: ContinualCard) -> list[int]:
    """The blocks that get side modules: Rep-Net methods only (a baseline runs the bare backbone)."""
    return list(card.repnet.side_blocks) if card.method in ("repnet", "repnet_bias") else []


def deployed_model(card: ContinualCard, backbone: torch.nn.Module, heads: list[tuple[str, int]]) -> RepNet:
    """The model a functional run deploys: ``backbone``, the method's side modules and a head per
    (task, classes) of ``heads``."""
    model = RepNet(backbone, side_blocks(card), card.repnet.width, card.model.image_size, card.repnet.per_task)
    for name, n_classes in heads:
        model.add_head(name, n_classes)
    return model


# Input channels of a data source's images (digits are grey; cifar10 and image folders are RGB).
SOURCE_CHANNELS = {"digits": 1, "cifar10": 3, "image_folder": 3}
_PARTS = {"backbone": "backbone", "side": "side modules", "head": "heads"}


def _part(name: str) -> str:
    return _PARTS.get(name.split(".", 1)[0], "other layers")


def array_layers(card: ContinualCard, mode: str) -> list[ArrayLayer]:
    """The weight matrices a run of ``card`` stores in the array, from the untrained model (no data, no training).

    Functional (``mode="functional"``): every IMC layer of the deployed model (backbone, the method's side
    modules, per task when ``repnet.per_task``, and every task's head), one matrix per group of a grouped
    conv. Cost-only: every layer of the model :func:`_trace_step` traces (one task), a grouped layer as
    one stored matrix.
    """
    arch, width = card.model.arch, card.model.width
    with torch.random.fork_rng(devices=[]):  # built on the CPU (as _trace_step builds it); torch's RNG is left as it was
        if mode == "cost_only":
            spec, task = card.cost_only, card.tasks[0]
            model = RepNet(build_backbone(arch, spec.in_channels, width), side_blocks(card), card.repnet.width,
                           spec.image_size)
            model.add_head(task.name, len(task.classes))
        else:
            backbone = build_backbone(arch, SOURCE_CHANNELS[card.pretrain.task.source], width)
            model = deployed_model(card, backbone, [(t.name, len(t.classes)) for t in card.tasks])
    return array_layers_of(imc_modules(model), _part, grouped=mode == "cost_only")


def _set_trainable(model: RepNet, method: Method) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for head in model.heads.values():
        for p in head.parameters():
            p.requires_grad_(True)
    if method in ("repnet", "repnet_bias"):
        for p in model.sides.parameters():
            p.requires_grad_(True)
    if method in ("repnet_bias", "bias_only"):
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.requires_grad_(True)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)


def _train_mode(model: RepNet, method: Method) -> None:
    """Backbone BN keeps its running statistics unless the whole network trains."""
    model.train()
    if method != "full":
        model.backbone.eval()


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield torch.from_numpy(order[start : start + batch_size])


def _accuracy(model: RepNet, task: TaskData, device: torch.device, batch_size: int = 512) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(task.y_test), batch_size):
            x = task.x_test[start : start + batch_size].to(device)
            y = task.y_test[start : start + batch_size].to(device)
            correct += int((model(x, task.name).argmax(1) == y).sum())
    return correct / len(task.y_test)


def _make_task(spec: TaskSpec, key: str, size: int, test_fraction: float, rng: np.random.Generator) -> TaskData:
    try:
        return make_task(spec.name, spec.classes, spec.transform, size, test_fraction, rng, spec.source, spec.path,
                         spec.max_per_class)
    except DataError as err:
        raise DataError(str(err), key=f"{key}.{'path' if spec.path else 'classes'}") from None


def pretrain_backbone(card: ContinualCard, source: TaskData, rng: np.random.Generator, device: torch.device
                      ) -> tuple[TinyCNN, float]:
    """Train backbone + a source head in float; return the backbone and its source accuracy."""
    backbone = build_backbone(card.model.arch, source.channels, card.model.width)
    model = RepNet(backbone, [], 1, card.model.image_size).to(device)
    model.add_head(source.name, source.n_classes).to(device)
    p = card.pretrain
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(p.epochs):
        model.train()
        for idx in _batches(len(source.y_train), p.batch_size, rng):
            x, y = source.x_train[idx].to(device), source.y_train[idx].to(device)
            opt.zero_grad()
            F.cross_entropy(model(x, source.name), y).backward()
            opt.step()
    return backbone, _accuracy(model, source, device)


def training_graph(model: RepNet, method: Method, task: str, input_shape: tuple[int, ...]) -> LayerGraph:
    """The layer dataflow of one training step on ``task`` (traced on a meta copy: no state changes)."""
    meta = copy.deepcopy(model).to("meta")
    _train_mode(meta, method)
    x = torch.empty(input_shape, device="meta")
    return trace_dataflow(meta, lambda: meta(x, task), samples=input_shape[0])


def step_memory(model: RepNet, method: Method, tasks: list[str], input_shape: tuple[int, ...], momentum: bool
                ) -> TrainingMemory:
    """Training memory of one step (the largest over ``tasks``' heads), traced on a meta copy."""
    meta = copy.deepcopy(model).to("meta")
    _train_mode(meta, method)
    x = torch.empty(input_shape, device="meta")
    memories = [training_memory(meta.task_parameters(t), lambda t=t: meta(x, t), momentum) for t in tasks]
    return max(memories, key=lambda m: m.peak)


def run_continual(
    card: ContinualCard,
    macro: BitSerialMacro,
    seed: int,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
    shared: dict | None = None,
) -> ContinualResult:
    """Run the functional continual-learning scenario on ``macro``; see the module docstring.

    Data, pretraining and training draw from separate random streams of ``seed``, so a
    method's result does not depend on what ran before it. ``shared`` (a dict kept
    across calls) caches the pretrained backbone for runs of the same card but
    another method.
    """
    data_rng, pre_rng, rng = (np.random.default_rng([seed, i]) for i in range(3))
    gen = torch.Generator().manual_seed(seed)
    size = card.model.image_size
    source = _make_task(card.pretrain.task, "pretrain.task", size, card.test_fraction, data_rng)
    tasks = [_make_task(t, f"tasks.{i}", size, card.test_fraction, data_rng) for i, t in enumerate(card.tasks)]
    for i, t in enumerate(tasks):
        if t.channels != source.channels:
            raise DataError(f"task {t.name} has {t.channels} channel(s) but the pretraining task has "
                            f"{source.channels}; every task must share the backbone's input channels",
                            key=f"tasks.{i}.source")
    key = ("pretrained", seed, str(device), card.model.model_dump_json(), card.pretrain.model_dump_json(),
           card.test_fraction)
    cached = shared.get(key) if shared is not None else None
    if cached is None:
        torch.manual_seed(seed)
        cached = pretrain_backbone(card, source, pre_rng, device)
        if shared is not None:
            shared[key] = cached
    backbone, source_acc = copy.deepcopy(cached[0]), cached[1]
    torch.manual_seed(seed + 1)

    model = deployed_model(card, backbone, [(t.name, t.n_classes) for t in tasks]).to(device)
    _set_trainable(model, card.method)
    graphs = {t.name: training_graph(model, card.method, t.name, t.x_train[:2].shape) for t in tasks}
    memory = step_memory(model, card.method, [t.name for t in tasks],
                         (card.train.batch_size, *tasks[0].x_train.shape[1:]), card.train.momentum > 0)
    hw = Hardware(macro=macro, stochastic_rounding=card.train.stochastic_rounding, generator=gen, task="deploy",
                  workers=1 if device.type == "cuda" else 0)  # on a GPU, count on the CPU meanwhile
    for m in imc_modules(model):
        m.deploy(hw)
    trainable_imc = [m for m in imc_modules(model) if m.weight.requires_grad]
    imc_params = {id(m.weight) for m in imc_modules(model)}
    n_trainable = max(sum(p.numel() for p in model.task_parameters(t.name) if p.requires_grad) for t in tasks)

    n = len(tasks)
    acc = np.full((n, n), np.nan)
    steps_per_task: list[int] = []
    losses: list[float] = []
    total_steps = sum(card.train.epochs * -(-len(t.y_train) // card.train.batch_size) for t in tasks)
    done = 0
    for i, task in enumerate(tasks):
        hw.task = task.name
        params = [p for p in model.task_parameters(task.name) if p.requires_grad]
        opt = torch.optim.SGD(params, lr=card.train.lr, momentum=card.train.momentum)
        used = {id(p) for p in params}
        active_imc = [m for m in trainable_imc if id(m.weight) in used]
        steps = 0
        last_loss = float("nan")
        for _ in range(card.train.epochs):
            _train_mode(model, card.method)
            for idx in _batches(len(task.y_train), card.train.batch_size, rng):
                x, y = task.x_train[idx].to(device), task.y_train[idx].to(device)
                hw.step, hw.samples = done, len(idx)
                opt.zero_grad()
                loss = F.cross_entropy(model(x, task.name), y)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for m in active_imc:
                        m.sync()
                    n_digital = sum(p.numel() for p in params if id(p) not in imc_params)
                    if n_digital:
                        hw.emit(macro.update_digital(DIGITAL_PARAMS, n_digital), DIGITAL_PARAMS)
                last_loss = loss.item()
                steps += 1
                done += 1
                if progress is not None:
                    progress(task.name, done, total_steps)
        steps_per_task.append(steps)
        losses.append(last_loss)
        hw.recording = False
        for j in range(i + 1):
            acc[i, j] = _accuracy(model, tasks[j], device)
        hw.recording = True
    return ContinualResult(
        ops=hw.ops,
        graphs=graphs,
        task_names=[t.name for t in tasks],
        accuracy=acc,
        steps_per_task=steps_per_task,
        trainable_params=n_trainable,
        source_accuracy=source_acc,
        final_losses=losses,
        memory=memory,
    )



@functools.lru_cache(maxsize=32)
def _trace_step(arch: str, width: int, in_channels: int, image_size: int, batch: int, sides: tuple[int, ...],
                side_width: int, method: Method, task: str, n_classes: int, momentum: bool
                ) -> tuple[LayerGraph, TrainingMemory, int]:
    """Layer graph, training memory and digital parameter count of one step, traced on meta tensors.

    Cached: a sweep over device or circuit parameters traces each model shape once.
    """
    model = RepNet(build_backbone(arch, in_channels, width), list(sides), side_width, image_size)
    model.add_head(task, n_classes)
    model.to("meta")
    _set_trainable(model, method)
    _train_mode(model, method)
    x = torch.empty(batch, in_channels, image_size, image_size, device="meta")
    graph = trace_dataflow(model, lambda: model(x, task), samples=batch)
    memory = training_memory(model.parameters(), lambda: model(x, task), momentum)
    imc_weights = {id(m.weight) for m in imc_modules(model)}
    digital = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in imc_weights)
    return graph, memory, digital


def _cost_only_trace(card: ContinualCard) -> tuple[LayerGraph, TrainingMemory, int]:
    """:func:`_trace_step` of the card's cost-only step (its first task)."""
    spec, task = card.cost_only, card.tasks[0]
    return _trace_step(card.model.arch, card.model.width, spec.in_channels, spec.image_size, spec.batch_size,
                       tuple(side_blocks(card)), card.repnet.width, card.method, task.name, len(task.classes),
                       card.train.momentum > 0)


def run_cost_only(card: ContinualCard, macro: BitSerialMacro, seed: int) -> ContinualResult:
    """Count one training step of the card's model at the ``cost_only`` sizes (no data, no arithmetic)."""
    spec = card.cost_only
    if spec is None:
        raise ValueError("run.mode=cost_only needs a workload.cost_only section (batch_size, image_size, "
                         "steps_per_task, activity)")
    task = card.tasks[0]
    graph, memory, digital = _cost_only_trace(card)
    step = cost_only_step(macro, graph, spec.activity, digital, task.name, seed)
    n = len(card.tasks)
    return ContinualResult(
        ops=step.ops, graphs={task.name: graph}, task_names=[task.name], accuracy=np.full((1, 1), np.nan),
        steps_per_task=[1], trainable_params=step.trainable_params, source_accuracy=float("nan"),
        final_losses=[float("nan")], step_scale=float(spec.steps_per_task * n), memory=memory, task_repeats=n,
        repeat_names=tuple(t.name for t in card.tasks),
    )
