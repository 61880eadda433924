"""Python API: build the hardware of a config, run its workload, cost it, report.

    loaded = load_config("configs/sas_mram_repnet.yaml")
    report = run(loaded)
    write_report(report, "out/sas_mram_repnet")

The CLI (:mod:`imcsim.cli`) is a thin shell over these functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from imcsim import REPORT_SCHEMA_VERSION, __version__
from imcsim.circuits import BitSerialMacro, CapacityError, MappingError, build_circuit
from imcsim.circuits.crossbar import AnalogCrossbar
from imcsim.config import LoadedConfig
from imcsim.cost import CostResult, cost
from imcsim.devices import MemoryDevice, build_device
from imcsim.errors import InputError, PhysicsError
from imcsim.metrics import METHOD_COLUMNS
from imcsim.report import Report
from imcsim.sim import TRAINING_PHASES, tally_ops
from imcsim.sim.tally import measured_activity
from imcsim.sim.timeline import RunTimeline, energy_over_time, schedule_run, step_power_profile
from imcsim.units import SECONDS_PER_YEAR
from imcsim.workloads.adaptation import array_layers as adaptation_layers
from imcsim.workloads.adaptation import run_adaptation, run_adaptation_cost_only
from imcsim.workloads.continual import ContinualResult, run_continual, run_cost_only
from imcsim.workloads.continual import array_layers as continual_layers
from imcsim.workloads.data import DataError
from imcsim.workloads.int8 import ArrayLayer


@dataclass(frozen=True)
class HardwareModel:
    device: MemoryDevice
    macro: BitSerialMacro


def build_hardware(loaded: LoadedConfig) -> HardwareModel:
    """Device -> cell costs -> macro action costs. Physics problems name file and key."""
    cfg = loaded.config
    _check_run_options(loaded)
    device = _built(loaded, "device", lambda: build_device(cfg.device, seed=cfg.seed))
    _check_finite(loaded, "device", _built(loaded, "device", lambda: {
        name: value for name, (value, _unit) in device.figures().items()}))
    macro = _built(loaded, "circuit", lambda: build_circuit(cfg.circuit, device))
    _check_finite(loaded, "circuit", _built(loaded, "circuit", lambda: {
        **{f"{c}.{a}.{what}": v for (c, a), spec in macro.actions.items()
           for what, v in (("energy_j", spec.cost.energy_j), ("latency_s", spec.cost.latency_s))},
        "area_m2": macro.area_m2()}))
    return HardwareModel(device, macro)


def _built(loaded: LoadedConfig, section: str, build: Callable):
    """Run one build step; a physics problem or an arithmetic failure (an overflow, a division by zero, a
    domain error) becomes an input error naming the section's key."""
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            return build()
    except PhysicsError as err:
        key = f"{section}.{err.key}" if err.key else section
        raise InputError(err.message, file=loaded.where(key), key=key) from None
    except (ArithmeticError, ValueError) as err:  # values each in range whose combination the model cannot evaluate
        raise InputError(f"its values cannot be evaluated together ({type(err).__name__}: {err}); move the values "
                         "you changed back toward the card's", file=loaded.where(section), key=section) from None


