"""The layer dataflow graph of a model, found by running it once.

The event simulator needs to know which layer's output feeds which layer, and
where samples of a batch stop being independent. :func:`trace_dataflow` runs
one forward pass under a torch function mode that tags every tensor with the
IMC layers it was computed from:

* an IMC layer (conv or linear) records the layers its input came from as its
  producers, and its output is tagged with itself;
* every other torch function passes on the union of its inputs' tags;
* batch normalisation in training mode mixes the samples of a batch (batch
  statistics), so its output's tags are marked *coupled*: a consumer's sample
  ``s`` then needs every sample of the producer, and gradients coming back
  through it need every sample too.

The same pass records each layer's GEMM shape (M x K x N per group, groups,
samples), so on meta tensors (no data, no arithmetic) it is also the shape
source of cost-only runs. Weight-free work on activations (norms, activations,
pooling, residual adds, softmax, upsampling) is counted in elementary ops per
element (:data:`ELEMENTWISE_OPS`, :data:`PER_INPUT_OPS`) and charged to the
latest layer its operands come from, forward and, where a gradient flows
through it, backward; reshapes, indexing and copies move data and are not
counted.

Products of two activations (``q @ k^T`` and ``p @ v`` of attention, or any
``matmul`` / ``bmm`` whose operands are both computed tensors) are recorded as
*weightless* calls: they have no stored matrix and run in the digital unit,
named ``<module>.matmul<i>`` after the module that computes them. A GEMM with
a weight of its own outside a mapped layer (``F.linear`` or ``F.conv2d`` on a
parameter, a ``matmul`` with a parameter) cannot be counted and raises
:class:`UnmappedGemm` naming the module.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from imcsim.errors import DataError
from imcsim.workloads.memory import LISTENERS, MemoryBits, kept_for_backward

Tag = frozenset[tuple[str, bool]]  # (producer layer, coupled)
_EMPTY: Tag = frozenset()


@dataclass(frozen=True)
class LayerCall:
    """One IMC layer's GEMM in a forward pass: ``groups`` GEMMs of (m x k) @ (k x n)."""

    name: str
    m: int
    k: int
    n: int
    groups: int
    samples: int
    trainable: bool
    producers: tuple[tuple[str, bool], ...]  # (layer, coupled), in first-seen order
    input_grad: bool | None = None  # whether its input carries a gradient (None: not traced)
    weightless: bool = False  # a product of two activations (attention): no stored matrix, digital unit
    operand_grads: tuple[bool, bool] = (False, False)  # weightless: whether each operand carries a gradient
    elementwise: tuple[tuple[str, int], ...] = ()  # elementary ops (class, count) of the digital work on this
    #                                                 layer's output (norms, activations, pooling, adds...)
    elementwise_grad: tuple[tuple[str, int], ...] = ()  # ... of its backward pass (where a gradient flows there)
    in_elems: int = 0  # elements of its input activation (both operands of a weightless call), whole batch
    out_elems: int = 0  # elements of its output
    kept_bits: int = 0  # bits kept for its backward pass: its input if its weight trains, and the batch-norm
    #                     inputs and ReLU masks of the weight-free work it owns (imcsim.workloads.memory rules)
    filtered_rows: int = 0  # a gradient-filtered conv: rows (patches) of its backward GEMMs (0: not filtered)
    filter_taps: int = 1  # ... and its kernel taps (its weight gradient's K is k / taps)

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.groups


