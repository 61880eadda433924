"""Exact INT8 arithmetic through bit planes."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imcsim.circuits.bitplanes import (
    BOOTH_NONZERO,
    bit_planes,
    bitplane_matmul_reference,
    booth_digit_density,
    booth_digits,
    from_bit_planes,
    int8_matmul,
)

int8s = st.integers(-128, 127)


@st.composite
def operand_pair(draw, max_dim=9):
    m = draw(st.integers(1, max_dim))
    k = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_dim))
    a = draw(arrays(np.int8, (m, k), elements=int8s))
    b = draw(arrays(np.int8, (k, n), elements=int8s))
    return a, b


@given(operand_pair())
@settings(max_examples=150, deadline=None)
def test_bitplane_sum_equals_integer_matmul(pair):
    a, b = pair
    expected = a.astype(np.int64) @ b.astype(np.int64)
    assert np.array_equal(bitplane_matmul_reference(a, b), expected)
    assert np.array_equal(int8_matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected)


def test_extremes_minus_128_and_zero():
    a = np.full((3, 5), -128, dtype=np.int8)
    b = np.full((5, 2), -128, dtype=np.int8)
    assert (int8_matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy() == 5 * 16384).all()
    assert (bitplane_matmul_reference(a, b) == 5 * 16384).all()
    z = np.zeros((3, 5), dtype=np.int8)
    assert (int8_matmul(torch.from_numpy(z), torch.from_numpy(b)).numpy() == 0).all()


def test_long_k_is_exact_beyond_float32_mantissa():
    # K = 3000 with all -128 gives 3000 * 16384 = 49,152,000 > 2^24: float32 alone would round.
    k = 3000
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -128, dtype=torch.int8)
    a[0, 7] = 3  # break the symmetry so rounding would show
    out = int8_matmul(a, b)
    ref = a.long() @ b.long()
    assert torch.equal(out.long(), ref)


@given(arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(1, 6)), elements=int8s))
def test_bit_planes_roundtrip(x):
    assert np.array_equal(from_bit_planes(bit_planes(x)), x)


def test_booth_digits_rebuild_every_int8_and_mark_the_non_zero_ones():
    """Radix-4 Booth: four digits in {-2..2} with sum d_i 4^i = x for all 256 values; the mask table marks exactly
    the non-zero digits; -128 and 127 need all four."""
    x = np.arange(-128, 128, dtype=np.int8)
    d = booth_digits(x).astype(np.int64)
    assert d.min() == -2
    assert d.max() == 2
    assert np.array_equal((d * 4 ** np.arange(4)[:, None]).sum(axis=0), x)
    mask = BOOTH_NONZERO[x.view(np.uint8)]
    assert np.array_equal(((mask[None, :] >> np.arange(4)[:, None]) & 1).astype(bool), d != 0)
    assert BOOTH_NONZERO[0] == 0
    assert BOOTH_NONZERO[np.int8(-1).view(np.uint8)] == 0b0001


@given(st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8))
@settings(max_examples=60, deadline=None)
def test_booth_digit_density_is_the_exact_expectation(p):
    """Each digit's non-zero probability under independent bits equals the exhaustive expectation over the 256
    byte values weighted by their probabilities."""
    bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(float)
    prob = np.prod(np.where(bits == 1, p, 1.0 - np.asarray(p)), axis=1)
    nonzero = booth_digits(np.arange(256, dtype=np.uint8).view(np.int8)) != 0  # (4, 256)
    assert np.allclose(booth_digit_density(p), nonzero @ prob, atol=1e-12)


def test_stream_activity_counts_ones_passes_cycles_and_hits():
    from imcsim.circuits.activity import stream_activity

    # Two vectors, K = 3, one tile of 4 lines; stored rows hold 1, 2 and 5 ones.
    x = np.array([[1, 0, 3], [0, 0, 0]], dtype=np.int8).view(np.uint8)
    stored = np.array([1, 2, 5])
    ones, active, cycles, hits = stream_activity(x, 4, 1, 1, stored, True)
    assert ones.tolist() == [2, 1, 0, 0, 0, 0, 0, 0]
    assert active == 2  # vector 0: planes 0 and 1; vector 1: none
    assert cycles.tolist() == [[3]]  # one row per cycle: 2 rows in plane 0, 1 in plane 1
    assert hits == 1 * 1 + 2 * 5  # popcount(x_k) x ones in row k
    _, active_all, cycles_all, _ = stream_activity(x, 4, 1, 1, stored, False)
    assert active_all == 2 * 1 * 8  # no plane skipped
    assert cycles_all.tolist() == [[3 + 6 + 8]]  # empty planes still take a cycle
    two_rows, _, cycles2, _ = stream_activity(x, 4, 2, 1, stored, True)
    assert cycles2.tolist() == [[2]]  # 2 rows sensed per cycle
    neg, _, _, _ = stream_activity(np.array([[-1]], dtype=np.int8).view(np.uint8), 1, 1, 1, np.ones(1), True)
    assert neg.sum() == 8  # -1 is all ones in two's complement
    assert two_rows.tolist() == ones.tolist()
    # more than 255 set bytes in one tile: the packed byte counters must flush, not wrap
    long_ones, _, _, _ = stream_activity(np.full((1, 600), 255, dtype=np.uint8), 600, 1, 1, np.ones(600), True)
    assert long_ones.tolist() == [600] * 8
    # one chunk per vector: the cycles split by sample and add up to the unchunked ones
    _, _, per_vector, _ = stream_activity(x, 4, 1, 1, stored, False, chunk_rows=1)
    assert per_vector.tolist() == [[3 + 6], [8]]
    assert per_vector.sum(axis=0).tolist() == cycles_all[0].tolist()


@settings(max_examples=150, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 300), tile=st.sampled_from([8, 16, 24, 128, 2048, 4096]),
       density=st.floats(0.0, 1.0), rows_per_sense=st.integers(1, 8), lines=st.sampled_from([1, 8]),
       skip=st.booleans(), chunk=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_word_kernel_equals_byte_kernel(m, k, tile, density, rows_per_sense, lines, skip, chunk, seed):
    """The 64-bit-word kernel (whole-word tiles, parallel over chunks) counts exactly what the byte kernel does."""
    from imcsim.circuits.activity import _POPCOUNT, _SPREAD, _activity_kernel, stream_activity

    rng = np.random.default_rng(seed)
    u = (rng.integers(0, 256, (m, k)) * (rng.random((m, k)) < density)).astype(np.uint8)
    stored = rng.integers(0, 60, k)
    chunk = min(chunk, m)
    ref = _activity_kernel(u, tile, rows_per_sense, lines, stored.astype(np.int64), skip, chunk, _SPREAD, _POPCOUNT,
                           8)
    got = stream_activity(u, tile, rows_per_sense, lines, stored, skip, chunk_rows=chunk)
    assert np.array_equal(got[0], ref[0])
    assert got[1] == ref[1]
    assert np.array_equal(got[2], ref[2])
    assert got[3] == ref[3]
