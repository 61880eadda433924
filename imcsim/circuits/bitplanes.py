"""Exact INT8 arithmetic through bit planes, and the operand activity it implies.

Signed INT8 in two's complement: ``a = -2^7 a_7 + sum_{i<7} 2^i a_i`` with bit
planes ``a_i`` in {0, 1}. A product of two INT8 matrices is therefore

    A @ B = sum_{i,j} s_i s_j 2^(i+j) popcount_k(A_i[m, k] AND B_j[k, n])

with ``s_7 = -1`` and ``s_i = +1`` otherwise. :func:`bitplane_matmul_reference`
evaluates exactly that sum (slow; the definition, used in tests).
:func:`int8_matmul` returns the identical integers fast: it multiplies in
float32 over chunks of at most 1024 along K, where every partial sum is an
integer of magnitude <= 1024 * 128 * 128 = 2^24 and therefore exact in float32,
and accumulates the chunks in int64.

The activity that drives a bit-serial pass's action counts is measured by
:func:`imcsim.circuits.activity.stream_activity`.
"""

from __future__ import annotations

import numpy as np
import torch

N_BITS = 8
EXACT_CHUNK_K = 1024  # 1024 * 2^7 * 2^7 = 2^24: every float32 partial sum is exact
PLANE_SIGNS = np.array([1, 1, 1, 1, 1, 1, 1, -1], dtype=np.int64)


def _as_int8_tensor(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype != torch.int8:
        raise TypeError(f"expected int8 operands, got {t.dtype}")
    return t


def int8_matmul(a, b) -> torch.Tensor:
    """Exact ``a @ b`` for int8 ``a`` (M x K) and ``b`` (K x N), as int32."""
    a = _as_int8_tensor(a)
    b = _as_int8_tensor(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes do not multiply: {tuple(a.shape)} @ {tuple(b.shape)}")
    k = a.shape[1]
    af = a.to(torch.float32)
    bf = b.to(torch.float32)
    if k <= EXACT_CHUNK_K:
        return (af @ bf).to(torch.int32)
    out = torch.zeros((a.shape[0], b.shape[1]), dtype=torch.int64, device=a.device)
    for start in range(0, k, EXACT_CHUNK_K):
        stop = min(start + EXACT_CHUNK_K, k)
        out += (af[:, start:stop] @ bf[start:stop]).to(torch.int64)
    return out.to(torch.int32)


def bit_planes(x) -> np.ndarray:
    """Two's-complement bit planes of an int8 array: shape ``(8, *x.shape)``, plane 0 = LSB."""
    u = np.asarray(x, dtype=np.int8).view(np.uint8)
    return np.stack([(u >> i) & 1 for i in range(N_BITS)]).astype(np.uint8)


def from_bit_planes(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bit_planes`."""
    weights = (PLANE_SIGNS * (1 << np.arange(N_BITS))).reshape((N_BITS,) + (1,) * (planes.ndim - 1))
    return (planes.astype(np.int64) * weights).sum(axis=0).astype(np.int8)


def bitplane_matmul_reference(a, b) -> np.ndarray:
    """``a @ b`` evaluated literally as the signed, shifted sum of AND-popcounts."""
    pa = bit_planes(a).astype(np.int64)  # (8, M, K)
    pb = bit_planes(b).astype(np.int64)  # (8, K, N)
    out = np.zeros((pa.shape[1], pb.shape[2]), dtype=np.int64)
    for i in range(N_BITS):
        for j in range(N_BITS):
            popcount = pa[i] @ pb[j]  # popcount over k of (a_i AND b_j)
            out += PLANE_SIGNS[i] * PLANE_SIGNS[j] * (1 << (i + j)) * popcount
    return out


# Radix-4 Booth recoding of a two's-complement INT8 operand: x = sum_i d_i 4^i over four digits
# d_i = -2 b_(2i+1) + b_(2i) + b_(2i-1) in {-2, ..., 2} (b_(-1) = 0). A digit is zero when its three bits are
# alike, so a random operand drives a line on 3 of 4 digits instead of 4 of 8 bit planes.
BOOTH_DIGITS = 4


def booth_digits(x) -> np.ndarray:
    """Radix-4 Booth digits of an int8 array: shape ``(4, *x.shape)``, digit 0 least significant."""
    u = np.asarray(x, dtype=np.int8).view(np.uint8).astype(np.int16)
    bit = [(u >> i) & 1 for i in range(N_BITS)]
    below = [np.zeros_like(u), *bit[1:N_BITS - 1:2]]  # b_(2i-1)
    return np.stack([-2 * bit[2 * i + 1] + bit[2 * i] + below[i] for i in range(BOOTH_DIGITS)]).astype(np.int8)


BOOTH_NONZERO = np.array([sum(1 << i for i in range(BOOTH_DIGITS) if d[i] != 0)
                          for d in booth_digits(np.arange(256, dtype=np.uint8).view(np.int8)).T], dtype=np.uint8)
"""Byte value -> mask of its non-zero Booth digits (bit i set when digit i is non-zero)."""


def booth_digit_density(density) -> list[float]:
    """Probability that each Booth digit is non-zero, for independent bits set with probabilities
    ``density[i]`` (LSB first): one minus the chance that the digit's three bits are alike."""
    p = [0.0] + [float(v) for v in density]  # p[j + 1] is bit j's; bit -1 is never set
    out = []
    for i in range(BOOTH_DIGITS):
        lo, mid, hi = p[2 * i], p[2 * i + 1], p[2 * i + 2]
        out.append(1.0 - lo * mid * hi - (1.0 - lo) * (1.0 - mid) * (1.0 - hi))
    return out
