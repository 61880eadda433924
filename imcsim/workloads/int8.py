"""INT8 training layers whose GEMMs run on the IMC macro.

Conv and linear layers quantize their operands per tensor (symmetric scale),
send the INT8 GEMMs to the macro (which returns exact INT32 results and the
counted actions), and rescale. Backward quantizes the incoming error the same
way (optionally with stochastic rounding), computes the input gradient on the
macro and the weight gradient in the near-memory digital unit. A frozen layer
(``requires_grad=False``) issues no weight-gradient op and is never rewritten.

Weights: an FP32 master copy lives in the digital unit's SRAM; the macro holds
its INT8 image under a per-layer scale fixed when the layer is deployed. After
each optimizer step :meth:`IMCModule.sync` requantizes the master and rewrites
only the cells whose bits changed.

Without a :class:`Hardware` context attached (``hw=None``) the layers compute
in plain float; that is how a backbone is pretrained before deployment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imcsim.circuits.base import ArrayCircuit
from imcsim.circuits.bitplanes import int8_matmul
from imcsim.ops import OpRecord
from imcsim.workloads.dataflow import active_tracer, traced_layer_call
from imcsim.workloads.gradfilter import filter_shapes, filtered_conv2d, imc_filtered_conv

QMAX = 127


@dataclass(frozen=True)
class WritePolicy:
    """When the array's copy of a trained weight is rewritten from its FP32 master in SRAM.

    ``every_step``: after every optimizer step, every changed INT8 code; ``threshold``: only codes whose
    accumulated change since their last write reaches ``threshold`` LSB (the others keep accumulating in
    the master); ``periodic``: every ``period`` steps, every changed code. At the end of a task every
    pending change is committed, so each task is tested on the weights it trained.
    """

    kind: str = "every_step"
    threshold: int = 1
    period: int = 1


WEIGHT_HEADROOM = 1.25  # master weights may grow 25 % past their deployed range before clipping


@dataclass
class Hardware:
    """The macro plus the op stream being recorded.

    With ``workers`` > 0 the activity counting of streamed GEMMs (a pure function of
    the operand and the stored weights) runs on background threads while training
    goes on (worth it when training runs on a GPU; on CPU the counting kernel
    already uses every core); :attr:`ops` waits for it, and so does every
    write-back (it changes the stored weights those counts read). The records and
    their order are the same either way.
    """

    macro: ArrayCircuit
    recording: bool = True
    task: str = ""
    step: int = -1  # training step the ops belong to (-1: deployment)
    samples: int = 1  # samples in the current batch (operands are split per sample for the schedule)
    stochastic_rounding: bool = False
    generator: torch.Generator | None = None
    account: bool = True  # False: the same INT8 arithmetic with no counting (the reference for benchmarks)
    workers: int = 0
    write_policy: WritePolicy = WritePolicy()
    _ops: list[OpRecord | None] = field(default_factory=list, repr=False)
    _pending: list = field(default_factory=list, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def ops(self) -> list[OpRecord]:
        self.flush()
        return self._ops

    def emit(self, rec: OpRecord, module: str) -> None:
        if self.recording:
            self._ops.append(self._tag(rec, self.task, self.step, module))

    @staticmethod
    def _tag(rec: OpRecord, task: str, step: int, module: str) -> OpRecord:
        return rec.tagged(task=task, step=step, module=module)

    def emit_counts(self, count: Callable[[], OpRecord], module: str) -> None:
        """Record the op ``count()`` returns, counted in the background when workers are set."""
        if not self.recording:
            return
        if self.workers <= 0:
            self.emit(count(), module)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="imcsim-count")
        self._pending.append((len(self._ops), self._pool.submit(count), self.task, self.step, module))
        self._ops.append(None)

    def flush(self) -> None:
        """Wait for the background counts and put them in their places."""
        for index, future, task, step, module in self._pending:
            self._ops[index] = self._tag(future.result(), task, step, module)
        self._pending.clear()


def quantize(x: torch.Tensor, scale: torch.Tensor | float | None = None, *, stochastic: bool = False,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Symmetric per-tensor INT8 quantization: returns (int8 tensor, scale)."""
    if scale is None:
        amax = float(x.detach().abs().max()) if x.numel() else 0.0
        scale = amax / QMAX if amax > 0 else 1.0
    scale = float(scale)
    v = x.detach() / scale
    if stochastic:
        noise = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)
        v = torch.floor(v + noise)
    else:
        v = torch.round(v)
    return v.clamp_(-128, QMAX).to(torch.int8), scale


