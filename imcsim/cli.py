"""Command line: a thin shell over :mod:`imcsim.api`.

    imcsim run CONFIG [--out DIR] [--set KEY=VALUE ...] [--seed N] [--library DIR] [--trace FILE [--trace-step N]]
    imcsim compare CONFIG [CONFIG ...] [--out DIR] [--set KEY=VALUE ...] [--seed N] [--library DIR]
    imcsim sweep CONFIG (--grid KEY=V1,V2 | --range KEY=START:STOP:N[:log]) ... [--random N] [--out DIR]
                 [--resume] [--workers N] [--scheduler ADDRESS] [--plot METRIC] [--pareto MX,MY]
    imcsim validate CONFIG [--set ...] [--library DIR]
    imcsim list devices|circuits|components|workloads|configs|kinds|methods [--library DIR]
    imcsim device CARD [--set KEY=VALUE ...] [--library DIR]
    imcsim --version

Exit codes: 0 success, 2 bad input (one line on stderr naming file and key),
1 internal error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from pathlib import Path

from imcsim import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imcsim", description="Simulate in-memory-computing hardware that learns on the device.")
    p.add_argument("--version", action="version", version=f"imcsim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. device.write.t_set=2ns (repeatable)")
        sp.add_argument("--library", metavar="DIR", help="folder holding devices/, circuits/, workloads/")

    r = sub.add_parser("run", help="run a config end to end and write its report")
    r.add_argument("config", help="run config YAML")
    r.add_argument("--out", metavar="DIR", help="output folder (default: out/<config name>)")
    r.add_argument("--seed", type=int, help="random seed (overrides the config's)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    r.add_argument("--trace", metavar="FILE",
                   help="also write the schedule of the first training step as a Chrome trace-event JSON "
                        "(open it in https://ui.perfetto.dev)")
    r.add_argument("--trace-step", type=int, default=1, metavar="N",
                   help="the training step --trace records (1-based; default 1; the last step if the run has fewer)")
    common(r)

    c = sub.add_parser("compare", help="run several configs and compare them side by side (table, plot, break-even)")
    c.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="run config YAMLs; CONFIG@KEY=VALUE[@KEY=VALUE...] runs a config with its own overrides "
                        "(e.g. configs/reram_lora.yaml@workload.update_policy.kind=threshold)")
    c.add_argument("--out", metavar="DIR", default="out/compare",
                   help="output folder: one report folder per run, compare.json/.csv/.png (default: out/compare)")
    c.add_argument("--seed", type=int, help="random seed for every run (overrides the configs')")
    c.add_argument("--quiet", action="store_true", help="no progress or table")
    common(c)

    sw = sub.add_parser("sweep", help="run a config over a grid, ranges or random draws of any keys; results "
                                      "streamed to CSV and Parquet, resumable, with plots")
    sw.add_argument("config", help="run config YAML")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="values of a key (repeatable)")
    sw.add_argument("--range", dest="ranges", action="append", default=[], metavar="KEY=START:STOP:N[:log]",
                    help="N evenly (or log) spaced values of a key, units allowed: 1ns:10ns:5:log (repeatable)")
    sw.add_argument("--random", type=int, metavar="N", help="draw N points from the axes instead of their product")
    sw.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of the --random draws (default 0)")
    sw.add_argument("--out", metavar="DIR", help="sweep folder (default: out/sweep_<config name>)")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out: run only the points it lacks")
    sw.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                    help="local worker processes (default: one per core)")
    sw.add_argument("--scheduler", metavar="ADDRESS", help="run the points on this Dask scheduler (tcp://host:port)")
    sw.add_argument("--plot", dest="plot_metric", default="energy_train_j", metavar="METRIC",
                    help="plot this metric against each swept key (default energy_train_j)")
    sw.add_argument("--pareto", default="energy_train_j,latency_train_s", metavar="MX,MY",
                    help="plot the Pareto front of two metrics (default energy_train_j,latency_train_s)")
    sw.add_argument("--seed", type=int, help="random seed of every run (overrides the config's)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    common(sw)

    v = sub.add_parser("validate", help="check a config and its cards without running")
    v.add_argument("config")
    v.add_argument("--targets", action="store_true",
                   help="also run the config and print its published targets against the simulated figures "
                        "(configs/silicon/); exit 1 when one lies outside its tolerance")
    common(v)

    ls = sub.add_parser("list", help="list cards or configs with a one-line description")
    ls.add_argument("what", choices=["devices", "circuits", "components", "workloads", "configs", "kinds",
                                     "methods", "models"],
                    help="cards of a kind of section (components: the component cards circuit cards name), the run "
                         "configs, the model kinds cards can name, the training methods workload cards can name, or "
                         "the networks workload.model can name")
    ls.add_argument("--library", metavar="DIR", help="folder holding devices/, circuits/, workloads/, configs/")

    d = sub.add_parser("device", help="print the figures a device card derives")
    d.add_argument("card", help="device card name or path")
    d.add_argument("--plot", nargs="?", const="", metavar="FILE",
                   help="also write a PNG: switching curves (MRAM) or the pulse-count histogram (ReRAM); "
                        "default FILE is <card>_device.png")
    common(d)
    return p


def _cmd_run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from imcsim.api import build_hardware, run
    from imcsim.config import load_config
    from imcsim.errors import InputError
    from imcsim.files import check_output_file, check_output_folder
    from imcsim.report import render_summary, write_report

    loaded = load_config(args.config, args.overrides, seed=args.seed, library=args.library)
    hardware = build_hardware(loaded)  # fail on unphysical cards before any progress output
    out = check_output_folder(Path(args.out) if args.out else Path("out") / loaded.config.name, "--out")
    if args.trace:
        check_output_file(args.trace, "--trace", "trace.json")
    if args.trace_step < 1:
        raise InputError(f"training steps are numbered from 1 (got {args.trace_step})", key="--trace-step")
    console = Console(stderr=True)
    if args.quiet:
        report = run(loaded, hardware=hardware, trace_step=args.trace_step)
    else:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("training", total=None)

            def progress(name: str, done: int, total: int) -> None:
                bar.update(task, description=f"training {name}", completed=done, total=total)

            report = run(loaded, progress, hardware, trace_step=args.trace_step)
    write_report(report, out)
    traced = _write_trace(report, Path(args.trace)) if args.trace else 0
    if not args.quiet:
        render_summary(report, Console(width=max(Console().width, 120)))
        print(f"report written to {out}/ (report.json, counts.csv, layers.csv, summary.txt)")
        if traced:
            fewer = f" (the run has {traced} steps)" if traced < args.trace_step else ""
            print(f"schedule of training step {traced}{fewer} written to {args.trace} "
                  "(open it in https://ui.perfetto.dev)")
    return EXIT_OK


def _variant(arg: str) -> tuple[str, list[str]]:
    """``PATH@KEY=VALUE@...`` -> (PATH, ["KEY=VALUE", ...]); a plain path has no overrides of its own."""
    from imcsim.errors import InputError, shorten

    path, *sets = arg.split("@")
    for s in sets:
        if "=" not in s:
            raise InputError(f"an override after '@' is KEY=VALUE (got '{shorten(s)}')", file=arg, key="CONFIG")
    return path, sets


def _variant_label(setting: str) -> str:
    """``-key-value`` for a run name: the key's last part and its value, in plain characters, at most 40."""
    key, _, value = setting.partition("=")
    label = f"-{key.rpartition('.')[2]}-{value}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_")[:40]