def _check_finite(loaded: LoadedConfig, section: str, figures: dict[str, float]) -> None:
    """Every derived figure of a built section is finite and non-negative."""
    bad = {k: v for k, v in figures.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        name, value = next(iter(bad.items()))
        raise InputError(f"its values give {name} = {value!r}{f' (+{len(bad) - 1} more)' if len(bad) > 1 else ''}; "
                         "move the values you changed back toward the card's", file=loaded.where(section), key=section)


def _check_run_options(loaded: LoadedConfig) -> torch.device:
    """Check the ``run`` section against what this build can do; return the torch device."""
    run_opts = loaded.config.run
    if run_opts.mode == "cost_only" and getattr(loaded.config.workload, "cost_only", None) is None:
        raise InputError("run.mode=cost_only needs a workload.cost_only section (batch_size, steps_per_task, "
                         "activity and the model's sizes); add one or use mode functional",
                         file=loaded.where("run.mode"), key="run.mode")
    if run_opts.mode == "cost_only" and loaded.config.circuit.dataflow.weight_grad != "digital":
        raise InputError("cost-only runs count the weight gradient in the digital unit; set "
                         "circuit.dataflow.weight_grad=digital or use mode functional",
                         file=loaded.where("circuit.dataflow.weight_grad"), key="circuit.dataflow.weight_grad")
    if run_opts.torch_device == "cuda" and loaded.config.workload.kind == "lora_adaptation":
        raise InputError("adaptation workloads train their small transformer on the CPU (its cost is the circuit "
                         "model's, not the arithmetic's); use auto or cpu", file=loaded.where("run.torch_device"),
                         key="run.torch_device")
    try:
        return torch_device(run_opts.torch_device)
    except InputError as err:
        raise InputError(err.message, file=loaded.where("run.torch_device"), key="run.torch_device") from None


def torch_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was asked for but torch sees no CUDA device; use auto or cpu", key="run.torch_device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def run(
    loaded: LoadedConfig,
    progress: Callable[[str, int, int], None] | None = None,
    hardware: HardwareModel | None = None,
    keep_timeline: bool = False,
    trace_step: int = 1,
) -> Report | RunResult:
    """Run a loaded config end to end and return its :class:`Report`.

    ``hardware`` (from :func:`build_hardware`) is built here when not given; it is
    stateful (the macro holds the stored weights), so use a fresh one per run.
    With ``keep_timeline`` a :class:`RunResult` also carries the step schedules, with the schedule of
    training step ``trace_step`` (1-based) kept whole for a trace.
    """
    hw = hardware or build_hardware(loaded)
    dev = _check_run_options(loaded)
    check_capacity(loaded, hw)  # before any training: a workload that does not fit fails now, with its total
    # The workloads seed torch's global generators; the caller's state (a notebook's) is put back after.
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if dev.type == "cuda" else []):
        return _run(loaded, progress, hw, dev, keep_timeline, trace_step)


def _run(loaded: LoadedConfig, progress: Callable[[str, int, int], None] | None, hw: HardwareModel,
         dev: torch.device, keep_timeline: bool, trace_step: int) -> Report | RunResult:
    cfg = loaded.config
    shared: dict = {}
    ev = _evaluate(loaded, _execute(loaded, cfg.workload, hw, dev, progress, shared), hw, trace_step)
    tables = ev.tables
    baselines = [m for m in getattr(cfg.workload, "baselines", []) if m != cfg.workload.method]
    if baselines:  # the same scenario per method, each on fresh hardware of the same config
        rows = [_method_row(cfg.workload.method, ev)]
        for method in baselines:
            other_hw = build_hardware(loaded)
            card = cfg.workload.model_copy(update={"method": method})
            other = _evaluate(loaded, _execute(loaded, card, other_hw, dev, progress, shared), other_hw)
            rows.append(_method_row(method, other))
        tables["methods"] = rows
    report = Report(
        schema_version=REPORT_SCHEMA_VERSION,
        imcsim_version=__version__,
        name=cfg.name,
        config_hash=loaded.config_hash,
        seed=cfg.seed,
        config=loaded.resolved,
        metrics=ev.metrics,
        costs={"train": ev.train, "deploy": ev.deploy},
        action_descriptions={f"{c}.{a}": spec.description for (c, a), spec in hw.macro.actions.items()},
        tables=tables,
    )
    return RunResult(report, ev.timeline) if keep_timeline else report


@dataclass(frozen=True)
class Capacity:
    """The array a workload needs (its most demanding method) and the one the circuit has."""

    needed: int  # subarrays (crossbars) the run stores weights in
    available: int  # circuit.array.n_subarrays
    unit: str  # "subarrays" or "crossbars"
    parts: dict[str, int]  # needed, by part of the model (backbone, side modules, heads, adapters...)
    method: str  # the method that needs the most

    @property
    def fits(self) -> bool:
        return self.needed <= self.available


