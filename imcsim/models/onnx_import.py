"""ONNX files as plain-torch modules.

:func:`load_onnx` reads an ONNX file and returns an :class:`OnnxModel`: a ``nn.Module`` that runs the graph's
nodes in their topological order. Weight-bearing nodes become torch layers (``Conv`` -> ``nn.Conv2d``,
``Gemm`` and ``MatMul`` by a weight matrix -> ``nn.Linear``, ``BatchNormalization`` -> ``nn.BatchNorm*d``,
``LayerNormalization`` -> ``nn.LayerNorm``, ``Gather`` from an embedding table -> ``nn.Embedding``), so a later
pass can map them onto the hardware; every other supported node runs as the matching torch function.
``MatMul`` of two activations stays a ``torch.matmul`` of the two tensors (a weight-free GEMM).

Every value that shapes the graph (a ``Reshape`` target, ``Slice`` bounds, ``Clip`` limits, axes) is read
once, at load time, from the initializers and ``Constant`` nodes into Python values, and nodes whose inputs are
all constants are evaluated at load time. ``forward`` therefore holds no data-dependent control flow and runs
on meta tensors too.

Any node outside :data:`SUPPORTED_OPS`, and any file that cannot be read, parsed, checked or mapped, raises
:class:`OnnxError` at load time with a one-line message that names the file (and the node, for an op).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imcsim.errors import shorten

SUPPORTED_OPS: tuple[str, ...] = (
    # weight-bearing: become torch modules
    "Conv",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "LayerNormalization",
    "Gather",
    # activations
    "Relu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Gelu",
    "Erf",
    # arithmetic
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "ReduceMean",
    "Softmax",
    # pooling
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    # shape and data movement (shapes are load-time constants)
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Identity",
    "Dropout",
    "Constant",
)
"""ONNX operators (default domain) that :func:`load_onnx` maps; any other node is an :class:`OnnxError`."""

MESSAGE_CHARS = 2000
"""Longest :class:`OnnxError` message; longer ones are cut."""

_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class OnnxError(ValueError):
    """An ONNX file imcsim cannot read or map; the message names the file and, for an op, the node (name and op_type).

    The message is always one line (runs of whitespace become one space) and at most
    :data:`MESSAGE_CHARS` characters.
    """

    def __init__(self, message: str):
        message = " ".join(str(message).split())
        if len(message) > MESSAGE_CHARS:
            message = f"{message[: MESSAGE_CHARS - 4]} ..."
        super().__init__(message)


def _one_line(exc: BaseException) -> str:
    """``exc`` as ``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _require_onnx() -> Any:
    """The ``onnx`` package, or an ImportError that says how to install it."""
    try:
        import onnx  # optional dependency, only needed to read ONNX files
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading ONNX files needs the 'onnx' package (pip install onnx)") from exc
    return onnx


def onnx_digest(path: str | Path) -> str:
    """SHA-256 (hex) of the bytes of the file at ``path``, for provenance records."""
    p = Path(path)
    sha = hashlib.sha256()
    try:
        with p.open("rb") as fh:
            for block in iter(functools.partial(fh.read, 1 << 20), b""):
                sha.update(block)
    except OSError as exc:
        raise OnnxError(f"{p}: cannot be read ({_one_line(exc)})") from exc
    return sha.hexdigest()


# --------------------------------------------------------------------------------------------------
# the module


@dataclass(frozen=True)
class _Step:
    """One node of the graph at run time: a registered layer or a torch function, its inputs and its output."""

    label: str
    inputs: tuple[str, ...]
    output: str
    layer: str | None = None
    fn: Callable[..., torch.Tensor] | None = None


class OnnxModel(nn.Module):
    """An ONNX graph as a torch module; ``forward(*inputs)`` runs the nodes in order and returns the output(s).

    ``layers`` (an ``nn.ModuleDict``) holds the weight-bearing nodes under names derived from the ONNX node
    names; ``constants`` holds, as buffers, the initializers and constants that weight-free nodes read at run
    time. ``input_names``/``input_shapes`` describe the graph inputs (a symbolic dimension is ``None``),
    ``output_names`` the graph outputs; ``source`` and ``digest`` are the file's path and SHA-256.
    """

    def __init__(
        self,
        *,
        layers: nn.ModuleDict,
        constants: dict[str, torch.Tensor],
        steps: Sequence[_Step],
        input_names: Sequence[str],
        input_shapes: Sequence[tuple[int | None, ...]],
        output_names: Sequence[str],
        source: str = "",
        digest: str = "",
    ):
        super().__init__()
        self.layers = layers
        self.constants = nn.Module()
        self._constant_attrs: dict[str, str] = {}
        taken: set[str] = set()
        for onnx_name, tensor in constants.items():
            attr = _unique_name(_sanitise(onnx_name) or "const", taken, self.constants)
            self.constants.register_buffer(attr, tensor)
            self._constant_attrs[onnx_name] = attr
        self._steps = tuple(steps)
        self.input_names: list[str] = list(input_names)
        self.input_shapes: list[tuple[int | None, ...]] = [tuple(s) for s in input_shapes]
        self.output_names: list[str] = list(output_names)
        self.source = source
        self.digest = digest

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"the ONNX graph takes {len(self.input_names)} input(s) {self.input_names}, got {len(inputs)}"
            )
        env: dict[str, torch.Tensor] = {
            name: getattr(self.constants, attr) for name, attr in self._constant_attrs.items()
        }
        env.update(zip(self.input_names, inputs, strict=True))
        for step in self._steps:
            args = [env[name] for name in step.inputs]
            if step.layer is not None:
                env[step.output] = self.layers[step.layer](*args)
            else:
                env[step.output] = step.fn(*args)
        outputs = tuple(env[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._steps)}"


