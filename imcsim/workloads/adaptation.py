"""Adapting a frozen transformer to a task sequence on the macro: LoRA, LoRAFusion, full fine-tuning.

Flow of one run (functional mode; docs/architecture.md, "Workloads"):

1. Generated data (nothing is downloaded): token sequences over a small
   vocabulary. The source task labels a sequence by which of tokens 0..3 occurs
   most; each adaptation task compares two tokens' counts (``count(a) >
   count(b)``), with its own pair (a, b). Ties are dropped.
2. The base transformer is pretrained in float on the source task (off-device:
   it stands for the shipped pretrained model). For LoRAFusion, a pool of
   ``pool_size`` LoRA adapters is trained in float on pool tasks (the shipped
   pool of pretrained adapters).
3. Deployment programs the frozen base weights into the array (and, for
   LoRAFusion, the pool; for LoRA in ReRAM, the adapter slot): counted as
   ``deploy``. Heads, and the adapters when ``adapter_memory: sram``, live in
   the digital unit, whose GEMMs and updates are counted there.
4. Each task trains in INT8 through the circuit: LoRA trains A and B of every
   adapted projection (re-initialised per task; in ReRAM every optimizer step
   rewrites their cells, counted cell by cell through write-and-verify);
   LoRAFusion trains only the fusion coefficients and magnitude vectors, in
   SRAM, and runs the forward pass through the pool's arrays with the
   coefficients applied digitally (their arithmetic counted as digital MACs);
   ``full`` trains every projection in the array.
5. After each task, every seen task is tested with the state the hardware
   holds: one LoRA adapter slot (its earlier tasks see the latest adapter),
   per-task coefficients kept in SRAM (LoRAFusion switches them at no write).
"""

from __future__ import annotations

import copy
import functools
import re
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
from imcsim.workloads.continual import ContinualResult
from imcsim.workloads.costonly import ActivityStats, cost_only_step
from imcsim.workloads.dataflow import LayerGraph, trace_dataflow
from imcsim.workloads.int8 import (
    ArrayLayer,
    Hardware,
    IMCLinear,
    array_layers_of,
    imc_modules,
)
from imcsim.workloads.memory import TrainingMemory, training_memory
from imcsim.workloads.transformer import (
    Attention,
    LoRAFusionLinear,
    LoRALinear,
    TinyTransformer,
    attach_lora,
    attach_lorafusion,
    fusion_coefficients,
    lora_pool_from,
    lora_state,
)

AdaptMethod = Literal["lora", "lorafusion", "full"]
SOURCE_CLASSES = 4
COST_TASK = "task"  # the task a cost-only step is counted for
_TARGET = re.compile(r"((attn|self|cross)\.)?[qkvo]|ff\.[12]")