def check_capacity(loaded: LoadedConfig, hardware: HardwareModel | None = None) -> Capacity:
    """Map the whole workload onto the circuit from its model's shapes (no data, no training); check it fits.

    Every weight matrix the run stores (for the method and each baseline, in the config's run mode) is
    placed as :meth:`BitSerialMacro.store` places it, so the total is what the run will use. Raises
    :class:`InputError` naming ``circuit.array.n_subarrays`` when the total exceeds it (or naming
    ``circuit.card`` when the circuit cannot map a layer); returns the :class:`Capacity` otherwise.
    """
    cfg = loaded.config
    macro = (hardware or build_hardware(loaded)).macro
    card = cfg.workload
    methods = [card.method, *(m for m in getattr(card, "baselines", []) if m != card.method)]
    best: Capacity | None = None
    unit = "crossbars" if isinstance(macro, AnalogCrossbar) else "subarrays"
    a = macro.card.array
    for method in methods:
        layers = _array_layers(card.model_copy(update={"method": method}), cfg.run.mode)
        placed: dict[str, tuple[str, int]] = {}
        try:
            for layer in layers:
                for name, tiles in macro.placement(layer.name, layer.k, layer.n, layer.groups).items():
                    placed[name] = (layer.part, math.prod(tiles))
        except MappingError as err:
            raise InputError(f"{err}; choose a bitserial_macro circuit card", file=loaded.where("circuit.card"),
                             key="circuit.card") from None
        parts: dict[str, int] = {}
        for part, n in placed.values():
            parts[part] = parts.get(part, 0) + n
        cap = Capacity(sum(parts.values()), a.n_subarrays, unit, parts, method)
        if best is None or cap.needed > best.needed:
            best = cap
    if not best.fits:
        key = "circuit.array.n_subarrays"
        who = "" if best.method == card.method else f" with the baseline method {best.method}"
        split = ", ".join(f"{part} {n}" for part, n in best.parts.items())
        raise InputError(f"the workload needs {best.needed} {unit} of {a.rows} x {a.cols}{who} ({split}) but the "
                         f"circuit has {best.available}; raise {key} to at least {best.needed} or choose a smaller "
                         "workload", file=loaded.where(key), key=key)
    return best


def _array_layers(card, mode: str) -> list[ArrayLayer]:
    """The weight matrices a run of the workload ``card`` stores in the array (see :func:`_execute`)."""
    if card.kind == "lora_adaptation":
        return adaptation_layers(card, mode)
    return continual_layers(card, mode)


def _execute(loaded: LoadedConfig, card, hw: HardwareModel, dev: torch.device,
             progress: Callable[[str, int, int], None] | None, shared: dict) -> ContinualResult:
    """Run one workload card on ``hw`` (its macro records the ops)."""
    cfg = loaded.config
    try:
        if card.kind == "lora_adaptation":
            if cfg.run.mode == "cost_only":
                return run_adaptation_cost_only(card, hw.macro, cfg.seed)
            return run_adaptation(card, hw.macro, cfg.seed, dev, progress, shared)
        if cfg.run.mode == "cost_only":
            return run_cost_only(card, hw.macro, cfg.seed)
        return run_continual(card, hw.macro, cfg.seed, dev, progress, shared)
    except CapacityError as err:
        key = "circuit.array.n_subarrays"
        raise InputError(f"{err}; raise it or choose a smaller workload", file=loaded.where(key), key=key) from None
    except MappingError as err:
        raise InputError(f"{err}; choose a bitserial_macro circuit card", file=loaded.where("circuit.card"),
                         key="circuit.card") from None
    except DataError as err:
        key = f"workload.{err.key}" if err.key else "workload"
        raise InputError(str(err), file=loaded.where(key), key=key) from None


