"""Registries of the pluggable kinds: each kind registers once, with its card model, its builder and a
one-line description; ``imcsim list kinds`` and the config loader read them.

Other packages add kinds through entry points: in the group ``imcsim.devices`` (``imcsim.circuits``,
``imcsim.workloads``) an entry point names a function that takes the registry and registers its kinds::

    [project.entry-points."imcsim.devices"]
    my_cell = "my_package.imcsim_plugin:register"

    def register(devices):
        devices.register("my_cell", MyCellCard, MyCell.from_card, "my cell: what it models")

Plug-ins load once, the first time a config or card is read (:func:`load_plugins`). A plug-in that fails to
load, or registers a name already taken, is an error naming the entry point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from imcsim.errors import InputError


@dataclass(frozen=True)
class Entry:
    """One registered kind: the card model its cards validate against, its builder and its description."""

    name: str
    card: type
    build: Callable[..., Any] | None
    description: str


class Registry(Mapping[str, type]):
    """Kinds of one section by name. As a mapping, name -> card model (what config validation needs)."""

    def __init__(self, section: str, group: str):
        self.section = section
        self.group = group
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, card: type, build: Callable[..., Any] | None, description: str) -> None:
        if not name.isidentifier():
            raise ValueError(f"{self.section} kind {name!r}: a kind is a plain identifier")
        if name in self._entries:
            raise ValueError(f"{self.section} kind {name!r} is registered already")
        if not description.strip():
            raise ValueError(f"{self.section} kind {name!r}: give a one-line description")
        self._entries[name] = Entry(name, card, build, " ".join(description.split()))

    def entry(self, name: str) -> Entry:
        return self._entries[name]

    def for_card(self, card: Any) -> Entry:
        """The entry whose card model validated ``card``."""
        for entry in self._entries.values():
            if type(card) is entry.card:
                return entry
        raise TypeError(f"no {self.section} kind has the card type {type(card).__name__}")

    @property
    def descriptions(self) -> dict[str, str]:
        return {name: e.description for name, e in self._entries.items()}

    def __getitem__(self, name: str) -> type:
        return self._entries[name].card

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


DEVICES = Registry("device", "imcsim.devices")
CIRCUITS = Registry("circuit", "imcsim.circuits")
WORKLOADS = Registry("workload", "imcsim.workloads")
REGISTRIES = (DEVICES, CIRCUITS, WORKLOADS)


class PluginError(InputError):
    """A plug-in that cannot be loaded: one line naming the entry point, exit code 2."""


@functools.cache
def load_plugins() -> None:
    """Call every installed plug-in's register function once (see the module docstring)."""
    for registry in REGISTRIES:
        for ep in entry_points(group=registry.group):
            try:
                ep.load()(registry)
            except Exception as err:  # a broken plug-in is reported, never half-registered silently
                raise PluginError(f"{ep.value} failed to load: {type(err).__name__}: {err}",
                                  key=f"plug-in {ep.name} ({registry.group})") from err
