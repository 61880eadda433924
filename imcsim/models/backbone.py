"""The backbone of a continual-learning workload, from any model source, mapped onto the hardware.

:func:`build_backbone` returns a feature extractor whose conv and linear layers are IMC layers named
``backbone.<module path>`` (the built-in ``tiny_cnn``, ``mobilenet_v2`` and ``proxylessnas_mobile``
name theirs ``backbone.b<i>.<part>``), with a ``feature_dim``; :func:`provenance` says where it came from.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imcsim.models.mapping import MappingError, array_modules, map_to_array
from imcsim.models.sources import (
    ModelSourceError,
    call_factory,
    factory_file,
    file_digest,
    strip_classifier,
)
from imcsim.models.zoo import ZOO
from imcsim.workloads.backbones import MobileNetV2, ProxylessNASMobile
from imcsim.workloads.models import TinyCNN

BUILT_IN = {
    "tiny_cnn": "a 4-block CNN for small images (block 0 is the stem); `width` sets its base width",
    "mobilenet_v2": "MobileNetV2 (Sandler et al., CVPR 2018): stem, 17 inverted residuals, final 1x1 conv",
    "proxylessnas_mobile": "ProxylessNAS-Mobile (Cai et al., ICLR 2019): stem, 20 MBConvs, final 1x1 conv",
}
"""Backbones built from IMC layers directly (block names ``backbone.b<i>.<part>``)."""


def zoo_names() -> list[str]:
    """Every network name the zoo source takes."""
    return sorted({*BUILT_IN, *ZOO})


def describe_zoo() -> dict[str, str]:
    """Zoo name -> one-line description."""
    return {**{k: e.description for k, e in ZOO.items()}, **BUILT_IN}


def _kwargs_for(fn, kwargs: dict[str, Any], name: str) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    bad = sorted(set(kwargs) - set(params))
    if bad:
        valid = sorted(k for k in params if k != "in_channels")
        raise ModelSourceError(f"{name} takes no argument {bad} (valid: {', '.join(valid) or 'none'})",
                               "model.kwargs")
    return kwargs


def build_backbone(spec: Any, in_channels: int, image_size: int, weights: bool = True) -> nn.Module:
    """The mapped feature extractor of a ``workload.model`` spec (``source``, ``arch``, ``kwargs``,
    ``factory``, ``path``, ``width``) for ``in_channels`` x ``image_size`` images.

    ``weights``: an ONNX file's weights are needed (functional runs); cost-only runs take its shapes.
    Raises :class:`ModelSourceError` (with the ``workload.model`` key) for a model it cannot use.
    """
    source = spec.source
    try:
        if source == "zoo":
            model = _zoo(spec, in_channels)
        elif source == "python":
            model = call_factory(spec.factory, dict(spec.kwargs))
        else:
            from imcsim.models.onnx_import import OnnxError, load_onnx

            try:
                model = load_onnx(spec.path, weights=weights)
            except OnnxError as err:
                raise ModelSourceError(str(err), "model.path") from None
        if source != "zoo" or spec.arch in ZOO:
            example = torch.empty(2, in_channels, image_size, image_size)  # two samples: batch-size-free shapes
            model, _ = strip_classifier(model, example)
            model = map_to_array(model, prefix="backbone.")
        array_modules(model)
    except MappingError as err:
        raise ModelSourceError(str(err), "model") from None
    return model


def _zoo(spec: Any, in_channels: int) -> nn.Module:
    try:
        return _zoo_network(spec, in_channels)
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as err:  # arguments the builder cannot take
        if isinstance(err, ModelSourceError):
            raise
        raise ModelSourceError(f"{spec.arch}: {type(err).__name__}: {err}", "model.kwargs") from None


def _zoo_network(spec: Any, in_channels: int) -> nn.Module:
    arch = spec.arch
    kwargs = dict(spec.kwargs)
    if arch == "tiny_cnn":
        return TinyCNN(in_channels, int(kwargs.pop("width", spec.width)))
    if arch == "mobilenet_v2":
        return MobileNetV2(in_channels, **_kwargs_for(MobileNetV2.__init__, kwargs, arch))
    if arch == "proxylessnas_mobile":
        return ProxylessNASMobile(in_channels, **_kwargs_for(ProxylessNASMobile.__init__, kwargs, arch))
    entry = ZOO.get(arch)
    if entry is None:
        raise ModelSourceError(f"unknown zoo network {arch!r}; valid: {', '.join(zoo_names())}", "model.arch")
    return entry.builder(in_channels, **_kwargs_for(entry.builder, kwargs, arch))


def provenance(spec: Any) -> dict[str, Any]:
    """Where the model came from: zoo name and arguments, the factory (and its file's SHA-256), or the
    ONNX file with its SHA-256."""
    if spec.source == "zoo":
        out: dict[str, Any] = {"source": "zoo", "arch": spec.arch, "kwargs": dict(spec.kwargs)}
        if spec.arch == "tiny_cnn":
            out["kwargs"].setdefault("width", spec.width)
        return out
    if spec.source == "python":
        out = {"source": "python", "factory": spec.factory, "kwargs": dict(spec.kwargs)}
        path = factory_file(spec.factory)
        if path and Path(path).is_file():
            out["file_sha256"] = file_digest(path)
        return out
    return {"source": "onnx", "path": spec.path, "file_sha256": file_digest(spec.path)}


def architecture_hash(rows: list[tuple]) -> str:
    """SHA-256 (first 16 hex digits) of a model's layer table: names, GEMM shapes, groups, trainability."""
    blob = repr(sorted(rows)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_provenance(card: Any, mode: str) -> dict[str, Any]:
    """The provenance of a workload card's model in run ``mode`` (continual learning: its source; adaptation:
    the transformer's sizes as its preset or the card gives them)."""
    if getattr(card, "kind", "") == "lora_adaptation":
        spec = card.cost_only.model if mode == "cost_only" else card.model
        return {"source": "zoo", "arch": spec.arch or "transformer", "kwargs": spec.model_dump(exclude={"arch"}, by_alias=False)}
    return provenance(card.model)
