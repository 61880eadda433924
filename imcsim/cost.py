"""Counts x per-action costs -> energy and latency breakdowns. Pure functions.

A :class:`CostResult` is frozen and additive: the cost of two op streams is
the sum of their costs (energies and counts add per action, latencies add per
phase because the schedule runs phases one after another).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from imcsim.actions import ActionKey, ActionTable


def _frozen(d: Mapping) -> Mapping:
    return MappingProxyType(dict(sorted(d.items())))


@dataclass(frozen=True)
class CostResult:
    """Energy per action (J), count per action, latency per phase (s)."""

    counts: Mapping[ActionKey, int]
    energy_j: Mapping[ActionKey, float]
    latency_s: Mapping[str, float]

    def __add__(self, other: CostResult) -> CostResult:
        counts: Counter = Counter(self.counts)
        counts.update(other.counts)
        energy: Counter = Counter(self.energy_j)
        energy.update(other.energy_j)
        latency: Counter = Counter(self.latency_s)
        latency.update(other.latency_s)
        return CostResult(_frozen(counts), _frozen(energy), _frozen(latency))

    def scaled(self, factor: float) -> CostResult:
        """The cost of ``factor`` repetitions of this stream (one step standing for many)."""
        if factor == 1.0:
            return self
        return CostResult(_frozen({k: round(n * factor) for k, n in self.counts.items()}),
                          _frozen({k: e * factor for k, e in self.energy_j.items()}),
                          _frozen({k: t * factor for k, t in self.latency_s.items()}))

    @property
    def total_energy_j(self) -> float:
        return float(sum(self.energy_j.values()))

    @property
    def total_latency_s(self) -> float:
        return float(sum(self.latency_s.values()))

    def energy_by_component_j(self) -> dict[str, float]:
        out: Counter = Counter()
        for (comp, _), e in self.energy_j.items():
            out[comp] += e
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


EMPTY = CostResult(_frozen({}), _frozen({}), _frozen({}))


def cost(counts: Mapping[ActionKey, int], table: ActionTable, phase_cycles: Mapping[str, int],
         t_cycle_s: float) -> CostResult:
    """Cost a tally: energy = count x energy per action; latency = cycles x cycle time."""
    energy = {k: n * table.energy_j(k) for k, n in counts.items() if n}
    latency = {p: c * t_cycle_s for p, c in phase_cycles.items()}
    return CostResult(_frozen({k: int(n) for k, n in counts.items() if n}), _frozen(energy), _frozen(latency))


def static_cost(power_w: Mapping[str, float], cycles: int, t_cycle_s: float) -> CostResult:
    """Static energy of ``cycles`` cycles at ``power_w`` (by part): actions ``("leakage", part)`` counted once per
    cycle, so a tally's time and its static energy stay one figure (no latency: the time is the schedule's)."""
    counts = {("leakage", part): cycles for part, p in power_w.items() if p > 0 and cycles}
    energy = {("leakage", part): p * cycles * t_cycle_s for part, p in power_w.items() if p > 0 and cycles}
    return CostResult(_frozen(counts), _frozen(energy), _frozen({}))


def leakage_cost(energy_j: Mapping[str, float], cycles: int, wakes: int) -> CostResult:
    """Static energy already integrated over ``cycles`` (by part, under power gating): actions ``("leakage",
    part)`` counted once per cycle, and ``("leakage", "wake")`` once per wake-up of a gated block."""
    counts = {("leakage", part): (wakes if part == "wake" else cycles) for part, e in energy_j.items() if e > 0}
    energy = {("leakage", part): e for part, e in energy_j.items() if e > 0}
    return CostResult(_frozen(counts), _frozen(energy), _frozen({}))
