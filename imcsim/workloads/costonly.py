"""Cost-only mode: one training step at real sizes, from shapes and activity statistics.

No data and no arithmetic: the model runs once on meta tensors
(:func:`imcsim.workloads.dataflow.trace_dataflow`) to get every layer's GEMM
shape and the dataflow between layers. The circuit then counts each layer's
ops from the expected statistics of its operands (``expected_forward``,
``expected_input_grad``, ``expected_weight_grad``), through the same counting
code as the functional path (:mod:`imcsim.circuits.stream`), for every
dataflow the circuit has:

* a streamed INT8 operand has bit plane i set with probability ``p_i``
  (``forward_plane_density`` for activations, ``error_plane_density`` for
  errors);
* stored weight bits are 1 with probability ``weight_bit_density``.

Weights are real INT8 matrices drawn from a normal distribution (std
``weight_std_lsb``) and programmed into the macro, so deployment and
write-back are counted by the device model's own write and pulse counting:
each step a fraction ``weight_change_fraction`` of a trainable layer's weights
moves by one LSB (per layer-name suffix with ``weight_change_by_layer``, e.g. a
LoRA ``B`` against its ``A``). A layer larger than :data:`WRITE_SAMPLE_WEIGHTS`
is never programmed cell by cell: a sample of its rows is, and the circuit
scales the sample's write and pulse counts (and the cells its per-cell counts
stand for) to the whole layer, so real-size networks cost seconds.

Products of two activations (attention) are weightless calls of the graph,
counted in the digital unit (:func:`weightless_ops`).

Grouped convolutions (depthwise) are packed block-diagonally: as many groups
as fit side by side share a subarray (see :meth:`ArrayCircuit.tiles_for`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator, model_validator

from imcsim.circuits.base import ArrayCircuit
from imcsim.errors import FieldError
from imcsim.ops import OpRecord
from imcsim.params import Params
from imcsim.workloads.dataflow import LayerCall, LayerGraph

MAX_REPORT_BYTES = 256 * 2**20
"""Largest ``from_report`` file read (a functional run's report.json is a few MB)."""
DIGITAL_PARAMS = "digital_params"  # the op that updates parameters kept only in the digital unit (BN, biases)


def _densities(v: list[float] | None) -> list[float] | None:
    bad = [p for p in v or () if not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"densities are probabilities in [0, 1] (got {bad})")
    return v


class MethodActivity(Params):
    """One training method's own operand statistics (``activity.by_method.<method>``): any of the fields of
    :class:`ActivityStats` it was measured with; the rest are the activity's."""

    forward_plane_density: list[float] | None = Field(
        None, min_length=8, max_length=8, description="probability that bit i (LSB first) of an INT8 activation is 1")
    error_plane_density: list[float] | None = Field(
        None, min_length=8, max_length=8, description="probability that bit i of an INT8 error is 1")
    weight_bit_density: float | None = Field(None, ge=0.0, le=1.0,
                                             description="probability that a stored weight bit is 1")
    weight_change_fraction: float | None = Field(
        None, ge=0.0, le=1.0, description="fraction of a trainable layer's INT8 weights that change per step")

    @field_validator("forward_plane_density", "error_plane_density")
    @classmethod
    def _probabilities(cls, v: list[float] | None) -> list[float] | None:
        return _densities(v)


class ActivityStats(Params):
    """Operand statistics of a training step. ``from_report: PATH`` (a functional run's report.json,
    relative to the working folder) fills every field not given from its ``tables.activity``."""

    from_report: str | None = Field(None, description="report.json of a functional run to take the statistics from")
    forward_plane_density: list[float] = Field(
        min_length=8, max_length=8, description="probability that bit i (LSB first) of an INT8 activation is 1")
    error_plane_density: list[float] = Field(
        min_length=8, max_length=8, description="probability that bit i of an INT8 error (gradient) is 1")
    weight_bit_density: float = Field(ge=0.0, le=1.0, description="probability that a stored weight bit is 1")
    weight_change_fraction: float = Field(
        ge=0.0, le=1.0, description="fraction of a trainable layer's INT8 weights that change (by 1 LSB) per step")
    weight_std_lsb: float = Field(34.0, gt=0.0, le=127.0, description="std of the deployed INT8 weights, in LSB")
    weight_change_by_layer: dict[str, float] = Field(
        default_factory=dict,
        description="change fraction per layer-name suffix (e.g. '.lora_B'); a trainable layer whose name ends "
                    "with a key takes that fraction (the longest matching key) instead of weight_change_fraction")

    by_method: dict[str, MethodActivity] = Field(
        default_factory=dict,
        description="statistics per training method, each measured by a functional run of that method; a field "
                    "a method does not give (or a method not named) takes the value above")

    def for_method(self, method: str) -> ActivityStats:
        """These statistics with ``method``'s own measured values, where it has any."""
        own = self.by_method.get(method)
        return self if own is None else self.model_copy(update=own.model_dump(exclude_none=True, by_alias=False))

    def change_fraction(self, layer: str) -> float:
        """The fraction of ``layer``'s INT8 weights that change per step."""
        keys = [k for k in self.weight_change_by_layer if layer.endswith(k)]
        return self.weight_change_by_layer[max(keys, key=len)] if keys else self.weight_change_fraction

    @model_validator(mode="before")
    @classmethod
    def _fill_from_report(cls, data: object) -> object:
        if not isinstance(data, dict) or not data.get("from_report"):
            return data
        path = Path(str(data["from_report"]))
        not_report = FieldError("from_report", f"{path} is not an imcsim report.json with tables.activity")
        try:
            if path.stat().st_size > MAX_REPORT_BYTES:
                raise not_report
            measured = json.loads(path.read_text(encoding="utf-8"))["tables"]["activity"]
        except OSError as err:
            raise FieldError("from_report", f"cannot read {path}: {err.strerror or err}") from None
        except (ValueError, KeyError, TypeError, RecursionError):  # not JSON, another shape, nested too deep
            raise not_report from None
        if not isinstance(measured, dict) or not measured:
            raise FieldError("from_report", f"{path} has no measured activity (use the report of a functional run)")
        return {**{k: v for k, v in measured.items() if k in cls.model_fields}, **data}

    @field_validator("forward_plane_density", "error_plane_density")
    @classmethod
    def _probabilities(cls, v: list[float]) -> list[float]:
        return _densities(v)

    @field_validator("weight_change_by_layer")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in v.items() if not 0.0 <= p <= 1.0}
        if bad:
            raise ValueError(f"change fractions are probabilities in [0, 1] (got {bad})")
        return v


