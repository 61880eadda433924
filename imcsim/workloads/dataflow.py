"""The layer dataflow graph of a model, found by running it once.

The event simulator needs to know which layer's output feeds which layer, and
where samples of a batch stop being independent. :func:`trace_dataflow` runs
one forward pass under a torch function mode that tags every tensor with the
IMC layers it was computed from:

* an IMC layer (conv or linear) records the layers its input came from as its
  producers, and its output is tagged with itself;
* every other torch function passes on the union of its inputs' tags;
* batch normalisation in training mode mixes the samples of a batch (batch
  statistics), so its output's tags are marked *coupled*: a consumer's sample
  ``s`` then needs every sample of the producer, and gradients coming back
  through it need every sample too.

The same pass records each layer's GEMM shape (M x K x N per group, groups,
samples), so on meta tensors (no data, no arithmetic) it is also the shape
source of cost-only runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

Tag = frozenset[tuple[str, bool]]  # (producer layer, coupled)
_EMPTY: Tag = frozenset()


@dataclass(frozen=True)
class LayerCall:
    """One IMC layer's GEMM in a forward pass: ``groups`` GEMMs of (m x k) @ (k x n)."""

    name: str
    m: int
    k: int
    n: int
    groups: int
    samples: int
    trainable: bool
    producers: tuple[tuple[str, bool], ...]  # (layer, coupled), in first-seen order
    input_grad: bool | None = None  # whether its input carries a gradient (None: not traced)

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.groups


@dataclass
class LayerGraph:
    """IMC layers in forward execution order, with their producers and consumers."""

    calls: list[LayerCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {c.name: c for c in self.calls}

    def __getitem__(self, name: str) -> LayerCall:
        return self._index[name]

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def consumers(self, name: str) -> list[tuple[str, bool]]:
        return self.consumer_map().get(name, [])

    def consumer_map(self) -> dict[str, list[tuple[str, bool]]]:
        """Every layer's consumers ``(layer, coupled)``, in forward order."""
        out: dict[str, list[tuple[str, bool]]] = {c.name: [] for c in self.calls}
        for c in self.calls:
            for p, coupled in c.producers:
                if p in out:
                    out[p].append((c.name, coupled))
        return out

    def needs_grad(self) -> dict[str, bool]:
        """Whether each layer's output carries a gradient (some trainable layer lies upstream or is itself)."""
        out: dict[str, bool] = {}
        for c in self.calls:
            out[c.name] = c.trainable or any(out.get(p, False) for p, _ in c.producers)
        return out


class _Tracer(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, tuple[torch.Tensor, Tag]] = {}  # id -> (tensor kept alive, tag)
        self.calls: list[LayerCall] = []
        self.samples = 1

    def tag_of(self, obj) -> Tag:
        leaves, _ = tree_flatten(obj)
        out: set[tuple[str, bool]] = set()
        for t in leaves:
            if isinstance(t, torch.Tensor):
                entry = self.tags.get(id(t))
                if entry is not None and entry[0] is t:
                    out |= entry[1]
        return frozenset(out)

    def set_tag(self, obj, tag: Tag) -> None:
        if not tag:
            return
        leaves, _ = tree_flatten(obj)
        for t in leaves:
            if isinstance(t, torch.Tensor):
                self.tags[id(t)] = (t, tag)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tag = self.tag_of((args, kwargs))
        if tag and func is F.batch_norm:
            training = kwargs.get("training", args[5] if len(args) > 5 else False)
            if training:
                tag = frozenset((name, True) for name, _ in tag)
        self.set_tag(out, tag)
        return out


_ACTIVE: list[_Tracer] = []


def active_tracer() -> _Tracer | None:
    return _ACTIVE[-1] if _ACTIVE else None


def traced_layer_call(module, x: torch.Tensor, call: Callable[[], torch.Tensor], m: int, k: int, n: int,
                      groups: int) -> torch.Tensor:
    """Run an IMC layer's forward ``call``; under a tracer, record its shape and producers."""
    tracer = active_tracer()
    if tracer is None:
        return call()
    producers = tuple(sorted(tracer.tag_of(x)))
    y = call()
    tracer.calls.append(LayerCall(module.name, m, k, n, groups, tracer.samples, bool(module.weight.requires_grad),
                                  producers, bool(x.requires_grad)))
    tracer.set_tag(y, frozenset({(module.name, False)}))
    return y


def trace_dataflow(model: nn.Module, run: Callable[[], object], samples: int) -> LayerGraph:
    """Run ``run()`` (one forward pass of ``model`` on a batch of ``samples``) and return its layer graph.

    Works on meta tensors: ``model.to("meta")`` and a meta input trace real shapes with no arithmetic.
    """
    tracer = _Tracer()
    tracer.samples = samples
    _ACTIVE.append(tracer)
    try:
        with tracer, torch.enable_grad():  # gradients flow on meta tensors too: which inputs carry one
            run()
    finally:
        _ACTIVE.pop()
    seen: dict[str, LayerCall] = {}
    for c in tracer.calls:  # a layer called twice (shared weights) keeps its first call
        seen.setdefault(c.name, c)
    return LayerGraph(list(seen.values()))
