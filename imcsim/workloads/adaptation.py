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

The step loop is the task-sequence trainer's (:mod:`imcsim.workloads.trainer`); this module is the
adaptation scenario it runs: generated data, pretraining (and a pool of adapters when the method asks for
one), the transformer and its tracing, and the digital work of attention and of the layers kept in the
digital unit. The methods (``lora``, ``lorafusion``, ``full`` and any plug-in's) live in
:mod:`imcsim.methods`.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from imcsim.circuits.base import ArrayCircuit
from imcsim.errors import FieldError
from imcsim.ops import OpRecord
from imcsim.params import Params, TimeS
from imcsim.workloads.costonly import ActivityStats
from imcsim.workloads.dataflow import LayerGraph, trace_dataflow
from imcsim.workloads.int8 import (
    ArrayLayer,
    IMCLinear,
    IMCModule,
    WritePolicy,
    array_layers_of,
    imc_modules,
)
from imcsim.workloads.memory import TrainingMemory, training_memory
from imcsim.workloads.trainer import (
    ContinualResult,
    CostOnlyPlan,
    Prepared,
    Progress,
    Scenario,
    Schedule,
    Streams,
    method_field,
    method_for,
    run_cost_only,
    run_functional,
    trained_parameters,
)
from imcsim.workloads.transformer import (
    LoRALinear,
    TinyTransformer,
    attach_lora,
    lora_state,
)

KIND = "lora_adaptation"
AdaptMethod = Annotated[str, method_field(KIND)]  # a registered method of transformer adaptation
SOURCE_CLASSES = 4
COST_TASK = "task"  # the task a cost-only step is counted for
_TARGET = re.compile(r"((attn|self|cross)\.)?[qkvo]|ff\.([12]|gate)|.*\*.*")


TRANSFORMERS: dict[str, dict[str, object]] = {
    # Turc et al., "Well-Read Students Learn Better", arXiv 1908.08962 (BERT-mini: L=4, H=256, A=4)
    "bert_mini": {"vocab": 30522, "d_model": 256, "n_heads": 4, "n_layers": 4, "d_ff": 1024},
    # Devlin et al., "BERT", NAACL 2019 (BERT-base: L=12, H=768, A=12, 3072 feed-forward)
    "bert_base": {"vocab": 30522, "d_model": 768, "n_heads": 12, "n_layers": 12, "d_ff": 3072},
    # Chung et al., "Scaling Instruction-Finetuned Language Models", JMLR 2024 (Flan-T5, the T5 v1.1 sizes of
    # Raffel et al., JMLR 2020): gated-GELU feed-forward, RMS norm, bias-free projections, 32,128 tokens
    "flan_t5_base": {"vocab": 32128, "d_model": 768, "n_heads": 12, "n_layers": 12, "decoder_layers": 12,
                     "d_ff": 2048, "ff": "gated_gelu", "norm": "rms", "bias": False, "position": "none"},
    "flan_t5_large": {"vocab": 32128, "d_model": 1024, "n_heads": 16, "n_layers": 24, "decoder_layers": 24,
                      "d_ff": 2816, "ff": "gated_gelu", "norm": "rms", "bias": False, "position": "none"},
}
"""Transformer presets (``model.arch``): sizes and block style; keys given beside ``arch`` win."""


class TransformerSpec(Params):
    arch: str | None = Field(None, description=f"a preset ({', '.join(TRANSFORMERS)}) filling every key not given")
    ff: Literal["gelu", "gated_gelu"] = Field("gelu", description="feed-forward: GELU, or gated GELU (T5 v1.1)")
    norm: Literal["layer", "rms"] = Field("layer", description="LayerNorm, or RMS norm (T5)")
    bias: bool = Field(True, description="projections carry biases")
    position: Literal["learned", "none"] = Field(
        "learned", description="learned absolute position embeddings, or none (T5's relative position bias, a "
                               "per-head table added to the scores, is not modelled)")
    vocab: int = Field(12, ge=6, le=1_000_000, description="token vocabulary (embedding rows)")
    d_model: int = Field(32, ge=4, le=8192, description="model width")
    n_heads: int = Field(2, ge=1, le=128, description="attention heads (must divide d_model)")
    n_layers: int = Field(2, ge=1, le=96, description="encoder blocks")
    decoder_layers: int = Field(0, ge=0, le=96, description="decoder blocks (self- and cross-attention); 0: encoder-only")
    d_ff: int = Field(64, ge=4, le=65536, description="feed-forward width")
    seq_len: int = Field(16, ge=2, le=4096, description="tokens per sequence")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("arch") is None:
            return data
        preset = TRANSFORMERS.get(data["arch"])
        if preset is None:
            raise FieldError("arch", f"unknown transformer {data['arch']!r}; valid: {', '.join(TRANSFORMERS)}")
        return {**preset, **data}

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerSpec:
        if self.d_model % self.n_heads:
            raise FieldError("n_heads", f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        return self


class AdapterSpec(Params):
    targets: list[str] = Field(["q", "v"], min_length=1, description="adapted projections: q, k, v, o (optionally "
                               "attn., self. or cross.), ff.1, ff.gate, ff.2, or a glob over projection names "
                               "(e.g. 'dec.*.cross.*')")
    rank: int = Field(4, ge=1, le=1024, description="LoRA rank r")
    pool_size: int = Field(4, ge=1, le=256, description="LoRAFusion: pretrained adapters in the pool")

    @field_validator("targets")
    @classmethod
    def _known_projections(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not _TARGET.fullmatch(t)]
        if bad:
            raise ValueError(f"unknown projections {bad}; valid: q, k, v, o (optionally attn., self. or cross.), "
                             "ff.1, ff.gate, ff.2, or a glob with '*'")
        return v


class LoRAFusionSpec(Params):
    """LoRAFusion's trained state as its reference implementation sets it up (ASU-ESIC-FAN-Lab/LoRAFusion,
    ``LoRAs/loraFusionLearner.py``: an N x blocks coefficient matrix, ``torch.nn.init.xavier_uniform_``, one
    coefficient per pool adapter and transformer block) and as PEFT's DoRA normalises (the row norm detached)."""

    coefficient_init: Literal["xavier_uniform", "zero"] = Field(
        "xavier_uniform",
        description="each task's coefficients: U(-b, b) with b = sqrt(6 / (pool_size + blocks)) over the pool_size x "
                    "blocks matrix (the reference), or zero (the task starts at the base model; the merged update is "
                    "bilinear in the coefficients, so at zero their gradient is zero and they never move)")
    train_coefficients: bool = Field(
        True, description="train the fusion coefficients (false: they stay at their initial values and only the "
                          "magnitudes train, the magnitude-only ablation)")
    norm: Literal["detached", "differentiated"] = Field(
        "detached", description="the row norm ||W0 + dW|| as a constant in the backward pass (PEFT's DoRA, DoRA "
                                "section 4.3) or differentiated")
    layout: Literal["separate", "stacked"] = Field(
        "separate", description="the pool in the array: each adapter's A and B as matrices of their own, or stacked "
                                "([A_1; ...; A_N] and [B_1 ... B_N], stored once: one pass gives every A_i x, and "
                                "the stacked B driven by [w_1 u; ...; w_N u] sums the fused update in one pass)")
    backward: Literal["merged", "pool_outputs"] = Field(
        "merged", description="the coefficient gradient through the merged adapters A_l = sum w_i A_i and B_l = "
                              "sum w_i B_i, <dL/dA_l, A_i> + <dL/dB_l, B_i>, which keeps what one LoRA keeps (x and "
                              "u = A_l x; the reference), or through every pool adapter's output, which keeps "
                              "each A_i x and B_i u")


class UpdatePolicySpec(Params):
    """When trained weights in ReRAM (LoRA's adapters; every projection under ``method: full``) are reprogrammed
    from their FP32 masters in the digital unit's SRAM.

    ``every_step`` (the naive baseline): every changed INT8 code after every optimizer step; ``threshold``: a
    code is written once its accumulated change reaches ``threshold`` LSB; ``periodic``: changes accumulate in
    SRAM and are written every ``period`` steps. Every policy commits what is pending at the end of a task.
    """

    kind: Literal["every_step", "threshold", "periodic"] = "every_step"
    threshold: int = Field(2, ge=1, le=255, description="LSB of accumulated change before a code is written")
    period: int = Field(4, ge=1, le=100000, description="steps between writes (periodic)")


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
    lorafusion: LoRAFusionSpec = Field(LoRAFusionSpec(), description="LoRAFusion's coefficients and norm")
    method: AdaptMethod = "lora"
    adapter_memory: Literal["reram", "sram"] = Field("reram", description="where LoRA's A and B live")
    update_policy: UpdatePolicySpec = Field(UpdatePolicySpec(), description="when adapter weights in ReRAM are "
                                            "rewritten (LoRA)")
    n_tasks: int = Field(3, ge=1, le=100, description="adaptation tasks in sequence")
    task_interval_s: TimeS = Field(0.0, alias="task_interval", ge=0.0, le=1e6,
                                   description="time from one task to the next, over which the ReRAM relaxes")
    refresh_below: float | None = Field(None, gt=0.0, le=1.0,
                                        description="re-verify the array when a task's accuracy after training "
                                                    "falls below this fraction")
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


def _style(spec: TransformerSpec) -> dict[str, object]:
    """The block style of a transformer spec, as :class:`TinyTransformer` takes it."""
    return {"gated": spec.ff == "gated_gelu", "norm": spec.norm, "bias": spec.bias, "position": spec.position}


def _pairs(vocab: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(vocab) for b in range(vocab) if a < b]
    return [pairs[i] for i in rng.permutation(len(pairs))]


def _attach(card: AdaptationCard, model: TinyTransformer, pool_states: list, heads: list[tuple[str, int]]
            ) -> list[torch.nn.Module]:
    """Attach the method's adapters (over ``pool_states``, the pretrained pool it asked for) and the task
    heads, in place of the base head; freeze everything. Returns the adapters."""
    adapters = method_for(KIND, card.method).attach(card, model, pool_states)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, n_classes in heads:
        model.add_head(name, n_classes)
    del model.heads["base"]
    return adapters


def _digital_layers(card: AdaptationCard, model: TinyTransformer, adapters: list[torch.nn.Module]
                    ) -> list[torch.nn.Module]:
    """Layers kept in the digital unit: the heads, and the adapter layers the method keeps in SRAM."""
    return [*model.heads.values(), *method_for(KIND, card.method).digital_layers(card, adapters)]


def _fit(model: torch.nn.Module, task: SeqTask, head: str, params, spec: PhaseSpec, rng: np.random.Generator
         ) -> None:
    """Train in float, off-device (the shipped pretrained model and adapter pool)."""
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=0.9)
    for _ in range(spec.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(task.y_train)))
        for idx in order.split(spec.batch_size):
            opt.zero_grad()
            F.cross_entropy(model(task.x_train[idx], head), task.y_train[idx]).backward()
            opt.step()