def _cmd_compare(args) -> int:
    from rich.console import Console

    from imcsim.api import build_hardware, check_capacity, run
    from imcsim.compare import comparison_files, render_comparison, unique_names
    from imcsim.config import load_config
    from imcsim.files import check_output_folder
    from imcsim.report import write_reports

    out = check_output_folder(args.out, "--out")
    variants = [_variant(c) for c in args.configs]
    loaded = [load_config(path, [*args.overrides, *sets], seed=args.seed, library=args.library)
              for path, sets in variants]
    hardware = [build_hardware(cfg) for cfg in loaded]  # every config checked before any run
    for cfg, hw in zip(loaded, hardware, strict=True):
        check_capacity(cfg, hw)
    names = unique_names([cfg.config.name + "".join(_variant_label(s) for s in sets)
                          for cfg, (_, sets) in zip(loaded, variants, strict=True)])
    reports = []
    for name, cfg, hw in zip(names, loaded, hardware, strict=True):
        if not args.quiet:
            print(f"running {name} ...", file=sys.stderr)
        reports.append(run(cfg, hardware=hw))
    write_reports(dict(zip(names, reports, strict=True)), out, comparison_files(names, reports))
    if not args.quiet:
        render_comparison(names, reports, Console(width=max(Console().width, 120)))
        print(f"comparison written to {out}/ (compare.json, compare.csv, compare.png, one folder per run)")
    return EXIT_OK


