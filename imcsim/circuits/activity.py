"""Fast measurement of bit-serial operand activity (numba).

For a streamed int8 operand (M vectors of K elements) cut into tiles of
``tile_len`` elements, :func:`stream_activity` returns in one pass:

* ``ones``: 1 bits over all planes (each drives ``lines_per_bit`` lines);
* ``active_passes``: (vector, tile, plane) passes that hold a 1 (or all passes
  when zero planes are not skipped);
* ``cycles``: sense cycles each tile spends on each chunk of ``chunk_rows``
  vectors (a sample's vectors), ``ceil(ones / rows_per_sense)`` per pass times
  ``lines_per_bit`` (at least one per pass when not skipping); shape
  (chunks, tiles);
* ``increments``: sum over elements of popcount(x) x ``stored_ones[k]``, the
  AND results of 1 that increment column counters.

Per-plane counts are accumulated eight at a time: each byte value maps to a
uint64 whose byte i holds its bit i, so adding those words counts all eight
planes at once (flushed every 255 elements so no byte overflows). The loop has
no data-dependent branch: zero bytes add zero.
"""

from __future__ import annotations

import numba
import numpy as np

_SPREAD = np.array(
    [sum(((v >> i) & 1) << (8 * i) for i in range(8)) for v in range(256)], dtype=np.uint64
)
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)
_PLANE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)


def plane_ones(x_int8) -> np.ndarray:
    """1 bits per two's-complement bit plane (LSB first) of an INT8 operand (a tensor or an array)."""
    x = x_int8.numpy() if hasattr(x_int8, "numpy") else np.asarray(x_int8)
    return np.bincount(np.ascontiguousarray(x).view(np.uint8).ravel(), minlength=256) @ _PLANE_BITS


@numba.njit(cache=True, nogil=True)
def _tile_passes(counts, planes, cycles, ch, t, rows_per_sense, lines_per_bit, skip_zero, n_planes):
    """Book one vector's pass through tile ``t``: per plane (the first ``n_planes``), its 1 bits (``counts``) add
    to ``planes``, and a plane holding a 1 (every plane when zero planes are not skipped) senses in
    ceil(ones / rows_per_sense) cycles (at least one) per line; returns the passes counted."""
    active = 0
    for i in range(n_planes):
        c = counts[i]
        planes[i] += c
        if c > 0:
            active += 1
            cycles[ch, t] += (c + rows_per_sense - 1) // rows_per_sense * lines_per_bit
        elif not skip_zero:
            active += 1
            cycles[ch, t] += 1
    return active


@numba.njit(cache=True, nogil=True)
def _activity_kernel(u, tile_len, rows_per_sense, lines_per_bit, stored_ones, skip_zero, chunk_rows, spread,
                     popcount, n_planes):
    m_count, k_count = u.shape
    n_tiles = (k_count + tile_len - 1) // tile_len
    n_chunks = max(1, (m_count + chunk_rows - 1) // chunk_rows)
    cycles = np.zeros((n_chunks, n_tiles), dtype=np.int64)
    plane_ones = np.zeros(8, dtype=np.int64)
    counts = np.zeros(8, dtype=np.int64)
    active = 0
    increments = 0
    for m in range(m_count):
        ch = m // chunk_rows
        for t in range(n_tiles):
            start = t * tile_len
            stop = min(k_count, start + tile_len)
            for i in range(8):
                counts[i] = 0
            for block in range(start, stop, 255):  # branch-free; flushed before a byte can overflow
                acc = np.uint64(0)
                for k in range(block, min(stop, block + 255)):
                    v = u[m, k]
                    acc += spread[v]
                    increments += popcount[v] * stored_ones[k]
                for i in range(8):
                    counts[i] += (acc >> np.uint64(8 * i)) & np.uint64(255)
            active += _tile_passes(counts, plane_ones, cycles, ch, t, rows_per_sense, lines_per_bit, skip_zero,
                                   n_planes)
    return plane_ones, active, cycles, increments


_LANES = np.uint64(0x0101010101010101)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)


