"""Activations whose backward pass a training method may approximate.

MobileTL (Chiang, Frumkin, Liang and Marculescu, "MobileTL: On-Device Transfer Learning with Inverted
Residual Blocks", AAAI 2023) replaces the backward of ReLU6 and hard-swish by a sign function: the
gradient passes where the activation's input is positive and stops elsewhere, so the backward pass keeps
a 1-bit mask instead of the input (hard-swish's exact derivative, (2x + 3) / 6 on [-3, 3], needs the input
itself). The forward pass is unchanged.

:func:`activation` applies a named activation, exactly or with the sign backward; the built-in backbones
call it with their block's ``sign_backward`` flag, and :class:`SignBackward` wraps an activation module of
any other network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imcsim.workloads.memory import note_kept

FORWARD = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}
"""The activations with a sign backward, by name."""
_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish"}


class _SignBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kind):
        mask = x > 0
        if x.requires_grad:
            note_kept("relu_mask", mask.numel(), bits=1, of=x, live=(x.numel(), x.numel(), True, True))
        ctx.save_for_backward(mask)
        return FORWARD[kind](x.detach())

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def activation(x: torch.Tensor, kind: str, sign_backward: bool = False) -> torch.Tensor:
    """The activation ``kind`` (``relu``, ``relu6``, ``hardswish``) of ``x``; with ``sign_backward``, MobileTL's
    backward (the gradient where ``x > 0``)."""
    if sign_backward:
        return _SignBackward.apply(x, kind)
    return FORWARD[kind](x)


class SignBackward(nn.Module):
    """An activation module (ReLU, ReLU6, hard-swish) with MobileTL's sign backward."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation(x, self.kind, True)


def sign_backward_modules(module: nn.Module) -> None:
    """Give every ReLU, ReLU6 and hard-swish module inside ``module`` the sign backward (in place, including
    the flag of the built-in blocks that call :func:`activation`)."""
    for parent in list(module.modules()):
        if hasattr(parent, "sign_backward"):
            parent.sign_backward = True
        for name, child in list(parent.named_children()):
            kind = _MODULES.get(type(child))
            if kind is not None:
                setattr(parent, name, SignBackward(kind))