def _cmd_sweep(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from imcsim import sweep
    from imcsim.config import load_config
    from imcsim.errors import InputError, UnknownKeyError
    from imcsim.metrics import SWEEP_METRICS, check_metric

    axes = [*map(sweep.parse_grid, args.grid), *map(sweep.parse_range, args.ranges)]
    if not axes:
        raise InputError("give at least one --grid or --range axis", key="--grid")
    if args.random is not None and args.random < 1:
        raise InputError(f"--random {args.random}: draw at least one point", key="--random")
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: at least 1", key="--workers")
    check_metric(args.plot_metric, "--plot", SWEEP_METRICS)
    pareto = args.pareto.split(",")
    if len(pareto) != 2:
        raise InputError(f"--pareto {args.pareto}: give two metrics, MX,MY", key="--pareto")
    for metric in pareto:
        check_metric(metric, "--pareto", SWEEP_METRICS)
    points = sweep.points_of(axes, args.random, args.sample_seed)
    base = load_config(args.config, args.overrides, seed=args.seed, library=args.library)
    for key, value in points[0].items():  # every swept key must exist (a bad value only fails its own points)
        try:
            load_config(args.config, [*args.overrides, f"{key}={value}"], seed=args.seed, library=args.library)
        except UnknownKeyError as err:
            axis = "--grid" if any(g.startswith(f"{key}=") for g in args.grid) else "--range"
            raise UnknownKeyError(f"swept key {key}: {err.message}", file=axis, key=err.key) from None
        except InputError:
            pass
    spec = sweep.SweepSpec(config=str(Path(args.config).resolve()), overrides=list(args.overrides),
                           axes=[*(f"grid:{g}" for g in args.grid), *(f"range:{r}" for r in args.ranges)],
                           random=args.random, sample_seed=args.sample_seed, seed=args.seed,
                           library=str(Path(args.library).resolve()) if args.library else None, points=points)
    out = Path(args.out or f"out/sweep_{base.config.name}")
    table = sweep.prepare(spec, out, args.resume)
    executor = sweep.DaskExecutor(args.scheduler) if args.scheduler else sweep.LocalExecutor(args.workers)
    failed = sum(r["status"] != "ok" for r in table.rows)
    with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), disable=args.quiet, transient=True) as bar:
        task = bar.add_task("points", total=len(points), completed=len(table.done()), note="")

        def on_point(index: int, row: dict) -> None:
            nonlocal failed
            failed += row["status"] != "ok"
            bar.update(task, advance=1, note=f"{failed} failed" if failed else "")

        try:
            sweep.run_sweep(spec, executor, table, on_point)
        except KeyboardInterrupt as stopped:  # Ctrl-C or SIGTERM (sweep.SweepInterrupted carries which)
            print(f"imcsim: interrupted; {len(table.rows)} of {len(points)} points are in {out}/results.csv; "
                  "rerun with --resume to finish", file=sys.stderr)
            return 128 + getattr(stopped, "signum", 2)  # 130 for Ctrl-C (SIGINT), 143 for SIGTERM
    written = sweep.write_plots(table, axes, args.plot_metric, (pareto[0], pareto[1]), out)
    if not args.quiet:
        ok = sum(r["status"] == "ok" for r in table.rows)
        print(f"{len(table.rows)} of {len(points)} points done ({ok} ok, {len(table.rows) - ok} failed); "
              f"results in {out}/ (results.csv, results.parquet{''.join(', ' + w for w in written)})")
    return EXIT_OK


