"""Registries of the pluggable kinds: each kind registers once, with its card model, its builder and a
one-line description; ``imcsim list kinds`` and the config loader read them. Training methods register
the same way in :data:`METHODS`, with their implementation (``imcsim list methods``).

Other packages add kinds through entry points: in the group ``imcsim.devices`` (``imcsim.circuits``,
``imcsim.components``, ``imcsim.workloads``, ``imcsim.methods``) an entry point names a function that takes the registry and
registers its kinds::

    [project.entry-points."imcsim.devices"]
    my_cell = "my_package.imcsim_plugin:register"

    def register(devices):
        devices.register("my_cell", MyCellCard, MyCell.from_card, "my cell: what it models")

    def register(methods):  # in the group imcsim.methods
        methods.register("my_method", MyMethod(), "my method: what trains")

Plug-ins load once, the first time a config or card is read (:func:`load_plugins`). A plug-in that fails to
load, or registers a name already taken, is an error naming the entry point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
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
        self._entries[name] = Entry(name, card, build, _checked(self.section, name, self._entries, description))

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


def _checked(section: str, name: str, taken: Mapping[str, Any], description: str) -> str:
    """The one-line description of a new kind ``name``; a name that is no identifier or is taken is an error."""
    if not name.isidentifier():
        raise ValueError(f"{section} kind {name!r}: a kind is a plain identifier")
    if name in taken:
        raise ValueError(f"{section} kind {name!r} is registered already")
    if not description.strip():
        raise ValueError(f"{section} kind {name!r}: give a one-line description")
    return " ".join(description.split())


@dataclass(frozen=True)
class MethodEntry:
    """One registered training method: its implementation (an :class:`imcsim.methods.base.Method`) and its
    description."""

    name: str
    method: Any
    description: str


class MethodRegistry(Mapping[str, Any]):
    """Training methods by name. As a mapping, name -> implementation.

    The trainer finds a method here by name and never imports it, so a plug-in's method and a built-in one
    take the same path. The built-in methods are the package ``builtins`` names (``imcsim.methods``,
    a layer above the trainer); it is imported, and registers them, the first time the registry is read.
    """

    section = "method"

    def __init__(self, group: str, builtins: str):
        self.group = group
        self._builtins = builtins
        self._loaded = False
        self._entries: dict[str, MethodEntry] = {}

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            import_module(self._builtins)

    def register(self, name: str, method: Any, description: str) -> None:
        self._load_builtins()  # a plug-in cannot take a built-in method's name
        self._entries[name] = MethodEntry(name, method, _checked(self.section, name, self._entries, description))

    def entry(self, name: str) -> MethodEntry:
        self._load_builtins()
        return self._entries[name]

    def names_for(self, workload: str) -> list[str]:
        """The methods that apply to the workload kind ``workload``, in registration order."""
        return [name for name, method in self.items() if workload in method.workloads]

    @property
    def descriptions(self) -> dict[str, str]:
        self._load_builtins()
        return {name: e.description for name, e in self._entries.items()}

    def __getitem__(self, name: str) -> Any:
        return self.entry(name).method

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)


DEVICES = Registry("device", "imcsim.devices")
CIRCUITS = Registry("circuit", "imcsim.circuits")
WORKLOADS = Registry("workload", "imcsim.workloads")
COMPONENTS = Registry("component", "imcsim.components")
REGISTRIES = (DEVICES, COMPONENTS, CIRCUITS, WORKLOADS)
METHODS = MethodRegistry("imcsim.methods", builtins="imcsim.methods")


class PluginError(InputError):
    """A plug-in that cannot be loaded: one line naming the entry point, exit code 2."""


@functools.cache
def load_plugins() -> None:
    """Call every installed plug-in's register function once (see the module docstring)."""
    for registry in (*REGISTRIES, METHODS):
        for ep in entry_points(group=registry.group):
            try:
                ep.load()(registry)
            except Exception as err:  # a broken plug-in is reported, never half-registered silently
                raise PluginError(f"{ep.value} failed to load: {type(err).__name__}: {err}",
                                  key=f"plug-in {ep.name} ({registry.group})") from err