def deploy_scale(weight: torch.Tensor, trainable: bool) -> float:
    """The per-tensor INT8 scale a layer is deployed with.

    The range is the weights' largest magnitude, with :data:`WEIGHT_HEADROOM`
    for a layer that trains (its master may grow past the deployed range). An
    all-zero trainable weight (a LoRA ``B`` starts at zero) has no range of its
    own: it takes the Kaiming-uniform bound ``1 / sqrt(fan_in)`` of its shape,
    the range the same layer would span had it been randomly initialised, so
    the first updates land on a grid matched to the layer's fan-in instead of
    an arbitrary one. A frozen all-zero weight stores zeros at any scale.
    """
    amax = float(weight.detach().abs().max()) if weight.numel() else 0.0
    if amax == 0.0 and trainable and weight.dim() >= 2:
        amax = 1.0 / math.sqrt(weight[0].numel())
    headroom = WEIGHT_HEADROOM if trainable else 1.0
    return amax * headroom / QMAX if amax > 0 else 1.0 / QMAX


class _IMCMatmul(torch.autograd.Function):
    """y = x @ W on the macro, with W the stored matrix ``module.stored_names()[index]``."""

    @staticmethod
    def forward(ctx, x, weight, module, index):
        hw: Hardware = module.hw
        name = module.stored_names()[index]
        x_q, sx = quantize(x)
        x_cpu = x_q.cpu()
        if hw.account and not hw.macro.exact:  # an analog result: computed and counted by the circuit
            y_int, rec = hw.macro.forward(x_cpu, name, count=hw.recording, samples=hw.samples)
            if rec is not None:
                hw.emit(rec, module.name)
        else:
            y_int = int8_matmul(x_cpu, torch.from_numpy(hw.macro.stored[name].values))
            if hw.account:
                samples = hw.samples
                hw.emit_counts(lambda: hw.macro.forward_counts(x_cpu, name, samples=samples), module.name)
        ctx.module = module
        ctx.name = name
        ctx.sx = sx
        ctx.save_for_backward(x_q if weight.requires_grad else None)
        return y_int.to(x.device, torch.float32) * (sx * module.w_scale)

    @staticmethod
    def backward(ctx, grad_y):
        module, name = ctx.module, ctx.name
        hw: Hardware = module.hw
        (x_q,) = ctx.saved_tensors
        g_q, sg = quantize(grad_y, stochastic=hw.stochastic_rounding, generator=hw.generator)
        g_q = g_q.cpu()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = input_grad_int(module, name, g_q).to(grad_y.device, torch.float32) * (sg * module.w_scale)
        if x_q is not None:
            grad_w = weight_grad_int(module, name, x_q.cpu(), g_q).to(grad_y.device, torch.float32) * (ctx.sx * sg)
        return grad_x, grad_w, None, None


def input_grad_int(module: IMCModule, name: str, g_q: torch.Tensor) -> torch.Tensor:
    """``g @ W^T`` for the stored matrix ``name`` of ``module`` (INT8 error rows on the CPU), recorded as the
    circuit counts it: an analog circuit computes and counts it; an exact one gives integer matmul's result
    and counts it (in the background when the hardware has workers). Uncounted when the hardware does not
    account."""
    hw: Hardware = module.hw
    if hw.account and not hw.macro.exact:
        dx_int, rec = hw.macro.backward_input(g_q, name, samples=hw.samples)
        hw.emit(rec, module.name)
        return dx_int
    dx_int = int8_matmul(g_q, torch.from_numpy(hw.macro.stored[name].values).t().contiguous())
    if hw.account:
        samples = hw.samples
        hw.emit_counts(lambda: hw.macro.backward_input_counts(g_q, name, samples=samples), module.name)
    return dx_int


def weight_grad_int(module: IMCModule, name: str, x_q: torch.Tensor, g_q: torch.Tensor) -> torch.Tensor:
    """``x^T @ g`` (K x N) for the stored matrix ``name`` of ``module``, in the circuit's weight-gradient
    dataflow and recorded; uncounted when the hardware does not account."""
    hw: Hardware = module.hw
    if not hw.account:
        return int8_matmul(x_q.t().contiguous(), g_q)
    dw_int, recs = hw.macro.weight_grad(x_q, g_q, name, samples=hw.samples)
    for rec in recs:
        hw.emit(rec, module.name)
    return dw_int


