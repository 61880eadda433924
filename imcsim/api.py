"""Python API: build the hardware of a config, run its workload, cost it, report.

    loaded = load_config("configs/sas_mram_repnet.yaml")
    report = run(loaded)           # execute, tally, schedule, cost, metrics -> Report
    write_report(report, "out/sas_mram_repnet")

The CLI (:mod:`imcsim.cli`) is a thin shell over these functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from imcsim import REPORT_SCHEMA_VERSION, __version__
from imcsim.chip import Chip, MacroFull, PlacementError, macros_of
from imcsim.circuits import ArrayCircuit, CapacityError, MappingError, build_circuit
from imcsim.components.power import corner_warnings
from imcsim.config import LoadedConfig
from imcsim.cost import CostResult, cost, leakage_cost
from imcsim.devices import MemoryDevice, build_device, device_warnings
from imcsim.devices.errors import ErrorInjector
from imcsim.environment import environment, pinned
from imcsim.errors import InputError, PhysicsError
from imcsim.metrics import REGISTRY as METRICS
from imcsim.metrics import RunContext, against_full, evaluate, method_row
from imcsim.report import Report
from imcsim.sim import TRAINING_PHASES, tally_ops
from imcsim.sim.gating import static_energy
from imcsim.sim.timeline import schedule_run
from imcsim.workloads.adaptation import array_layers as adaptation_layers
from imcsim.workloads.adaptation import run_adaptation, run_adaptation_cost_only
from imcsim.workloads.continual import ContinualResult, model_key, run_continual, run_cost_only
from imcsim.workloads.continual import array_layers as continual_layers
from imcsim.workloads.data import DataError
from imcsim.workloads.int8 import ArrayLayer
from imcsim.workloads.traffic import BufferTooSmall


@dataclass(frozen=True)
class HardwareModel:
    device: MemoryDevice
    macro: ArrayCircuit


def build_hardware(loaded: LoadedConfig) -> HardwareModel:
    """Device -> cell costs -> macro action costs. Physics problems name file and key."""
    cfg = loaded.config
    _check_run_options(loaded)
    device = _built(loaded, "device", lambda: build_device(cfg.device, seed=cfg.seed, temperature_k=cfg.run.temperature_k))
    _check_finite(loaded, "device", _built(loaded, "device", lambda: {
        name: value for name, (value, _unit) in device.figures().items()}))
    _warn(loaded, "device", device)
    macro = _built(loaded, "circuit", lambda: build_circuit(cfg.circuit, device))
    others = {}
    for name, parts in cfg.chip.macros.items():  # further macros of a chip, each of its own cards
        key = f"chip.macros.{name}"
        dev = _built(loaded, f"{key}.device", lambda parts=parts: build_device(parts["device"], seed=cfg.seed, temperature_k=cfg.run.temperature_k))
        _warn(loaded, f"{key}.device", dev)
        others[name] = _built(loaded, f"{key}.circuit", lambda parts=parts, dev=dev: build_circuit(parts["circuit"],
                                                                                                   dev))
    if others:
        macro = Chip(macro, others, cfg.chip.placement)
    for key, message in circuit_warnings(cfg):
        print(f"warning: {loaded.where(key)}: {key}: {message}", file=sys.stderr)
    _check_finite(loaded, "circuit", _built(loaded, "circuit", lambda: {
        **{f"{c}.{a}.{what}": v for (c, a), spec in macro.actions.items()
           for what, v in (("energy_j", spec.cost.energy_j), ("latency_s", spec.cost.latency_s))},
        "area_m2": macro.area_m2()}))
    return HardwareModel(device, macro)


@dataclass(frozen=True)
class TargetCheck:
    """One published figure against the simulated one."""

    metric: str
    published: float
    simulated: float | None
    tolerance: float
    source: str
    conditions: str

    @property
    def ratio(self) -> float | None:
        return self.simulated / self.published if self.simulated is not None else None

    @property
    def within(self) -> bool:
        r = self.ratio
        return r is not None and 1.0 / self.tolerance <= r <= self.tolerance


def check_targets(loaded: LoadedConfig, report: Report) -> list[TargetCheck]:
    """Each of the config's ``targets`` against the report's figure."""
    cfg = loaded.config
    return [TargetCheck(name, t.value, report.metrics.get(name), t.tolerance, cfg.references[t.source],
                        t.conditions) for name, t in cfg.targets.items()]


def circuit_warnings(cfg) -> list[tuple[str, str]]:
    """(key, message) of each circuit card that mixes transistor corners, and of a chip whose macros are on
    different corners."""
    circuits = {"circuit": cfg.circuit, **{f"chip.macros.{n}.circuit": p["circuit"] for n, p in cfg.chip.macros.items()}}
    out = [w for key, card in circuits.items() for w in corner_warnings(card.components, f"{key}.components")]
    main = cfg.circuit.components.corner
    for key, card in circuits.items():
        other = card.components.corner
        if other.name != main.name:
            out.append((f"{key}.components.corner", f"{other.name} corner beside the main circuit's {main.name} "
                        "(circuit.components.corner): the chip's macros are on different corners"))
    return out


def _warn(loaded: LoadedConfig, section: str, device: MemoryDevice) -> None:
    """Report, on stderr, each operating point a device accepts but rates past its card's limit (a write error
    rate, a half-select disturb), naming the file and the key; the report lists them too."""
    for key, message in device_warnings(device):
        full = f"{section}.{key}"
        print(f"warning: {loaded.where(full)}: {full}: {message}", file=sys.stderr)


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
    if run_opts.torch_device == "cuda" and loaded.config.workload.kind == "lora_adaptation":
        raise InputError("adaptation workloads train their small transformer on the CPU (its cost is the circuit "
                         "model's, not the arithmetic's); use auto or cpu", file=loaded.where("run.torch_device"),
                         key="run.torch_device")
    _check_task_times(loaded)
    for name in loaded.config.targets:  # a target names a metric the report carries
        if name not in METRICS:
            raise InputError("is not a metric (a target names one of the registry's, e.g. "
                             "tops_per_watt_macro_forward, tops_per_mm2_macro_forward)",
                             file=loaded.where(f"targets.{name}"), key=f"targets.{name}")
    try:
        return torch_device(run_opts.torch_device)
    except InputError as err:
        raise InputError(err.message, file=loaded.where("run.torch_device"), key="run.torch_device") from None


def _check_task_times(loaded: LoadedConfig) -> None:
    """The last task of a workload spaced in time must fall within the device's relaxation fit."""
    wl, dev = loaded.config.workload, loaded.config.device
    interval = getattr(wl, "task_interval_s", 0.0)
    rel = getattr(dev, "relaxation", None)
    if not interval or rel is None or loaded.config.run.mode == "cost_only":
        return
    last = interval * (wl.n_tasks - 1)
    if last > rel.max_time_s:
        raise InputError(f"{wl.n_tasks} tasks {interval:.3g} s apart put the last one {last:.3g} s after "
                         f"deployment, beyond the device's relaxation fit ({rel.max_time_s:.3g} s, "
                         "device.relaxation.max_time)", file=loaded.where("workload.task_interval"),
                         key="workload.task_interval")


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
    trace_step: int = 1,
) -> Report:
    """Run a loaded config end to end and return its :class:`Report`, with the run's step schedules attached
    (``report.timeline``; the schedule of training step ``trace_step``, 1-based, kept whole for a trace).

    ``hardware`` (from :func:`build_hardware`) is built here when not given; it is
    stateful (the macro holds the stored weights), so use a fresh one per run.
    """
    hw = hardware or build_hardware(loaded)
    dev = _check_run_options(loaded)
    check_capacity(loaded, hw)  # before any training: a workload that does not fit fails now, with its total
    # The workloads seed torch's global generators; the caller's state (a notebook's) is put back after, and so
    # are its thread counts and deterministic-kernel flag.
    threads = loaded.config.run.threads
    with (torch.random.fork_rng(devices=[torch.cuda.current_device()] if dev.type == "cuda" else []),
          pinned(threads, dev.type)):
        report = _run(loaded, progress, hw, dev, trace_step)
    return dataclasses.replace(report, environment=environment(threads, str(dev)))