class TransformerSpec(Params):
    vocab: int = Field(12, ge=6, le=1_000_000, description="token vocabulary (embedding rows)")
    d_model: int = Field(32, ge=4, le=8192, description="model width")
    n_heads: int = Field(2, ge=1, le=128, description="attention heads (must divide d_model)")
    n_layers: int = Field(2, ge=1, le=96, description="encoder blocks")
    decoder_layers: int = Field(0, ge=0, le=96, description="decoder blocks (self- and cross-attention); 0: encoder-only")
    d_ff: int = Field(64, ge=4, le=65536, description="feed-forward width")
    seq_len: int = Field(16, ge=2, le=4096, description="tokens per sequence")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerSpec:
        if self.d_model % self.n_heads:
            raise FieldError("n_heads", f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        return self


class AdapterSpec(Params):
    targets: list[str] = Field(["q", "v"], min_length=1, description="adapted projections (q, k, v, o, ff.1, ff.2)")
    rank: int = Field(4, ge=1, le=1024, description="LoRA rank r")
    pool_size: int = Field(4, ge=1, le=256, description="LoRAFusion: pretrained adapters in the pool")

    @field_validator("targets")
    @classmethod
    def _known_projections(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not _TARGET.fullmatch(t)]
        if bad:
            raise ValueError(f"unknown projections {bad}; valid: q, k, v, o (optionally attn., self. or cross.), "
                             "ff.1, ff.2")
        return v


class PhaseSpec(Params):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    lr: float = Field(gt=0.0, le=10.0, description="SGD learning rate (momentum 0.9)")
    samples: int = Field(600, ge=20, le=10**7, description="generated sequences per task")


class CostOnlyAdaptSpec(Params):
    """Cost-only mode: one training step of a real-size model, from shapes and activity statistics."""

    model: TransformerSpec = Field(description="the real-size model (its vocab only sizes the embedding)")
    batch_size: int = Field(ge=1, le=65536)
    steps_per_task: int = Field(ge=1, le=10**9, description="training steps each task takes (scales the totals)")
    n_classes: int = Field(2, ge=2, le=100000, description="classes of the counted task's head")
    activity: ActivityStats


class AdaptationCard(Params):
    """A transformer adaptation workload card (``kind: lora_adaptation``)."""

    kind: Literal["lora_adaptation"]
    description: str
    references: dict[str, str] = Field(default_factory=dict)
    model: TransformerSpec = TransformerSpec()
    adapters: AdapterSpec = AdapterSpec()
    method: AdaptMethod = "lora"
    adapter_memory: Literal["reram", "sram"] = Field("reram", description="where LoRA's A and B live")
    n_tasks: int = Field(3, ge=1, le=100, description="adaptation tasks in sequence")
    pretrain: PhaseSpec
    pool_train: PhaseSpec
    train: PhaseSpec
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    cost_only: CostOnlyAdaptSpec | None = None

    @model_validator(mode="after")
    def _decoder_targets_need_a_decoder(self) -> AdaptationCard:
        models = [self.model] + ([self.cost_only.model] if self.cost_only is not None else [])
        decoder_only = [t for t in self.adapters.targets if t.startswith(("self.", "cross."))]
        if decoder_only and any(m.decoder_layers == 0 for m in models):
            raise FieldError("adapters.targets", f"{decoder_only} name decoder projections, but a model has no "
                             "decoder_layers")
        return self

    @model_validator(mode="after")
    def _enough_token_pairs(self) -> AdaptationCard:
        pairs = self.model.vocab * (self.model.vocab - 1) // 2
        if pairs < self.adapters.pool_size + self.n_tasks:
            raise FieldError("model.vocab", f"a vocab of {self.model.vocab} gives {pairs} token-pair tasks, fewer than "
                             f"adapters.pool_size + n_tasks = {self.adapters.pool_size + self.n_tasks}")
        return self


@dataclass(frozen=True)
class SeqTask:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


def make_seq_task(name: str, rule: tuple[int, ...], vocab: int, seq_len: int, samples: int, test_fraction: float,
                  rng: np.random.Generator) -> SeqTask:
    """Random token sequences labelled by ``rule``: (a, b) -> count(a) > count(b); (0..3) -> the most frequent."""
    xs, ys = [], []
    while len(ys) < samples:
        x = rng.integers(0, vocab, (samples, seq_len))
        counts = np.stack([(x == t).sum(axis=1) for t in rule], axis=1)
        top = counts.max(axis=1)
        unique = (counts == top[:, None]).sum(axis=1) == 1  # drop ties
        xs.append(x[unique])
        ys.append(counts[unique].argmax(axis=1) if len(rule) > 2 else (counts[unique, 0] > counts[unique, 1]))
        ys[-1] = ys[-1].astype(np.int64)
        if sum(len(y) for y in ys) >= samples:
            break
    x = torch.from_numpy(np.concatenate(xs)[:samples])
    y = torch.from_numpy(np.concatenate(ys)[:samples])
    n_test = max(1, round(test_fraction * samples))
    return SeqTask(name, x[n_test:], y[n_test:], x[:n_test], y[:n_test], len(rule) if len(rule) > 2 else 2)


def _pairs(vocab: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(vocab) for b in range(vocab) if a < b]
    return [pairs[i] for i in rng.permutation(len(pairs))]


def _attach(card: AdaptationCard, model: TinyTransformer, pool_states: list, heads: list[tuple[str, int]]
            ) -> list[torch.nn.Module]:
    """Attach the method's adapters (LoRAFusion: over ``pool_states``) and the task heads, in place of the
    base head; freeze everything (each task unfreezes what it trains). Returns the adapters."""
    ad = card.adapters
    adapters: list[torch.nn.Module] = []
    if card.method == "lora":
        adapters = attach_lora(model, ad.targets, ad.rank)
    elif card.method == "lorafusion":
        adapters = attach_lorafusion(model, lora_pool_from(pool_states), ad.targets, ad.rank)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, n_classes in heads:
        model.add_head(name, n_classes)
    del model.heads["base"]
    return adapters


def _digital_layers(card: AdaptationCard, model: TinyTransformer, adapters: list[torch.nn.Module]
                    ) -> list[IMCLinear]:
    """Layers kept in the digital unit: the heads, and LoRA's A and B when ``adapter_memory: sram``."""
    layers = list(model.heads.values())
    if card.method == "lora" and card.adapter_memory == "sram":
        layers += [m for a in adapters for m in (a.lora_A, a.lora_B)]
    return layers


def _task_params(card: AdaptationCard, model: torch.nn.Module, name: str) -> list[torch.nn.Parameter]:
    """The parameters a step on task ``name`` trains: its head and the method's adapter parameters."""
    def wanted(key: str) -> bool:
        if key.startswith("heads."):
            return key.startswith(f"heads.{name}.")
        if card.method == "lora":
            return ".lora_A." in key or ".lora_B." in key
        if card.method == "lorafusion":
            return key.endswith(".w") or key.endswith(".magnitude")
        return True
    return [p for key, p in model.named_parameters() if wanted(key)]


def _fit(model: torch.nn.Module, task: SeqTask, head: str, params, spec: PhaseSpec, rng: np.random.Generator,
         step: Callable[[int], None] | None = None, after: Callable[[], None] | None = None) -> float:
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=0.9)
    loss_v = float("nan")
    for _ in range(spec.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(task.y_train)))
        for idx in order.split(spec.batch_size):
            if step is not None:
                step(len(idx))
            opt.zero_grad()
            loss = F.cross_entropy(model(task.x_train[idx], head), task.y_train[idx])
            loss.backward()
            opt.step()
            if after is not None:
                after()
            loss_v = loss.item()
    return loss_v


