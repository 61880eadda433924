"""The metrics registry: every figure a report carries, with its unit, basis, meaning and golden tolerance.

One list, read by the report (units in report.json), the methods table, ``imcsim compare`` and
``imcsim sweep`` (their columns), and the golden tests (every registered metric against its tolerance).
The values themselves are computed by :func:`imcsim.api.run`.

Bases: ``run`` (a total over the whole run: every task, every step), ``step`` (per training step),
``task`` (per task), ``hardware`` (a property of the built hardware), ``schedule`` (bookkeeping of the event
simulation). Units are SI; ``1`` marks a plain number or a fraction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from imcsim.units import unit_of_name

BASES = ("run", "step", "task", "hardware", "schedule")


@dataclass(frozen=True)
class Metric:
    """One registered metric. ``rel``/``abs_tol``: how far a rerun may drift from its golden value (0: exact;
    training-dependent figures drift with floating-point order across machines)."""

    name: str
    basis: str
    description: str
    rel: float = 0.0
    abs_tol: float = 0.0

    @property
    def unit(self) -> str:
        return unit_of(self.name)

    def matches(self, value: float, golden: float) -> bool:
        """``value`` is within tolerance of ``golden`` (NaN matches NaN, infinity matches itself)."""
        if isinstance(golden, float) and math.isnan(golden):
            return isinstance(value, float) and math.isnan(value)
        if golden in (math.inf, -math.inf) or value in (math.inf, -math.inf):
            return value == golden
        return math.isclose(value, golden, rel_tol=self.rel, abs_tol=self.abs_tol)


TRAINED = dict(rel=0.05, abs_tol=1e-12)  # follows the training trajectory
HOTTEST = dict(rel=0.15)  # set by one cell, the most written: one weight's trajectory (56 vs 61 writes seen)

REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy_source", "run", "accuracy of the deployed model on its source (pretraining) task, 0..1",
           abs_tol=0.1),
    Metric("accuracy_average", "run", "mean accuracy over every task after the last one, 0..1", abs_tol=0.1),
    Metric("forgetting", "run", "mean drop of each earlier task's accuracy from just after it was learned, 0..1",
           abs_tol=0.1),
    Metric("trainable_params", "run", "parameters the method trains"),
    Metric("memory_weights_bytes", "step", "training memory: weights (frozen at 8 bits, trainable at 32)"),
    Metric("memory_optimizer_bytes", "step", "training memory: optimizer state of the trainable weights"),
    Metric("memory_activations_kept_bytes", "step", "training memory: activations kept for the backward pass"),
    Metric("memory_activations_peak_bytes", "step", "largest live activation and error set over the step"),
    Metric("memory_peak_bytes", "step", "peak training memory: weights + optimizer state + live activations"),
    Metric("training_steps", "run", "training steps over every task"),
    Metric("energy_train_j", "run", "training energy over every task", **TRAINED),
    Metric("energy_per_step_j", "step", "training energy per step", **TRAINED),
    Metric("energy_deploy_j", "run", "energy of deploying the weights into the array", **TRAINED),
    Metric("energy_array_leakage_train_j", "run", "leakage of the occupied arrays over the training time "
           "(reported beside energy_train_j, not in it)", **TRAINED),
    Metric("energy_program_j", "run", "energy of the training write-backs", **TRAINED),
    Metric("latency_train_s", "run", "scheduled training time over every task", **TRAINED),
    Metric("latency_per_step_s", "step", "scheduled time per training step", **TRAINED),
    Metric("latency_forward_s", "run", "critical-path time in the forward phase, over the run", **TRAINED),
    Metric("latency_input_grad_s", "run", "critical-path time in the input-gradient phase, over the run",
           **TRAINED),
    Metric("latency_weight_grad_s", "run", "critical-path time in the weight-gradient phase, over the run",
           **TRAINED),
    Metric("latency_update_s", "run", "critical-path time in the update (write-back) phase, over the run",
           **TRAINED),
    Metric("latency_in_order_per_step_s", "step", "time per step with every op run one after another "
           "(no overlap; buffer transfers left out)", **TRAINED),
    Metric("latency_deploy_s", "run", "scheduled time of the deployment writes", **TRAINED),
    Metric("latency_program_s", "run", "own duration of the training write-backs, before overlap", **TRAINED),
    Metric("utilization_array", "run", "busy fraction of the occupied subarrays over the training time",
           **TRAINED),
    Metric("utilization_digital", "run", "busy fraction of the digital unit over the training time", **TRAINED),
    Metric("utilization_buffer", "run", "busy fraction of the buffer ports over the training time", **TRAINED),
    Metric("utilization_write_drivers", "run", "busy fraction of the write drivers over the training time",
           rel=0.1, abs_tol=1e-6),
    Metric("utilization_scratch", "run", "busy fraction of the scratch subarrays (in-array weight gradient)",
           **TRAINED),
    Metric("write_pulses", "run", "write pulses on the memory cells during training", **TRAINED),
    Metric("write_pulses_deploy", "run", "write pulses of the deployment", **TRAINED),
    Metric("cells_written", "run", "cells written at least once during training", **TRAINED),
    Metric("writes_max_per_cell", "run", "writes of the most written cell over the run", **HOTTEST),
    Metric("writes_mean_per_cell", "run", "mean writes per stored cell over the run", **TRAINED),
    Metric("writes_max_per_cell_per_step", "step", "write rate of the most written cell per step", **HOTTEST),
    Metric("endurance_cycles", "hardware", "write endurance of the device's cells"),
    Metric("lifetime_steps", "run", "training steps until the most written cell reaches its endurance",
           **HOTTEST),
    Metric("lifetime_years", "run", "years of back-to-back training until the most written cell wears out",
           **HOTTEST),
    Metric("lifetime_tasks", "run", "tasks until the most written cell wears out", **HOTTEST),
    Metric("cells_programmed", "run", "cells whose stored value changed, summed over the write-backs", **TRAINED),
    Metric("cells_programmed_per_step", "step", "cells programmed per training step", **TRAINED),
    Metric("cells_programmed_per_task", "task", "cells programmed per task", **TRAINED),
    Metric("area_m2", "hardware", "macro area: cell arrays, peripherals and the digital unit", rel=1e-9),
    Metric("subarrays_used", "hardware", "subarrays (crossbars) holding weights"),
    Metric("utilization", "hardware", "fraction of the occupied subarrays' cells holding weights"),
    Metric("cycle_time_s", "hardware", "clock period of the macro", rel=1e-9),
    Metric("schedule_tasks", "schedule", "tile operations the event simulation scheduled", **TRAINED),
    Metric("schedule_events", "schedule", "events the event simulation processed", **TRAINED),
    Metric("schedules_simulated", "schedule", "step schedules simulated (the rest replayed by shape)"),
    Metric("schedules_replayed", "schedule", "step schedules replayed from one of the same shape"),
    Metric("analog_error_relative_rms", "run", "relative RMS error of the analog GEMMs against the exact "
           "products (not measured, NaN, in cost-only runs)", rel=0.1),
    Metric("analog_error_max_abs", "run", "largest absolute error of an analog GEMM output (NaN in cost-only runs)",
           rel=0.1),
)}

COMPARE_METRICS = (
    "accuracy_average", "forgetting", "trainable_params", "memory_peak_bytes", "training_steps",
    "energy_train_j", "energy_per_step_j", "energy_deploy_j", "latency_train_s", "latency_per_step_s",
    "write_pulses", "write_pulses_deploy", "cells_written", "cells_programmed_per_step", "cells_programmed_per_task",
    "energy_program_j", "latency_program_s", "writes_max_per_cell", "writes_max_per_cell_per_step",
    "lifetime_steps", "lifetime_tasks", "lifetime_years", "area_m2", "subarrays_used",
)
"""Columns of ``imcsim compare``, in order."""
SWEEP_METRICS = ("accuracy_source", *COMPARE_METRICS, "analog_error_relative_rms")
"""Columns of a sweep's results, in order (a resumed sweep's table keeps them)."""
METHOD_COLUMNS = (
    "trainable_params", "accuracy_average", "forgetting", "memory_peak_bytes", "memory_activations_kept_bytes",
    "energy_train_j", "latency_train_s", "write_pulses", "cells_written", "cells_programmed_per_task",
    "writes_max_per_cell", "lifetime_tasks", "lifetime_years",
)
"""Columns of the methods (baselines) table, in order."""
_unregistered = [n for n in {*SWEEP_METRICS, *METHOD_COLUMNS} if n not in REGISTRY]
assert not _unregistered, _unregistered


def unit_of(name: str) -> str:
    """The unit of a metric, from its name's suffix; ``1`` for a plain number or a fraction."""
    return unit_of_name(name) or "1"
