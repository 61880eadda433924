"""Gradient filtering (Yang, Li and Marculescu, "Efficient On-Device Training via Gradient Filtering",
CVPR 2023; the authors' code, ``classification/custom_op/conv_avg.py`` of SLDGroup/GradientFilter-CVPR23).

A filtered convolution computes its forward pass as usual but keeps for backward only its input sum-pooled
over windows of (r x stride)^2 pixels. Its backward pass:

* averages the output gradient over r x r patches (P_h x P_w patches, P = ceil(H_out / r); centred zero
  padding not counted in the average);
* weight gradient: the pooled gradient times the pooled input, one value per (out, in) channel pair,
  broadcast over the k_h x k_w kernel taps (a depthwise conv: one value per channel);
* input gradient: the pooled gradient through the kernel summed over its taps, each value repeated over
  its (r x stride)^2 block of input pixels and cropped to the input size (no rescaling, as the reference);
* bias gradient: exact.

So the backward GEMMs have r^2 x fewer rows (M = N P_h P_w instead of N H_out W_out) and the weight
gradient a k_h k_w x shorter K (C_in instead of C_in k_h k_w), and the kept input is (r x stride)^2 x
smaller. On the hardware the input gradient still reads the stored matrix (its taps' partial sums are
added in the digital unit), so nothing is counted as a factor: the circuit counts the smaller GEMMs.

:func:`filtered_conv2d` is the float reference; :class:`_IMCFilteredConv` runs the same rule with INT8
operands on the macro.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import torch
import torch.nn.functional as F

from imcsim.workloads.memory import note_kept


@dataclass(frozen=True)
class FilterGeometry:
    """Patches of one filtered conv: ``p`` (P_h, P_w) patches, the input's centred zero padding ``x_pad``
    to P r s pixels and the output gradient's ``g_pad`` to P r."""

    radius: int
    stride: tuple[int, int]
    kernel: tuple[int, int]
    in_hw: tuple[int, int]
    p: tuple[int, int]
    x_pad: tuple[int, int]  # before the input; negative: the input is cropped there (a conv without padding)
    g_pad: tuple[int, int]

    @classmethod
    def of(cls, radius: int, stride: tuple[int, int], kernel: tuple[int, int], in_hw: tuple[int, int],
           out_hw: tuple[int, int]) -> FilterGeometry:
        p = (ceil(out_hw[0] / radius), ceil(out_hw[1] / radius))
        x_pad = tuple(ceil((p[i] * radius * stride[i] - in_hw[i]) / 2) for i in range(2))
        g_pad = tuple(ceil((p[i] * radius - out_hw[i]) / 2) for i in range(2))
        return cls(radius, stride, kernel, in_hw, p, x_pad, g_pad)

    @property
    def window(self) -> tuple[int, int]:
        return (self.radius * self.stride[0], self.radius * self.stride[1])

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def _input_pads(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) that bring the input to P r s pixels a side (negative: crop)."""
        (ph, pw), (wh, ww), (th, tw) = self.p, self.window, self.x_pad
        return (tw, pw * ww - self.in_hw[1] - tw, th, ph * wh - self.in_hw[0] - th)

    def pooled_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input summed over each patch's (r s)^2 window (N, C_in, P_h, P_w); zero-padded (or cropped, for a
        conv with too little padding to centre the patches) to P r s pixels a side."""
        return F.avg_pool2d(F.pad(x, self._input_pads()), self.window, self.window, divisor_override=1)

    def pooled_grad(self, grad_y: torch.Tensor) -> torch.Tensor:
        """The output gradient averaged over each r x r patch (N, C_out, P_h, P_w)."""
        return F.avg_pool2d(grad_y, self.radius, self.radius, self.g_pad, count_include_pad=False)

    def spread(self, grad_patches: torch.Tensor) -> torch.Tensor:
        """Each patch's input gradient repeated over its (r s)^2 block of input pixels, cropped to the input."""
        n, c, ph, pw = grad_patches.shape
        wh, ww = self.window
        g = grad_patches.reshape(n, c, ph, 1, pw, 1).expand(n, c, ph, wh, pw, ww).reshape(n, c, ph * wh, pw * ww)
        return F.pad(g, tuple(-p for p in self._input_pads()))  # back to the input's pixels


def _geometry(x: torch.Tensor, y: torch.Tensor, radius: int, stride: tuple[int, int], kernel: tuple[int, int]
              ) -> FilterGeometry:
    return FilterGeometry.of(radius, stride, kernel, tuple(x.shape[-2:]), tuple(y.shape[-2:]))


def _patch_rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, P_h, P_w) -> (N P_h P_w, C): one row per patch."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _from_rows(rows: torch.Tensor, n: int, ph: int, pw: int) -> torch.Tensor:
    """(N P_h P_w, C) -> (N, C, P_h, P_w)."""
    return rows.reshape(n, ph, pw, -1).permute(0, 3, 1, 2)


