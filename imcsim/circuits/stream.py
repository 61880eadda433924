"""One counting model for bit-serial streaming: geometry, sufficient statistics, counts.

Streaming an INT8 operand (M vectors of ``line_len`` elements) bit-serially
against stored lines costs, per action, a function of a few statistics of the
operand: its 1 bits, the (vector, tile, plane) passes that hold a 1, the sense
cycles of each tile and sample, and the AND results of 1 that increment
column counters. :class:`StreamStats` holds them. The functional path measures
them on the real operand (:func:`measured`); the cost-only path takes their
expectation under the operand's bit-plane densities (:func:`expected`). Both
turn them into an op with the same function (:func:`stream_op`), so the two
modes cannot drift apart: a property test checks that the expectation over
random operands matches the measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from imcsim.circuits.activity import plane_ones as count_plane_ones
from imcsim.circuits.activity import stream_activity
from imcsim.circuits.bitplanes import BOOTH_DIGITS, BOOTH_NONZERO, N_BITS, booth_digit_density
from imcsim.components.blocks import ACC_BITS
from imcsim.ops import OpRecord


@dataclass(frozen=True)
class StreamGeometry:
    """How an operand meets the stored lines.

    ``line_len`` elements per vector, each driving ``lines_per_bit`` lines (1: a row; 8: the
    bit-columns of one weight) of ``cells_per_line`` cells; ``tile_len`` elements per subarray tile
    along the stream; each pass of a tile produces ``outputs_per_pass`` outputs, ``n_out`` in all;
    ``other_tiles`` subarrays side by side see the same lines; ``psum_tiles`` tiles' partial sums
    are added per output.
    """

    line_len: int
    tile_len: int
    cells_per_line: int
    lines_per_bit: int
    outputs_per_pass: int
    n_out: int
    other_tiles: int
    psum_tiles: int

    @property
    def line_action(self) -> tuple[str, str]:
        return ("row_driver", "activate_row") if self.lines_per_bit == 1 else ("col_driver", "activate_col")


@dataclass(frozen=True)
class StreamStats:
    """Sufficient statistics of one streamed operand (sums over its vectors; expectations in cost-only mode)."""

    vectors: int
    ones: float  # 1 bits over all planes and elements
    active_passes: float  # (vector, tile, plane) passes that hold a 1 (all passes when zero planes are not skipped)
    sense_cycles: float  # sense cycles summed over tiles and vectors
    slowest_tile_cycles: float  # sense cycles of the busiest tile, over all vectors
    chunk_cycles: np.ndarray  # per sample: sense cycles of its busiest tile
    increments: float  # AND results of 1 (column-counter increments)
    plane_ones: np.ndarray | None = None  # measured 1 bits per plane (functional mode)


def measured(x_u8: np.ndarray, geom: StreamGeometry, rows_per_sense: int, skip_zero: bool, stored_ones: np.ndarray,
             samples: int, booth: bool = False) -> StreamStats:
    """The statistics of a real operand (bytes of an INT8 M x line_len matrix), applied one bit plane per pass or
    (``booth``) one radix-4 Booth digit per pass: a non-zero digit drives its line, with the stored bits of the
    weight (shifted or negated by the digit) as its AND results."""
    m = x_u8.shape[0]
    lines = BOOTH_NONZERO[x_u8] if booth else x_u8
    driven, active, cycles, increments = stream_activity(
        lines, geom.tile_len, rows_per_sense, geom.lines_per_bit, stored_ones, skip_zero,
        chunk_rows=math.ceil(m / max(1, samples)), n_planes=BOOTH_DIGITS if booth else N_BITS)
    per_tile = cycles.sum(axis=0)
    return StreamStats(vectors=m, ones=int(driven.sum()), active_passes=int(active),
                       sense_cycles=int(per_tile.sum()), slowest_tile_cycles=int(per_tile.max()) if per_tile.size else 0,
                       chunk_cycles=cycles.max(axis=1), increments=int(increments),
                       plane_ones=count_plane_ones(x_u8) if booth else driven)


def expected_ceil(length: int, p: float, rows_per_sense: int) -> float:
    """E[ceil(X / rows_per_sense)] for X ~ Binomial(length, p)."""
    if rows_per_sense == 1:
        return length * p
    x = np.arange(length + 1)
    return float(np.sum(np.ceil(x / rows_per_sense) * binom.pmf(x, length, p)))


def expected(m: int, geom: StreamGeometry, density: list[float], weight_bit_density: float, rows_per_sense: int,
             skip_zero: bool, samples: int, booth: bool = False) -> StreamStats:
    """The expected statistics of M vectors whose bit ``i`` is set with probability ``density[i]``, against
    stored bits set with probability ``weight_bit_density``; with ``booth`` the passes are the operand's radix-4
    Booth digits, each non-zero with the probability :func:`booth_digit_density` gives.

    A tile of L lines spends E[ceil(Bin(L, p_i) / rows_per_sense)] sense cycles per line of plane i
    and is active with probability 1 - (1 - p_i)^L; when zero planes are not skipped, every pass is
    active and an all-zero plane still takes one cycle.
    """
    if booth:
        density = booth_digit_density(density)
    full, rest = divmod(geom.line_len, geom.tile_len)
    per_tile = []  # (expected cycles, tiles of that length): full tiles alike, then the rest
    active_per_vector = 0.0
    for length, tiles in ((geom.tile_len, full), (rest, 1 if rest else 0)):
        if not tiles:
            continue
        cyc = active = 0.0
        for p in density:
            c = expected_ceil(length, p, rows_per_sense)
            p_zero = (1.0 - p) ** length
            cyc += c * geom.lines_per_bit + (0.0 if skip_zero else p_zero)  # an unskipped zero plane: one cycle
            active += (1.0 - p_zero) if skip_zero else 1.0
        per_tile.append((cyc, tiles))
        active_per_vector += active * tiles
    ones = m * geom.line_len * float(sum(density))
    slowest = max(c for c, _ in per_tile) if per_tile else 0.0
    per_sample = m / max(samples, 1)
    chunk = math.ceil(per_sample * slowest)
    return StreamStats(vectors=m, ones=ones, active_passes=m * active_per_vector,
                       sense_cycles=m * sum(c * n for c, n in per_tile),
                       slowest_tile_cycles=m * slowest, chunk_cycles=np.full(max(samples, 1), chunk, dtype=np.int64),
                       increments=ones * geom.cells_per_line * geom.lines_per_bit * weight_bit_density)


@dataclass(frozen=True)
class ReuseStats:
    """Sensing of the weight-reuse dataflow: each stored line is sensed into latches once per tile of
    ``batch_tile`` vectors in which some element that drives it is non-zero, then reused by those vectors."""

    sensed_lines: float  # lines sensed into latches, over every vector tile and subarray tile
    sense_cycles: float  # their sense cycles, summed over subarray tiles
    slowest_sense_cycles: float  # the busiest subarray tile's


def _tiles(geom: StreamGeometry) -> list[tuple[int, int]]:
    """(length, count) of the subarray tiles along the stream: the full ones, then the rest."""
    full, rest = divmod(geom.line_len, geom.tile_len)
    return [(n, c) for n, c in ((geom.tile_len, full), (rest, 1 if rest else 0)) if c]


def measured_reuse(x_u8: np.ndarray, geom: StreamGeometry, rows_per_sense: int, skip_zero: bool,
                   batch_tile: int) -> ReuseStats:
    """The latch fills of a real operand (bytes of an INT8 M x line_len matrix)."""
    m, k = x_u8.shape
    nz = x_u8 != 0 if skip_zero else np.ones(x_u8.shape, dtype=bool)
    pad = (-m) % batch_tile
    if pad:
        nz = np.concatenate([nz, np.zeros((pad, k), dtype=bool)])
    needed = nz.reshape(-1, batch_tile, k).any(axis=1)  # (vector tile, element): its lines are sensed once
    per_tile = []
    for start in range(0, k, geom.tile_len):
        c = needed[:, start:start + geom.tile_len].sum(axis=1)
        per_tile.append(int(((c + rows_per_sense - 1) // rows_per_sense).sum()) * geom.lines_per_bit)
    return ReuseStats(sensed_lines=float(needed.sum()) * geom.lines_per_bit, sense_cycles=float(sum(per_tile)),
                      slowest_sense_cycles=float(max(per_tile, default=0)))


def expected_reuse(m: int, geom: StreamGeometry, density: list[float], rows_per_sense: int, skip_zero: bool,
                   batch_tile: int) -> ReuseStats:
    """The expected latch fills of M vectors with independent bits (bit ``i`` set with probability
    ``density[i]``): an element is non-zero with probability q = 1 - prod(1 - p_i), and a line is needed by a
    tile of t vectors with probability 1 - (1 - q)^t."""
    q1 = 1.0 - float(np.prod([1.0 - p for p in density])) if skip_zero else 1.0
    full, rest = divmod(m, batch_tile)
    sensed = cycles = slowest = 0.0
    for length, count in _tiles(geom):
        cyc = 0.0
        for t, n in ((batch_tile, full), (rest, 1 if rest else 0)):
            if not n:
                continue
            q = 1.0 - (1.0 - q1) ** t
            sensed += n * count * length * q
            cyc += n * expected_ceil(length, q, rows_per_sense)
        cycles += cyc * count
        slowest = max(slowest, cyc)
    return ReuseStats(sensed_lines=sensed * geom.lines_per_bit, sense_cycles=cycles * geom.lines_per_bit,
                      slowest_sense_cycles=slowest * geom.lines_per_bit)


def stream_op(geom: StreamGeometry, st: StreamStats, device_component: str, phase: str, layer: str,
              region: str = "weights", copies: int = 1, macs: int = 0, reuse: ReuseStats | None = None,
              logic_ratio: float = 1.0, in_cell: bool = False) -> OpRecord:
    """The op of streaming an operand with statistics ``st`` (``copies`` alike GEMMs, e.g. groups) that performs
    ``macs`` multiply-accumulates.

    With ``reuse`` (the weight-reuse dataflow) the stored lines are sensed into latches once per vector tile
    (``reuse``) and every active line of every vector reads the latches instead of the cells; the AND-and-count
    passes then run at the logic clock, ``logic_ratio`` sense cycles each, after the latch fills. With
    ``in_cell`` (a digital SRAM CIM array) no cell is sensed: each AND result of 1 switches the gate beside its
    cell, which the cell's own storage node drives.
    """
    m = st.vectors
    lines = st.ones * geom.lines_per_bit
    counts = {
        geom.line_action: lines * geom.other_tiles,
        (device_component, "read"): lines * geom.cells_per_line,
        ("sense_amp", "sense"): st.sense_cycles * geom.cells_per_line,
        ("column_counter", "increment"): st.increments,
        ("adder_tree", "combine"): st.active_passes * geom.outputs_per_pass,
        ("shift_add", "accumulate"): st.active_passes * geom.outputs_per_pass,
        ("psum", "add"): m * geom.n_out * max(geom.psum_tiles - 1, 0),
        ("input_buffer", "read_bit"): m * geom.line_len * N_BITS,
        ("output_buffer", "write_bit"): m * geom.n_out * ACC_BITS,
    }
    if in_cell:
        del counts[(device_component, "read")], counts[("sense_amp", "sense")]
        counts[("cell_gate", "evaluate")] = st.increments
    slowest = st.slowest_tile_cycles
    chunk_cycles = np.asarray(st.chunk_cycles, dtype=float)
    if reuse is not None:
        counts.update({
            geom.line_action: reuse.sensed_lines * geom.other_tiles,
            (device_component, "read"): reuse.sensed_lines * geom.cells_per_line,
            ("sense_amp", "sense"): reuse.sense_cycles * geom.cells_per_line,
            ("latch", "write_bit"): reuse.sensed_lines * geom.cells_per_line,
            ("latch", "read_bit"): lines * geom.cells_per_line,
        })
        slowest = slowest * logic_ratio + reuse.slowest_sense_cycles
        chunk_cycles = chunk_cycles * logic_ratio + reuse.slowest_sense_cycles / max(1, len(chunk_cycles))
    # Tiles along the stream run in parallel subarrays; the slowest one sets the time, plus one
    # cycle for the combine/accumulate pipeline to drain.
    busy = slowest > 0
    chunks = np.ceil(chunk_cycles).astype(np.int64)
    return OpRecord(phase=phase, kind="gemm", layer=layer, region=region,
                    counts={k: round(v * copies) for k, v in counts.items()},
                    cycles=math.ceil(slowest) + 1 if busy else 0, shape=(m, geom.line_len, geom.n_out),
                    chunk_cycles=chunks + (chunks > 0), plane_ones=st.plane_ones, macs=macs)