class IMCModule(nn.Module):
    """Common part of IMC linear and conv layers: a K x N weight stored on the macro."""

    hw: Hardware | None
    name: str
    w_scale: float

    def _init_imc(self, name: str) -> None:
        self.name = name
        self.hw = None
        self.w_scale = 1.0

    def weight_matrix(self) -> torch.Tensor:
        """The weight as the K x N matrix the macro stores."""
        raise NotImplementedError

    def weight_matrices(self) -> list[torch.Tensor]:
        """The K x N matrices the macro stores (one per group of a grouped conv)."""
        return [self.weight_matrix()]

    def stored_names(self) -> list[str]:
        return [self.name]

    def deploy(self, hw: Hardware) -> None:
        """Fix the INT8 scale (per tensor) and program the weights into the macro (counted as deployment)."""
        self.hw = hw
        self.w_scale = deploy_scale(self.weight, self.weight.requires_grad)
        for name, w in zip(self.stored_names(), self.weight_matrices(), strict=True):
            w_q, _ = quantize(w.detach(), self.w_scale)
            for rec in hw.macro.store(name, w_q.cpu().numpy()):
                hw.emit(rec, self.name)

    def sync(self, commit: bool = False) -> None:
        """Rewrite the stored INT8 images of the master weight as the hardware's write policy says (``commit``:
        every pending change, at the end of a task); only changed cells are written."""
        hw = self.hw
        policy = hw.write_policy
        if policy.kind == "periodic" and not commit:
            self._steps_since_write = getattr(self, "_steps_since_write", 0) + 1
            if self._steps_since_write < policy.period:
                if self.weight.requires_grad and hw.account:
                    hw.emit(hw.macro.update_digital(self.name, self.weight.numel()), self.name)
                return
        self._steps_since_write = 0
        hw.flush()  # counts still running read the weights about to change
        for name, w in zip(self.stored_names(), self.weight_matrices(), strict=True):
            w_q, _ = quantize(w.detach(), self.w_scale)
            if policy.kind == "threshold" and not commit:
                held = torch.from_numpy(hw.macro.stored[name].values).to(w_q.device)
                far = (w_q.to(torch.int16) - held.to(torch.int16)).abs() >= policy.threshold
                w_q = torch.where(far, w_q, held)
            if commit and np.array_equal(hw.macro.stored[name].values, w_q.cpu().numpy()):
                continue  # nothing pending: no write
            if not hw.account:
                hw.macro.stored[name].assign(w_q.cpu().numpy())
                continue
            for rec in hw.macro.update_weights(name, w_q.cpu().numpy()):
                hw.emit(rec, self.name)
        if self.weight.requires_grad and hw.account and not commit:  # a commit is no optimizer step
            hw.emit(hw.macro.update_digital(self.name, self.weight.numel()), self.name)

    def _matmul(self, x2d: torch.Tensor, index: int = 0) -> torch.Tensor:
        return _IMCMatmul.apply(x2d, self.weight_matrices()[index], self, index)