class _FilteredConv(torch.autograd.Function):
    """The float reference (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, radius):
        y = F.conv2d(x, weight.detach(), None if bias is None else bias.detach(), stride, padding, dilation, groups)
        geo = _geometry(x, y, radius, stride, tuple(weight.shape[-2:]))
        x_sum = geo.pooled_input(x)
        if weight.requires_grad:  # (a dataflow trace charges it in traced_layer_call)
            note_kept("gemm_input", x_sum.numel(), live=(x.numel(), y.numel(), x.requires_grad, True))
        ctx.geo, ctx.groups, ctx.has_bias = geo, groups, bias is not None
        ctx.save_for_backward(x_sum, weight)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x_sum, weight = ctx.saved_tensors
        geo, g = ctx.geo, ctx.groups
        gy = geo.pooled_grad(grad_y)
        w_sum = weight.sum(dim=(-1, -2))  # (C_out, C_in / g)
        cout = w_sum.shape[0]
        gx_parts, gw_parts = [], []
        for i, (gy_g, xs_g) in enumerate(zip(gy.chunk(g, 1), x_sum.chunk(g, 1), strict=True)):
            w_g = w_sum[i * cout // g:(i + 1) * cout // g]  # (C_out / g, C_in / g)
            gx_parts.append(_from_rows(_patch_rows(gy_g) @ w_g, gy.shape[0], *geo.p))
            gw_parts.append(_patch_rows(gy_g).t() @ _patch_rows(xs_g))
        grad_x = geo.spread(torch.cat(gx_parts, dim=1)) if ctx.needs_input_grad[0] else None
        grad_w = torch.cat(gw_parts)[:, :, None, None].expand_as(weight).clone() if ctx.needs_input_grad[1] else None
        grad_b = grad_y.sum(dim=(0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


def filtered_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                    padding: tuple[int, int], dilation: tuple[int, int], groups: int, radius: int) -> torch.Tensor:
    """``F.conv2d`` whose backward pass is gradient-filtered with patch radius ``radius`` (float reference)."""
    return _FilteredConv.apply(x, weight, bias, stride, padding, dilation, groups, radius)


class _IMCFilteredConv(torch.autograd.Function):
    """A filtered IMC conv: the forward GEMMs on the macro as usual; the backward GEMMs of the pooled
    operands, INT8, on the macro (input gradient through the stored matrix, its taps summed in the digital
    unit) and in the weight-gradient dataflow (pooled input x pooled gradient)."""

    @staticmethod
    def forward(ctx, x, weight, module):
        from imcsim.workloads.int8 import quantize

        with torch.no_grad():
            y = module._gemms(x)
        geo = _geometry(x, y, module.grad_filter, module.strides, module.kernel)
        xs_q, sxs = quantize(_patch_rows(geo.pooled_input(x)))  # INT8 under its own per-tensor scale
        ctx.module, ctx.geo, ctx.sxs, ctx.like = module, geo, sxs, (x.shape[0], *geo.p)
        ctx.save_for_backward(xs_q if weight.requires_grad else None)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        from imcsim.workloads.int8 import input_grad_int, quantize, weight_grad_int

        module, geo = ctx.module, ctx.geo
        hw = module.hw
        (xs_q,) = ctx.saved_tensors
        rows = _patch_rows(geo.pooled_grad(grad_y))  # (N P_h P_w, C_out)
        g_q, sg = quantize(rows, stochastic=hw.stochastic_rounding, generator=hw.generator)
        g_q = g_q.cpu()
        g = module.groups
        cout_g, cin_g = module.cout // g, module.cin // g
        gx_parts, gw_parts = [], []
        for i, name in enumerate(module.stored_names()):
            g_i = g_q[:, i * cout_g:(i + 1) * cout_g].contiguous()
            if ctx.needs_input_grad[0]:  # through the stored matrix, then the taps' partial sums added
                gx_parts.append(input_grad_int(module, name, g_i).reshape(-1, cin_g, geo.taps).sum(-1))
            if xs_q is not None:
                x_i = xs_q[:, i * cin_g:(i + 1) * cin_g].cpu().contiguous()
                gw_parts.append(weight_grad_int(module, name, x_i, g_i).t())  # (C_out / g, C_in / g)
        grad_x = grad_w = None
        if gx_parts:
            patches = torch.cat(gx_parts, dim=1).to(grad_y.device, torch.float32) * (sg * module.w_scale)
            grad_x = geo.spread(_from_rows(patches, *ctx.like))
        if gw_parts:
            dw = torch.cat(gw_parts).to(grad_y.device, torch.float32) * (ctx.sxs * sg)
            grad_w = dw[:, :, None, None].expand(-1, -1, *module.kernel).contiguous()
        return grad_x, grad_w, None


def imc_filtered_conv(module, x: torch.Tensor) -> torch.Tensor:
    """The filtered conv of an IMC conv ``module`` (its ``grad_filter`` radius) on the macro."""
    return _IMCFilteredConv.apply(x, module.weight, module)


def filter_shapes(radius: int, stride: tuple[int, int], kernel: tuple[int, int], batch: int,
                  in_hw: tuple[int, int], out_hw: tuple[int, int], cin: int, cout: int, input_grad: bool = True
                  ) -> dict[str, int]:
    """Sizes of a filtered conv's backward pass: ``rows`` (patches: the backward GEMMs' M), ``taps``, the
    kept pooled input's elements, and the digital unit's elementary ops (sum-pooling the input forward;
    averaging the output gradient, and adding the taps' partial input gradients where ``input_grad``, backward)."""
    geo = FilterGeometry.of(radius, stride, kernel, in_hw, out_hw)
    rows = batch * geo.p[0] * geo.p[1]
    return {"rows": rows, "taps": geo.taps, "kept": rows * cin,
            "pool_adds": batch * cin * in_hw[0] * in_hw[1],
            "grad_adds": batch * cout * out_hw[0] * out_hw[1] + (rows * cin * (geo.taps - 1) if input_grad else 0),
            "grad_muls": rows * cout}