def _write_trace(report, path: Path) -> int:
    """Write the kept step's schedule as a Chrome trace; return its step number (0: the run had no step)."""
    from imcsim.sim.chrome import chrome_trace, write_chrome_trace
    from imcsim.sim.timeline import step_power_profile

    timeline = report.timeline
    if timeline.traced is None:
        return 0
    power = step_power_profile(timeline.traced, timeline.t_cycle_s)
    trace = chrome_trace(timeline.traced, timeline.t_cycle_s,
                         f"imcsim {report.name}: training step {timeline.traced_index}", power)
    write_chrome_trace(trace, path)
    return timeline.traced_index


def _cmd_validate(args) -> int:
    from imcsim.api import build_hardware, check_capacity
    from imcsim.config import load_config

    loaded = load_config(args.config, args.overrides, library=args.library)
    capacity = check_capacity(loaded, build_hardware(loaded))  # the workload fits on the circuit's array
    print(f"{args.config}: valid (config {loaded.config_hash}; cards: "
          + ", ".join(f"{k}={v}" for k, v in loaded.cards.items())
          + f"; the workload needs {capacity.needed} of {capacity.available} {capacity.unit})")
    if not args.targets:
        return EXIT_OK
    return _print_targets(loaded)


def _print_targets(loaded) -> int:
    """Run ``loaded`` and print each published target beside the simulated figure."""
    from rich.console import Console
    from rich.table import Table

    from imcsim.api import check_targets, run
    from imcsim.metrics import REGISTRY

    if not loaded.config.targets:
        print(f"{loaded.path}: no targets (a reference design lists its published figures under targets)")
        return EXIT_OK
    rows = check_targets(loaded, run(loaded))
    t = Table(title=f"{loaded.config.name}: published against simulated")
    for col in ("metric", "published", "simulated", "ratio", "tolerance", "within", "source"):
        t.add_column(col, justify="left" if col in ("metric", "source") else "right")
    for r in rows:
        unit = REGISTRY[r.metric].unit
        t.add_row(r.metric, f"{r.published:.4g} {unit}", "-" if r.simulated is None else f"{r.simulated:.4g} {unit}",
                  "-" if r.ratio is None else f"{r.ratio:.3g}", f"{r.tolerance:g}x", "yes" if r.within else "NO",
                  r.source[:60])
    Console(width=160).print(t)
    for note in loaded.config.not_modelled:
        print(f"not modelled: {note}")
    return EXIT_OK if all(r.within for r in rows) else 1