def _sanitise(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9_]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _unique_name(base: str, taken: set[str], owner: nn.Module) -> str:
    """``base``, or ``base_2``, ``base_3``, ...: the first not in ``taken`` nor an attribute of ``owner``."""
    name, k = base, 1
    while name in taken or hasattr(owner, name):
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


# --------------------------------------------------------------------------------------------------
# run-time functions of the weight-free ops (module-level so a model deep-copies and pickles)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _clip(x: torch.Tensor, *, lo: float | None, hi: float | None) -> torch.Tensor:
    if lo is None and hi is None:
        return x
    return torch.clamp(x, lo, hi)


def _hard_sigmoid(x: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def _gelu(x: torch.Tensor, *, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


def _reduce_mean(x: torch.Tensor, *, axes: tuple[int, ...] | None, keepdims: bool) -> torch.Tensor:
    dims = axes if axes else tuple(range(x.dim()))
    return torch.mean(x, dim=dims, keepdim=keepdims)


def _softmax(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    return torch.softmax(x, dim=axis)


def _softmax_coerced(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    """Softmax before opset 13: over all dimensions from ``axis`` on, taken together."""
    a = axis % x.dim()
    return torch.softmax(x.reshape(*x.shape[:a], -1), dim=-1).reshape(x.shape)


_MAX_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _max_pool(
    x: torch.Tensor, *, rank: int, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
    dilation: tuple[int, ...], ceil_mode: bool,
) -> torch.Tensor:
    return _MAX_POOLS[rank](x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)


def _avg_pool(
    x: torch.Tensor, *, rank: int, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
    ceil_mode: bool, count_include_pad: bool,
) -> torch.Tensor:
    return _AVG_POOLS[rank](x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def _global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, dim=tuple(range(2, x.dim())), keepdim=True)


def _flatten(x: torch.Tensor, *, axis: int) -> torch.Tensor:
    a = axis if axis >= 0 else axis + x.dim()
    return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))


def _reshape(x: torch.Tensor, *, shape: tuple[int, ...], allowzero: bool) -> torch.Tensor:
    dims = [x.shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(shape)]
    return x.reshape(dims)


def _transpose(x: torch.Tensor, *, perm: tuple[int, ...] | None) -> torch.Tensor:
    return x.permute(*(perm if perm is not None else reversed(range(x.dim()))))


def _concat(*xs: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.cat(xs, dim=axis)


def _squeeze(x: torch.Tensor, *, axes: tuple[int, ...] | None) -> torch.Tensor:
    return torch.squeeze(x) if axes is None else torch.squeeze(x, dim=axes)


def _unsqueeze(x: torch.Tensor, *, axes: tuple[int, ...]) -> torch.Tensor:
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _slice(
    x: torch.Tensor, *, axes: tuple[int, ...], starts: tuple[int, ...], ends: tuple[int, ...], steps: tuple[int, ...]
) -> torch.Tensor:
    index: list[slice] = [slice(None)] * x.dim()
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        index[a % x.dim()] = slice(s, e, st)
    return x[tuple(index)]


def _gather(data: torch.Tensor, indices: torch.Tensor, *, axis: int) -> torch.Tensor:
    a = axis % data.dim()
    idx = indices.long()
    idx = torch.where(idx < 0, idx + data.shape[a], idx)  # ONNX counts negative indices from the end
    picked = torch.index_select(data, a, idx.reshape(-1))
    return picked.reshape(*data.shape[:a], *idx.shape, *data.shape[a + 1 :])


_UNARY: dict[str, Callable[..., torch.Tensor]] = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "HardSwish": F.hardswish,
    "Identity": _identity,
    "GlobalAveragePool": _global_avg_pool,
}
_BINARY: dict[str, Callable[..., torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _div,
    "Pow": torch.pow,
}


# --------------------------------------------------------------------------------------------------
# loading


def load_onnx(path: str | Path, *, weights: bool = True, max_bytes: int = 2**31) -> OnnxModel:
    """The ONNX model in the file at ``path`` as an :class:`OnnxModel` (in eval mode).

    ``weights=True`` copies the initializers into the layers and needs every initializer's data (in the
    file, or in external-data files next to it); ``weights=False`` builds the layers from the initializer
    shapes only and leaves their weights at torch's initialisation (constants that weight-free nodes read
    at run time take the file's values where it holds them, else zeros). ``max_bytes`` bounds the file size
    and the total size the initializers declare. Raises :class:`OnnxError` for a missing, unreadable,
    oversized, empty or malformed file, a graph without nodes, a model the ONNX checker rejects, a node
    outside :data:`SUPPORTED_OPS` or one whose attributes cannot be mapped, and missing weights.
    """
    onnx = _require_onnx()
    p = Path(path)
    data = _read_bytes(p, max_bytes)
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise OnnxError(f"{p}: not a readable ONNX model ({_one_line(exc)})") from exc
    graph = model.graph
    if not graph.node:
        raise OnnxError(f"{p}: the ONNX model holds no graph nodes (not an ONNX file, or an empty graph)")
    _check_ops(p, graph)
    if graph.sparse_initializer:
        raise OnnxError(f"{p}: sparse initializers are not supported")
    _check_declared_bytes(p, graph, max_bytes)
    stub = _structure_only(p, model)
    try:
        onnx.checker.check_model(stub)
    except Exception as exc:
        raise OnnxError(f"{p}: the ONNX checker rejects the model ({_one_line(exc)})") from exc
    builder = _Builder(p, model, weights=weights, ranks=_ranks(stub))
    built = builder.build()
    built.digest = hashlib.sha256(data).hexdigest()
    return built.eval()


def _read_bytes(p: Path, max_bytes: int) -> bytes:
    """The bytes of the file at ``p``, or OnnxError for a missing, non-regular, oversized or empty file."""
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise OnnxError(f"{p}: no such file") from exc
    except OSError as exc:
        raise OnnxError(f"{p}: cannot be read ({_one_line(exc)})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise OnnxError(f"{p}: is a directory, not an ONNX file")
    if not stat.S_ISREG(st.st_mode):
        raise OnnxError(f"{p}: is not a regular file")
    if st.st_size > max_bytes:
        raise OnnxError(f"{p}: the file has {st.st_size} bytes, more than max_bytes={max_bytes}")
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise OnnxError(f"{p}: cannot be read ({_one_line(exc)})") from exc
    if len(data) > max_bytes:
        raise OnnxError(f"{p}: the file has more than max_bytes={max_bytes} bytes")
    if not data:
        raise OnnxError(f"{p}: empty file (0 bytes), not an ONNX model")
    return data


def _node_name(node: Any, index: int) -> str:
    """The node's name, or ``<op_type>_<index>`` for an unnamed node."""
    return node.name or f"{node.op_type}_{index}"


def _node_label(node: Any, index: int) -> str:
    op = node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"
    return f"node {shorten(_node_name(node, index))} (op {shorten(op)[1:-1]})"


def _check_ops(p: Path, graph: Any) -> None:
    """OnnxError naming the first node whose op is not in SUPPORTED_OPS."""
    for index, node in enumerate(graph.node):
        if node.op_type not in SUPPORTED_OPS or node.domain not in _DEFAULT_DOMAINS:
            raise OnnxError(f"{p}: {_node_label(node, index)} is not supported; supported: {', '.join(SUPPORTED_OPS)}")


def _declared_nbytes(tensor: Any) -> int:
    """Bytes of data the tensor's dims and element type call for (1 byte per element for unknown types)."""
    onnx = _require_onnx()
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:
        itemsize = 1
    return math.prod(max(int(d), 0) for d in tensor.dims) * itemsize


def _check_declared_bytes(p: Path, graph: Any, max_bytes: int) -> None:
    total = sum(_declared_nbytes(t) for t in graph.initializer)
    if total > max_bytes:
        raise OnnxError(f"{p}: the initializers declare {total} bytes, more than max_bytes={max_bytes}")


def _copy_fields(src: Any, dst: Any, skip: Iterable[str]) -> None:
    """Copy the set fields of protobuf message ``src`` into ``dst``, except those named in ``skip``."""
    skipped = set(skip)
    for field, value in src.ListFields():
        if field.name in skipped:
            continue
        if hasattr(value, "extend"):  # repeated field
            getattr(dst, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # message
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def _structure_only(p: Path, model: Any) -> Any:
    """A copy of ``model`` whose initializers are graph inputs of the same type and shape (no data).

    The ONNX checker then checks the graph's structure without needing the weights, so a model whose weights
    are absent can still be checked (and built with ``weights=False``).
    """
    onnx = _require_onnx()
    try:
        stub = onnx.ModelProto()
        _copy_fields(model, stub, skip=("graph",))
        _copy_fields(model.graph, stub.graph, skip=("initializer", "sparse_initializer"))
        declared = {vi.name for vi in stub.graph.input}
        for t in model.graph.initializer:
            if t.name not in declared:
                stub.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
                declared.add(t.name)
    except Exception as exc:
        raise OnnxError(f"{p}: malformed graph ({_one_line(exc)})") from exc
    return stub


def _ranks(stub: Any) -> dict[str, int]:
    """Ranks of the graph's values that ONNX shape inference can tell (empty if inference fails)."""
    onnx = _require_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(stub)
    except Exception:
        return {}
    ranks: dict[str, int] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            ranks[vi.name] = len(tt.shape.dim)
    return ranks


def _value_shape(vi: Any) -> tuple[int | None, ...]:
    """A graph input's shape; a symbolic or unknown dimension is ``None``."""
    tt = vi.type.tensor_type
    if not (vi.type.HasField("tensor_type") and tt.HasField("shape")):
        return ()
    return tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)


def _attrs(node: Any) -> dict[str, Any]:
    """The node's attributes as Python values (strings decoded)."""
    onnx = _require_onnx()
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        out[attr.name] = value
    return out


def _has_data(tensor: Any) -> bool:
    """Whether the TensorProto holds its values in the file (any value field set)."""
    fields = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
    return any(len(getattr(tensor, f)) for f in fields)


def _torch_dtype(np_dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype


class _Builder:
    """Walks the graph once, turning nodes into layers, run-time steps or load-time constants."""

    def __init__(self, path: Path, model: Any, *, weights: bool, ranks: dict[str, int]):
        self.onnx = _require_onnx()
        self.path = path
        self.graph = model.graph
        self.weights = weights
        self.ranks = ranks
        self.opset = next(
            (int(o.version) for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), 1
        )
        self.inits = {t.name: t for t in self.graph.initializer}
        self.values: dict[str, torch.Tensor] = {}  # load-time constants (CPU)
        self.placeholders: set[str] = set()  # constants standing in for absent data (weights=False)
        self.missing: dict[str, str] = {}  # initializer -> why its data is absent
        self.runtime_consts: dict[str, None] = {}  # constants that steps read at run time (ordered set)
        self.produced: set[str] = set()
        self.steps: list[_Step] = []
        self.layers = nn.ModuleDict()
        self.layer_names: set[str] = set()
        self.consumed = {name for node in self.graph.node for name in node.input if name}
        self.consumed.update(o.name for o in self.graph.output)
        self.handlers: dict[str, Callable[[Any, dict[str, Any], str, int], None]] = {
            "Conv": self._conv,
            "Gemm": self._gemm,
            "MatMul": self._matmul,
            "BatchNormalization": self._batch_norm,
            "LayerNormalization": self._layer_norm,
            "Gather": self._gather,
            "Clip": self._clip,
            "HardSigmoid": self._hard_sigmoid,
            "Gelu": self._gelu,
            "ReduceMean": self._reduce_mean,
            "Softmax": self._softmax,
            "MaxPool": self._pool,
            "AveragePool": self._pool,
            "Flatten": self._flatten,
            "Reshape": self._reshape,
            "Transpose": self._transpose,
            "Concat": self._concat,
            "Squeeze": self._squeeze,
            "Unsqueeze": self._unsqueeze,
            "Slice": self._slice,
            "Dropout": self._dropout,
            "Constant": self._constant,
        }

    # ---- errors and constants

    def fail(self, label: str, message: str) -> OnnxError:
        return OnnxError(f"{self.path}: {label}: {message}")

    def is_const(self, name: str) -> bool:
        return name in self.values or name in self.inits

    def _no_weights(self, name: str) -> OnnxError:
        why = self.missing.get(name, "no data")
        return OnnxError(
            f"{self.path}: holds no weights for initializer {shorten(name)} ({why}); functional runs need them "
            "(load with weights=False to build from the shapes only)"
        )

    def _init_array(self, name: str) -> np.ndarray | None:
        """The initializer's values, or None (reason in ``self.missing``) when the file does not hold them."""
        t = self.inits[name]
        numel = math.prod(int(d) for d in t.dims)
        if t.data_location == self.onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            length = info.get("length")
            if length is not None and length.isdigit() and int(length) > _declared_nbytes(t):
                self.missing[name] = f"external data length {length} exceeds the tensor's {_declared_nbytes(t)} bytes"
                return None
            try:
                return self.onnx.numpy_helper.to_array(t, base_dir=str(self.path.parent))
            except Exception as exc:  # absent file, path outside the folder, short read
                self.missing[name] = f"external data {shorten(info.get('location', ''))}: {_one_line(exc)}"
                return None
        if numel > 0 and not _has_data(t):
            self.missing[name] = f"dims {list(t.dims)} but no data in the file"
            return None
        try:
            return self.onnx.numpy_helper.to_array(t)
        except Exception as exc:
            raise OnnxError(f"{self.path}: initializer {shorten(name)} cannot be read ({_one_line(exc)})") from exc

    def _to_tensor(self, name: str, arr: np.ndarray) -> torch.Tensor:
        try:
            return torch.from_numpy(np.array(arr, copy=True))
        except TypeError as exc:
            raise OnnxError(
                f"{self.path}: initializer {shorten(name)} has an element type torch cannot hold ({arr.dtype})"
            ) from exc

    def const_shape(self, name: str) -> tuple[int, ...]:
        if name in self.values:
            return tuple(self.values[name].shape)
        return tuple(int(d) for d in self.inits[name].dims)

    def const_dtype(self, name: str, label: str) -> torch.dtype:
        if name in self.values:
            return self.values[name].dtype
        try:
            return _torch_dtype(self.onnx.helper.tensor_dtype_to_np_dtype(self.inits[name].data_type))
        except Exception as exc:
            raise self.fail(label, f"initializer {shorten(name)} has an element type torch cannot hold") from exc

    def const(self, name: str, label: str) -> torch.Tensor:
        """A constant's value as a CPU tensor (zeros standing in for absent data when weights=False)."""
        if name in self.values:
            return self.values[name]
        arr = self._init_array(name)
        if arr is None:
            if self.weights:
                raise self._no_weights(name)
            tensor = torch.zeros(self.const_shape(name), dtype=self.const_dtype(name, label))
            self.placeholders.add(name)
        else:
            tensor = self._to_tensor(name, arr)
        self.values[name] = tensor
        return tensor

    def build_value(self, name: str, label: str, what: str) -> torch.Tensor:
        """A constant whose real value the node needs at load time (``what`` says which input)."""
        if not self.is_const(name):
            raise self.fail(label, f"{what} ({shorten(name)}) must be an initializer or a Constant, not computed")
        tensor = self.const(name, label)
        if name in self.placeholders:
            raise self.fail(label, f"needs the value of {what} ({shorten(name)}) to be built; the file holds none")
        return tensor

    def ints(self, name: str, label: str, what: str) -> tuple[int, ...]:
        return tuple(int(v) for v in self.build_value(name, label, what).reshape(-1).tolist())

    def scalar(self, name: str, label: str, what: str) -> float | int:
        t = self.build_value(name, label, what)
        if t.numel() != 1:
            raise self.fail(label, f"{what} ({shorten(name)}) must hold one value, not {t.numel()}")
        return t.reshape(()).item()

    def weight(self, name: str) -> torch.Tensor | None:
        """A layer's weight from a constant; None when weights=False (layers keep torch's initialisation)."""
        if not self.weights:
            return None
        if name in self.values:
            return self.values[name]
        arr = self._init_array(name)
        if arr is None:
            raise self._no_weights(name)
        return self._to_tensor(name, arr)

    def set_param(self, target: torch.Tensor, name: str, label: str, transform: Callable | None = None) -> None:
        value = self.weight(name)
        if value is None:
            return
        if transform is not None:
            value = transform(value)
        if tuple(value.shape) != tuple(target.shape):
            raise self.fail(label, f"{shorten(name)} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(value)

    def float_dtype(self, name: str, label: str) -> torch.dtype:
        dtype = self.const_dtype(name, label)
        if dtype not in _FLOAT_DTYPES:
            raise self.fail(label, f"weights {shorten(name)} must be floating point, not {dtype}")
        return dtype

    # ---- graph walk

    def build(self) -> OnnxModel:
        inputs = [vi for vi in self.graph.input if vi.name not in self.inits]
        self.produced.update(vi.name for vi in inputs)
        for index, node in enumerate(self.graph.node):
            label = _node_label(node, index)
            attrs = _attrs(node)
            for extra in node.output[1:]:
                if extra and extra in self.consumed:
                    raise self.fail(label, f"its output {shorten(extra)} (beyond the first) is not supported")
            handler = self.handlers.get(node.op_type)
            if handler is not None:
                handler(node, attrs, label, index)
            elif node.op_type in _UNARY:
                self.apply(node, label, _UNARY[node.op_type], [node.input[0]])
            else:
                self.apply(node, label, _BINARY[node.op_type], [node.input[0], node.input[1]])
        outputs = [o.name for o in self.graph.output]
        for name in outputs:
            if self.is_const(name):
                self.runtime_consts[name] = None
            elif name not in self.produced:
                raise OnnxError(f"{self.path}: graph output {shorten(name)} is not produced by any node")
        constants = {name: self.const(name, f"constant {shorten(name)}") for name in self.runtime_consts}
        return OnnxModel(
            layers=self.layers,
            constants=constants,
            steps=self.steps,
            input_names=[vi.name for vi in inputs],
            input_shapes=[_value_shape(vi) for vi in inputs],
            output_names=outputs,
            source=str(self.path),
        )

    def apply(self, node: Any, label: str, fn: Callable[..., torch.Tensor], inputs: Sequence[str]) -> None:
        """Add a weight-free step ``fn(*inputs)``, or evaluate it now when all its inputs are constants."""
        out = node.output[0]
        for name in inputs:
            if not name:
                raise self.fail(label, "a required input is empty")
        if all(self.is_const(name) for name in inputs):
            args = [self.const(name, label) for name in inputs]
            try:
                with torch.no_grad():
                    value = fn(*args)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise self.fail(label, f"cannot be evaluated on its constant inputs ({_one_line(exc)})") from exc
            self.values[out] = value.detach().clone()
            if any(name in self.placeholders for name in inputs):
                self.placeholders.add(out)
            return
        for name in inputs:
            if self.is_const(name):
                self.runtime_consts[name] = None
        self.steps.append(_Step(label=label, inputs=tuple(inputs), output=out, fn=fn))
        self.produced.add(out)

    def add_layer(self, node: Any, index: int, label: str, layer: nn.Module, x: str) -> None:
        """Register ``layer`` under a name from the node's and add the step ``layer(x)``."""
        if self.is_const(x):
            raise self.fail(label, f"its data input ({shorten(x)}) is a constant; a layer needs an activation")
        key = _unique_name(_sanitise(_node_name(node, index)), self.layer_names, self.layers)
        self.layers[key] = layer
        self.steps.append(_Step(label=label, inputs=(x,), output=node.output[0], layer=key))
        self.produced.add(node.output[0])

    def opt_input(self, node: Any, i: int) -> str:
        return node.input[i] if len(node.input) > i else ""

    def axes(self, node: Any, attrs: dict[str, Any], label: str, input_index: int) -> tuple[int, ...] | None:
        """Axes from the attribute (older opsets) or the constant input ``input_index`` (newer ones)."""
        name = self.opt_input(node, input_index)
        if name:
            return self.ints(name, label, "axes")
        if "axes" in attrs:
            return tuple(int(a) for a in attrs["axes"])
        return None

    # ---- weight-bearing nodes

    def _conv(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        x, w, b = node.input[0], node.input[1], self.opt_input(node, 2)
        if not self.is_const(w):
            raise self.fail(label, "the weight must be an initializer")
        if b and not self.is_const(b):
            raise self.fail(label, "the bias must be an initializer")
        wshape = self.const_shape(w)
        if len(wshape) != 4:
            raise self.fail(label, f"only 2-D convolutions are supported (weight of rank {len(wshape)})")
        out_ch, in_per_group, kh, kw = wshape
        group = int(a.get("group", 1))
        if group < 1 or out_ch % group:
            raise self.fail(label, f"group={group} does not divide the {out_ch} output channels")
        kernel = tuple(int(k) for k in a.get("kernel_shape", (kh, kw)))
        if kernel != (kh, kw):
            raise self.fail(label, f"kernel_shape {list(kernel)} disagrees with the weight's {[kh, kw]}")
        strides = tuple(int(s) for s in a.get("strides", (1, 1)))
        dilations = tuple(int(d) for d in a.get("dilations", (1, 1)))
        padding = self.symmetric_pads(a, label, kernel, strides, dilations)
        dtype = self.float_dtype(w, label)
        conv = nn.Conv2d(
            in_per_group * group, out_ch, kernel, stride=strides, padding=padding, dilation=dilations,
            groups=group, bias=bool(b), dtype=dtype,
        )
        self.set_param(conv.weight, w, label)
        if b:
            self.set_param(conv.bias, b, label, lambda t: t.reshape(-1))
        self.add_layer(node, index, label, conv, x)

    def symmetric_pads(
        self, a: dict[str, Any], label: str, kernel: tuple[int, ...], strides: tuple[int, ...],
        dilations: tuple[int, ...],
    ) -> tuple[int, ...]:
        """Per-dimension padding from ``pads``/``auto_pad``; OnnxError when begin and end differ."""
        n = len(kernel)
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if any(s != 1 for s in strides):
                raise self.fail(label, f"auto_pad={auto} with strides {list(strides)} depends on the input size")
            totals = [d * (k - 1) for k, d in zip(kernel, dilations, strict=True)]
            if any(t % 2 for t in totals):
                raise self.fail(label, f"auto_pad={auto} pads asymmetrically (total pads {totals})")
            return tuple(t // 2 for t in totals)
        if auto == "VALID":
            return (0,) * n
        if auto != "NOTSET":
            raise self.fail(label, f"unknown auto_pad {shorten(auto)}")
        pads = tuple(int(p) for p in a.get("pads", (0,) * (2 * n)))
        if len(pads) != 2 * n:
            raise self.fail(label, f"pads {list(pads)} should have {2 * n} values")
        if pads[:n] != pads[n:]:
            raise self.fail(label, f"asymmetric pads {list(pads)} (begin {list(pads[:n])}, end {list(pads[n:])}) are not supported")
        return pads[:n]

    def _gemm(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        x, w, c = node.input[0], node.input[1], self.opt_input(node, 2)
        if int(a.get("transA", 0)):
            raise self.fail(label, "transA=1 is not supported")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0 or (c and beta != 1.0):
            raise self.fail(label, f"alpha={alpha}, beta={beta} are not supported (only 1)")
        if not self.is_const(w) or len(self.const_shape(w)) != 2:
            raise self.fail(label, "B must be a 2-D initializer")
        trans_b = int(a.get("transB", 0))
        if trans_b not in (0, 1):
            raise self.fail(label, f"transB={trans_b} is not supported")
        rows, cols = self.const_shape(w)
        n_out, n_in = (rows, cols) if trans_b else (cols, rows)
        if c:
            if not self.is_const(c):
                raise self.fail(label, "C must be an initializer")
            cshape = self.const_shape(c)
            if math.prod(cshape) not in (1, n_out) or (cshape and cshape[-1] not in (1, n_out)):
                raise self.fail(label, f"C of shape {list(cshape)} is not a bias of {n_out} values")
        linear = nn.Linear(n_in, n_out, bias=bool(c), dtype=self.float_dtype(w, label))
        self.set_param(linear.weight, w, label, None if trans_b else (lambda t: t.T))
        if c:
            self.set_param(linear.bias, c, label, lambda t: t.reshape(-1).expand(n_out))
        self.add_layer(node, index, label, linear, x)

    def _matmul(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        x, w = node.input[0], node.input[1]
        if self.is_const(w) and not self.is_const(x) and len(self.const_shape(w)) == 2:
            n_in, n_out = self.const_shape(w)
            linear = nn.Linear(n_in, n_out, bias=False, dtype=self.float_dtype(w, label))
            self.set_param(linear.weight, w, label, lambda t: t.T)
            self.add_layer(node, index, label, linear, x)
        else:
            self.apply(node, label, torch.matmul, [x, w])

    def _batch_norm(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        x, names = node.input[0], list(node.input[1:5])
        if len(names) != 4 or not all(self.is_const(n) for n in names):
            raise self.fail(label, "scale, B, mean and var must be initializers")
        if int(a.get("training_mode", 0)):
            raise self.fail(label, "training_mode=1 is not supported (inference form only)")
        if not int(a.get("spatial", 1)):
            raise self.fail(label, "spatial=0 is not supported")
        scale, bias, mean, var = names
        shape = self.const_shape(scale)
        if len(shape) != 1:
            raise self.fail(label, f"scale of shape {list(shape)} is not a vector")
        channels = shape[0]
        for name in names:
            if self.const_shape(name) != (channels,):
                raise self.fail(label, f"{shorten(name)} has shape {list(self.const_shape(name))}, expected [{channels}]")
        rank = self.ranks.get(x, 4)
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
        if cls is None:
            raise self.fail(label, f"inputs of rank {rank} are not supported")
        bn = cls(
            channels, eps=float(a.get("epsilon", 1e-5)), momentum=1.0 - float(a.get("momentum", 0.9)),
            dtype=self.float_dtype(scale, label),
        )
        self.set_param(bn.weight, scale, label)
        self.set_param(bn.bias, bias, label)
        self.set_param(bn.running_mean, mean, label)
        self.set_param(bn.running_var, var, label)
        self.add_layer(node, index, label, bn, x)

    def _layer_norm(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        x, scale, bias = node.input[0], node.input[1], self.opt_input(node, 2)
        if not self.is_const(scale) or (bias and not self.is_const(bias)):
            raise self.fail(label, "Scale and B must be initializers")
        shape = self.const_shape(scale)
        axis = int(a.get("axis", -1))
        rank = self.ranks.get(x)
        normalised = -axis if axis < 0 else (rank - axis if rank is not None else len(shape))
        if normalised != len(shape) or not shape:
            raise self.fail(label, f"axis={axis} does not match Scale of shape {list(shape)}")
        if bias and self.const_shape(bias) != shape:
            raise self.fail(label, f"B of shape {list(self.const_shape(bias))} differs from Scale's {list(shape)}")
        ln = nn.LayerNorm(
            shape, eps=float(a.get("epsilon", 1e-5)), bias=bool(bias), dtype=self.float_dtype(scale, label)
        )
        self.set_param(ln.weight, scale, label)
        if bias:
            self.set_param(ln.bias, bias, label)
        self.add_layer(node, index, label, ln, x)

    def _gather(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        data, idx = node.input[0], node.input[1]
        axis = int(a.get("axis", 0))
        if self.is_const(data) and not self.is_const(idx) and axis == 0 and len(self.const_shape(data)) == 2:
            dtype = self.const_dtype(data, label)
            if dtype in _FLOAT_DTYPES:
                num, dim = self.const_shape(data)
                emb = nn.Embedding(num, dim, dtype=dtype)
                self.set_param(emb.weight, data, label)
                self.add_layer(node, index, label, emb, idx)
                return
        self.apply(node, label, functools.partial(_gather, axis=axis), [data, idx])

    # ---- weight-free nodes with attributes or constant inputs

    def _clip(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if self.opset >= 11:
            lo_name, hi_name = self.opt_input(node, 1), self.opt_input(node, 2)
            lo = self.scalar(lo_name, label, "min") if lo_name else None
            hi = self.scalar(hi_name, label, "max") if hi_name else None
        else:
            lo, hi = a.get("min"), a.get("max")
        self.apply(node, label, functools.partial(_clip, lo=lo, hi=hi), [node.input[0]])

    def _hard_sigmoid(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        fn = functools.partial(_hard_sigmoid, alpha=float(a.get("alpha", 0.2)), beta=float(a.get("beta", 0.5)))
        self.apply(node, label, fn, [node.input[0]])

    def _gelu(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        approximate = a.get("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise self.fail(label, f"approximate={shorten(approximate)} is not supported")
        self.apply(node, label, functools.partial(_gelu, approximate=approximate), [node.input[0]])

    def _reduce_mean(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        axes = self.axes(node, a, label, 1)
        if not axes and int(a.get("noop_with_empty_axes", 0)):
            self.apply(node, label, _identity, [node.input[0]])
            return
        fn = functools.partial(_reduce_mean, axes=axes, keepdims=bool(int(a.get("keepdims", 1))))
        self.apply(node, label, fn, [node.input[0]])

    def _softmax(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if self.opset >= 13:
            fn = functools.partial(_softmax, axis=int(a.get("axis", -1)))
        else:
            fn = functools.partial(_softmax_coerced, axis=int(a.get("axis", 1)))
        self.apply(node, label, fn, [node.input[0]])

    def _pool(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if "kernel_shape" not in a:
            raise self.fail(label, "kernel_shape is missing")
        kernel = tuple(int(k) for k in a["kernel_shape"])
        rank = len(kernel)
        if rank not in _MAX_POOLS:
            raise self.fail(label, f"{rank}-D pooling is not supported")
        strides = tuple(int(s) for s in a.get("strides", (1,) * rank))
        dilations = tuple(int(d) for d in a.get("dilations", (1,) * rank))
        padding = self.symmetric_pads(a, label, kernel, strides, dilations)
        if any(2 * p > d * (k - 1) + 1 for p, k, d in zip(padding, kernel, dilations, strict=True)):
            raise self.fail(label, f"pads {list(padding)} exceed half the kernel {list(kernel)}")
        ceil_mode = bool(int(a.get("ceil_mode", 0)))
        if node.op_type == "MaxPool":
            fn = functools.partial(
                _max_pool, rank=rank, kernel=kernel, stride=strides, padding=padding, dilation=dilations,
                ceil_mode=ceil_mode,
            )
        else:
            if any(d != 1 for d in dilations):
                raise self.fail(label, f"dilations {list(dilations)} are not supported for average pooling")
            fn = functools.partial(
                _avg_pool, rank=rank, kernel=kernel, stride=strides, padding=padding, ceil_mode=ceil_mode,
                count_include_pad=bool(int(a.get("count_include_pad", 0))),
            )
        self.apply(node, label, fn, [node.input[0]])

    def _flatten(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        self.apply(node, label, functools.partial(_flatten, axis=int(a.get("axis", 1))), [node.input[0]])

    def _reshape(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if len(node.input) > 1:
            shape = self.ints(node.input[1], label, "the target shape")
        elif "shape" in a:  # opset < 5
            shape = tuple(int(s) for s in a["shape"])
        else:
            raise self.fail(label, "the target shape is missing")
        if sum(1 for s in shape if s == -1) > 1 or any(s < -1 for s in shape):
            raise self.fail(label, f"invalid target shape {list(shape)}")
        fn = functools.partial(_reshape, shape=shape, allowzero=bool(int(a.get("allowzero", 0))))
        self.apply(node, label, fn, [node.input[0]])

    def _transpose(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        perm = tuple(int(p) for p in a["perm"]) if "perm" in a else None
        self.apply(node, label, functools.partial(_transpose, perm=perm), [node.input[0]])

    def _concat(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if "axis" not in a:
            raise self.fail(label, "axis is missing")
        self.apply(node, label, functools.partial(_concat, axis=int(a["axis"])), [n for n in node.input if n])

    def _squeeze(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        axes = self.axes(node, a, label, 1)
        self.apply(node, label, functools.partial(_squeeze, axes=axes), [node.input[0]])

    def _unsqueeze(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        axes = self.axes(node, a, label, 1)
        if not axes:
            raise self.fail(label, "axes are missing")
        self.apply(node, label, functools.partial(_unsqueeze, axes=axes), [node.input[0]])

    def _slice(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if self.opset >= 10:
            starts = self.ints(node.input[1], label, "starts")
            ends = self.ints(node.input[2], label, "ends")
            axes_name, steps_name = self.opt_input(node, 3), self.opt_input(node, 4)
            axes = self.ints(axes_name, label, "axes") if axes_name else tuple(range(len(starts)))
            steps = self.ints(steps_name, label, "steps") if steps_name else (1,) * len(starts)
        else:
            starts = tuple(int(s) for s in a.get("starts", ()))
            ends = tuple(int(e) for e in a.get("ends", ()))
            axes = tuple(int(x) for x in a["axes"]) if "axes" in a else tuple(range(len(starts)))
            steps = (1,) * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise self.fail(label, "starts, ends, axes and steps differ in length")
        if any(s < 1 for s in steps):
            raise self.fail(label, f"steps {list(steps)} are not supported (only positive steps)")
        fn = functools.partial(_slice, axes=axes, starts=starts, ends=ends, steps=steps)
        self.apply(node, label, fn, [node.input[0]])

    def _dropout(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        self.apply(node, label, _identity, [node.input[0]])

    def _constant(self, node: Any, a: dict[str, Any], label: str, index: int) -> None:
        if "value" in a:
            arr = self.onnx.numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            arr = np.array(a["value_float"], dtype=np.float32)
        elif "value_floats" in a:
            arr = np.array(a["value_floats"], dtype=np.float32)
        elif "value_int" in a:
            arr = np.array(a["value_int"], dtype=np.int64)
        elif "value_ints" in a:
            arr = np.array(a["value_ints"], dtype=np.int64)
        else:
            raise self.fail(label, f"only numeric values are supported (attributes {sorted(a)})")
        self.values[node.output[0]] = self._to_tensor(node.output[0], arr)
