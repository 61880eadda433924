"""Report: the frozen, structured result of a run (SI units), its files and its console view.

Files written by :func:`write_report` (atomically, by :func:`imcsim.files.write_folder`:
filled as a hidden sibling folder, then exchanged with the previous report, so a
kill at any instant leaves one complete report; only a folder imcsim wrote is
ever replaced):

* ``report.json``: schema version, imcsim version, config hash, seed, the
  environment that made it (Python and package versions, threads, device,
  processor: :func:`imcsim.environment.environment`), the fully resolved config, metrics (SI) with their units (``metric_units``, from
  :data:`imcsim.metrics.REGISTRY`), cost breakdowns, tables (accuracy matrix,
  per task, per layer, device figures with their units, ...);
* ``counts.csv``: component, action, phase group, count, energy (J);
* ``layers.csv``: the per-layer table (:data:`imcsim.metrics.LAYER_COLUMNS`);
* ``summary.txt``: the console summary, rendered from the same data.

Tables and text are rendered from the structured data; nothing parses text.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from imcsim.cost import CostResult
from imcsim.files import write_folder
from imcsim.metrics import LAYER_COLUMNS, REGISTRY, SUMMARY_METHOD_COLUMNS, unit_of
from imcsim.sim.timeline import RunTimeline
from imcsim.units import format_si


@dataclass(frozen=True)
class Report:
    """Everything a run found. All quantities in SI units. ``timeline``: the run's step schedules (for a trace),
    attached by :func:`imcsim.api.run` and not written to the report's files."""

    schema_version: int
    imcsim_version: str
    name: str
    config_hash: str
    seed: int
    config: Mapping[str, Any]
    metrics: Mapping[str, float]
    costs: Mapping[str, CostResult]
    action_descriptions: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    timeline: RunTimeline | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "imcsim_version": self.imcsim_version,
            "name": self.name,
            "config_hash": self.config_hash,
            "seed": self.seed,
            "environment": dict(self.environment),
            "config": self.config,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "metric_units": {k: unit_of(k) for k in self.metrics},
            "costs": {
                group: {
                    "energy_j": {f"{c}.{a}": e for (c, a), e in cr.energy_j.items()},
                    "counts": {f"{c}.{a}": n for (c, a), n in cr.counts.items()},
                    "latency_s": dict(cr.latency_s),
                    "total_energy_j": cr.total_energy_j,
                    "total_latency_s": cr.total_latency_s,
                }
                for group, cr in self.costs.items()
            },
            "actions": dict(self.action_descriptions),
            "tables": _jsonable(self.tables),
        }

    def counts_rows(self) -> list[tuple[str, str, str, int, float]]:
        rows = []
        for group, cr in self.costs.items():
            for (comp, action), n in cr.counts.items():
                rows.append((comp, action, group, int(n), float(cr.energy_j.get((comp, action), 0.0))))
        return rows


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _json_number(obj)
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj


def render_metric(name: str, value: float) -> str:
    """A metric's value in human units: SI prefixes with its unit, a percent for a fraction."""
    metric = REGISTRY.get(name)
    unit = unit_of(name)
    if metric is not None and metric.fraction and isinstance(value, float):
        return f"{100 * value:.1f} %"
    if metric is not None and metric.unit_override:
        return f"{value:.3g} {unit}"
    if unit != "1":
        return format_si(value, unit)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def bottleneck_line(resources: list[dict[str, Any]]) -> str:
    """One line: the resource that sets the step time, its busy share, and any group that leaks more than it
    computes (``tables.resources``)."""
    busiest = next((r for r in resources if r.get("sets_step_time")), None)
    if busiest is None:
        return ""
    leaky = [f"{r['resource']} ({format_si(r['energy_static_j'], 'J')} static against "
             f"{format_si(r['energy_dynamic_j'], 'J')} dynamic)" for r in resources if r.get("leaks_more_than_computes")]
    return (f"step time set by: {busiest['resource']} ({100 * busiest['busy_share']:.1f} % busy)"
            + ("; leaks more than it computes: " + ", ".join(leaky) if leaky else "; no block leaks more than it "
               "computes"))