def _accuracy(model: torch.nn.Module, task: SeqTask, head: str) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(task.x_test, head).argmax(1) == task.y_test).float().mean())


class AdaptationScenario(Scenario):
    """Transformer adaptation for the trainer: generated token tasks on a pretrained tiny transformer."""

    kind = KIND
    small_params_layer = "adapter_params"

    @property
    def schedule(self) -> Schedule:
        t = self.card.train
        return Schedule(t.epochs, t.batch_size, t.lr, momentum=0.9)

    def prepare(self, streams: Streams, seed: int, device: torch.device, shared: dict | None) -> Prepared:
        """Generated tasks, the pretrained transformer, the method's pool and adapters, a head per task."""
        card = self.card
        spec, ad = card.model, card.adapters
        pairs = _pairs(spec.vocab, streams.data)  # enough of them: checked by the card
        source = make_seq_task("source", tuple(range(SOURCE_CLASSES)), spec.vocab, spec.seq_len,
                               card.pretrain.samples, card.test_fraction, streams.data)
        pool_tasks = [make_seq_task(f"pool{i}", pairs[i], spec.vocab, spec.seq_len, card.pool_train.samples,
                                    card.test_fraction, streams.data) for i in range(ad.pool_size)]
        tasks = [make_seq_task(f"tokens_{a}_vs_{b}", (a, b), spec.vocab, spec.seq_len, card.train.samples,
                               card.test_fraction, streams.data)
                 for a, b in pairs[ad.pool_size:ad.pool_size + card.n_tasks]]
        torch.manual_seed(seed)
        model = TinyTransformer(spec.vocab, spec.d_model, spec.n_heads, spec.n_layers, spec.d_ff, spec.seq_len,
                                SOURCE_CLASSES, spec.decoder_layers, **_style(spec))
        _fit(model, source, "base", list(model.parameters()), card.pretrain, streams.pretrain)  # float, off-device
        source_acc = _accuracy(model, source, "base")
        states = []
        for pt in pool_tasks[:self.method.pool_size(card)]:  # the shipped pool: one adapter per pool task, in float
            m = copy.deepcopy(model)
            attach_lora(m, ad.targets, ad.rank)
            m.add_head(pt.name, pt.n_classes)
            _fit(m, pt, pt.name, [p for p in m.parameters() if p.requires_grad], card.pool_train, streams.pretrain)
            states.append(lora_state(m))
        adapters = _attach(card, model, states, [(t.name, t.n_classes) for t in tasks])
        torch.manual_seed(seed + 1)
        return Prepared(model, tasks, source_acc, adapters)

    def trace(self, model: TinyTransformer, tasks: list[SeqTask]) -> tuple[dict[str, LayerGraph], TrainingMemory]:
        """One graph (the first task's step; every task's is alike) and the step's memory."""
        seq_len, first = self.card.model.seq_len, tasks[0].name
        meta = copy.deepcopy(model).to("meta")
        graph = trace_dataflow(meta, lambda: meta(torch.zeros((2, seq_len), dtype=torch.long, device="meta"), first),
                               samples=2)
        tokens = torch.zeros((self.card.train.batch_size, seq_len), dtype=torch.long, device="meta")
        memory = training_memory(meta.task_parameters(first), lambda: meta(tokens, first), momentum=True)
        return {t.name: graph for t in tasks}, memory

    def accuracy(self, model: TinyTransformer, task: SeqTask, device: torch.device) -> float:
        return _accuracy(model, task, task.name)

    def digital_layers(self, model: TinyTransformer, adapters: list[torch.nn.Module]) -> list[torch.nn.Module]:
        return _digital_layers(self.card, model, adapters)

    def rows(self, samples: int) -> int:
        return samples * self.card.model.seq_len

    @property
    def task_interval_s(self) -> float:
        return self.card.task_interval_s

    @property
    def refresh_below(self) -> float | None:
        return self.card.refresh_below

    @property
    def write_policy(self) -> WritePolicy:
        u = self.card.update_policy
        return WritePolicy(u.kind, u.threshold if u.kind == "threshold" else 1, u.period if u.kind == "periodic" else 1)

    def step_ops(self, macro: ArrayCircuit, model: TinyTransformer, digital: list[IMCModule], samples: int
                 ) -> list[OpRecord]:
        """A step of every trained layer kept in the digital unit (attention's products of activations are
        weightless calls of the traced graph, counted by the trainer)."""
        ops: list[OpRecord] = []
        for m in digital:
            ops += digital_layer_ops(macro, m, samples if m.name.startswith("head.") else self.rows(samples), samples)
        return ops

    def cost_only_plan(self, macro: ArrayCircuit) -> CostOnlyPlan:
        card, spec = self.card, self.card.cost_only
        if spec is None:
            raise ValueError("run.mode=cost_only needs a workload.cost_only section (model, batch_size, "
                             "steps_per_task, activity)")
        model, adapters, graph, memory = _trace_adapted(card.model_dump_json())
        imc_weights = {id(m.weight) for m in imc_modules(model)}
        batch, n = spec.batch_size, spec.model.seq_len
        return CostOnlyPlan(
            task=COST_TASK, graph=graph, memory=memory, activity=_per_step_activity(card),
            digital_params=sum(p.numel() for p in model.task_parameters(COST_TASK)
                               if p.requires_grad and id(p) not in imc_weights),
            digital_layers=frozenset(m.name for m in _digital_layers(card, model, adapters)),
            ops=(), adapters=adapters, rows=batch * n, samples=batch,
            steps_per_task=spec.steps_per_task, tasks=card.n_tasks)


