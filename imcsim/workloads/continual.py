"""Continual learning on the IMC macro: pretrain and freeze a backbone, then learn tasks.

Flow of one run (functional mode):

1. Build the source task and pretrain the backbone in float (off-device; this
   stands for the pretrained model shipped with the device; it is not counted).
2. Deploy: program every INT8 weight into the macro (counted as ``deploy``).
3. For each task: add a head, train the method's trainable parameters in INT8
   on the macro (forward, input gradient, weight gradient, update and
   write-back, all counted), then test every task seen so far (the accuracy
   matrix). Side modules are shared across tasks, so later tasks can overwrite
   what earlier ones learned; forgetting is measured, not assumed.

Methods: ``repnet`` (side modules + heads), ``repnet_bias`` (plus backbone BN
biases), ``last_layer`` (heads only), ``bias_only`` (backbone BN biases + heads,
TinyTL-style), ``full`` (everything).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from imcsim.circuits.macro import BitSerialMacro, OpRecord
from imcsim.params import Params
from imcsim.workloads.backbones import build_backbone
from imcsim.workloads.costonly import DIGITAL_PARAMS, CostOnlySpec, cost_only_step, meta_input
from imcsim.workloads.data import TaskData, make_task
from imcsim.workloads.dataflow import LayerGraph, trace_dataflow
from imcsim.workloads.int8 import Hardware, imc_modules
from imcsim.workloads.models import RepNet, TinyCNN

Method = Literal["repnet", "repnet_bias", "last_layer", "bias_only", "full"]


class TaskSpec(Params):
    name: str = Field(min_length=1)
    classes: list[int] = Field(min_length=2, description="digit classes 0..9 in this task")
    transform: Literal["none", "rotate90", "invert", "noise"] = "none"

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[int]) -> list[int]:
        bad = [c for c in classes if not 0 <= c <= 9]
        if bad:
            raise ValueError(f"classes must be digits 0..9 (got {bad})")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must not repeat (got {classes})")
        return classes


ARCH_BLOCKS = {"tiny_cnn": 4, "mobilenet_v2": 19, "proxylessnas_mobile": 22}


class ModelSpec(Params):
    arch: Literal["tiny_cnn", "mobilenet_v2", "proxylessnas_mobile"] = "tiny_cnn"
    width: int = Field(16, ge=2, le=512)
    image_size: int = Field(16, ge=8, le=256)


class RepNetSpec(Params):
    side_blocks: list[int] = Field(description="backbone blocks (0 = stem) that get a side module")
    width: int = Field(16, ge=2, le=1024, description="channels inside a side module")

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
            raise ValueError(f"repnet.side_blocks must be {self.model.arch} block indices 0..{n - 1} (got {bad})")
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


def pretrain_backbone(card: ContinualCard, source: TaskData, rng: np.random.Generator, device: torch.device
                      ) -> tuple[TinyCNN, float]:
    """Train backbone + a source head in float; return the backbone and its source accuracy."""
    backbone = build_backbone(card.model.arch, 1, card.model.width)
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


def run_continual(
    card: ContinualCard,
    macro: BitSerialMacro,
    seed: int,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
) -> ContinualResult:
    """Run the functional continual-learning scenario on ``macro``; see the module docstring."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    size = card.model.image_size
    source = make_task(card.pretrain.task.name, card.pretrain.task.classes, card.pretrain.task.transform,
                       size, card.test_fraction, rng)
    tasks = [make_task(t.name, t.classes, t.transform, size, card.test_fraction, rng) for t in card.tasks]
    backbone, source_acc = pretrain_backbone(card, source, rng, device)

    model = RepNet(backbone, card.repnet.side_blocks, card.repnet.width, size).to(device)
    for t in tasks:
        model.add_head(t.name, t.n_classes).to(device)
    _set_trainable(model, card.method)
    graphs = {t.name: training_graph(model, card.method, t.name, t.x_train[:2].shape) for t in tasks}
    hw = Hardware(macro=macro, stochastic_rounding=card.train.stochastic_rounding, generator=gen, task="deploy")
    for m in imc_modules(model):
        m.deploy(hw)
    trainable_imc = [m for m in imc_modules(model) if m.weight.requires_grad]
    imc_params = {id(m.weight) for m in imc_modules(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)

    n = len(tasks)
    acc = np.full((n, n), np.nan)
    steps_per_task: list[int] = []
    losses: list[float] = []
    total_steps = sum(card.train.epochs * -(-len(t.y_train) // card.train.batch_size) for t in tasks)
    done = 0
    for i, task in enumerate(tasks):
        hw.task = task.name
        head = model.heads[task.name]
        head_ids = {id(p) for h in model.heads.values() for p in h.parameters()}
        params = [p for p in trainable if id(p) not in head_ids] + list(head.parameters())
        opt = torch.optim.SGD(params, lr=card.train.lr, momentum=card.train.momentum)
        active_imc = [m for m in trainable_imc if not m.name.startswith("head.") or m is head]
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
    )



def run_cost_only(card: ContinualCard, macro: BitSerialMacro, seed: int) -> ContinualResult:
    """Count one training step of the card's model at the ``cost_only`` sizes (no data, no arithmetic)."""
    spec = card.cost_only
    if spec is None:
        raise ValueError("run.mode=cost_only needs a workload.cost_only section (batch_size, image_size, "
                         "steps_per_task, activity)")
    task = card.tasks[0]
    backbone = build_backbone(card.model.arch, spec.in_channels, card.model.width)
    model = RepNet(backbone, card.repnet.side_blocks, card.repnet.width, spec.image_size)
    model.add_head(task.name, len(task.classes))
    model.to("meta")
    _set_trainable(model, card.method)
    _train_mode(model, card.method)
    x = meta_input(spec)
    graph = trace_dataflow(model, lambda: model(x, task.name), samples=spec.batch_size)
    imc_weights = {id(m.weight) for m in imc_modules(model)}
    digital = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in imc_weights)
    step = cost_only_step(macro, graph, spec.activity, digital, task.name, seed)
    n = len(card.tasks)
    return ContinualResult(
        ops=step.ops, graphs={task.name: graph}, task_names=[task.name], accuracy=np.full((1, 1), np.nan),
        steps_per_task=[1], trainable_params=step.trainable_params, source_accuracy=float("nan"),
        final_losses=[float("nan")], step_scale=float(spec.steps_per_task * n),
    )