def render_summary(report: Report, console: Console | None = None) -> str:
    """Console summary in human units, rendered from the structured report."""
    buf = io.StringIO()
    out = console or Console(file=buf, width=120, force_terminal=False, color_system=None)
    m = report.metrics
    head = Table(title=f"imcsim {report.imcsim_version}: {report.name} (seed {report.seed}, config {report.config_hash})",
                 show_header=True, header_style="bold")
    head.add_column("metric")
    head.add_column("value", justify="right")
    for k, v in m.items():
        head.add_row(k, render_metric(k, v))
    out.print(head)
    acc = report.tables.get("accuracy_matrix")
    if acc and any(v is not None and not (isinstance(v, float) and math.isnan(v)) for row in acc for v in row):
        tasks = report.tables["tasks"]
        t = Table(title="accuracy after each task (rows) on each task (columns)")
        t.add_column("after")
        for name in tasks:
            t.add_column(name, justify="right")
        for name, row in zip(tasks, acc, strict=True):
            t.add_row(name, *("" if (v is None or (isinstance(v, float) and math.isnan(v))) else f"{100 * v:.1f} %" for v in row))
        out.print(t)
    per_task = report.tables.get("per_task")
    if per_task:
        t = Table(title="hardware cost of training each task")
        timed = any("time_s" in row for row in per_task)
        for col in ("task", *(("trained at",) if timed else ()), "steps", "energy", "latency", "write pulses",
                    "cells programmed"):
            t.add_column(col, justify="right")
        for row in per_task:
            t.add_row(row["task"], *((format_si(row.get("time_s", 0.0), "s"),) if timed else ()), str(row["steps"]),
                      format_si(row["energy_j"], "J"), format_si(row["latency_s"], "s"), str(row["write_pulses"]),
                      str(row.get("cells_programmed", "")))
        out.print(t)
    methods = report.tables.get("methods")
    if methods:
        t = Table(title="methods on the same scenario and hardware")
        t.add_column("method", justify="right", no_wrap=True)
        for key in SUMMARY_METHOD_COLUMNS:
            t.add_column(REGISTRY[key].header, justify="right", no_wrap=True)
        vs_full = "memory_peak_vs_full" in methods[0]
        if vs_full:
            t.add_column("mem./full", justify="right", no_wrap=True)
        for row in methods:
            ratio = (f"{row['memory_peak_vs_full']:.3g}x",) if vs_full else ()
            t.add_row(row["method"], *(render_metric(k, row[k]) if k in row else "" for k in SUMMARY_METHOD_COLUMNS),
                      *ratio)
        out.print(t)
    line = bottleneck_line(report.tables.get("resources") or [])
    if line:
        out.print(line)
    train = report.costs.get("train")
    if train is not None and train.total_energy_j > 0:
        t = Table(title="training energy by component")
        t.add_column("component")
        t.add_column("energy", justify="right")
        t.add_column("share", justify="right")
        total = train.total_energy_j
        for comp, e in train.energy_by_component_j().items():
            t.add_row(comp, format_si(e, "J"), f"{100 * e / total:.1f} %")
        out.print(t)
    return buf.getvalue() if console is None else ""


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_report(report: Report, out_dir: str | Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write the report files into ``out_dir`` atomically; returns the folder.

    An existing ``out_dir`` is replaced only once the new folder is complete, and only when imcsim wrote it
    (:func:`imcsim.files.check_output_folder`).
    """
    return write_folder(Path(out_dir), lambda tmp: _fill_report(tmp, report, extra_files))


def write_reports(reports: Mapping[str, Report], out_dir: str | Path, extra_files: Mapping[str, bytes]) -> Path:
    """Write several reports (one subfolder each) and ``extra_files`` into ``out_dir``, atomically."""

    def fill(tmp: Path) -> None:
        for name, report in reports.items():
            (tmp / name).mkdir()
            _fill_report(tmp / name, report, None)
        for name, blob in extra_files.items():
            (tmp / name).write_bytes(blob)

    return write_folder(Path(out_dir), fill)


def layers_csv(rows: list[Mapping[str, Any]]) -> str:
    """The per-layer table as CSV; the column names carry the units."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LAYER_COLUMNS)
    for row in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (row.get(c, "") for c in LAYER_COLUMNS)])
    return buf.getvalue()


def _fill_report(folder: Path, report: Report, extra_files: Mapping[str, bytes] | None) -> None:
    _write_text(folder / "report.json", json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["component", "action", "group", "count", "energy_j"])
    for row in report.counts_rows():
        w.writerow([row[0], row[1], row[2], row[3], repr(row[4])])
    _write_text(folder / "counts.csv", buf.getvalue())
    _write_text(folder / "layers.csv", layers_csv(report.tables.get("layers") or []))
    _write_text(folder / "summary.txt", render_summary(report))
    for name, blob in (extra_files or {}).items():
        (folder / name).write_bytes(blob)