class CostOnlySpec(Params):
    batch_size: int = Field(ge=1, le=4096)
    image_size: int = Field(ge=8, le=1024)
    in_channels: int = Field(3, ge=1, le=64)
    steps_per_task: int = Field(ge=1, le=10**9, description="training steps each task takes (scales the totals)")
    activity: ActivityStats


@dataclass
class CostOnlyStep:
    ops: list[OpRecord]  # deployment ops, then the ops of one training step (step 0)
    graph: LayerGraph
    trainable_params: int
    macs_forward: int


WRITE_SAMPLE_WEIGHTS = 1 << 14
"""Largest number of weights of one layer programmed cell by cell in a cost-only step: a larger layer's
writes are counted on a sample of its rows (at least one) and scaled to the whole by the circuit."""
WRITE_BUDGET = 1 << 21
"""Weights programmed cell by cell in a whole cost-only step: a model of many layers samples each less
(never below :data:`WRITE_SAMPLE_MIN`), so its step costs about as much as a model of few."""
WRITE_SAMPLE_MIN = 256


def sample_limit(layers: int) -> int:
    """Weights programmed cell by cell per layer when ``layers`` layers are stored."""
    return max(WRITE_SAMPLE_MIN, min(WRITE_SAMPLE_WEIGHTS, WRITE_BUDGET // max(1, layers)))


def sample_rows(c: LayerCall, limit: int = WRITE_SAMPLE_WEIGHTS) -> int:
    """Rows of a layer's stored matrix programmed cell by cell: all of them, or a sample of about ``limit``
    weights for a larger layer."""
    rows = c.groups * c.k
    return rows if rows * c.n <= limit else max(1, limit // c.n)


def synthetic_weights(c: LayerCall, std_lsb: float, rng: np.random.Generator, rows: int | None = None) -> np.ndarray:
    """INT8 weights of a layer as stored: the groups' K x N matrices stacked along the rows (the first
    ``rows`` of them when given: the synthetic weights are independent, so any rows are a fair sample)."""
    w = np.rint(rng.normal(0.0, std_lsb, size=(c.groups * c.k if rows is None else rows, c.n)))
    return np.clip(w, -128, 127).astype(np.int8)


_SYNTHETIC: dict[tuple, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}


def _synthetic_step_weights(graph: LayerGraph, stats: ActivityStats, seed: int, digital_layers: frozenset[str]
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Synthetic INT8 weights of the array's layers and, for the trainable ones, their values after one step
    (the layer's change fraction moves by one LSB). Kept per process: a sweep over hardware parameters
    programs the same weights at every point (the arrays are read-only)."""
    key = (tuple((c.name, c.groups, c.k, c.n, c.trainable) for c in graph.calls), stats.weight_std_lsb,
           stats.weight_change_fraction, tuple(sorted(stats.weight_change_by_layer.items())), seed, digital_layers)
    hit = _SYNTHETIC.get(key)
    if hit is not None:
        return hit
    rng = np.random.default_rng(seed)
    stored = [c for c in graph.calls if c.name not in digital_layers and not c.weightless]
    limit = sample_limit(len(stored))
    weights = {c.name: synthetic_weights(c, stats.weight_std_lsb, rng, sample_rows(c, limit)) for c in stored}
    updated = {}
    for c in graph.calls:
        if c.trainable and c.name in weights:
            w = weights[c.name]
            change = rng.random(w.shape) < stats.change_fraction(c.name)
            delta = np.where(rng.random(w.shape) < 0.5, -1, 1) * change
            updated[c.name] = np.clip(w.astype(np.int16) + delta, -128, 127).astype(np.int8)
    for a in (*weights.values(), *updated.values()):
        a.flags.writeable = False
    if len(_SYNTHETIC) >= 4:
        _SYNTHETIC.pop(next(iter(_SYNTHETIC)))
    _SYNTHETIC[key] = (weights, updated)
    return weights, updated


def weightless_ops(macro: ArrayCircuit, c: LayerCall, samples: int, forward: bool = True, backward: bool = True
                   ) -> list[OpRecord]:
    """The digital unit's GEMMs of a product of two activations ``A @ B`` (``c.groups`` copies of
    m x k x n, traced for ``c.samples`` samples, here for ``samples``): forward, and in the backward pass
    ``dA = dY B^T`` and ``dB = A^T dY`` for each operand that carries a gradient."""
    copies = max(1, c.groups * samples // max(1, c.samples))
    shapes = [("forward", (c.m, c.k, c.n))] if forward else []
    if backward:
        if c.operand_grads[0]:
            shapes.append(("input_grad", (c.m, c.n, c.k)))
        if c.operand_grads[1]:
            shapes.append(("input_grad", (c.k, c.m, c.n)))
    return [macro.digital_gemm(*shape, phase=phase, layer=c.name, samples=samples, copies=copies,
                               per_sample=copies >= samples) for phase, shape in shapes]


def elementwise_ops(macro: ArrayCircuit, c: LayerCall, samples: int, forward: bool = True, backward: bool = True
                    ) -> list[OpRecord]:
    """The digital work on a layer's output (traced for ``c.samples`` samples, here for ``samples``): requantising
    its INT32 results to INT8 and the weight-free work on them (norms, activations, pooling, adds), forward; in
    the backward pass, requantising the error of its input and the backward of that work where a gradient flows
    through it."""
    scale = samples / max(1, c.samples)
    work = [("forward", {**dict(c.elementwise), "requant": c.out_elems})] if forward else []
    if backward:
        work.append(("input_grad", {**dict(c.elementwise_grad), "requant": c.in_elems if c.input_grad else 0}))
    out = []
    for phase, ops in work:
        ops = {k: round(v * scale) for k, v in ops.items() if v}
        if ops:
            out.append(macro.digital_elementwise(ops, phase, c.name))
    return out


def cost_only_step(macro: ArrayCircuit, graph: LayerGraph, stats: ActivityStats, digital_params: int,
                   task: str, seed: int, digital_layers: frozenset[str] = frozenset(),
                   extra: tuple[OpRecord, ...] = ()) -> CostOnlyStep:
    """Deploy synthetic weights for every layer of ``graph`` and count one training step.

    Layers named in ``digital_layers`` are kept in the digital unit (their GEMMs and
    updates are counted there and nothing is stored in the array); ``extra`` are
    further ops of the step (weight-free arithmetic, such as attention scores),
    each tagged with the graph layer it belongs to.
    """
    macro.memo_writes = True  # the same synthetic weights are programmed at every point of a sweep
    weights, updated = _synthetic_step_weights(graph, stats, seed, digital_layers)
    ops: list[OpRecord] = []
    for c in graph.calls:
        if c.name in digital_layers or c.weightless:
            continue
        w = weights[c.name]
        macro.placement(c.name, c.k, c.n, c.groups)  # a layer the circuit cannot map is a MappingError here
        rows = None if w.shape[0] == c.groups * c.k else c.groups * c.k  # a row sample of a large layer
        grouped = {"groups": c.groups} if c.groups > 1 else {}
        for rec in macro.store(c.name, w, rows=rows, **grouped):
            ops.append(rec.tagged(module=c.name, task="deploy"))
    step: list[OpRecord] = []
    needs = graph.needs_grad()
    grad_rng = np.random.default_rng([seed, 1])  # operand planes of an in-array weight gradient
    for c in graph.calls:
        step += elementwise_ops(macro, c, c.samples, backward=False)
        if c.weightless:
            step += weightless_ops(macro, c, c.samples, backward=False)
        elif c.name in digital_layers:
            step.append(macro.digital_gemm(c.m, c.k, c.n, phase="forward", layer=c.name, samples=c.samples,
                                           copies=c.groups))
        else:
            step.append(macro.expected_forward(c.m, c.k, c.n, c.groups, c.samples, stats.forward_plane_density,
                                               stats.weight_bit_density, c.name))
    step += [rec for rec in extra if rec.phase == "forward"]
    trainable = 0
    for c in reversed(graph.calls):
        step += elementwise_ops(macro, c, c.samples, forward=False)
        if c.weightless:
            step += weightless_ops(macro, c, c.samples, forward=False)
            continue
        carries = c.input_grad if c.input_grad is not None else any(needs.get(p, False) for p, _ in c.producers)
        # a gradient-filtered conv: its backward GEMMs run on the patches, its weight gradient per channel pair
        m, k_grad = (c.filtered_rows, c.k // c.filter_taps) if c.filtered_rows else (c.m, c.k)
        if carries and c.name in digital_layers:
            step.append(macro.digital_gemm(m, c.n, c.k, phase="input_grad", layer=c.name, samples=c.samples,
                                           copies=c.groups))
        elif carries:  # a gradient reaches its input: something upstream trains (a weight or a BN bias)
            step.append(macro.expected_input_grad(m, c.k, c.n, c.groups, c.samples, stats.error_plane_density,
                                                  stats.weight_bit_density, c.name))
        if c.trainable and c.name in digital_layers:
            step.append(macro.digital_gemm(m, k_grad, c.n, phase="weight_grad", layer=c.name, samples=c.samples,
                                           copies=c.groups))
        elif c.trainable:
            step += macro.expected_weight_grad(m, k_grad, c.n, c.groups, c.samples, stats.forward_plane_density,
                                               stats.error_plane_density, c.name, grad_rng)
    step += [rec for rec in extra if rec.phase != "forward"]
    for c in graph.calls:
        if not c.trainable or c.weightless:
            continue
        if c.name in digital_layers:
            step.append(macro.update_digital(c.name, c.groups * c.k * c.n))
            trainable += c.groups * c.k * c.n
            continue
        step += macro.update_weights(c.name, updated[c.name])
        step.append(macro.update_digital(c.name, c.groups * c.k * c.n))
        trainable += c.groups * c.k * c.n
    if digital_params:
        step.append(macro.update_digital(DIGITAL_PARAMS, digital_params))
    step = [rec.tagged(module=rec.home, step=0, task=task) for rec in step]
    macs = sum(c.macs for c in graph.calls)
    return CostOnlyStep(ops + step, graph, trainable + digital_params, macs)