@dataclass
class _Evaluation:
    metrics: dict[str, float]
    tables: dict
    train: CostResult
    deploy: CostResult
    timeline: RunTimeline


def _evaluate(loaded: LoadedConfig, result: ContinualResult, hw: HardwareModel, trace_step: int = 1) -> _Evaluation:
    """Tally, schedule and cost a workload result on the hardware that ran it: the report's metrics and tables."""
    cfg = loaded.config
    tally = tally_ops(result.ops)
    macro = hw.macro
    t_cycle = macro.t_cycle_s
    timeline = schedule_run(result.ops, result.graphs, macro, cfg.run.engine, trace_step)
    train = cost(tally.counts(TRAINING_PHASES), macro.actions,
                 {p: timeline.critical_by_phase.get(p, 0) for p in TRAINING_PHASES}, t_cycle)
    deploy = cost(tally.counts(("deploy",)), macro.actions, {"deploy": timeline.deploy_cycles}, t_cycle)
    counted = sum(result.steps_per_task)
    scale = result.step_scale
    steps = counted * scale
    train = train.scaled(scale)
    all_cells = (sum(s.values.size * macro.cells_per_weight for s in macro.stored.values())
                 + sum(b.size for b in macro.scratch.values()))
    ws = tally.write_stats(all_cells)
    step_latency = train.total_latency_s / steps if steps else 0.0
    if scale == 1.0:
        max_per_step = ws.max_writes / steps if steps else 0.0
    else:  # one counted step stands for many: the hottest bit position's expected write rate
        max_per_step = tally.pooled_max_write_rate(macro.cells_per_weight) / counted
    endurance = hw.device.endurance_cycles
    lifetime_steps = endurance / max_per_step if max_per_step > 0 and math.isfinite(endurance) else math.inf
    cells_programmed = sum(tally.programmed_by_task.values()) * scale
    n_tasks = len(result.task_names) * result.task_repeats
    steps_per_task = steps / n_tasks if n_tasks else 0.0
    leak_w = hw.device.leakage_per_bit_w * macro.card.array.rows * macro.card.array.cols * macro.subarrays_used
    accuracy = {} if cfg.run.mode == "cost_only" else {
        "accuracy_source": result.source_accuracy,
        "accuracy_average": result.average_accuracy,
        "forgetting": result.forgetting,
    }
    metrics: dict[str, float] = {
        **accuracy,
        "trainable_params": result.trainable_params,
        **(result.memory.as_bytes() if result.memory is not None else {}),
        "training_steps": round(steps),
        "energy_train_j": train.total_energy_j,
        "energy_per_step_j": train.total_energy_j / steps if steps else 0.0,
        "energy_deploy_j": deploy.total_energy_j,
        "energy_array_leakage_train_j": leak_w * train.total_latency_s,
        "latency_train_s": train.total_latency_s,
        "latency_per_step_s": step_latency,
        **{f"latency_{p}_s": train.latency_s.get(p, 0.0) for p in TRAINING_PHASES},
        "latency_in_order_per_step_s": sum(timeline.in_order_cycles) * t_cycle / counted if counted else 0.0,
        "latency_deploy_s": deploy.total_latency_s,
        **{f"utilization_{g}": u for g, u in timeline.utilization().items() if timeline.capacity_by_group[g]},
        "write_pulses": _pulses(train, hw),
        "write_pulses_deploy": _pulses(deploy, hw),
        "cells_written": ws.cells_written,
        "writes_max_per_cell": ws.max_writes * scale if scale == 1.0 else max_per_step * steps,
        "writes_mean_per_cell": ws.mean_writes * scale,
        "writes_max_per_cell_per_step": max_per_step,
        "endurance_cycles": hw.device.endurance_cycles,
        "lifetime_steps": lifetime_steps,
        "lifetime_years": lifetime_steps * step_latency / SECONDS_PER_YEAR,
        "lifetime_tasks": lifetime_steps / steps_per_task if steps_per_task else math.inf,
        "cells_programmed": cells_programmed,
        "cells_programmed_per_step": cells_programmed / steps if steps else 0.0,
        "cells_programmed_per_task": cells_programmed / n_tasks if n_tasks else 0.0,
        # the training write-backs' energy and own duration (before the schedule overlaps them)
        "energy_program_j": cost(tally.program_counts, macro.actions, {}, t_cycle).total_energy_j * scale,
        "latency_program_s": tally.program_cycles * t_cycle * scale,
        "area_m2": macro.area_m2(),
        "subarrays_used": macro.subarrays_used,
        "utilization": macro.utilization(),
        "cycle_time_s": t_cycle,
        "schedule_tasks": timeline.tasks_scheduled,
        "schedule_events": timeline.scheduler.events,
        "schedules_simulated": timeline.scheduler.simulated,
        "schedules_replayed": timeline.scheduler.replayed,
    }
    error = getattr(macro, "error", None)
    if error is not None:  # analog results: error of every counted GEMM against the exact product
        measured = error.outputs > 0  # cost-only runs evaluate no analog arithmetic: not measured (NaN, null)
        metrics["analog_error_relative_rms"] = error.relative_rms if measured else math.nan
        metrics["analog_error_max_abs"] = error.max_abs_error if measured else math.nan
    per_task = []
    task_cycles = _cycles_by_task(timeline)
    reps = result.task_repeats
    for name, steps_i in zip(result.task_names, result.steps_per_task, strict=True):
        share = scale / reps  # cost-only: the counted task stands for ``reps`` alike tasks
        c = cost(tally.counts_by_task[name], macro.actions, {"all": task_cycles.get(name, 0)}, t_cycle).scaled(share)
        pulses = sum(n for (comp, action), n in c.counts.items()
                     if comp == hw.device.component and action.endswith("_pulse"))
        labels = list(result.repeat_names) or ([name] if reps == 1 else [f"{name}#{i + 1}" for i in range(reps)])
        for label in labels:
            per_task.append({"task": label, "steps": steps_i * share,
                             "energy_j": c.total_energy_j, "latency_s": c.total_latency_s,
                             "write_pulses": int(pulses), "cells_programmed": round(tally.programmed_by_task[name] * share)})
    tables = {
        "tasks": result.task_names,
        "accuracy_matrix": result.accuracy.tolist(),
        "per_task": per_task,
        "write_histogram": [list(p) for p in ws.histogram],
        "writes_max_per_layer": ws.per_layer_max,
        "device_figures": {k: v for k, (v, _) in hw.device.figures().items()},
        "activity": measured_activity(result.ops, [s.values for s in macro.stored.values()]) if cfg.run.mode == "functional" else {},
        "energy_over_time": [list(p) for p in energy_over_time(timeline)],
        "step_power_profile": [list(p) for p in step_power_profile(timeline.first_step, t_cycle)]
        if timeline.first_step is not None else [],
    }
    return _Evaluation(metrics, tables, train, deploy, timeline)


def _pulses(c: CostResult, hw: HardwareModel) -> int:
    """Device write pulses among the counted actions."""
    return round(sum(n for (comp, action), n in c.counts.items()
                     if comp == hw.device.component and action.endswith("_pulse")))



def _method_row(method: str, ev: _Evaluation) -> dict:
    """One row of the baselines table: the method's headline figures on the shared hardware."""
    return {"method": method, **{k: ev.metrics[k] for k in METHOD_COLUMNS if k in ev.metrics}}


@dataclass(frozen=True)
class RunResult:
    """A report with the schedules behind it (for a trace export)."""

    report: Report
    timeline: RunTimeline


def _cycles_by_task(timeline: RunTimeline) -> dict[str, int]:
    out: dict[str, int] = {}
    for task, cyc in zip(timeline.step_task, timeline.step_cycles, strict=True):
        out[task] = out.get(task, 0) + cyc
    return out


__all__ = ["Capacity", "CostResult", "HardwareModel", "build_hardware", "check_capacity", "run"]