def _per_step_activity(card: AdaptationCard) -> ActivityStats:
    """The cost-only step's activity under the card's update policy. The card's change fractions are those of
    one write under the policy (measure them with a functional run under it: ``activity: {from_report: ...}``);
    a periodic policy writes every ``period`` steps, so per counted step a code changes ``1 / period`` as often
    (the same pulses, energy and per-cell write rate in expectation)."""
    a, u = card.cost_only.activity, card.update_policy
    if u.kind != "periodic" or u.period == 1:
        return a
    return a.model_copy(update={"weight_change_fraction": a.weight_change_fraction / u.period,
                                "weight_change_by_layer": {k: v / u.period for k, v in a.weight_change_by_layer.items()}})


def run_adaptation(card: AdaptationCard, macro: ArrayCircuit, seed: int, device: torch.device,
                   progress: Progress | None = None, shared: dict | None = None) -> ContinualResult:
    """Run the adaptation scenario on ``macro``; see the module docstring."""
    del device, shared  # trains on CPU: the tiny model is bound by the circuit model, not by arithmetic
    return run_functional(AdaptationScenario(card), macro, seed, torch.device("cpu"), progress)


def _adapted_model(card: AdaptationCard, m: TransformerSpec, heads: list[tuple[str, int]], device: str = "meta"
                   ) -> tuple[TinyTransformer, list[torch.nn.Module]]:
    """The adapted model of sizes ``m`` with ``heads`` (untrained; on meta tensors: shapes only), and its
    adapters (over a pool of adapters of the card's rank when the method asks for one)."""
    with torch.device(device):
        model = TinyTransformer(m.vocab, m.d_model, m.n_heads, m.n_layers, m.d_ff, m.seq_len, SOURCE_CLASSES,
                                m.decoder_layers, **_style(m))
        states = []
        pool = method_for(KIND, card.method).pool_size(card)
        if pool:  # the pool's shapes: N adapters of the card's rank on the targets
            probe = copy.deepcopy(model)
            attach_lora(probe, card.adapters.targets, card.adapters.rank)
            states = [lora_state(probe)] * pool
        adapters = _attach(card, model, states, heads)
    return model, adapters