def _accuracy(model: torch.nn.Module, task: SeqTask, head: str) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(task.x_test, head).argmax(1) == task.y_test).float().mean())


def run_adaptation(card: AdaptationCard, macro: BitSerialMacro, seed: int, device: torch.device,
                   progress: Callable[[str, int, int], None] | None = None, shared: dict | None = None
                   ) -> ContinualResult:
    """Run the adaptation scenario on ``macro``; see the module docstring."""
    del device, shared  # trains on CPU: the tiny model is bound by the circuit model, not by arithmetic
    spec, ad = card.model, card.adapters
    data_rng, pre_rng, rng = (np.random.default_rng([seed, i]) for i in range(3))
    pairs = _pairs(spec.vocab, data_rng)  # enough of them: checked by the card
    source = make_seq_task("source", tuple(range(SOURCE_CLASSES)), spec.vocab, spec.seq_len, card.pretrain.samples,
                           card.test_fraction, data_rng)
    pool_tasks = [make_seq_task(f"pool{i}", pairs[i], spec.vocab, spec.seq_len, card.pool_train.samples,
                                card.test_fraction, data_rng) for i in range(ad.pool_size)]
    tasks = [make_seq_task(f"tokens_{a}_vs_{b}", (a, b), spec.vocab, spec.seq_len, card.train.samples,
                           card.test_fraction, data_rng) for a, b in pairs[ad.pool_size:ad.pool_size + card.n_tasks]]

    torch.manual_seed(seed)
    model = TinyTransformer(spec.vocab, spec.d_model, spec.n_heads, spec.n_layers, spec.d_ff, spec.seq_len,
                            SOURCE_CLASSES, spec.decoder_layers)
    _fit(model, source, "base", list(model.parameters()), card.pretrain, pre_rng)  # float, off-device
    source_acc = _accuracy(model, source, "base")

    states = []
    if card.method == "lorafusion":
        for pt in pool_tasks:  # the shipped pool: one adapter per pool task, trained in float
            m = copy.deepcopy(model)
            attach_lora(m, ad.targets, ad.rank)
            m.add_head(pt.name, pt.n_classes)
            _fit(m, pt, pt.name, [p for p in m.parameters() if p.requires_grad], card.pool_train, pre_rng)
            states.append(lora_state(m))
    adapters = _attach(card, model, states, [(t.name, t.n_classes) for t in tasks])
    torch.manual_seed(seed + 1)
    digital_layers = {id(m) for m in _digital_layers(card, model, adapters)}

    first = tasks[0].name
    for p in _task_params(card, model, first):
        p.requires_grad_(True)
    meta = copy.deepcopy(model).to("meta")
    graph = trace_dataflow(meta, lambda: meta(torch.zeros((2, spec.seq_len), dtype=torch.long, device="meta"), first),
                           samples=2)
    mem = training_memory(
        [p for key, p in meta.named_parameters() if not key.startswith("heads.") or key.startswith(f"heads.{first}.")],
        lambda: meta(torch.zeros((card.train.batch_size, spec.seq_len), dtype=torch.long, device="meta"), first),
        momentum=True)
    n_trainable = sum(p.numel() for p in _task_params(card, model, first))
    hw = Hardware(macro=macro, task="deploy")  # after tracing: a meta copy must not carry the hardware
    for m in imc_modules(model):
        if id(m) not in digital_layers:
            m.deploy(hw)

    n = len(tasks)
    acc = np.full((n, n), np.nan)
    saved: dict[str, dict[str, torch.Tensor]] = {}
    steps_per_task, losses = [], []
    total = sum(card.train.epochs * -(-len(t.y_train) // card.train.batch_size) for t in tasks)
    done = 0
    m_tokens = spec.seq_len
    for i, task in enumerate(tasks):
        hw.task = task.name
        for p in model.parameters():
            p.requires_grad_(False)
        params = _task_params(card, model, task.name)
        for p in params:
            p.requires_grad_(True)
        if card.method == "lora":  # a fresh adapter per task in the same slot
            with torch.no_grad():
                for a in adapters:
                    torch.nn.init.kaiming_uniform_(a.lora_A.weight, a=5**0.5)
                    a.lora_B.weight.zero_()
        elif card.method == "lorafusion":
            with torch.no_grad():
                for c in fusion_coefficients(model):
                    c.w.zero_()
                for a in adapters:
                    a.magnitude.copy_(a.base.weight.norm(dim=1))
        synced = [m for m in imc_modules(model) if id(m) not in digital_layers and m.weight.requires_grad]
        digital = [m for m in imc_modules(model) if id(m) in digital_layers and m.weight.requires_grad]
        imc_weights = {id(m.weight) for m in imc_modules(model)}
        n_small = sum(p.numel() for p in params if id(p) not in imc_weights)  # biases, coefficients, magnitudes
        counter = {"steps": 0}

        def before(batch: int, counter: dict = counter, task: SeqTask = task) -> None:
            nonlocal done
            hw.step, hw.samples = done, batch
            done += 1
            counter["steps"] += 1
            if progress is not None:
                progress(task.name, done, total)

        def after(synced: list = synced, digital: list = digital, n_small: int = n_small) -> None:
            with torch.no_grad():
                for m in synced:
                    m.sync()
            rows = hw.samples * m_tokens
            ops = attention_ops(macro, model, hw.samples, m_tokens)
            for m in digital:  # GEMMs and update of layers kept in the digital unit
                ops += digital_layer_ops(macro, m, hw.samples if m.name.startswith("head.") else rows, hw.samples)
            if card.method == "lorafusion":
                ops += fusion_ops(macro, adapters, rows, hw.samples)
            for rec in ops:
                hw.emit(rec, rec.module)
            if n_small:
                hw.emit(macro.update_digital("adapter_params", n_small), "adapter_params")

        losses.append(_fit(model, task, task.name, params, card.train, rng, before, after))
        steps_per_task.append(counter["steps"])
        if card.method == "lorafusion":
            saved[task.name] = {k: v.detach().clone() for k, v in model.state_dict().items()
                                if k.endswith(".w") or k.endswith(".magnitude")}
        hw.recording = False
        current = {k: v.detach().clone() for k, v in model.state_dict().items() if k in saved.get(task.name, {})}
        for j in range(i + 1):
            if card.method == "lorafusion":  # per-task coefficients in SRAM: switched, not rewritten
                model.load_state_dict(saved[tasks[j].name], strict=False)
            acc[i, j] = _accuracy(model, tasks[j], tasks[j].name)
        if current:
            model.load_state_dict(current, strict=False)
        hw.recording = True
    return ContinualResult(ops=hw.ops, graphs={t.name: graph for t in tasks}, task_names=[t.name for t in tasks],
                           accuracy=acc, steps_per_task=steps_per_task, trainable_params=n_trainable,
                           source_accuracy=source_acc, final_losses=losses, memory=mem)


def _adapted_model(card: AdaptationCard, m: TransformerSpec, heads: list[tuple[str, int]], device: str = "meta"
                   ) -> tuple[TinyTransformer, list[torch.nn.Module]]:
    """The adapted model of sizes ``m`` with ``heads`` (untrained; on meta tensors: shapes only), and its
    adapters (LoRAFusion's pool: ``pool_size`` adapters of the card's rank)."""
    with torch.device(device):
        model = TinyTransformer(m.vocab, m.d_model, m.n_heads, m.n_layers, m.d_ff, m.seq_len, SOURCE_CLASSES,
                                m.decoder_layers)
        states = []
        if card.method == "lorafusion":  # the pool's shapes: N adapters of the card's rank on the targets
            probe = copy.deepcopy(model)
            attach_lora(probe, card.adapters.targets, card.adapters.rank)
            states = [lora_state(probe)] * card.adapters.pool_size
        adapters = _attach(card, model, states, heads)
    return model, adapters


def _part(name: str) -> str:
    if name.startswith("head."):
        return "heads"
    return "adapters" if re.search(r"\.(lora_[AB]|pool\d+\.[AB])$", name) else "base model"


def array_layers(card: AdaptationCard, mode: str) -> list[ArrayLayer]:
    """The weight matrices a run of ``card`` stores in the array, from the untrained model (no data, no training):
    the base model's projections and the method's adapters in the array (the LoRA slot in ReRAM, or
    LoRAFusion's pool); not the layers kept in the digital unit (heads; LoRA's A and B with
    ``adapter_memory: sram``). ``mode``: functional (the card's model, a head per task) or cost_only
    (the cost-only model, on meta tensors, with the counted task's head)."""
    if mode == "cost_only":
        model, adapters = _adapted_model(card, card.cost_only.model, [(COST_TASK, card.cost_only.n_classes)])
    else:  # the functional model trains, so it is small: built on the CPU (torch's RNG is left as it was)
        with torch.random.fork_rng(devices=[]):
            model, adapters = _adapted_model(card, card.model, [(f"task{i}", 2) for i in range(card.n_tasks)], "cpu")
    digital = {id(m) for m in _digital_layers(card, model, adapters)}
    return array_layers_of([m for m in imc_modules(model) if id(m) not in digital], _part)


@functools.lru_cache(maxsize=16)
def _trace_adapted(card_json: str) -> tuple[TinyTransformer, list[torch.nn.Module], LayerGraph, TrainingMemory]:
    """The card's cost-only model on meta tensors, with its adapters, one head and the traced step.

    Cached by the card: a sweep over device or circuit parameters traces each model once per process.
    """
    card = AdaptationCard.model_validate_json(card_json)
    spec = card.cost_only
    m = spec.model
    model, adapters = _adapted_model(card, m, [(COST_TASK, spec.n_classes)])
    params = _task_params(card, model, COST_TASK)
    for p in params:
        p.requires_grad_(True)
    tokens = torch.zeros((spec.batch_size, m.seq_len), dtype=torch.long, device="meta")
    graph = trace_dataflow(model, lambda: model(tokens, COST_TASK), samples=spec.batch_size)
    memory = training_memory(list(model.parameters()), lambda: model(tokens, COST_TASK), momentum=True)
    return model, adapters, graph, memory


def run_adaptation_cost_only(card: AdaptationCard, macro: BitSerialMacro, seed: int) -> ContinualResult:
    """Count one training step of the card's ``cost_only`` model (no data, no arithmetic); the totals
    stand for ``steps_per_task`` steps of each of ``n_tasks`` tasks."""
    spec = card.cost_only
    if spec is None:
        raise ValueError("run.mode=cost_only needs a workload.cost_only section (model, batch_size, "
                         "steps_per_task, activity)")
    model, adapters, graph, memory = _trace_adapted(card.model_dump_json())
    digital = _digital_layers(card, model, adapters)
    imc_weights = {id(m.weight) for m in imc_modules(model)}
    digital_params = sum(p.numel() for p in _task_params(card, model, COST_TASK) if id(p) not in imc_weights)
    batch, n = spec.batch_size, spec.model.seq_len
    extra = attention_ops(macro, model, batch, n)
    if card.method == "lorafusion":
        extra += fusion_ops(macro, adapters, batch * n, batch)
    step = cost_only_step(macro, graph, spec.activity, digital_params, COST_TASK, seed,
                          digital_layers=frozenset(m.name for m in digital), extra=tuple(extra))
    return ContinualResult(
        ops=step.ops, graphs={COST_TASK: graph}, task_names=[COST_TASK], accuracy=np.full((1, 1), np.nan),
        steps_per_task=[1], trainable_params=step.trainable_params, source_accuracy=float("nan"),
        final_losses=[float("nan")], step_scale=float(spec.steps_per_task * card.n_tasks), memory=memory,
        task_repeats=card.n_tasks,
    )


def digital_layer_ops(macro: BitSerialMacro, m: IMCLinear, rows: int, samples: int) -> list[OpRecord]:
    """One training step of a linear layer kept in the digital unit: forward, gradients, FP32 update."""
    k, n = m.weight.shape[1], m.weight.shape[0]
    ops = [macro.digital_gemm(*shape, phase=phase, layer=m.name, samples=samples)
           for phase, shape in (("forward", (rows, k, n)), ("input_grad", (rows, n, k)), ("weight_grad", (rows, k, n)))]
    ops.append(macro.update_digital(m.name, m.weight.numel()))
    return _owned(ops, m.name)


def attention_ops(macro: BitSerialMacro, model: torch.nn.Module, batch: int, seq_len: int,
                  backward: bool = True) -> list[OpRecord]:
    """The weight-free GEMMs of every attention layer of ``model`` in one step, in the digital unit.

    Per head and sample: scores ``Q K^T`` (N x dh x M) and context ``P V`` (N x M x dh)
    forward; backward ``dP = dO V^T``, ``dV = P^T dO``, ``dQ = dS K`` and
    ``dK = dS^T Q``. Each op belongs to the layer its result feeds (``o``).
    Softmax and masking are not counted (elementwise, like the norms).
    """
    ops: list[OpRecord] = []
    for att in (mod for mod in model.modules() if isinstance(mod, Attention)):
        d = getattr(att.q, "base", att.q).weight.shape[0]  # an adapted projection wraps its base
        h, n = att.n_heads, seq_len
        dh = d // h
        owner = att.o.name
        copies = batch * h
        shapes = [("forward", (n, dh, n)), ("forward", (n, n, dh))]
        if backward:
            shapes += [("input_grad", (n, dh, n)), ("input_grad", (n, n, dh)),
                       ("input_grad", (n, n, dh)), ("input_grad", (n, n, dh))]
        for phase, (a, b, c) in shapes:
            rec = macro.digital_gemm(a, b, c, phase=phase, layer=f"{owner}.scores", copies=copies)
            rec.chunk_cycles = np.full(batch, rec.cycles // batch, dtype=np.int64)  # one share per sample
            rec.cycles = int(rec.chunk_cycles.sum())
            ops.append(rec)
    return _owned(ops, None)


def fusion_ops(macro: BitSerialMacro, adapters: list[LoRAFusionLinear], rows: int, samples: int) -> list[OpRecord]:
    """LoRAFusion's digital work per step and adapted linear: combining the pool outputs with the
    coefficients (N x rows x (r + d)), forming B_l A_l and the row norms of W0 + dW (d x r x k and d x k),
    each also in the backward pass."""
    ops: list[OpRecord] = []
    for a in adapters:
        d, k = a.base.weight.shape
        for phase in ("forward", "input_grad"):
            ops += _owned([macro.digital_gemm(len(a.pool), rows, a.rank + d, phase=phase, layer=f"{a.name}.fusion",
                                               samples=samples),
                           macro.digital_gemm(d, a.rank + 1, k, phase=phase, layer=f"{a.name}.norm",
                                               samples=samples)], a.name)
    return ops


def _owned(ops: list[OpRecord], module: str | None) -> list[OpRecord]:
    """Tag ops with the graph layer they belong to (``None``: the layer named before the op's suffix)."""
    for rec in ops:
        rec.module = module if module is not None else rec.layer.rsplit(".", 1)[0]
    return ops


__all__ = ["AdaptationCard", "LoRALinear", "attention_ops", "fusion_ops", "make_seq_task", "run_adaptation",
           "run_adaptation_cost_only"]
