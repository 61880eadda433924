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
planes at once (flushed every 255 elements so no byte overflows).
"""

from __future__ import annotations

import numba
import numpy as np

_SPREAD = np.array(
    [sum(((v >> i) & 1) << (8 * i) for i in range(8)) for v in range(256)], dtype=np.uint64
)
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _activity_kernel(u, tile_len, rows_per_sense, lines_per_bit, stored_ones, skip_zero, chunk_rows, spread,
                     popcount):
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
            acc = np.uint64(0)
            pending = 0
            for k in range(start, stop):
                v = u[m, k]
                if v:
                    acc += spread[v]
                    increments += popcount[v] * stored_ones[k]
                    pending += 1
                    if pending == 255:
                        for i in range(8):
                            counts[i] += (acc >> np.uint64(8 * i)) & np.uint64(255)
                        acc = np.uint64(0)
                        pending = 0
            for i in range(8):
                counts[i] += (acc >> np.uint64(8 * i)) & np.uint64(255)
            for i in range(8):
                c = counts[i]
                plane_ones[i] += c
                if c > 0:
                    active += 1
                    cycles[ch, t] += (c + rows_per_sense - 1) // rows_per_sense * lines_per_bit
                elif not skip_zero:
                    active += 1
                    cycles[ch, t] += 1
    return plane_ones, active, cycles, increments


def stream_activity(x_u8: np.ndarray, tile_len: int, rows_per_sense: int, lines_per_bit: int,
                    stored_ones: np.ndarray, skip_zero: bool, chunk_rows: int | None = None):
    """See the module docstring. ``x_u8`` is the operand's bytes (int8 viewed as uint8).

    ``chunk_rows`` (default: all rows in one chunk) splits the vectors into chunks for the cycle counts.
    """
    u = np.ascontiguousarray(x_u8, dtype=np.uint8)
    ones = np.ascontiguousarray(stored_ones, dtype=np.int64)
    rows = max(1, int(chunk_rows) if chunk_rows else u.shape[0])
    return _activity_kernel(u, int(tile_len), int(rows_per_sense), int(lines_per_bit), ones, bool(skip_zero),
                            rows, _SPREAD, _POPCOUNT)


def popcount8(x_u8: np.ndarray) -> np.ndarray:
    """Number of 1 bits of each byte."""
    return _POPCOUNT[np.asarray(x_u8, dtype=np.uint8)]
