"""Per-action costs and the combination rules, written once.

An *action* is one counted event of one component (``cell.read``,
``adder_tree.reduce``, ``sas_group.reset_pulse``). Counting and costing are
separate: simulators count actions; an :class:`ActionTable` maps each
``(component, action)`` to an :class:`ActionSpec`: its cost, what one count
means, and its kind. Energies add; serial latencies add; parallel latencies
take the maximum.

Every action states its kind (:data:`ACTION_KINDS`); code that needs the
writes of a run, or its transfers, selects actions by kind, never by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

ActionKey = tuple[str, str]
ActionKind = Literal["read", "compute", "write", "write_pulse", "write_assist", "verify", "transfer", "leakage",
                     "event"]
ACTION_KINDS: dict[str, str] = {
    "read": "a stored cell read (its sense is a separate compute action)",
    "compute": "arithmetic or logic in a peripheral or the digital unit (sense, count, add, convert, MAC)",
    "write": "a cell written by a full-swing write whose line energy the cell model includes (SRAM)",
    "write_pulse": "a programming pulse applied to a non-volatile cell; the circuit's write driver issues it",
    "write_assist": "energy that helps a write pulse (an STT assist current) without being a pulse itself",
    "verify": "a read that checks a programmed cell (write-and-verify)",
    "transfer": "bits moved between a buffer, a register file or a memory and the arrays",
    "leakage": "static power over a time",
    "event": "a counted event with no cost of its own (a failed program-and-verify)",
}
WRITE_KINDS = frozenset({"write", "write_pulse"})


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
    """A costed action: what one count means, and its kind (one of :data:`ACTION_KINDS`)."""

    cost: ActionCost
    description: str
    kind: ActionKind

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"action kind must be one of {sorted(ACTION_KINDS)}, got {self.kind!r}")


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

    def kind(self, key: ActionKey) -> str:
        return self[key].kind

    def of_kind(self, *kinds: str, component: str | None = None) -> frozenset[ActionKey]:
        """The actions of the given kinds (of one component if given)."""
        return frozenset(k for k, spec in self._entries.items()
                         if spec.kind in kinds and (component is None or k[0] == component))

    def count_of_kind(self, counts: Mapping[ActionKey, float], *kinds: str, component: str | None = None) -> float:
        """Sum of ``counts`` over the actions of the given kinds."""
        keys = self.of_kind(*kinds, component=component)
        return sum(n for k, n in counts.items() if k in keys)