class IMCLinear(IMCModule):
    """Linear layer ``y = x W^T + b`` with W (out x in) stored as K=in x N=out."""

    def __init__(self, in_features: int, out_features: int, name: str, bias: bool = True):
        super().__init__()
        self._init_imc(name)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if not self.weight.is_meta:  # shapes only on the meta device
            nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_torch(cls, linear: nn.Linear, name: str) -> IMCLinear:
        """The IMC linear equivalent to ``linear`` (its weight and bias tensors are shared)."""
        with torch.device("meta"):  # no storage or init for tensors about to be replaced
            m = cls(linear.in_features, linear.out_features, name, bias=False)
        m.weight = linear.weight
        m.bias = linear.bias
        return m

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.numel() // x.shape[-1] if x.dim() else 1
        return traced_layer_call(self, x, lambda: self._forward(x), m, self.weight.shape[1], self.weight.shape[0], 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hw is None:
            return F.linear(x, self.weight, self.bias)
        y = self._matmul(x)
        return y + self.bias if self.bias is not None else y


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class IMCConv2d(IMCModule):
    """Conv through im2col: unfold the input, one GEMM per group with W (C/g*kh*kw x out/g).

    ``k``, ``stride``, ``padding`` and ``dilation`` take an int or an (h, w) pair; ``padding`` defaults
    to "same" for odd kernels (``k // 2``), as the built-in networks use. ``grad_filter`` > 0 filters its
    backward pass with that patch radius (:mod:`imcsim.workloads.gradfilter`).
    """

    grad_filter: int = 0

    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], name: str, stride: int | tuple[int, int] = 1,
                 groups: int = 1, bias: bool = False, padding: int | tuple[int, int] | None = None,
                 dilation: int | tuple[int, int] = 1):
        super().__init__()
        if cin % groups or cout % groups:
            raise ValueError(f"{name}: channels {cin}->{cout} not divisible by groups={groups}")
        self._init_imc(name)
        self.kernel = _pair(k)
        self.cin, self.cout, self.groups = cin, cout, groups
        self.k = self.kernel[0]
        self.strides = _pair(stride)
        self.stride = self.strides[0]
        self.paddings = (self.kernel[0] // 2, self.kernel[1] // 2) if padding is None else _pair(padding)
        self.padding = self.paddings[0]
        self.dilation = _pair(dilation)
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, *self.kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        if not self.weight.is_meta:  # shapes only on the meta device (and no random draw to pay for)
            nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_torch(cls, conv: nn.Conv2d, name: str) -> IMCConv2d:
        """The IMC conv equivalent to ``conv`` (same hyper-parameters; its weight and bias tensors are shared)."""
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"{name}: padding {conv.padding!r} / mode {conv.padding_mode!r} is not mapped "
                             "(give explicit zero padding)")
        with torch.device("meta"):  # no storage or init for tensors about to be replaced
            m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, name, stride=conv.stride,
                    groups=conv.groups, bias=False, padding=conv.padding, dilation=conv.dilation)
        m.weight = conv.weight
        m.bias = conv.bias
        return m

    def weight_matrix(self) -> torch.Tensor:
        return self.weight.reshape(self.cout, -1).t()

    def weight_matrices(self) -> list[torch.Tensor]:
        """Group i's weight as a (C/g * kh * kw) x (out/g) matrix; each group is stored on its own."""
        g = self.groups
        if g == 1:
            return [self.weight_matrix()]
        return [wg.reshape(self.cout // g, -1).t() for wg in self.weight.chunk(g, dim=0)]

    def stored_names(self) -> list[str]:
        return [self.name] if self.groups == 1 else [f"{self.name}.g{i}" for i in range(self.groups)]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.strides, self.paddings, self.dilation
        return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ho, wo = self.out_size(h, w)
        g = self.groups
        filtered = None
        if self.grad_filter and active_tracer() is not None:  # only a trace records them
            filtered = filter_shapes(self.grad_filter, self.strides, self.kernel, b, (h, w), (ho, wo), self.cin,
                                     self.cout, bool(x.requires_grad))
        return traced_layer_call(self, x, lambda: self._forward(x), b * ho * wo,
                                 self.cin // g * self.kernel[0] * self.kernel[1], self.cout // g, g, filtered)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_filter and self.hw is None:
            return filtered_conv2d(x, self.weight, self.bias, self.strides, self.paddings, self.dilation,
                                   self.groups, self.grad_filter)
        if self.grad_filter:
            y = imc_filtered_conv(self, x)
            return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y
        if self.hw is None:
            return F.conv2d(x, self.weight, self.bias, self.strides, self.paddings, self.dilation, self.groups)
        y = self._gemms(x)
        return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y

    def _gemms(self, x: torch.Tensor) -> torch.Tensor:
        """The conv's GEMMs on the macro, without the bias."""
        b, _, h, w = x.shape
        cols = F.unfold(x, self.kernel, dilation=self.dilation, padding=self.paddings, stride=self.strides)
        ho, wo = self.out_size(h, w)
        g = self.groups
        x2d = cols.transpose(1, 2).reshape(b * ho * wo, g, -1)  # (B*L, g, C/g*kh*kw), group-major channels
        y = torch.cat([self._matmul(x2d[:, i], i) for i in range(g)], dim=1)  # (B*L, out)
        return y.reshape(b, ho * wo, self.cout).transpose(1, 2).reshape(b, self.cout, ho, wo)


def imc_modules(model: nn.Module) -> list[IMCModule]:
    return [m for m in model.modules() if isinstance(m, IMCModule)]


class ArrayLayer(NamedTuple):
    """A weight matrix a run stores in the array: ``groups`` K x N matrices under ``name``.

    ``part``: the part of the model it belongs to (backbone, side modules, heads, adapters...).
    """

    name: str
    k: int
    n: int
    groups: int = 1
    part: str = ""
    trainable: bool = False  # its weights train (on some task)


def array_layers_of(modules: list[IMCModule], part_of: Callable[[str], str], grouped: bool = False
                    ) -> list[ArrayLayer]:
    """The matrices stored for ``modules``, from their shapes (they may live on the meta device).

    As :meth:`IMCModule.deploy` stores them (a functional run): one matrix per group of a grouped
    conv. With ``grouped``, as a cost-only step stores a traced layer (see
    :func:`imcsim.workloads.dataflow.traced_layer_call`): the groups' K x N matrices together.
    ``part_of`` names the part of the model a module (by name) belongs to.
    """
    if grouped:
        return [ArrayLayer(m.name, math.prod(m.weight.shape[1:]), m.weight.shape[0] // getattr(m, "groups", 1),
                           getattr(m, "groups", 1), part_of(m.name), bool(m.weight.requires_grad)) for m in modules]
    return [ArrayLayer(name, *w.shape, 1, part_of(m.name), bool(m.weight.requires_grad))
            for m in modules for name, w in zip(m.stored_names(), m.weight_matrices(), strict=True)]


def int8_image(module: IMCModule, index: int = 0) -> np.ndarray:
    """An INT8 matrix the macro holds for ``module`` (for tests and inspection)."""
    return module.hw.macro.stored[module.stored_names()[index]].values.copy()
