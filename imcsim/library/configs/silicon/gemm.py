"""The macro benchmark of the reference designs: one GEMM that fills the macro's arrays, as a network.

A 1 x 1 convolution of ``channels`` input channels to ``outputs`` output channels over ``size`` x ``size``
positions is a (size^2 x channels) @ (channels x outputs) GEMM per sample; the pooled linear classifier after
it is the network's own and is replaced by the workload's task heads.
"""

from torch import nn


def build(channels: int = 32, outputs: int = 384, classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, outputs, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(outputs, classes))