def _cmd_list(args) -> int:
    from imcsim.config import find_library, list_cards, read_yaml
    from imcsim.errors import InputError

    if args.what == "kinds":
        import imcsim.config  # noqa: F401  (every built-in kind registers on import)
        from imcsim.registry import REGISTRIES, load_plugins

        load_plugins()
        for registry in REGISTRIES:
            for kind, desc in registry.descriptions.items():
                print(f"{registry.section + '.kind: ' + kind:<40} {desc}")
        return EXIT_OK
    if args.what == "methods":
        from imcsim.registry import METHODS, load_plugins

        load_plugins()
        for name, desc in METHODS.descriptions.items():
            print(f"{name:<14} {','.join(sorted(METHODS[name].workloads)):<36} {desc}")
        return EXIT_OK
    if args.what == "models":
        from imcsim.models.backbone import describe_zoo
        from imcsim.workloads.adaptation import TRANSFORMERS

        for name, desc in sorted(describe_zoo().items()):
            print(f"{name:<22} {'workload.model.arch':<36} {desc}")
        for name, sizes in TRANSFORMERS.items():
            print(f"{name:<22} {'workload.cost_only.model.arch':<36} transformer preset: "
                  + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        return EXIT_OK
    lib = find_library(Path.cwd(), Path(args.library) if args.library else None)
    if args.what == "configs":
        paths = sorted((lib / "configs").glob("*.yaml"))
    elif args.what == "components":
        from imcsim.config import COMPONENT_FOLDER, SECTIONS

        paths = sorted((lib / SECTIONS["circuit"][0] / COMPONENT_FOLDER).glob("*.yaml"))
    else:
        section = {"devices": "device", "circuits": "circuit", "workloads": "workload"}[args.what]
        paths = list_cards(lib, section)
    if not paths:
        print(f"no {args.what} in {lib}")
    for p in paths:
        try:
            card = read_yaml(p)
            desc = str(card.get("description", "")).strip()
            if args.what == "components":
                desc = f"{card.get('kind', '?')!s:<14} {desc}"
        except InputError as err:
            desc = f"(unreadable: {err.message})"
        print(f"{p.stem:<40} {desc}")
    return EXIT_OK


def _cmd_device(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from imcsim.config import load_card
    from imcsim.devices import build_device, device_warnings
    from imcsim.errors import InputError, PhysicsError
    from imcsim.files import check_output_file
    from imcsim.units import format_si

    card, where = load_card("device", args.card, args.overrides, library=args.library)
    out = None
    if args.plot is not None:
        out = check_output_file(args.plot or f"{Path(args.card).stem}_device.png", "--plot", "device.png")
    try:
        dev = build_device(card)
    except PhysicsError as err:
        key = f"device.{err.key}" if err.key else "device"
        raise InputError(err.message, file=where(key), key=key) from None
    t = Table(title=f"{args.card}: {card.description}")
    figures = dev.figures()
    targets = _device_targets(card, figures, where)
    t.add_column("figure")
    t.add_column("value", justify="right")
    if targets:
        t.add_column("published", justify="right")
        t.add_column("error", justify="right")
    for name, (value, unit) in figures.items():
        row = [name, format_si(value, unit) if unit else f"{value:.3g}"]
        if targets:
            target = targets.get(name)
            row += ["", ""] if target is None else [format_si(target, unit) if unit else f"{target:.3g}",
                                                    f"{(value - target) / target:+.1%}"]
        t.add_row(*row)
    Console().print(t)
    for key, message in device_warnings(dev):
        print(f"warning: device.{key}: {message}")
    if out is not None:
        _device_plot(dev, out, f"{Path(args.card).stem}: {card.description}")
        print(f"plot written to {out}")
    return EXIT_OK


def _device_targets(card, figures: dict, where) -> dict[str, float]:
    """The card's published targets in SI, each checked to name a derived figure and carry its unit."""
    from imcsim.errors import InputError
    from imcsim.units import DIMENSIONLESS, UnitError, parse_unit, to_si

    out = {}
    for name, text in getattr(card, "targets", {}).items():
        key = f"device.targets.{name}"
        if name not in figures:
            raise InputError(f"names no derived figure (have: {', '.join(figures)})", file=where(key), key=key)
        unit = figures[name][1]
        try:
            out[name] = to_si(text, parse_unit(unit)[1] if unit else DIMENSIONLESS)
        except UnitError as err:
            raise InputError(str(err), file=where(key), key=key) from None
    return out


def _device_plot(dev, out: Path, title: str) -> None:
    from imcsim import plots
    from imcsim.errors import InputError
    from imcsim.files import atomic_write

    if hasattr(dev, "write_path"):
        atomic_write(out, plots.plot_switching(dev.write_path(), title))
    elif hasattr(dev, "pulse_samples"):
        atomic_write(out, plots.plot_pulse_histogram(dev.pulse_samples(), title))
    else:
        raise InputError(f"no plot for a {dev.kind} device (plots cover spin-torque and ReRAM cells)",
                         key="--plot")


COMMANDS = {"run": _cmd_run, "compare": _cmd_compare, "sweep": _cmd_sweep, "validate": _cmd_validate, "list": _cmd_list, "device": _cmd_device}


def main(argv: list[str] | None = None) -> int:
    from imcsim.errors import InputError

    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as err:
        print(f"imcsim: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as stopped:
        print("imcsim: interrupted", file=sys.stderr)
        return 128 + getattr(stopped, "signum", 2)  # 130 for Ctrl-C (SIGINT)
    except Exception as err:  # an internal error: say so, show where with IMCSIM_DEBUG=1
        if os.environ.get("IMCSIM_DEBUG"):
            traceback.print_exc()
        print(f"imcsim: internal error: {type(err).__name__}: {err} (set IMCSIM_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
