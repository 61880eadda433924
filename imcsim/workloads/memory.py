"""Training memory of a model: weights, optimizer state and the activations kept for backward.

Accounting (docs/architecture.md, "Training memory"; Rep-Net and TinyTL both argue that the
activations kept for the backward pass, not the parameters, dominate training
memory on a device):

* weights: frozen ones at ``weight_bits_frozen`` (8: INT8 in the array),
  trainable ones at ``weight_bits_trainable`` (32: the master copy the update
  accumulates into), plus ``optimizer_bits`` per trainable weight (SGD
  momentum; 0 without momentum);
* kept for backward, at ``activation_bits`` per element (INT8 activations):
  a conv or linear keeps its input only if its weight is trainable (the input
  gradient needs only the weight); a batch norm keeps its input only if its
  scale is trainable or it normalises with batch statistics while a gradient
  flows through it (a frozen, eval-mode BN is a per-channel scale); a ReLU,
  ReLU6, leaky ReLU or hard sigmoid keeps a 1-bit mask where a gradient flows
  through it (its derivative takes two values); hard-swish, SiLU, GELU keep
  their input and sigmoid, tanh and softmax their output (their derivatives
  need the value); a product of two activations keeps each operand whose
  partner needs a gradient; adds, pools and upsampling keep nothing;
* live at each point of the step: every op's input and output while it runs in
  the forward pass, and the gradients of its output and input while it runs in
  the backward pass, at ``activation_bits`` (INT8 errors).

Peak = weights + optimizer state + the largest live activation set over the
forward-then-backward schedule. Traced with a torch function mode, so it works
on meta tensors at any size (no arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_GEMMS = {"conv1d", "conv2d", "conv3d", "linear"}
_MASKS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "hardsigmoid", "threshold"}
_VALUES = {"hardswish", "silu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax", "_softmax"}
_PRODUCTS = {"mul", "__mul__", "__rmul__", "mul_", "__imul__"}


@dataclass(frozen=True)
class MemoryBits:
    """Bit widths of the accounting (see the module docstring)."""

    weight_bits_frozen: int = 8
    weight_bits_trainable: int = 32
    optimizer_bits: int = 32
    activation_bits: int = 8
    mask_bits: int = 1


@dataclass
class TrainingMemory:
    """Training memory of one step, in bits (``bytes()`` for bytes)."""

    weights_frozen: int
    weights_trainable: int
    optimizer: int
    kept_by_kind: dict[str, int] = field(default_factory=dict)  # gemm_input, bn_input, relu_mask
    peak_live_activations: int = 0  # kept + working set at the worst point of the step

    @property
    def kept(self) -> int:
        return sum(self.kept_by_kind.values())

    @property
    def weights(self) -> int:
        return self.weights_frozen + self.weights_trainable

    @property
    def peak(self) -> int:
        return self.weights + self.optimizer + self.peak_live_activations

    def as_bytes(self) -> dict[str, float]:
        k = self.kept_by_kind
        gemm, bn, masks = k.get("gemm_input", 0), k.get("bn_input", 0), k.get("relu_mask", 0)
        return {
            "memory_peak_bytes": self.peak / 8,
            "memory_weights_bytes": self.weights / 8,
            "memory_optimizer_bytes": self.optimizer / 8,
            "memory_activations_kept_bytes": self.kept / 8,
            "memory_kept_gemm_inputs_bytes": gemm / 8,
            "memory_kept_norm_inputs_bytes": bn / 8,
            "memory_kept_masks_bytes": masks / 8,
            "memory_kept_other_bytes": (self.kept - gemm - bn - masks) / 8,
            "memory_activations_peak_bytes": self.peak_live_activations / 8,
        }


_ACTIVE: list[_MemoryTracer] = []
LISTENERS: list[Callable[[str, int, torch.Tensor | None], None]] = []
"""Other traces in progress that want :func:`note_kept`'s records: called with (kind, bits, the tensor it comes
from) (the layer dataflow trace charges them to the layer that tensor comes from)."""


def note_kept(kind: str, elems: int, bits: int | None = None, of: torch.Tensor | None = None,
              live: tuple[int, int, bool, bool] = (0, 0, False, False)) -> None:
    """Record, for a training-memory trace in progress, a tensor of ``elems`` elements a layer keeps for its
    backward pass by a rule of its own (at ``bits`` each, default the activation width): a custom backward
    whose forward the tracer cannot read, such as a gradient filter's pooled input or a sign backward's mask
    (``of``: the activation it is kept for). ``live``: the op's input and output elements and whether each
    carries a gradient (its backward working set, which the tracer cannot see either). No trace: nothing."""
    width = MemoryBits().activation_bits if bits is None else bits
    if _ACTIVE:
        tracer = _ACTIVE[-1]
        kept = elems * (tracer.bits.activation_bits if bits is None else bits)
        tracer.kept[kind] = tracer.kept.get(kind, 0) + kept
        tracer.ops.append((kept, *live))
    for listener in LISTENERS:
        listener(kind, elems * width, of)


class _MemoryTracer(TorchFunctionMode):
    def __init__(self, bits: MemoryBits) -> None:
        super().__init__()
        self.bits = bits
        self.kept: dict[str, int] = {"gemm_input": 0, "bn_input": 0, "relu_mask": 0}  # and any other kind seen
        self.ops: list[tuple[int, int, int, bool, bool]] = []  # (kept, in elems, out elems, in grad, out grad)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not isinstance(args[0] if args else None, torch.Tensor):
            return out
        x = args[0]
        if isinstance(x, nn.Parameter):  # a view of a weight (e.g. a transpose), not an activation
            return out
        kind, kept = kept_for_backward(func, args, kwargs, out, self.bits)
        if kind:
            self.kept[kind] = self.kept.get(kind, 0) + kept
        self.ops.append((kept, x.numel(), out.numel(), x.requires_grad, out.requires_grad))
        return out


def kept_for_backward(func, args, kwargs, out, bits: MemoryBits) -> tuple[str, int]:
    """What one torch call keeps for the backward pass under the accounting rules (module docstring): its
    kind (``gemm_input``, ``bn_input``, ``relu_mask``, ``act_value``, ``product_operand``; empty for nothing)
    and bits."""
    x = args[0] if args else None
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
        return "", 0
    name = getattr(func, "__name__", "")
    if name in _GEMMS:
        weight = args[1] if len(args) > 1 else kwargs.get("weight")
        if isinstance(weight, torch.Tensor) and weight.requires_grad:
            return "gemm_input", x.numel() * bits.activation_bits
    elif func is F.batch_norm:
        weight = kwargs.get("weight", args[3] if len(args) > 3 else None)
        training = kwargs.get("training", args[5] if len(args) > 5 else False)
        if (weight is not None and weight.requires_grad) or (training and out.requires_grad):
            return "bn_input", x.numel() * bits.activation_bits
    elif name in _MASKS and out.requires_grad:
        return "relu_mask", out.numel() * bits.mask_bits
    elif name in _VALUES and out.requires_grad:
        return "act_value", out.numel() * bits.activation_bits
    elif name in _PRODUCTS and len(args) > 1 and isinstance(args[1], torch.Tensor):
        y = args[1]
        kept = sum(other.numel() for this, other in ((x, y), (y, x))
                   if this.requires_grad and not isinstance(other, nn.Parameter) and other.numel() > 1)
        if kept:
            return "product_operand", kept * bits.activation_bits
    return "", 0


def _peak_live(ops: list[tuple[int, int, int, bool, bool]], act_bits: int) -> int:
    peak = 0
    kept_before = 0
    for kept, n_in, n_out, _, _ in ops:  # forward: an op's input and output are live while it runs
        peak = max(peak, kept_before + (n_in + n_out) * act_bits)
        kept_before += kept
    for kept, n_in, n_out, in_grad, out_grad in reversed(ops):  # backward: its gradients, before it frees
        if out_grad:
            peak = max(peak, kept_before + (n_out + (n_in if in_grad else 0)) * act_bits)
        kept_before -= kept
    return peak


def training_memory(parameters: Iterable[nn.Parameter], run: Callable[[], object], momentum: bool,
                    bits: MemoryBits | None = None) -> TrainingMemory:
    """The training memory of the step ``run()``: a forward pass of a model holding ``parameters``
    (see the module docstring).

    Trainability is read from ``requires_grad``; run it on a meta copy to trace real sizes for free.
    """
    bits = bits or MemoryBits()
    frozen = trainable = 0
    for p in parameters:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    tracer = _MemoryTracer(bits)
    _ACTIVE.append(tracer)
    try:
        with tracer, torch.enable_grad():
            run()
    finally:
        _ACTIVE.pop()
    return TrainingMemory(
        weights_frozen=frozen * bits.weight_bits_frozen,
        weights_trainable=trainable * bits.weight_bits_trainable,
        optimizer=trainable * bits.optimizer_bits if momentum else 0,
        kept_by_kind=dict(tracer.kept),
        peak_live_activations=_peak_live(tracer.ops, bits.activation_bits),
    )
