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

The step loop is the task-sequence trainer's (:mod:`imcsim.workloads.trainer`); this module is the
continual-learning scenario it runs: data, pretraining, the Rep-Net model and its tracing. The card's
``method`` names a registered method that applies to ``continual_learning`` (``imcsim list methods``:
``repnet``, ``repnet_bias``, ``last_layer``, ``bias_only``, ``full`` and any plug-in's).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from imcsim.circuits.base import ArrayCircuit
from imcsim.errors import FieldError
from imcsim.params import Params
from imcsim.registry import METHODS
from imcsim.workloads.costonly import DIGITAL_PARAMS, CostOnlySpec
from imcsim.workloads.data import DataError, TaskData, make_task
from imcsim.workloads.dataflow import LayerGraph, trace_dataflow
from imcsim.workloads.int8 import ArrayLayer, array_layers_of, imc_modules
from imcsim.workloads.memory import TrainingMemory, training_memory
from imcsim.workloads.models import RepNet, SideModuleError, TinyCNN
from imcsim.workloads.trainer import (
    ContinualResult,
    CostOnlyPlan,
    Prepared,
    Progress,
    Scenario,
    Schedule,
    Streams,
    batches,
    method_field,
    run_functional,
    trained_parameters,
)
from imcsim.workloads.trainer import run_cost_only as run_cost_only_step

KIND = "continual_learning"
BUILT_IN_BLOCKS = {"tiny_cnn": 4, "mobilenet_v2": 19, "proxylessnas_mobile": 22}
Method = Annotated[str, method_field(KIND)]  # a registered method of continual learning


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


class ModelSpec(Params):
    """``workload.model``: the backbone's source (see :mod:`imcsim.models.sources`) and the image size."""

    source: Literal["zoo", "python", "onnx"] = Field(
        "zoo", description="zoo (a built-in network: arch), python (a factory) or onnx (a file: path)")
    arch: str = Field("tiny_cnn", description="zoo network (`imcsim list models`)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="arguments of the zoo builder or factory")
    factory: str | None = Field(None, description="python source: 'package.module:function' or 'file.py:function' "
                                "(a file relative to the card or config that names it)")
    path: str | None = Field(None, description="onnx source: the .onnx file (relative to the file that names it)")
    width: int = Field(16, ge=2, le=512, description="tiny_cnn's base width")
    image_size: int = Field(16, ge=8, le=256, description="functional runs: image side in pixels")

    @model_validator(mode="after")
    def _source_fields(self) -> ModelSpec:
        from imcsim.models.backbone import zoo_names

        if self.source == "zoo" and self.arch not in zoo_names():
            raise FieldError("arch", f"unknown zoo network {self.arch!r}; valid: {', '.join(zoo_names())}")
        if self.source == "python" and not self.factory:
            raise FieldError("factory", "source python needs a factory ('package.module:function' or "
                             "'file.py:function')")
        if self.source == "onnx" and not self.path:
            raise FieldError("path", "source onnx needs a path to the .onnx file")
        return self


class RepNetSpec(Params):
    side_blocks: list[int | str] = Field(
        description="connection points that get a side module: backbone block indices (0 = stem) or module names")
    width: int | None = Field(None, ge=2, le=4096, description="channels inside every side module (default: the "
                              "reference plan, the connection block's input channels rounded up to 8)")
    kernel: int | None = Field(None, ge=1, le=11, description="kernel of every side module (default: 5, or 3 where "
                               "the map it reads is 7 x 7 or smaller)")
    overrides: dict[str, dict[Literal["width", "kernel", "groups"], int]] = Field(
        default_factory=dict, description="per connection point (as given in side_blocks): width, kernel, groups")
    per_task: bool = Field(True, description="each task gets its own side modules (else all tasks share one set)")

    @field_validator("side_blocks")
    @classmethod
    def _check_blocks(cls, blocks: list[int | str]) -> list[int | str]:
        if len({str(b) for b in blocks}) != len(blocks):
            raise ValueError(f"side_blocks must not repeat (got {blocks})")
        return blocks

    @field_validator("overrides")
    @classmethod
    def _positive(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        bad = {p: o for p, o in v.items() if any(x < 1 or x > 4096 for x in o.values())}
        if bad:
            raise ValueError(f"override values are 1..4096 (got {bad})")
        return v


class _BesideBlocks(Params):
    """Modules beside a backbone's blocks: where, and whether each task has its own."""

    blocks: list[int | str] | None = Field(None, description="connection points (default: every residual block)")
    per_task: bool = Field(True, description="each task gets its own modules")

    @field_validator("blocks")
    @classmethod
    def _unique(cls, v: list[int | str] | None) -> list[int | str] | None:
        if v is not None and len({str(b) for b in v}) != len(v):
            raise ValueError(f"blocks must not repeat (got {v})")
        return v


class TinyTLSpec(_BesideBlocks):
    """``tinytl``: TinyTL's lite residual modules (``method: tinytl``); defaults of the reference code
    (mit-han-lab/tinyml, ``tinytl/model/modules.py``: kernel 5, expand 1, groups 2)."""

    kernel: int = Field(5, ge=1, le=11, description="kernel of the module's group conv")
    expand: float = Field(1.0, gt=0.0, le=8.0, description="channels inside a module per input channel")
    groups: int = Field(2, ge=1, le=64, description="groups of the module's k x k conv")


class AttentionSpec(_BesideBlocks):
    """``attention``: DA2 / DA3 attention adaptors (``method: da2`` or ``da3``; design choices in
    :class:`imcsim.workloads.models.AttentionAdaptor`)."""

    reduction: int = Field(4, ge=1, le=64, description="the residual branch's width is the input channels / this")
    kernel: int = Field(3, ge=1, le=11, description="kernel of the residual branch's first conv")


class GradientFilterSpec(Params):
    """``gradient_filter``: which convolutions train filtered and the patch radius (``method: gradient_filter``;
    the reference configurations train the last 1-4 with radius 2, 4 or 7)."""

    layers: int = Field(2, ge=1, le=10000, description="the last this many convolutions of the backbone train")
    radius: int = Field(2, ge=2, le=32, description="patch radius r: gradients are averaged over r x r patches")
    clip_norm: float | None = Field(1.0, gt=0.0, le=1e6, description="clip each step's gradient to this global "
                                    "norm (the reference: 1.0 on CIFAR, 2.0 on ImageNet); null: no clipping")


class MobileTLSpec(Params):
    """``mobiletl``: how many of the backbone's top blocks fine-tune (``method: mobiletl``)."""

    blocks: int = Field(5, ge=1, le=10000, description="the top this many blocks fine-tune")


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
    model: ModelSpec = Field(default_factory=ModelSpec)
    method: Method = "repnet"
    baselines: list[Method] = Field(
        default_factory=list,
        description="other methods to run on the same scenario and hardware; the report gets a methods table",
    )
    repnet: RepNetSpec
    tinytl: TinyTLSpec = Field(default_factory=TinyTLSpec)
    attention: AttentionSpec = Field(default_factory=AttentionSpec)
    gradient_filter: GradientFilterSpec = Field(default_factory=GradientFilterSpec)
    mobiletl: MobileTLSpec = Field(default_factory=MobileTLSpec)
    pretrain: PretrainSpec
    tasks: list[TaskSpec] = Field(min_length=1)
    train: TrainSpec
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    cost_only: CostOnlySpec | None = Field(None, description="shapes and activity statistics for run.mode=cost_only")

    @model_validator(mode="after")
    def _blocks_exist(self) -> ContinualCard:
        """Block indices of the built-in backbones are checked here; any other point when the model is built."""
        n = BUILT_IN_BLOCKS.get(self.model.arch) if self.model.source == "zoo" else None
        bad = [b for b in self.repnet.side_blocks if isinstance(b, int) and n is not None and not 0 <= b < n]
        if bad:
            raise FieldError("repnet.side_blocks",
                             f"must be {self.model.arch} block indices 0..{n - 1} or module names (got {bad})")
        return self

    @model_validator(mode="after")
    def _activity_methods_exist(self) -> ContinualCard:
        """Statistics given for a method that is not one of this workload's would silently never be used."""
        names = METHODS.names_for(KIND)
        unknown = sorted(set(self.cost_only.activity.by_method) - set(names)) if self.cost_only else []
        if unknown:
            raise FieldError("cost_only.activity.by_method",
                             f"{', '.join(map(repr, unknown))} is not a continual-learning method (valid: "
                             f"{', '.join(names)})")
        return self

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskSpec]) -> list[TaskSpec]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique (got {names})")
        return tasks


def repnet_model(card: ContinualCard, backbone: torch.nn.Module, image_size: int, per_task: bool = False,
                 sides: bool = True) -> RepNet:
    """``backbone`` with the method's changes and modules beside its blocks (none with ``sides=False``: the
    bare backbone, as pretraining runs it) and no head yet; with ``per_task`` each task gets its own modules
    where the method says so."""
    if not sides:
        return RepNet(backbone, [], None, image_size)
    method = METHODS[card.method]
    method.prepare_backbone(card, backbone)
    plan = method.sides(card, backbone)
    if plan is None:
        return RepNet(backbone, [], None, image_size)
    try:
        return RepNet(backbone, plan.blocks, plan.width, image_size, per_task and plan.per_task, kernel=plan.kernel,
                      overrides=plan.overrides, options=plan.options)
    except SideModuleError as err:  # named by the method's own card keys
        raise SideModuleError(str(err), plan.keys.get(err.key, err.key)) from None


def backbone_of(card: ContinualCard, in_channels: int, image_size: int, weights: bool = True) -> torch.nn.Module:
    """The card's backbone, mapped onto the hardware (a new module each call)."""
    from imcsim.models.backbone import (
        build_backbone,  # the models layer builds on this package's data and layers
    )

    return build_backbone(card.model, in_channels, image_size, weights)


def deployed_model(card: ContinualCard, backbone: torch.nn.Module, heads: list[tuple[str, int]]) -> RepNet:
    """The model a functional run deploys: ``backbone``, the method's side modules and a head per
    (task, classes) of ``heads``."""
    model = repnet_model(card, backbone, card.model.image_size, per_task=True)
    for name, n_classes in heads:
        model.add_head(name, n_classes)
    return model


# Input channels of a data source's images (digits are grey; cifar10 and image folders are RGB).
SOURCE_CHANNELS = {"digits": 1, "cifar10": 3, "image_folder": 3}
_PARTS = {"backbone": "backbone", "side": "side modules", "head": "heads"}


def _part(name: str) -> str:
    return _PARTS.get(name.split(".", 1)[0], "other layers")


def model_key(card: ContinualCard) -> tuple[str, str]:
    """What a model built from ``card`` depends on: (the card as JSON, the provenance of a model file it names,
    with the file's content hash; empty for the zoo)."""
    if card.model.source == "zoo":
        return card.model_dump_json(), ""
    # the models layer builds on this package's data and layers: imported when needed
    from imcsim.models.backbone import provenance

    try:
        digest = json.dumps(provenance(card.model), sort_keys=True)
    except OSError:  # a missing file: building the model says so, naming the key
        digest = ""
    return card.model_dump_json(), digest


def array_layers(card: ContinualCard, mode: str) -> list[ArrayLayer]:
    """The weight matrices a run of ``card`` stores in the array, from the untrained model (no data, no training).

    Functional (``mode="functional"``): every IMC layer of the deployed model (backbone, the method's side
    modules, per task when ``repnet.per_task``, and every task's head), one matrix per group of a grouped
    conv. Cost-only: every layer of the model :func:`_trace_step` traces (one task), a grouped layer as
    one stored matrix. Cached by the card (a sweep over the hardware checks each workload once).
    """
    return list(_array_layers(model_key(card), mode))


@functools.lru_cache(maxsize=32)
def _array_layers(key: tuple[str, str], mode: str) -> tuple[ArrayLayer, ...]:
    card = ContinualCard.model_validate_json(key[0])
    if mode == "cost_only":  # the model _trace_step traces, on meta tensors
        spec, task = card.cost_only, card.tasks[0]
        with torch.device("meta"):
            model = repnet_model(card, backbone_of(card, spec.in_channels, spec.image_size, weights=False),
                                 spec.image_size)
            model.add_head(task.name, len(task.classes))
    else:
        with torch.random.fork_rng(devices=[]):  # built on the CPU; torch's RNG is left as it was
            backbone = backbone_of(card, SOURCE_CHANNELS[card.pretrain.task.source], card.model.image_size)
            model = deployed_model(card, backbone, [(t.name, len(t.classes)) for t in card.tasks])
    _set_trainable(model, card.method)  # which layers train (a chip may place them in a macro of their own)
    return tuple(array_layers_of(imc_modules(model), _part, grouped=mode == "cost_only"))


def _set_trainable(model: RepNet, method: str) -> None:
    """Train the heads and what ``method`` trains; freeze the rest."""
    trained_parameters(model, METHODS[method])


def _train_mode(model: RepNet, method: str) -> None:
    """The training mode of ``method`` (a frozen backbone's BN keeps its running statistics)."""
    METHODS[method].train_mode(model)


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
    backbone = backbone_of(card, source.channels, card.model.image_size)
    model = repnet_model(card, backbone, card.model.image_size, sides=False).to(device)
    model.add_head(source.name, source.n_classes).to(device)
    p = card.pretrain
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(p.epochs):
        model.train()
        for idx in batches(len(source.y_train), p.batch_size, rng):
            x, y = source.x_train[idx].to(device), source.y_train[idx].to(device)
            opt.zero_grad()
            F.cross_entropy(model(x, source.name), y).backward()
            opt.step()
    return backbone, _accuracy(model, source, device)


def training_graph(model: RepNet, method: str, task: str, input_shape: tuple[int, ...]) -> LayerGraph:
    """The layer dataflow of one training step on ``task`` (traced on a meta copy: no state changes)."""
    meta = copy.deepcopy(model).to("meta")
    _train_mode(meta, method)
    x = torch.empty(input_shape, device="meta")
    return trace_dataflow(meta, lambda: meta(x, task), samples=input_shape[0])


def step_memory(model: RepNet, method: str, tasks: list[str], input_shape: tuple[int, ...], momentum: bool
                ) -> TrainingMemory:
    """Training memory of one step (the largest over ``tasks``' heads), traced on a meta copy."""
    meta = copy.deepcopy(model).to("meta")
    _train_mode(meta, method)
    x = torch.empty(input_shape, device="meta")
    memories = [training_memory(meta.task_parameters(t), lambda t=t: meta(x, t), momentum) for t in tasks]
    return max(memories, key=lambda m: m.peak)


class ContinualScenario(Scenario):
    """Continual learning for the trainer: digits/CIFAR/image-folder tasks on a pretrained CNN backbone."""

    kind = KIND
    small_params_layer = DIGITAL_PARAMS

    @property
    def schedule(self) -> Schedule:
        t = self.card.train
        return Schedule(t.epochs, t.batch_size, t.lr, t.momentum, t.stochastic_rounding)

    def prepare(self, streams: Streams, seed: int, device: torch.device, shared: dict | None) -> Prepared:
        """Tasks, the pretrained backbone (cached in ``shared`` across methods) and the deployed model."""
        card = self.card
        size = card.model.image_size
        source = _make_task(card.pretrain.task, "pretrain.task", size, card.test_fraction, streams.data)
        tasks = [_make_task(t, f"tasks.{i}", size, card.test_fraction, streams.data) for i, t in enumerate(card.tasks)]
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
            cached = pretrain_backbone(card, source, streams.pretrain, device)
            if shared is not None:
                shared[key] = cached
        backbone, source_acc = copy.deepcopy(cached[0]), cached[1]
        torch.manual_seed(seed + 1)
        model = deployed_model(card, backbone, [(t.name, t.n_classes) for t in tasks]).to(device)
        return Prepared(model, tasks, source_acc, [])

    def trace(self, model: RepNet, tasks: list[TaskData]) -> tuple[dict[str, LayerGraph], TrainingMemory]:
        card = self.card
        graphs = {t.name: training_graph(model, card.method, t.name, t.x_train[:2].shape) for t in tasks}
        memory = step_memory(model, card.method, [t.name for t in tasks],
                             (card.train.batch_size, *tasks[0].x_train.shape[1:]), card.train.momentum > 0)
        return graphs, memory

    def accuracy(self, model: RepNet, task: TaskData, device: torch.device) -> float:
        return _accuracy(model, task, device)

    def cost_only_plan(self, macro: ArrayCircuit) -> CostOnlyPlan:
        card, spec = self.card, self.card.cost_only
        if spec is None:
            raise ValueError("run.mode=cost_only needs a workload.cost_only section (batch_size, image_size, "
                             "steps_per_task, activity)")
        graph, memory, digital = _trace_step(
            model_key(card.model_copy(update={"tasks": card.tasks[:1], "baselines": []})),
            card.method, card.train.momentum > 0)
        return CostOnlyPlan(
            task=card.tasks[0].name, graph=graph, memory=memory, activity=spec.activity.for_method(card.method),
            digital_params=digital,
            digital_layers=frozenset(), ops=(), adapters=[], rows=spec.batch_size, samples=spec.batch_size,
            steps_per_task=spec.steps_per_task, tasks=len(card.tasks), repeat_names=tuple(t.name for t in card.tasks))


def run_continual(
    card: ContinualCard,
    macro: ArrayCircuit,
    seed: int,
    device: torch.device,
    progress: Progress | None = None,
    shared: dict | None = None,
) -> ContinualResult:
    """Run the functional continual-learning scenario on ``macro``; see the module docstring.

    ``shared`` (a dict kept across calls) caches the pretrained backbone for runs of the same card but
    another method.
    """
    return run_functional(ContinualScenario(card), macro, seed, device, progress, shared)


@functools.lru_cache(maxsize=32)
def _trace_step(key: tuple[str, str], method: str, momentum: bool) -> tuple[LayerGraph, TrainingMemory, int]:
    """Layer graph, training memory and digital parameter count of one step, traced on meta tensors.

    Cached by the card (its first task only) and its model file: a sweep over device or circuit parameters
    traces each model once.
    """
    card = ContinualCard.model_validate_json(key[0])
    try:
        return _traced(card, method, momentum)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:  # a user's model that cannot run at this size
        if isinstance(err, DataError):
            raise
        spec = card.cost_only
        raise DataError(f"the model fails on a batch of {spec.batch_size} images of {spec.in_channels} x "
                        f"{spec.image_size} x {spec.image_size}: {type(err).__name__}: {err}", key="model") from None


def _traced(card: ContinualCard, method: str, momentum: bool) -> tuple[LayerGraph, TrainingMemory, int]:
    spec, task = card.cost_only, card.tasks[0]
    with torch.device("meta"):
        model = repnet_model(card, backbone_of(card, spec.in_channels, spec.image_size, weights=False),
                             spec.image_size)
        model.add_head(task.name, len(task.classes))
    _set_trainable(model, method)
    _train_mode(model, method)
    x = torch.empty(spec.batch_size, spec.in_channels, spec.image_size, spec.image_size, device="meta")
    graph = trace_dataflow(model, lambda: model(x, task.name), samples=spec.batch_size)
    memory = training_memory(model.parameters(), lambda: model(x, task.name), momentum)
    imc_weights = {id(m.weight) for m in imc_modules(model)}
    digital = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in imc_weights)
    return graph, memory, digital


def run_cost_only(card: ContinualCard, macro: ArrayCircuit, seed: int) -> ContinualResult:
    """Count one training step of the card's model at the ``cost_only`` sizes (no data, no arithmetic)."""
    return run_cost_only_step(ContinualScenario(card), macro, seed)
