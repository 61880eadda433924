"""Where a workload's network comes from: the built-in zoo, a user's Python factory, or an ONNX file.

``workload.model`` of a continual-learning card:

* ``{arch: resnet18}`` (``source: zoo``, the default): a zoo network (``imcsim list models``);
* ``{source: python, factory: "package.module:build", kwargs: {...}}``, or a file relative to the
  card or config that names it, ``factory: "my_model.py:build"``: the callable is called with
  ``kwargs`` and returns an ``nn.Module``;
* ``{source: onnx, path: model.onnx}`` (relative to the file that names it): read with the ``onnx``
  package; cost-only runs need its shapes only, functional runs its weights too.

A network from a factory or an ONNX file is a classifier as the user has it: its last linear layer (in
execution order) is its own classifier, which the workload replaces by a head per task; a factory may
instead return a feature extractor with a ``feature_dim`` attribute (as the zoo's networks are). Every
plain conv and linear layer is then mapped onto the array (:mod:`imcsim.models.mapping`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imcsim.errors import DataError

MAX_FACTORY_BYTES = 4 * 2**20
"""Largest Python model file read (a model definition is a few kB)."""


class ModelSourceError(DataError):
    """A model source that cannot be loaded or used; ``key`` is the workload-card key it concerns."""

    def __init__(self, message: str, key: str = "model") -> None:
        super().__init__(message, key)


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes: the provenance of a model file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_factory(factory: str) -> tuple[str, str]:
    """``"pkg.mod:build"`` or ``"file.py:build"`` -> (module or file, attribute)."""
    target, sep, attr = factory.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise ModelSourceError(f"factory must be 'package.module:function' or 'file.py:function' (got {factory!r})",
                               "model.factory")
    return target, attr


def factory_file(factory: str) -> str | None:
    """The Python file a factory names (None for a module path)."""
    target, _ = split_factory(factory)
    return target if target.endswith(".py") else None


def load_factory(factory: str) -> Callable[..., Any]:
    """The callable a factory string names (a ``.py`` path is loaded as a fresh module)."""
    target, attr = split_factory(factory)
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelSourceError(f"{target}: no such file", "model.factory")
            if path.stat().st_size > MAX_FACTORY_BYTES:
                raise ModelSourceError(f"{target}: larger than {MAX_FACTORY_BYTES} bytes; not a model file",
                                       "model.factory")
            name = "imcsim_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(target)
    except ModelSourceError:
        raise
    except (Exception, SystemExit) as err:  # the user's code: any failure is an input error, named
        raise ModelSourceError(f"cannot import {target!r}: {type(err).__name__}: {err}", "model.factory") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelSourceError(f"{target!r} has no callable {attr!r}", "model.factory")
    return fn


def call_factory(factory: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the factory with ``kwargs``; the result must be an ``nn.Module``."""
    fn = load_factory(factory)
    try:
        model = fn(**kwargs)
    except (Exception, SystemExit) as err:
        raise ModelSourceError(f"{factory}({', '.join(kwargs)}) failed: {type(err).__name__}: {err}",
                               "model.kwargs" if kwargs else "model.factory") from None
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"{factory} returned {type(model).__name__}, not a torch nn.Module", "model.factory")
    return model


def strip_classifier(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """Replace the model's own classifier (its last linear layer in execution order) by an identity;
    returns the feature extractor and its feature width. A model with ``feature_dim`` is one already."""
    dim = getattr(model, "feature_dim", None)
    order: list[str] = []
    meta = copy.deepcopy(model).to("meta")
    for name, m in meta.named_modules():
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda mod, i, o, name=name: order.append(name))
    try:
        with torch.no_grad():
            meta(example.to("meta"))
    except Exception as err:  # the user's model
        raise ModelSourceError(f"the model fails on a {tuple(example.shape)} input: {type(err).__name__}: {err}",
                               "model") from None
    if isinstance(dim, int):
        return model, dim
    if not order:
        raise ModelSourceError("the model has no nn.Linear layer to take as its classifier, and no feature_dim "
                               "attribute saying its output is already the features", "model")
    last = order[-1]
    linear = model.get_submodule(last)
    parent_path, _, attr = last.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, nn.Identity())
    model.feature_dim = linear.in_features
    return model, linear.in_features
