"""Errors in the loop: the write failures, half-select flips and read-disturb flips a device's operating point
implies, injected into the stored bits of a functional run with a seeded generator.

A cell model offers ``error_rates()`` (per-event probabilities at its operating point). The injector draws, for
each rewrite of a stored matrix, which cells end up wrong:

* one-pulse-per-bit cells (STT, SOT): a flipped bit keeps its old value with the write error rate of its
  direction (``write_set`` for 0 -> 1, ``write_reset`` for 1 -> 0);
* SAS-MRAM groups (``group_size``): in a rewritten group, a reset fails on a cell that held 1 with the reset
  error rate (it stays 1), a set fails on a cell that ends at 1 with the set error rate (it stays 0), and an
  unselected cell flips to 1 with the half-select rate of its position, which grows with the STT currents of the
  selected cells beyond it returning through the line (``half_select_by_returns``);
* reads: a cell in the state the read polarity destabilises (1, the AP state, for ``ap_to_p``; 0 for ``p_to_ap``)
  flips with probability ``1 - (1 - p)^reads`` over the reads it has seen.

With ``verify`` (write-verify-retry), every written cell is read back and the wrong ones rewritten, up to
``max_retries`` times; the reads and the retry pulses are counted by the circuit.
Draws only happen where a flip is possible (binomial counts, then the cells), so an error-free operating point
costs next to nothing and leaves the run's other random streams untouched.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

CELLS_PER_CODE = 8  # one-bit cells per stored INT8 code (the bit-serial macro's layout)


class ErrorInjector:
    """Seeded error injection for one device (one macro)."""

    def __init__(self, device, seed: int):
        self.device = device
        self.rng = np.random.default_rng([int(seed), 0x5EED_E77])
        self.rates = device.error_rates()
        self.flips: Counter[str] = Counter()
        self.group = int(getattr(device, "group_size", 1))
        self.across_rows = bool(getattr(device, "groups_across_rows", False))
        self.half_select = np.asarray(getattr(device, "half_select_by_returns", lambda: [0.0])(), dtype=float)
        read = getattr(getattr(device, "card", None), "read", None)
        self.polarity = getattr(read, "polarity", "ap_to_p")

    # --- draws -------------------------------------------------------------------------

    def _fail(self, mask: np.ndarray, p: float, struck: np.ndarray | None = None, p_max: float = 1.0) -> np.ndarray:
        """A random subset of the True cells of ``mask``, each with probability ``p``; with ``struck`` (cells already
        picked with probability ``p_max``), a struck cell fails with ``p / p_max`` (thinning: the same law)."""
        out = np.zeros(mask.shape, dtype=bool)
        if p <= 0.0:
            return out
        if struck is not None:
            idx = np.flatnonzero(mask & struck)
            if idx.size:
                out.flat[idx[self.rng.random(idx.size) < p / p_max]] = True
            return out
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return out
        k = int(self.rng.binomial(idx.size, min(1.0, p)))
        if k:
            out.flat[self.rng.choice(idx, size=k, replace=False)] = True
        return out

    @property
    def p_max(self) -> float:
        """The largest per-cell failure probability of a write (the thinning bound)."""
        if self.group > 1:
            return max(self.rates.get("reset", 0.0), self.rates.get("set", 0.0), float(self.half_select.max()))
        return max(self.rates.get("write_set", 0.0), self.rates.get("write_reset", 0.0))

    def write_matrix(self, old: np.ndarray, new: np.ndarray, to_bits, from_bits) -> np.ndarray:
        """The INT8 codes a rewrite of a stored matrix from ``old`` to ``new`` leaves (``to_bits`` / ``from_bits``:
        its cell layout). Thinning: every cell is struck with the largest failure probability, and only a struck
        cell can fail (with its own probability over that bound), so a write with no cell struck, the usual case
        at a sound operating point, costs one binomial draw and no pass over the bits."""
        p_max = min(1.0, self.p_max)
        cells = old.size * CELLS_PER_CODE
        k = int(self.rng.binomial(cells, p_max)) if p_max > 0.0 else 0
        if not k:
            return new
        struck = np.zeros(cells, dtype=bool)
        struck[self.rng.choice(cells, size=k, replace=False)] = True
        old_bits = to_bits(old)
        out = self.write(old_bits, to_bits(new), struck.reshape(old_bits.shape), p_max)
        return from_bits(out, new.shape)

    def write(self, old: np.ndarray, new: np.ndarray, struck: np.ndarray | None = None, p_max: float = 1.0
              ) -> np.ndarray:
        """The cell bits a rewrite from ``old`` to ``new`` (0/1 arrays, rows x cells) actually leaves (``struck``:
        see :meth:`write_matrix`)."""
        old = np.asarray(old, dtype=np.uint8)
        new = np.asarray(new, dtype=np.uint8)
        if self.group > 1:
            return self._group_write(old, new, struck, p_max)
        up = (old == 0) & (new == 1)
        down = (old == 1) & (new == 0)
        fail_up = self._fail(up, self.rates.get("write_set", 0.0), struck, p_max)
        fail_down = self._fail(down, self.rates.get("write_reset", 0.0), struck, p_max)
        self.flips["write"] += int(fail_up.sum() + fail_down.sum())
        out = new.copy()
        out[fail_up] = 0
        out[fail_down] = 1
        return out

    def _group_write(self, old: np.ndarray, new: np.ndarray, struck: np.ndarray | None, p_max: float) -> np.ndarray:
        o, w = (old.T, new.T) if self.across_rows else (old, new)
        rows, cols = o.shape
        n = self.group
        pad = (-cols) % n

        def grouped(a: np.ndarray) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, pad))).reshape(rows, -1, n)

        og, ng = grouped(o), grouped(w)
        sg = None if struck is None else grouped(struck.T if self.across_rows else struck)
        rewritten = (og != ng).any(axis=-1, keepdims=True)
        out = np.where(rewritten, ng, og).astype(np.uint8)
        reset_fail = self._fail(rewritten & (og == 1) & (ng == 0), self.rates.get("reset", 0.0), sg, p_max)
        set_fail = self._fail(rewritten & (ng == 1), self.rates.get("set", 0.0), sg, p_max)
        out[reset_fail] = 1
        out[set_fail] = 0
        # half-select: an unselected cell of a rewritten group, with k selected cells beyond it (farther from the
        # transistor at position 0), switches with the rate of k returning STT currents
        selected = (ng == 1) & rewritten
        beyond = np.flip(np.cumsum(np.flip(selected, -1), -1), -1) - selected
        candidates = rewritten & (ng == 0) & selected.any(axis=-1, keepdims=True)
        hs = np.zeros(out.shape, dtype=bool)
        for k in np.unique(beyond[candidates]):
            p = float(self.half_select[min(int(k), self.half_select.size - 1)])
            hs |= self._fail(candidates & (beyond == k), p, sg, p_max)
        out[hs] = 1
        self.flips["write"] += int(reset_fail.sum() + set_fail.sum())
        self.flips["half_select"] += int(hs.sum())
        out = out.reshape(rows, -1)[:, :cols]
        return np.ascontiguousarray(out.T if self.across_rows else out)

    def _picked(self, cells: int, reads_per_cell: float) -> np.ndarray | None:
        """Cells a read disturb strikes: every cell is picked with its probability over the reads it has seen and
        flips if it is in the disturbable state (thinning: the same as drawing over the disturbable cells alone,
        with no pass over the bits when none is picked)."""
        p = self.rates.get("read_disturb", 0.0)
        if p <= 0.0 or reads_per_cell <= 0.0:
            return None
        p_cell = float(-np.expm1(reads_per_cell * np.log1p(-min(p, 1.0 - 1e-16))))
        k = int(self.rng.binomial(cells, min(1.0, p_cell)))
        return self.rng.choice(cells, size=k, replace=False) if k else None

    def _flip_read(self, bits: np.ndarray, picked: np.ndarray) -> np.ndarray | None:
        state = 1 if self.polarity == "ap_to_p" else 0
        hit = picked[bits.flat[picked] == state]
        if not hit.size:
            return None
        self.flips["read_disturb"] += int(hit.size)
        out = bits.copy()
        out.flat[hit] = 1 - state
        return out

    def read(self, bits: np.ndarray, reads_per_cell: float) -> np.ndarray:
        """The cell bits after ``reads_per_cell`` reads of every cell."""
        picked = self._picked(bits.size, reads_per_cell)
        out = None if picked is None else self._flip_read(bits, picked)
        return bits if out is None else out

    def read_matrix(self, values: np.ndarray, reads: float, to_bits, from_bits) -> np.ndarray | None:
        """A stored INT8 matrix after ``reads`` cell reads spread over its cells (``to_bits`` / ``from_bits``: its
        cell layout), or None when no cell flipped."""
        cells = values.size * CELLS_PER_CODE
        picked = self._picked(cells, reads / cells)
        if picked is None:
            return None
        out = self._flip_read(to_bits(values), picked)
        return None if out is None else from_bits(out, values.shape)
