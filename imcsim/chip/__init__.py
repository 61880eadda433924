"""A chip of several macros: the main one (the run's device and circuit) and further macros of other device and
circuit cards (``chip.macros``), sharing the main circuit's global buffer, DRAM, interconnect and digital unit.

:class:`Chip` stands where a circuit stands: every layer is stored in, computed by and written back through the
macro the placement gives it (``chip.placement``: ``single``, ``trainable`` -- the layers whose weights train in
one macro --, or ``by_name`` -- layer-name globs to macros); everything else is the main macro's.

The ops of a further macro are its own (its device's reads and writes, its sensing, drivers and adders), with
its components named ``NAME.role`` in the chip's action table (the shared roles keep their names) and their
cycles converted to the main macro's cycle. Static power, area and idle power add the further macros' arrays and
peripheral logic; the shared memory is counted once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Iterator, Mapping

import numpy as np

from imcsim.actions import ActionTable
from imcsim.circuits.base import ArrayCircuit, CapacityError, powered_static_w
from imcsim.ops import OpRecord

SHARED_ROLES = frozenset({"digital", "global_buffer", "dram", "interconnect", "logic_leakage"})
"""Roles every macro of a chip shares (the main circuit's): their actions keep their names."""
_GROUP = re.compile(r"\.g\d+$")  # a stored group of a grouped layer: NAME.g<i>


class PlacementError(ValueError):
    """A placement that cannot be applied to the workload's layers (``key`` names the setting)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class MacroFull(CapacityError):
    """A further macro's weights do not fit its subarrays (``key`` names its array size)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class _Merged(Mapping):
    """Read-through view of several macros' stored matrices (layer -> StoredMatrix)."""

    def __init__(self, parts: list[Mapping]) -> None:
        self.parts = parts

    def __getitem__(self, key):
        for p in self.parts:
            if key in p:
                return p[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator:
        for p in self.parts:
            yield from p

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


class Chip:
    """The main macro and further macros (see the module docstring)."""

    def __init__(self, main: ArrayCircuit, others: Mapping[str, ArrayCircuit], placement) -> None:
        self.main = main
        self.others = dict(others)
        self.placement_spec = placement
        self.home: dict[str, str] = {}  # layer -> further macro (absent: the main macro)
        self._local = {name: {*(set(m.blocks) - SHARED_ROLES), m.device.component} for name, m in self.others.items()}
        entries = dict(main.actions.items())
        for name, m in self.others.items():
            entries.update({(self._rename(name, c), a): spec for (c, a), spec in m.actions.items()
                            if c in self._local[name]})
        self.actions = ActionTable(entries)

    def __getattr__(self, attr: str):
        return getattr(self.main, attr)

    # --- placement ------------------------------------------------------------------

    def assign_layers(self, trainable: Mapping[str, bool]) -> None:
        """Give each layer (name -> whether its weights train) its macro by the placement policy."""
        p = self.placement_spec
        self.home = {}
        if p.policy == "trainable":
            self.home = {name: p.macro for name, trains in trainable.items() if trains}
        elif p.policy == "by_name":
            for glob, macro in p.layers.items():
                hits = [n for n in trainable if fnmatch.fnmatchcase(n, glob)]
                if not hits:
                    raise PlacementError(f"matches no layer of the workload (layers: "
                                         f"{', '.join(sorted(trainable)[:6])}{', ...' if len(trainable) > 6 else ''})",
                                         key=f"chip.placement.layers.{glob}")
                for n in hits:
                    if macro != "main":
                        self.home.setdefault(n, macro)
                    else:
                        self.home.setdefault(n, "")
            self.home = {n: m for n, m in self.home.items() if m}

    def macro_of(self, layer: str) -> str:
        """The macro holding ``layer`` ("main" or a further macro's name)."""
        return self.home.get(layer) or self.home.get(_GROUP.sub("", layer)) or "main"

    def _circuit(self, layer: str) -> tuple[str, ArrayCircuit]:
        name = self.macro_of(layer)
        return name, (self.main if name == "main" else self.others[name])

    @staticmethod
    def _rename(macro: str, component: str) -> str:
        return f"{macro}.{component}"

    def _own(self, macro: str, op: OpRecord) -> OpRecord:
        """A further macro's op in the chip's terms: its components renamed, its cycles in the main cycle."""
        if macro == "main":
            return op
        local = self._local[macro]
        counts = {(self._rename(macro, c) if c in local else c, a): n for (c, a), n in op.counts.items()}
        ratio = self.others[macro].t_cycle_s / self.main.t_cycle_s
        chunks = None if op.chunk_cycles is None else np.ceil(np.asarray(op.chunk_cycles) * ratio).astype(np.int64)
        return dataclasses.replace(op, counts=counts, cycles=math.ceil(op.cycles * ratio), chunk_cycles=chunks)

    def _route(self, method: str, layer: str, *args, **kwargs):
        macro, circuit = self._circuit(layer)
        try:
            out = getattr(circuit, method)(*args, **kwargs)
        except CapacityError as err:
            if macro == "main":
                raise
            raise MacroFull(f"macro {macro}: {err}", key=f"chip.macros.{macro}.circuit.array.n_subarrays") from None
        return self._owned(macro, out)

    def _owned(self, macro: str, out):
        """``out`` (an op, or ops inside lists and tuples) in the chip's terms."""
        if isinstance(out, OpRecord):
            return self._own(macro, out)
        if isinstance(out, (list, tuple)):
            return type(out)(self._owned(macro, o) for o in out)
        return out

    # --- the circuit protocol, routed by layer ---------------------------------------

    def placement(self, name, k, n, groups=1):
        return self._route("placement", name, name, k, n, groups)

    def store(self, name, w_int8, groups=1, rows=None):
        return self._route("store", name, name, w_int8, groups=groups, rows=rows)

    def update_weights(self, name, new_int8):
        return self._route("update_weights", name, name, new_int8)

    def write_back(self, name, new_int8, phase="update", region="weights"):
        return self._route("write_back", name, name, new_int8, phase=phase, region=region)

    def forward(self, x, name, phase="forward", count=True, samples=1):
        return self._route("forward", name, x, name, phase=phase, count=count, samples=samples)

    def forward_counts(self, x, name, phase="forward", samples=1):
        return self._route("forward_counts", name, x, name, phase=phase, samples=samples)

    def backward_input(self, dy, name, samples=1):
        return self._route("backward_input", name, dy, name, samples=samples)

    def backward_input_counts(self, dy, name, samples=1):
        return self._route("backward_input_counts", name, dy, name, samples=samples)

    def weight_grad(self, x, dy, name, samples=1):
        return self._route("weight_grad", name, x, dy, name, samples=samples)

    def expected_forward(self, m, k, n, groups, samples, density, weight_bit_density, layer):
        return self._route("expected_forward", layer, m, k, n, groups, samples, density, weight_bit_density, layer)

    def expected_input_grad(self, m, k, n, groups, samples, density, weight_bit_density, layer):
        return self._route("expected_input_grad", layer, m, k, n, groups, samples, density, weight_bit_density,
                           layer)

    def expected_weight_grad(self, m, k, n, groups, samples, x_density, dy_density, layer, rng):
        return self._route("expected_weight_grad", layer, m, k, n, groups, samples, x_density, dy_density, layer,
                           rng)

    # --- what the chip adds up ---------------------------------------------------------

    @property
    def circuits(self) -> dict[str, ArrayCircuit]:
        return {"main": self.main, **self.others}

    @property
    def memo_writes(self) -> bool:
        return self.main.memo_writes

    @memo_writes.setter
    def memo_writes(self, value: bool) -> None:
        for c in self.circuits.values():
            c.memo_writes = value

    @property
    def stored(self) -> Mapping:
        return _Merged([c.stored for c in self.circuits.values()])

    @property
    def transposed(self) -> Mapping:
        return _Merged([c.transposed for c in self.circuits.values()])

    @property
    def scratch(self) -> Mapping:
        return _Merged([c.scratch for c in self.circuits.values()])

    def matrices(self):
        out = {}
        for c in self.circuits.values():
            out.update(c.matrices())
        return out

    @property
    def subarrays_used(self) -> int:
        return sum(c.subarrays_used for c in self.circuits.values())

    @property
    def device_components(self) -> frozenset[str]:
        return frozenset({self.main.device.component,
                          *(self._rename(n, m.device.component) for n, m in self.others.items())})

    @property
    def write_driver_count(self) -> int:
        return sum(c.write_driver_count for c in self.circuits.values())

    def utilization(self) -> float:
        cells = used = 0.0
        for c in self.circuits.values():
            a = c.card.array
            cells += sum(s.values.size * c.cells_per_weight for s in c.matrices().values())
            used += c.subarrays_used * a.rows * a.cols
        return cells / used if used else 0.0

    def level(self, component: str) -> str:
        macro, _, rest = component.partition(".")
        if rest and macro in self.others:
            return self.others[macro].level(rest)
        return self.main.level(component)

    def area_m2(self) -> float:
        return self.main.area_m2() + sum(m.macro_area_m2() for m in self.others.values())

    def leakage_domains(self, temperature_k: float, shared: bool = True) -> list:
        """The main macro's blocks and shared blocks, and each further macro's subarrays."""
        return [*self.main.leakage_domains(temperature_k, shared),
                *(d for m in self.others.values() for d in m.leakage_domains(temperature_k, shared=False))]

    def static_power_w(self, temperature_k: float) -> dict[str, float]:
        """Every macro's blocks powered (a further macro's own: its subarrays and write drivers), the shared
        digital unit and buffer once, and DRAM's standby."""
        return powered_static_w(self.leakage_domains(temperature_k), self.main.dram.card)

    def idle_power_w(self, temperature_k: float, buffer_bits: float, dram_bits: float) -> float:
        arrays = sum(m.idle_power_w(temperature_k, 0.0, 0.0) for m in self.others.values())  # volatile cells
        return self.main.idle_power_w(temperature_k, buffer_bits, dram_bits) + arrays


__all__ = ["SHARED_ROLES", "Chip", "MacroFull", "PlacementError", "macros_of"]


def macros_of(circuit) -> list:
    """The macros of a circuit: a chip's main and further macros, or the one macro."""
    if isinstance(circuit, Chip):
        return [circuit.main, *circuit.others.values()]
    return [circuit]
