"""The op record: one frozen type for every counted operation of a run.

An op is what a circuit did for one piece of a workload (one GEMM phase of a
layer, a write-back of its weights, an optimizer update, digital work): the
actions it counted, the cycles it takes alone, and where it belongs. Every
field is set when the op is made; nothing is encoded in names. Workloads tag
the ops a circuit returns with their place in the run (:meth:`OpRecord.tagged`).

Fields that place an op:

* ``phase``: ``deploy``, ``forward``, ``input_grad``, ``weight_grad``, ``update``;
* ``kind``: ``gemm`` (in the array), ``digital`` (in the digital unit), ``write`` (cells programmed),
  ``transfer`` (data moved to or from DRAM, :mod:`imcsim.workloads.traffic`);
* ``layer``: the stored matrix (or digital layer) the op works on;
* ``region``: which cells of that layer: ``weights`` (its stored matrix),
  ``transposed`` (the stored copy of W^T of the ``transposed_copy`` dataflow),
  ``operands`` (the scratch rows that hold operand bit planes of the in-array
  weight gradient); for a DRAM transfer, the tensor it moves: ``weights`` (deployment), ``input`` (the
  step's input batch), ``spill`` / ``fill`` (a kept activation written out / read back),
  ``master_read`` / ``master_write`` (master weights and optimizer state);
* ``module``: the workload layer the op belongs to (dependencies follow it);
* ``task`` and ``step``: the training task and its step (-1: deployment).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np

from imcsim.actions import ActionKey

Phase = Literal["deploy", "forward", "input_grad", "weight_grad", "update"]
OpKind = Literal["gemm", "digital", "write", "transfer"]
Region = Literal["weights", "transposed", "operands", "input", "spill", "fill", "master_read", "master_write"]

PHASES: tuple[str, ...] = ("deploy", "forward", "input_grad", "weight_grad", "update")
TRAINING_PHASES: tuple[str, ...] = PHASES[1:]
OP_KINDS: tuple[str, ...] = ("gemm", "digital", "write", "transfer")
REGIONS: tuple[str, ...] = ("weights", "transposed", "operands", "input", "spill", "fill", "master_read",
                            "master_write")
_PLACE_FIELDS = frozenset({"phase", "region", "module", "task", "step", "layer"})


@dataclass(frozen=True, eq=False)
class OpRecord:
    """One counted operation (see the module docstring). Frozen: :meth:`tagged` makes a tagged copy."""

    phase: str
    kind: str
    layer: str
    counts: Mapping[ActionKey, int] = field(default_factory=dict)
    cycles: int = 0
    shape: tuple[int, ...] = ()
    region: str = "weights"
    module: str = ""
    task: str = ""
    step: int = -1
    # Cycles of each sample's share of the op (operands split by sample), for the event schedule;
    # None: the op is one indivisible burst of ``cycles``.
    chunk_cycles: np.ndarray | None = None
    cell_writes: np.ndarray | None = None  # writes per cell of the region (write ops)
    cell_scale: float = 1.0  # cells each entry of cell_writes stands for (a programmed sample of a large region)
    drivers: int = 0  # write ops: the write drivers issuing its pulses (its cycles follow the pulse latencies)
    plane_ones: np.ndarray | None = None  # 1 bits per plane of the streamed operand (activity statistics)
    changed_weights: int = 0  # write-back: weights whose INT8 code changed
    macs: int = 0  # multiply-accumulates the op performs (GEMMs, every group and copy included)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"op phase must be one of {PHASES}, got {self.phase!r}")
        if self.kind not in OP_KINDS:
            raise ValueError(f"op kind must be one of {OP_KINDS}, got {self.kind!r}")
        if self.region not in REGIONS:
            raise ValueError(f"op region must be one of {REGIONS}, got {self.region!r}")
        if not isinstance(self.counts, MappingProxyType):
            object.__setattr__(self, "counts", MappingProxyType({k: int(n) for k, n in self.counts.items() if n}))
        object.__setattr__(self, "cycles", int(self.cycles))

    def tagged(self, **fields) -> OpRecord:
        """A copy with ``fields`` replaced (``task``, ``step``, ``module``, ``phase`` ...), checked like a new op."""
        if fields.keys() <= _PLACE_FIELDS:  # the common case, once per op: no re-validation of the counts
            new = object.__new__(OpRecord)
            new.__dict__.update(self.__dict__)
            new.__dict__.update(fields)
            if ("phase" in fields and new.phase not in PHASES) or ("region" in fields and new.region not in REGIONS):
                raise ValueError(f"op phase/region out of range: {new.phase!r}, {new.region!r}")
            return new
        return dataclasses.replace(self, **fields)

    @property
    def home(self) -> str:
        """The module the op belongs to: its ``module``, else its layer."""
        return self.module or self.layer

    @property
    def target(self) -> tuple[str, str]:
        """The cells the op works on: (layer, region)."""
        return self.layer, self.region


def region_label(layer: str, region: str) -> str:
    """How reports name a layer's region: the layer for its weights, else the layer and the region."""
    return layer if region == "weights" else f"{layer} ({region})"


__all__ = ["OP_KINDS", "PHASES", "REGIONS", "TRAINING_PHASES", "OpKind", "OpRecord", "Phase", "Region", "region_label"]
