"""Static energy of a schedule under power gating: each block leaks in full while its resource is busy, and in
an idle interval its domain's policy gates (:mod:`imcsim.components.power`) it keeps a residual fraction, after
paying a wake-up; DRAM drops to power-down or self refresh between bursts.

A schedule's idle intervals are read per resource (:func:`idle_gaps`): the segments that hold it are merged
into busy intervals, and the gaps between them are its idle intervals; the gap before the first use and the
one after the last use of a step join into one, since steps run back to back. A block whose resource a
step does not use is idle for the whole step; one the run never schedules is idle for the whole run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from imcsim.components.memory import DramCard
from imcsim.components.power import PowerGatingCard
from imcsim.ops import region_label
from imcsim.sim.engine import Schedule
from imcsim.sim.graph import ARRAY_PREFIX, BUFFER, DIGITAL, DRAM, WRITE_DRIVERS

_SHARED_RESOURCE = {"digital": DIGITAL, "write_drivers": WRITE_DRIVERS, "buffer": BUFFER}


def _held(sched: Schedule, key: np.ndarray) -> tuple[np.ndarray, ...]:
    """The intervals in which each resource is held, keyed per resource by ``key[resource id]`` and sorted by
    (key, start): (key, start, end, reach, first), ``reach`` the latest end so far within the key and ``first``
    marking each key's first interval (empty intervals dropped)."""
    c = sched.compiled
    counts = np.diff(c.res_ptr)
    k = key[c.res_id]
    start = np.repeat(sched.start, counts).astype(np.int64)
    end = np.repeat(sched.end, counts).astype(np.int64)
    keep = end > start
    k, start, end = k[keep], start[keep], end[keep]
    order = np.lexsort((start, k))
    k, start, end = k[order], start[order], end[order]
    shift = k * (int(end.max(initial=0)) + 1)  # keys on disjoint ranges, so one running maximum serves all
    reach = np.maximum.accumulate(end + shift) - shift
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    return k, start, end, reach, first


def idle_gaps(sched: Schedule) -> dict[str, np.ndarray]:
    """Idle intervals (cycles) of every resource the schedule uses, the wrap-around gap included."""
    c = sched.compiled
    span = sched.makespan
    if not len(c.res_id) or span <= 0:
        return {}
    res, start, _, reach, first = _held(sched, np.arange(len(c.resources), dtype=np.int64))
    last = np.ones(len(res), dtype=bool)
    last[:-1] = first[1:]
    gap = np.zeros(len(res), dtype=np.int64)
    gap[1:] = start[1:] - reach[:-1]
    inner = (~first) & (gap > 0)
    ids = res[first]
    wrap = start[first] + (span - reach[last])
    inner_res, inner_gap = res[inner], gap[inner]
    lo, hi = np.searchsorted(inner_res, ids, side="left"), np.searchsorted(inner_res, ids, side="right")
    out: dict[str, np.ndarray] = {}
    for i, r in enumerate(ids):
        g = inner_gap[lo[i]:hi[i]]
        out[c.resources[r]] = np.append(g, wrap[i]) if wrap[i] > 0 else g
    return out


def busy_union(sched: Schedule, group) -> dict[str, int]:
    """Cycles in which at least one resource of each group (``group(resource name) -> group``) is held."""
    c = sched.compiled
    if not len(c.res_id):
        return {}
    names = [group(r) for r in c.resources]
    index = {g: i for i, g in enumerate(dict.fromkeys(names))}
    gid, start, _, reach, first = _held(sched, np.array([index[g] for g in names], dtype=np.int64))
    prev = np.zeros_like(reach)
    prev[1:] = reach[:-1]
    # the part of each interval the ones before it in its group did not cover
    new = np.where(first, reach - start, np.maximum(0, reach - np.maximum(prev, start)))
    busy = np.bincount(gid, weights=new, minlength=len(index))
    return {g: int(busy[i]) for g, i in index.items()}