def _run(loaded: LoadedConfig, progress: Callable[[str, int, int], None] | None, hw: HardwareModel,
         dev: torch.device, trace_step: int) -> Report:
    """The pipeline: execute, tally, schedule, cost, metrics (the method and each baseline), report."""
    cfg = loaded.config
    shared: dict = {}
    ctx = _measure(loaded, _execute(loaded, cfg.workload, hw, dev, progress, shared), hw, trace_step)
    metrics, tables = evaluate(ctx)
    baselines = [m for m in getattr(cfg.workload, "baselines", []) if m != cfg.workload.method]
    if baselines:  # the same scenario per method, each on fresh hardware of the same config
        rows = [method_row(cfg.workload.method, metrics)]
        for method in baselines:
            other_hw = build_hardware(loaded)
            card = cfg.workload.model_copy(update={"method": method})
            other, _ = evaluate(_measure(loaded, _execute(loaded, card, other_hw, dev, progress, shared), other_hw))
            rows.append(method_row(method, other))
        tables["methods"] = against_full(rows)
    return Report(
        schema_version=REPORT_SCHEMA_VERSION,
        imcsim_version=__version__,
        name=cfg.name,
        config_hash=loaded.config_hash,
        seed=cfg.seed,
        config=loaded.resolved,
        metrics=metrics,
        costs={"train": ctx.train, "deploy": ctx.deploy},
        action_descriptions={f"{c}.{a}": spec.description for (c, a), spec in hw.macro.actions.items()},
        tables=tables,
        timeline=ctx.timeline,
    )