@dataclass
class LayerGraph:
    """IMC layers in forward execution order, with their producers and consumers."""

    calls: list[LayerCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {c.name: c for c in self.calls}

    def __getitem__(self, name: str) -> LayerCall:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def consumers(self, name: str) -> list[tuple[str, bool]]:
        return self.consumer_map().get(name, [])

    def consumer_map(self) -> dict[str, list[tuple[str, bool]]]:
        """Every layer's consumers ``(layer, coupled)``, in forward order."""
        out: dict[str, list[tuple[str, bool]]] = {c.name: [] for c in self.calls}
        for c in self.calls:
            for p, coupled in c.producers:
                if p in out:
                    out[p].append((c.name, coupled))
        return out

    def needs_grad(self) -> dict[str, bool]:
        """Whether each layer's output carries a gradient (some trainable layer lies upstream or is itself)."""
        out: dict[str, bool] = {}
        for c in self.calls:
            out[c.name] = c.trainable or any(out.get(p, False) for p, _ in c.producers)
        return out


class UnmappedGemm(DataError):
    """A GEMM with a weight of its own that no mapped layer computes (so the array would never see it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="model")


_MATMULS = frozenset({"matmul", "__matmul__", "__rmatmul__", "bmm"})

OP_CLASSES = ("compare", "fp32_add", "fp32_mul")
"""Classes of the digital unit's elementary ops, each an action with its own cited energy (the digital unit card):
an INT8 compare or select, an FP32 add, an FP32 multiply."""


def _ops(compare: int = 0, add: int = 0, mul: int = 0, *more: dict[str, int]) -> dict[str, int]:
    out = {"compare": compare, "fp32_add": add, "fp32_mul": mul}
    for m in more:
        for k, v in m.items():
            out[k] += v
    return {k: v for k, v in out.items() if v}


EXP = _ops(add=5, mul=5)
"""An exp, erf or tanh kernel: range reduction (a multiply and an add) and a degree-4 polynomial by Horner's rule
(4 multiply-adds) (Muller, "Elementary Functions: Algorithms and Implementation", 3rd ed., 2016, ch. 2-3)."""
DIV = _ops(add=2, mul=5)
"""A division: a reciprocal seed refined by two Newton-Raphson steps (2 multiplies and an add each), then a
multiply (Muller 2016, ch. 2)."""
ELEMENTWISE_OPS: dict[str, dict[str, int]] = {
    # activations, per output element (INT8 compares and selects; FP32 arithmetic elsewhere)
    "relu": _ops(1), "relu_": _ops(1), "threshold": _ops(1), "relu6": _ops(2), "hardtanh": _ops(2),
    "hardtanh_": _ops(2), "clamp": _ops(2), "clip": _ops(2), "leaky_relu": _ops(1, mul=1),
    "hardsigmoid": _ops(2, add=1, mul=1), "hardswish": _ops(2, add=1, mul=2),
    "sigmoid": _ops(0, 1, 0, EXP, DIV), "tanh": _ops(0, 2, 0, EXP, DIV), "silu": _ops(0, 1, 1, EXP, DIV),
    "gelu": _ops(0, 4, 4, EXP, DIV),  # tanh form: x + 0.044715 x^3 (3 mul, 1 add), tanh, 0.5 x (1 + t)
    "softmax": _ops(1, 2, 1, EXP), "log_softmax": _ops(1, 2, 1, EXP), "_softmax": _ops(1, 2, 1, EXP),
    # residual adds and scalings, per output element (a division by a tensor is a multiply by its reciprocal)
    "add": _ops(add=1), "__add__": _ops(add=1), "__radd__": _ops(add=1), "__iadd__": _ops(add=1),
    "add_": _ops(add=1), "sub": _ops(add=1), "__sub__": _ops(add=1), "__rsub__": _ops(add=1),
    "mul": _ops(mul=1), "__mul__": _ops(mul=1), "__rmul__": _ops(mul=1), "__imul__": _ops(mul=1),
    "mul_": _ops(mul=1), "div": _ops(mul=1), "__truediv__": _ops(mul=1), "__rtruediv__": _ops(mul=1),
    "masked_fill": _ops(1), "where": _ops(1),
    # norms, per element: mean and variance (E[x], E[x^2]: 2 adds, 1 multiply), normalise (a subtract and a
    # multiply by 1/sigma), scale and shift (a multiply and an add); RMS norm has no mean
    "batch_norm": _ops(add=4, mul=3), "layer_norm": _ops(add=4, mul=3), "group_norm": _ops(add=4, mul=3),
    "instance_norm": _ops(add=4, mul=3), "rms_norm": _ops(add=2, mul=3),
    # bilinear upsampling, per output element: 4 weights applied and summed
    "interpolate": _ops(add=3, mul=4), "upsample": _ops(add=3, mul=4),
}
"""Elementary ops per output element of each weight-free op the digital unit runs, by class (:data:`OP_CLASSES`)."""
BN_EVAL_OPS = _ops(add=1, mul=1)
"""A batch norm on running statistics is a per-channel scale and shift: a multiply and an add per element."""
PER_INPUT_OPS: dict[str, dict[str, int]] = {
    "avg_pool2d": _ops(add=1), "adaptive_avg_pool2d": _ops(add=1), "mean": _ops(add=1), "sum": _ops(add=1),
    "max_pool2d": _ops(1), "adaptive_max_pool2d": _ops(1),
}
"""Elementary ops per *input* element of the reductions (one add or compare each)."""
_WEIGHT_GEMMS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                           "conv_transpose3d", "bilinear", "addmm", "mm", "einsum"})


class _Tracer(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, tuple[torch.Tensor, Tag]] = {}  # id -> (tensor kept alive, tag)
        self.calls: list[LayerCall] = []
        self.samples = 1
        self.inside = 0  # depth of mapped-layer calls running (their own GEMMs are theirs)
        self.path: list[str] = []  # names of the modules running, innermost last
        self.names: dict[int, str] = {}
        self.matmuls: dict[str, int] = {}
        self.order: dict[str, int] = {}  # call name -> its index (the latest producer owns the digital work)
        self.work: dict[str, list[Counter]] = {}  # call name -> [forward, backward] elementary ops by class
        self.kept: dict[str, int] = {}  # call name -> bits the weight-free work it owns keeps for backward
        self.bits = MemoryBits()

    def add_call(self, call: LayerCall) -> None:
        self.order.setdefault(call.name, len(self.calls))
        self.calls.append(call)

    @staticmethod
    def owner(tag: Tag, order: dict[str, int]) -> str:
        return max(tag, key=lambda t: order.get(t[0], -1))[0]

    def noted(self, kind: str, bits: int, of: torch.Tensor | None) -> None:
        """A layer's own backward rule keeps ``bits`` for ``of`` (:func:`imcsim.workloads.memory.note_kept`): charged
        to the latest layer ``of`` comes from (inside a mapped layer's call, that layer records its own)."""
        tag = self.tag_of(of) if of is not None else _EMPTY
        if tag and not self.inside:
            owner = self.owner(tag, self.order)
            self.kept[owner] = self.kept.get(owner, 0) + bits

    def count_kept(self, func, args, kwargs, out, tag: Tag) -> None:
        """Charge what a weight-free op keeps for backward to the latest layer its operands come from."""
        _, bits = kept_for_backward(func, args, kwargs, out, self.bits)
        if bits:
            owner = self.owner(tag, self.order)
            self.kept[owner] = self.kept.get(owner, 0) + bits

    def count_digital(self, name: str, args, kwargs, out, tag: Tag) -> None:
        """Charge a weight-free op's elementary ops to the latest layer its operands come from."""
        per = ELEMENTWISE_OPS.get(name)
        by_input = per is None
        if by_input:
            per = PER_INPUT_OPS.get(name)
            if per is None:
                return
        elif name == "batch_norm" and not (kwargs.get("training", args[5] if len(args) > 5 else False)):
            per = BN_EVAL_OPS
        leaves, _ = tree_flatten(args)
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        if not tensors or not isinstance(out, torch.Tensor):
            return
        elems = tensors[0].numel() if by_input else out.numel()
        work = self.work.setdefault(self.owner(tag, self.order), [Counter(), Counter()])
        ops = {k: v * elems for k, v in per.items()}
        work[0].update(ops)
        if any(t.requires_grad for t in tensors):
            work[1].update(ops)

    def tag_of(self, obj) -> Tag:
        leaves, _ = tree_flatten(obj)
        out: set[tuple[str, bool]] = set()
        for t in leaves:
            if isinstance(t, torch.Tensor):
                entry = self.tags.get(id(t))
                if entry is not None and entry[0] is t:
                    out |= entry[1]
        return frozenset(out)

    def set_tag(self, obj, tag: Tag) -> None:
        if not tag:
            return
        leaves, _ = tree_flatten(obj)
        for t in leaves:
            if isinstance(t, torch.Tensor):
                self.tags[id(t)] = (t, tag)

    def where(self) -> str:
        return self.path[-1] if self.path and self.path[-1] else "model"

    def _weightless(self, name: str, args, out, tag: Tag) -> bool:
        """Record a product of two activations; False when an operand is a weight (not such a product)."""
        a, b = args[0], args[1]
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 2 or b.dim() < 2:
            return False
        if isinstance(a, nn.Parameter) or isinstance(b, nn.Parameter):
            if self.inside:
                return True
            raise UnmappedGemm(f"module {self.where()!r} multiplies by a weight of its own ({tuple(b.shape)}) "
                               "outside a mapped layer; use nn.Linear / nn.Conv2d for GEMMs with weights")
        if not tag:  # no activation operand: a product of weights (a method counts its own weight arithmetic)
            return False
        if name == "__rmatmul__":
            a, b = b, a
        batch = max(1, out.numel() // (a.shape[-2] * b.shape[-1])) if out.dim() >= 2 else 1
        base = self.where()
        index = self.matmuls.get(base, 0)
        self.matmuls[base] = index + 1
        call_name = f"{base}.matmul{index}"
        self.add_call(LayerCall(call_name, int(a.shape[-2]), int(a.shape[-1]), int(b.shape[-1]), batch,
                                self.samples, False, tuple(sorted(tag)), bool(a.requires_grad or b.requires_grad),
                                weightless=True, operand_grads=(bool(a.requires_grad), bool(b.requires_grad)),
                                in_elems=a.numel() + b.numel(), out_elems=out.numel()))
        self.set_tag(out, frozenset({(call_name, False)}))
        return True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not self.inside and name in _WEIGHT_GEMMS:
            leaves, _ = tree_flatten((args, kwargs))
            if any(isinstance(t, nn.Parameter) for t in leaves):
                raise UnmappedGemm(f"module {self.where()!r} computes {name} with a weight of its own that is "
                                   "not mapped to the array (a layer type imcsim does not map)")
        out = func(*args, **kwargs)
        tag = self.tag_of((args, kwargs))
        if name in _MATMULS and len(args) >= 2 and self._weightless(name, args, out, tag):
            return out
        if tag and not self.inside:
            self.count_digital(name, args, kwargs, out, tag)
            self.count_kept(func, args, kwargs, out, tag)
        if tag and func is F.batch_norm:
            training = kwargs.get("training", args[5] if len(args) > 5 else False)
            if training:
                tag = frozenset((name, True) for name, _ in tag)
        self.set_tag(out, tag)
        return out


_ACTIVE: list[_Tracer] = []


def active_tracer() -> _Tracer | None:
    return _ACTIVE[-1] if _ACTIVE else None


def traced_layer_call(module, x: torch.Tensor, call: Callable[[], torch.Tensor], m: int, k: int, n: int,
                      groups: int, filtered: dict[str, int] | None = None) -> torch.Tensor:
    """Run an IMC layer's forward ``call``; under a tracer, record its shape and producers.

    ``filtered``: a gradient-filtered conv's backward sizes (:func:`imcsim.workloads.gradfilter.filter_shapes`):
    its backward rows and taps, the pooled input it keeps, and its pooling and tap-sum work in the digital unit.
    """
    tracer = active_tracer()
    if tracer is None:
        return call()
    producers = tuple(sorted(tracer.tag_of(x)))
    tracer.inside += 1
    try:
        y = call()
    finally:
        tracer.inside -= 1
    trains = bool(module.weight.requires_grad)
    kept = (filtered["kept"] if filtered else x.numel()) * tracer.bits.activation_bits if trains else 0
    tracer.add_call(LayerCall(module.name, m, k, n, groups, tracer.samples, trains, producers, bool(x.requires_grad),
                              in_elems=x.numel(), out_elems=y.numel(), kept_bits=kept,
                              filtered_rows=filtered["rows"] if filtered else 0,
                              filter_taps=filtered["taps"] if filtered else 1))
    if filtered:
        work = tracer.work.setdefault(module.name, [Counter(), Counter()])
        work[0].update({"fp32_add": filtered["pool_adds"]})
        work[1].update({"fp32_add": filtered["grad_adds"], "fp32_mul": filtered["grad_muls"]})
    tracer.set_tag(y, frozenset({(module.name, False)}))
    return y


def trace_dataflow(model: nn.Module, run: Callable[[], object], samples: int) -> LayerGraph:
    """Run ``run()`` (one forward pass of ``model`` on a batch of ``samples``) and return its layer graph.

    Works on meta tensors: ``model.to("meta")`` and a meta input trace real shapes with no arithmetic.
    """
    tracer = _Tracer()
    tracer.samples = samples
    tracer.names = {id(m): name for name, m in model.named_modules()}

    def enter(module, _inputs):
        tracer.path.append(tracer.names.get(id(module), tracer.where()))

    def leave(module, _inputs, _output):
        if tracer.path:
            tracer.path.pop()

    _ACTIVE.append(tracer)
    LISTENERS.append(tracer.noted)
    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(enter),
             torch.nn.modules.module.register_module_forward_hook(leave, always_call=True)]
    try:
        with tracer, torch.enable_grad():  # gradients flow on meta tensors too: which inputs carry one
            run()
    finally:
        _ACTIVE.pop()
        LISTENERS.remove(tracer.noted)
        for h in hooks:
            h.remove()
    seen: dict[str, LayerCall] = {}
    for c in tracer.calls:  # a layer called twice (shared weights) keeps its first call
        seen.setdefault(c.name, c)
    for name, (fwd, bwd) in tracer.work.items():
        if name in seen:
            seen[name] = dataclasses.replace(seen[name], elementwise=tuple(sorted(fwd.items())),
                                             elementwise_grad=tuple(sorted(bwd.items())))
    for name, bits in tracer.kept.items():
        if name in seen:
            seen[name] = dataclasses.replace(seen[name], kept_bits=seen[name].kept_bits + bits)
    return LayerGraph(list(seen.values()))