@numba.njit(cache=True, nogil=True)
def _word_rows(w, r0, r1, ch, tile_words, rows_per_sense, lines_per_bit, stored_ones, skip_zero, cycles, planes,
               n_planes):
    """Rows ``r0..r1`` (one chunk, ``ch``) of :func:`_activity_kernel_words`; returns (active passes, increments)."""
    kw = w.shape[1]
    n_tiles = (kw + tile_words - 1) // tile_words
    colpop = np.zeros(kw, dtype=np.uint64)  # byte lanes: popcount sums of each column (flushed every 31 rows)
    colsum = np.zeros(kw * 8, dtype=np.int64)
    active = 0
    lanes, m1, m2, m4 = _LANES, _M1, _M2, _M4
    byte = np.uint64(255)
    top = np.uint64(56)
    s1, s2, s3, s4, s5, s6, s7 = (np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4), np.uint64(5),
                                  np.uint64(6), np.uint64(7))
    counts = np.zeros(8, dtype=np.int64)
    for m in range(r0, r1):
        for t in range(n_tiles):
            start = t * tile_words
            stop = min(kw, start + tile_words)
            for i in range(8):
                counts[i] = 0
            for block in range(start, stop, 31):  # 31 words: a plane's total (<= 248) fits the top byte
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.uint64(0)
                for j in range(block, min(stop, block + 31)):
                    x = w[m, j]
                    a0 += x & lanes
                    a1 += (x >> s1) & lanes
                    a2 += (x >> s2) & lanes
                    a3 += (x >> s3) & lanes
                    a4 += (x >> s4) & lanes
                    a5 += (x >> s5) & lanes
                    a6 += (x >> s6) & lanes
                    a7 += (x >> s7) & lanes
                    p = x - ((x >> s1) & m1)
                    p = (p & m2) + ((p >> s2) & m2)
                    colpop[j] += (p + (p >> s4)) & m4
                counts[0] += (a0 * lanes) >> top  # the sum of the eight byte lanes
                counts[1] += (a1 * lanes) >> top
                counts[2] += (a2 * lanes) >> top
                counts[3] += (a3 * lanes) >> top
                counts[4] += (a4 * lanes) >> top
                counts[5] += (a5 * lanes) >> top
                counts[6] += (a6 * lanes) >> top
                counts[7] += (a7 * lanes) >> top
            active += _tile_passes(counts, planes, cycles, ch, t, rows_per_sense, lines_per_bit, skip_zero, n_planes)
        if (m - r0) % 31 == 30 or m == r1 - 1:  # a lane holds at most 31 x 8 = 248
            for j in range(kw):
                v = colpop[j]
                for b in range(8):
                    colsum[8 * j + b] += (v >> np.uint64(8 * b)) & byte
                colpop[j] = 0
    increments = 0
    for k in range(stored_ones.shape[0]):
        increments += colsum[k] * stored_ones[k]
    return active, increments


@numba.njit(cache=True, nogil=True, parallel=True)
def _activity_kernel_words(w, tile_words, rows_per_sense, lines_per_bit, stored_ones, skip_zero, chunk_rows,
                           n_planes):
    """:func:`_activity_kernel` on the operand read as 64-bit words (8 elements each, tiles of whole words).

    Bit plane i of 8 elements is ``(word >> i) & 0x0101...``: adding those words
    counts plane i in each byte lane; the bytes' popcounts (SWAR) are summed per
    column the same way. No table lookups and no branches per element. Chunks
    (samples) run in parallel; each writes only its own row of ``cycles``.
    """
    m_count, kw = w.shape
    n_tiles = (kw + tile_words - 1) // tile_words
    n_chunks = max(1, (m_count + chunk_rows - 1) // chunk_rows)
    cycles = np.zeros((n_chunks, n_tiles), dtype=np.int64)
    planes = np.zeros((n_chunks, 8), dtype=np.int64)
    active = np.zeros(n_chunks, dtype=np.int64)
    increments = np.zeros(n_chunks, dtype=np.int64)
    for ch in numba.prange(n_chunks):
        r0 = ch * chunk_rows
        r1 = min(m_count, r0 + chunk_rows)
        a, inc = _word_rows(w, r0, r1, ch, tile_words, rows_per_sense, lines_per_bit, stored_ones, skip_zero,
                            cycles, planes[ch], n_planes)
        active[ch] = a
        increments[ch] = inc
    plane_ones = np.zeros(8, dtype=np.int64)
    for ch in range(n_chunks):
        for i in range(8):
            plane_ones[i] += planes[ch, i]
    return plane_ones, active.sum(), cycles, increments.sum()


def stream_activity(x_u8: np.ndarray, tile_len: int, rows_per_sense: int, lines_per_bit: int,
                    stored_ones: np.ndarray, skip_zero: bool, chunk_rows: int | None = None, n_planes: int = 8):
    """See the module docstring. ``x_u8`` is the operand's bytes (int8 viewed as uint8), or any byte whose bit i
    marks that line-driving digit i of the element is non-zero (Booth digits: ``n_planes`` 4).

    ``chunk_rows`` (default: all rows in one chunk) splits the vectors into chunks for the cycle counts.
    Tiles of a whole number of 8-byte words run on the word kernel, others on the byte kernel.
    """
    u = np.ascontiguousarray(x_u8, dtype=np.uint8)
    ones = np.ascontiguousarray(stored_ones, dtype=np.int64)
    rows = max(1, int(chunk_rows) if chunk_rows else u.shape[0])
    if tile_len % 8 == 0 and u.size and np.little_endian:
        k = u.shape[1]
        if k % 8:
            padded = np.zeros((u.shape[0], k + (-k % 8)), dtype=np.uint8)
            padded[:, :k] = u
            u = padded
        words = u.view(np.uint64)
        return _activity_kernel_words(words, int(tile_len) // 8, int(rows_per_sense), int(lines_per_bit), ones,
                                      bool(skip_zero), rows, int(n_planes))
    return _activity_kernel(u, int(tile_len), int(rows_per_sense), int(lines_per_bit), ones, bool(skip_zero),
                            rows, _SPREAD, _POPCOUNT, int(n_planes))


def popcount8(x_u8: np.ndarray) -> np.ndarray:
    """Number of 1 bits of each byte."""
    return _POPCOUNT[np.asarray(x_u8, dtype=np.uint8)]