def _part(name: str) -> str:
    if name.startswith("head."):
        return "heads"
    return "adapters" if re.search(r"\.(lora_[AB]|pool\d*\.[AB])$", name) else "base model"


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
    trained_parameters(model, method_for(KIND, card.method))  # which layers train (a chip may place them apart)
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
    trained_parameters(model, method_for(KIND, card.method))
    tokens = torch.zeros((spec.batch_size, m.seq_len), dtype=torch.long, device="meta")
    graph = trace_dataflow(model, lambda: model(tokens, COST_TASK), samples=spec.batch_size)
    memory = training_memory(list(model.parameters()), lambda: model(tokens, COST_TASK), momentum=True)
    return model, adapters, graph, memory


def run_adaptation_cost_only(card: AdaptationCard, macro: ArrayCircuit, seed: int) -> ContinualResult:
    """Count one training step of the card's ``cost_only`` model (no data, no arithmetic); the totals
    stand for ``steps_per_task`` steps of each of ``n_tasks`` tasks."""
    return run_cost_only(AdaptationScenario(card), macro, seed)


def digital_layer_ops(macro: ArrayCircuit, m: IMCLinear, rows: int, samples: int) -> list[OpRecord]:
    """One training step of a linear layer kept in the digital unit: forward, gradients, FP32 update."""
    k, n = m.weight.shape[1], m.weight.shape[0]
    ops = [macro.digital_gemm(*shape, phase=phase, layer=m.name, samples=samples)
           for phase, shape in (("forward", (rows, k, n)), ("input_grad", (rows, n, k)), ("weight_grad", (rows, k, n)))]
    ops.append(macro.update_digital(m.name, m.weight.numel()))
    return _owned(ops, m.name)


def _owned(ops: list[OpRecord], module: str) -> list[OpRecord]:
    """Tag ops with the graph layer they belong to."""
    return [rec.tagged(module=module) for rec in ops]


__all__ = ["AdaptationCard", "LoRALinear", "make_seq_task", "run_adaptation",
           "run_adaptation_cost_only"]
