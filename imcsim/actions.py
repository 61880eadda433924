"""Per-action costs and the combination rules, written once.

An *action* is one counted event of one component (``cell.read``,
``adder_tree.reduce``, ``sas_group.reset_pulse``). Counting and costing are
separate: simulators count actions; an :class:`ActionTable` maps each
``(component, action)`` to an :class:`ActionCost`. Energies add; serial
latencies add; parallel latencies take the maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ActionKey = tuple[str, str]


@dataclass(frozen=True)
class ActionCost:
    """Energy (J) and latency (s) of one action."""

    energy_j: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not (self.energy_j >= 0.0 and self.latency_s >= 0.0):
            raise ValueError(f"action cost must be >= 0, got {self}")

    def then(self, other: ActionCost) -> ActionCost:
        """Serial composition: energies add, latencies add."""
        return ActionCost(self.energy_j + other.energy_j, self.latency_s + other.latency_s)

    def alongside(self, other: ActionCost) -> ActionCost:
        """Parallel composition: energies add, latency is the longer one."""
        return ActionCost(self.energy_j + other.energy_j, max(self.latency_s, other.latency_s))

    def times(self, n: float) -> ActionCost:
        """``n`` repetitions in series."""
        return ActionCost(self.energy_j * n, self.latency_s * n)


ZERO = ActionCost(0.0, 0.0)


def serial(costs: Iterable[ActionCost]) -> ActionCost:
    out = ZERO
    for c in costs:
        out = out.then(c)
    return out


@dataclass(frozen=True)
class ActionSpec:
    """A costed action with a one-line description of what one count means."""

    cost: ActionCost
    description: str


class ActionTable(Mapping[ActionKey, ActionSpec]):
    """Read-only table ``(component, action) -> ActionSpec``."""

    def __init__(self, entries: Mapping[ActionKey, ActionSpec]):
        self._entries = dict(entries)

    def __getitem__(self, key: ActionKey) -> ActionSpec:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"no cost for action {key[0]}.{key[1]}") from None

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def energy_j(self, key: ActionKey) -> float:
        return self[key].cost.energy_j

    def latency_s(self, key: ActionKey) -> float:
        return self[key].cost.latency_s