@dataclass
class IdleRecord:
    """Idle intervals of a run's schedules, per resource, the cycles they span, and per resource group the
    cycles in which any of its resources is busy."""

    cycles: int = 0
    gaps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    steps: int = 0
    busy: dict[str, int] = field(default_factory=dict)

    def add(self, sched: Schedule, group=None) -> None:
        span = sched.makespan
        if group is not None:
            for g, b in busy_union(sched, group).items():
                self.busy[g] = self.busy.get(g, 0) + b
        found = idle_gaps(sched)
        for name in self.gaps.keys() - found.keys():  # known, unused this step: idle the whole step
            self.gaps[name].append(np.array([span], dtype=np.int64))
        for name, g in found.items():
            if name not in self.gaps and self.steps:  # first used now: idle in every step before
                self.gaps[name] = [np.array([self.cycles], dtype=np.int64)]
            self.gaps.setdefault(name, []).append(g)
        self.cycles += span
        self.steps += 1

    def of(self, resource: str) -> np.ndarray:
        """Idle intervals of ``resource`` (the whole span when it was never used)."""
        parts = self.gaps.get(resource)
        if not parts:
            return np.array([self.cycles], dtype=np.int64) if self.cycles else np.zeros(0, dtype=np.int64)
        return np.concatenate(parts)


@dataclass(frozen=True)
class StaticEnergy:
    """Static energy of a schedule by part (array, periphery, buffer, dram, wake), wake-ups, and per domain the
    energy with and without gating."""

    energy_j: dict[str, float]
    wakes: int
    by_domain: dict[str, tuple[float, float]]  # domain -> (energy J, energy ungated J)


def _resource(d) -> str | None:
    if d.matrix is not None:
        return ARRAY_PREFIX + region_label(*d.matrix)
    return _SHARED_RESOURCE.get(d.domain)


def static_energy(domains: Iterable, dram: DramCard, gating: PowerGatingCard, idle: IdleRecord,
                  t_cycle_s: float, vdd_v: float) -> StaticEnergy:
    """Static energy of ``idle.cycles`` cycles of the blocks ``domains`` (circuit ``LeakDomain`` s) and DRAM."""
    total_s = idle.cycles * t_cycle_s
    energy = {"array": 0.0, "periphery": 0.0, "buffer": 0.0, "dram": 0.0, "wake": 0.0}
    by_domain: dict[str, list[float]] = {}
    wakes = 0
    cache: dict[str, np.ndarray] = {}
    for d in domains:
        if d.power_w <= 0.0 or total_s <= 0.0:
            continue
        name = _resource(d)
        gaps = cache.get(name) if name else None
        if gaps is None:
            gaps = cache[name] = idle.of(name) if name else np.zeros(0, dtype=np.int64)
        residual = gating.retention_residual if d.retentive else gating.residual
        e_wake = gating.wake_energy_j(d.area_m2, vdd_v, d.retentive)
        threshold = gating.threshold_s(d.domain, d.power_w, e_wake, residual)
        gated = gaps[gaps * t_cycle_s >= threshold] * t_cycle_s - gating.wake_time_s
        gated = gated[gated > 0]
        off_s = float(gated.sum())
        e = d.power_w * (total_s - off_s) + residual * d.power_w * off_s
        energy[d.part] += e
        energy["wake"] += len(gated) * e_wake
        wakes += len(gated)
        row = by_domain.setdefault(d.domain, [0.0, 0.0])
        row[0] += e + len(gated) * e_wake
        row[1] += d.power_w * total_s
    e_dram = dram_energy(dram, gating.policy_of("dram"), idle.of(DRAM) * t_cycle_s, total_s)
    energy["dram"] += e_dram
    by_domain["dram"] = [e_dram, dram.background_power_w * total_s]
    return StaticEnergy(energy, wakes, {k: (v[0], v[1]) for k, v in by_domain.items()})


def dram_energy(card: DramCard, policy: str, gaps_s: np.ndarray, total_s: float) -> float:
    """DRAM background energy over ``total_s``: active standby while busy; in each idle interval the cheapest
    state the policy allows (``idle``) or the deepest one that fits (``always``), its exit spent in standby."""
    p_on = card.background_power_w
    if policy == "never" or not gaps_s.size:
        return p_on * total_s
    busy = max(0.0, total_s - float(gaps_s.sum()))
    standby = p_on * gaps_s
    pd_exit, sr_exit = card.power_down_exit_s, card.self_refresh_exit_s
    down = np.where(gaps_s >= pd_exit, card.power_down_power_w * (gaps_s - pd_exit) + p_on * pd_exit, standby)
    refresh = np.where(gaps_s >= sr_exit, card.self_refresh_power_w * (gaps_s - sr_exit) + p_on * sr_exit, standby)
    if policy == "always":
        chosen = np.where(gaps_s >= sr_exit, refresh, down)
    else:
        chosen = np.minimum(standby, np.minimum(down, refresh))
    return p_on * busy + float(chosen.sum())


__all__ = ["IdleRecord", "StaticEnergy", "busy_union", "dram_energy", "idle_gaps", "static_energy"]