def _measure(loaded: LoadedConfig, result: ContinualResult, hw: HardwareModel, trace_step: int = 1) -> RunContext:
    """Tally, schedule and cost a workload result on the hardware that ran it."""
    cfg = loaded.config
    macro = hw.macro
    tally = tally_ops(result.ops)
    timeline = schedule_run(result.ops, result.graphs, macro, trace_step=trace_step)
    train = cost(tally.counts(TRAINING_PHASES), macro.actions,
                 {p: timeline.critical_by_phase.get(p, 0) for p in TRAINING_PHASES}, macro.t_cycle_s)
    deploy = cost(tally.counts(("deploy",)), macro.actions, {"deploy": timeline.deploy_cycles}, macro.t_cycle_s)
    domains = _built(loaded, "run", lambda: macro.leakage_domains(cfg.run.temperature_k))
    comps = macro.card.components
    vdd = macro.card.technology.vdd_v
    for idle, which in ((timeline.idle, "train"), (timeline.deploy_idle, "deploy")):
        static = static_energy(domains, comps.dram, comps.power_gating, idle, macro.t_cycle_s, vdd)
        timeline.static[which] = static
        extra = leakage_cost(static.energy_j, idle.cycles, static.wakes)
        if which == "train":
            train += extra
        else:
            deploy += extra
    return RunContext(cfg, hw.device, macro, result, tally, timeline, train.scaled(result.step_scale), deploy)


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
    placed as the circuit's :meth:`store` places it, so the total is what the run will use. Raises
    :class:`InputError` naming ``circuit.array.n_subarrays`` when the total exceeds it (or naming
    ``circuit.card`` when the circuit cannot map a layer); returns the :class:`Capacity` otherwise.
    """
    cfg = loaded.config
    macro = (hardware or build_hardware(loaded)).macro
    card = cfg.workload
    methods = [card.method, *(m for m in getattr(card, "baselines", []) if m != card.method)]
    best: Capacity | None = None
    unit = macro.unit
    a = macro.card.array
    for method in methods:
        try:
            layers = _array_layers(card.model_copy(update={"method": method}), cfg.run.mode)
        except DataError as err:
            key = f"workload.{err.key}" if err.key else "workload"
            raise InputError(str(err), file=loaded.where(key), key=key) from None
        placed: dict[str, tuple[str, int]] = {}
        try:
            macro.assign_layers({layer.name: layer.trainable for layer in layers})
        except PlacementError as err:
            raise InputError(str(err), file=loaded.where(err.key), key=err.key) from None
        per_macro: dict[str, int] = {}
        try:
            for layer in layers:
                for name, tiles in macro.placement(layer.name, layer.k, layer.n, layer.groups).items():
                    placed[name] = (layer.part, math.prod(tiles))
                    home = macro.macro_of(layer.name)
                    per_macro[home] = per_macro.get(home, 0) + math.prod(tiles)
        except MappingError as err:
            raise InputError(f"{err}; choose a bitserial_macro circuit card", file=loaded.where("circuit.card"),
                             key="circuit.card") from None
        others = {home: n for home, n in per_macro.items() if home != "main"}
        checks = [("main", per_macro.get("main", 0), a.n_subarrays, "circuit.array.n_subarrays")] if others else []
        checks += [(home, n, macro.circuits[home].card.array.n_subarrays,
                    f"chip.macros.{home}.circuit.array.n_subarrays") for home, n in others.items()]
        for home, n, have, key in checks:  # each macro of a chip has an array of its own
            if n > have:
                raise InputError(f"the layers placed in macro {home} need {n} {unit} but it has {have}; raise {key} "
                                 f"to at least {n}", file=loaded.where(key), key=key)
        parts: dict[str, int] = {}
        for part, n in placed.values():
            parts[part] = parts.get(part, 0) + n
        spare = sum(macro.circuits[home].card.array.n_subarrays for home in others)
        cap = Capacity(sum(parts.values()), a.n_subarrays + spare, unit, parts, method)
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


_COUNTED: OrderedDict[tuple, tuple[ContinualResult, dict, dict]] = OrderedDict()
"""Counted cost-only steps of recent runs in this process (a sweep's points), by what their counts depend on."""
COUNTED_KEPT = 8


def _count_key(loaded: LoadedConfig, card, hw: HardwareModel) -> tuple | None:
    """What a cost-only step's counts depend on: the workload (and its model file), the circuit, the device's
    kind, cells and write-count key, the cycle time and the seed. None when they cannot be reused (a device
    whose writes are stochastic; functional runs)."""
    dev_key = hw.device.write_count_key()
    if dev_key is None or loaded.config.run.mode != "cost_only" or loaded.config.chip.macros:
        return None
    workload = model_key(card) if card.kind == "continual_learning" else card.model_dump_json()
    return (workload, json.dumps(loaded.resolved["circuit"], sort_keys=True), type(hw.device).__name__,
            hw.device.bits_per_cell, dev_key, hw.macro.t_cycle_s, loaded.config.seed)


def _execute(loaded: LoadedConfig, card, hw: HardwareModel, dev: torch.device,
             progress: Callable[[str, int, int], None] | None, shared: dict) -> ContinualResult:
    """Run one workload card on ``hw`` (its macro records the ops).

    Counting is separate from costing: a cost-only step whose counts a run of this process has already made
    (a sweep over pulse energies, latencies or currents) is not counted again; its ops are re-timed with this
    device's pulse latencies and its stored matrices handed to this macro, and costing runs as usual.
    """
    key = _count_key(loaded, card, hw)
    hit = _COUNTED.get(key) if key is not None else None
    if hit is not None:
        result, stored, transposed = hit
        _COUNTED.move_to_end(key)
        macro = hw.macro
        for region, held in (("weights", stored), ("transposed", transposed)):
            for layer, matrix in held.items():
                macro.hold(region, layer, matrix)
        return dataclasses.replace(result, ops=[macro.retimed(op) for op in result.ops])
    result = _count(loaded, card, hw, dev, progress, shared)
    if key is not None:
        _COUNTED[key] = (result, dict(hw.macro.stored), dict(hw.macro.transposed))
        while len(_COUNTED) > COUNTED_KEPT:
            _COUNTED.popitem(last=False)
    return result


def _count(loaded: LoadedConfig, card, hw: HardwareModel, dev: torch.device,
           progress: Callable[[str, int, int], None] | None, shared: dict) -> ContinualResult:
    cfg = loaded.config
    if cfg.run.mode == "functional" and cfg.run.errors == "inject":
        for macro in macros_of(hw.macro):
            if hasattr(macro.device, "error_rates"):
                macro.errors = ErrorInjector(macro.device, cfg.seed)
    try:
        if card.kind == "lora_adaptation":
            if cfg.run.mode == "cost_only":
                return run_adaptation_cost_only(card, hw.macro, cfg.seed)
            return run_adaptation(card, hw.macro, cfg.seed, dev, progress, shared)
        if cfg.run.mode == "cost_only":
            return run_cost_only(card, hw.macro, cfg.seed)
        return run_continual(card, hw.macro, cfg.seed, dev, progress, shared)
    except (BufferTooSmall, MacroFull, PlacementError) as err:
        raise InputError(str(err), file=loaded.where(err.key), key=err.key) from None
    except CapacityError as err:
        key = "circuit.array.n_subarrays"
        raise InputError(f"{err}; raise it or choose a smaller workload", file=loaded.where(key), key=key) from None
    except MappingError as err:
        raise InputError(f"{err}; choose a bitserial_macro circuit card", file=loaded.where("circuit.card"),
                         key="circuit.card") from None
    except DataError as err:
        key = f"workload.{err.key}" if err.key else "workload"
        raise InputError(str(err), file=loaded.where(key), key=key) from None


__all__ = ["Capacity", "CostResult", "HardwareModel", "build_hardware", "check_capacity", "run"]
