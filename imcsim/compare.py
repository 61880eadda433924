"""Side-by-side comparison of runs: headline metrics, cumulative writes and energy over the tasks, break-even.

    imcsim compare configs/a.yaml configs/b.yaml [--out DIR]

Each config runs as with ``imcsim run``; the comparison reads only the reports.
Over the task sequence, a run's cumulative cost starts at its deployment (the
write pulses and energy of programming the weights) and adds each task's
training cost (``tables.per_task``). The break-even of run B against run A is
the number of tasks after which B's cumulative cost, growing at its mean
per-task rate, is at most A's: a one-time deployment that saves writes on every
task pays off there.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

import numpy as np

from imcsim.metrics import COMPARE_METRICS, unit_of
from imcsim.report import Report, render_metric


@dataclass(frozen=True)
class TaskSeries:
    """Cumulative cost of one run over its tasks; index 0 is after deployment, index i after task i."""

    name: str
    tasks: list[str]
    writes: np.ndarray
    energy_j: np.ndarray

    @classmethod
    def of(cls, name: str, report: Report) -> TaskSeries:
        per_task = report.tables.get("per_task") or []
        m = report.metrics
        writes = np.cumsum([float(m.get("write_pulses_deploy", 0.0))] + [float(r["write_pulses"]) for r in per_task])
        energy = np.cumsum([float(m.get("energy_deploy_j", 0.0))] + [float(r["energy_j"]) for r in per_task])
        return cls(name, [str(r["task"]) for r in per_task], writes, energy)

    def rate(self, values: np.ndarray) -> float:
        """Mean cost per task."""
        return float((values[-1] - values[0]) / (len(values) - 1)) if len(values) > 1 else 0.0


def break_even(base: np.ndarray, base_rate: float, other: np.ndarray, other_rate: float) -> float | None:
    """Tasks after which ``other``'s cumulative cost (its deployment + n x its rate) is at most ``base``'s.

    0 when it never costs more; None when it never catches up.
    """
    d_base, d_other = float(base[0]), float(other[0])
    if d_other <= d_base and other_rate <= base_rate:
        return 0.0
    if other_rate >= base_rate:
        return None
    return (d_other - d_base) / (base_rate - other_rate)


def compare_rows(names: list[str], reports: list[Report]) -> list[tuple[str, list[str]]]:
    """(metric, rendered value per run) for every compared metric some run reports."""
    rows = []
    for key in COMPARE_METRICS:
        if not any(key in r.metrics for r in reports):
            continue
        rows.append((key, [render_metric(key, r.metrics[key]) if key in r.metrics else "" for r in reports]))
    return rows


def break_even_lines(series: list[TaskSeries]) -> list[str]:
    """Human lines: each run after the first against the first, for writes and energy."""
    lines = []
    base = series[0]
    for s in series[1:]:
        for what, a, b in (("write pulses", base.writes, s.writes), ("energy", base.energy_j, s.energy_j)):
            n = break_even(a, base.rate(a), b, s.rate(b))
            if n is None:
                lines.append(f"{s.name} vs {base.name}, {what}: never breaks even (its per-task cost is not lower)")
            elif n == 0 and np.allclose(a, b, rtol=1e-12, atol=0.0):
                lines.append(f"{s.name} vs {base.name}, {what}: the same at every task")
            elif n == 0:
                lines.append(f"{s.name} vs {base.name}, {what}: lower from the start")
            else:
                lines.append(f"{s.name} vs {base.name}, {what}: breaks even after {n:.3g} tasks "
                             f"({math.ceil(n)} whole task{'' if math.ceil(n) == 1 else 's'})")
    return lines


def idle_break_even(e_base: float, p_base: float, e_other: float, p_other: float) -> float | None:
    """Idle time (s) after a training session beyond which the other run's session plus its idle power costs less
    than the base's: (E_other - E_base) / (P_base - P_other); 0 if it costs less from the start and at every idle
    time after, None if it does not in the long run (a higher idle power, or an equal one and no cheaper session)."""
    if p_other < p_base:
        return max(0.0, (e_other - e_base) / (p_base - p_other))
    return 0.0 if e_other < e_base and p_other == p_base else None


def idle_break_even_lines(names: list[str], reports: list[Report]) -> list[str]:
    """Each run after the first against the first: how long the chip must sit idle, holding its trained state,
    before the run with the lower idle power (a non-volatile array against SRAM) costs less per training session
    (energy_train_j plus power_idle_w over the idle time)."""
    lines = []
    base = reports[0].metrics
    if "power_idle_w" not in base:
        return lines
    for name, r in zip(names[1:], reports[1:], strict=True):
        m = r.metrics
        if "power_idle_w" not in m:
            continue
        t = idle_break_even(base["energy_train_j"], base["power_idle_w"], m["energy_train_j"], m["power_idle_w"])
        if t is None and m["power_idle_w"] > base["power_idle_w"] and m["energy_train_j"] < base["energy_train_j"]:
            t_back = (base["energy_train_j"] - m["energy_train_j"]) / (m["power_idle_w"] - base["power_idle_w"])
            lines.append(f"{name} vs {names[0]}, training session + idle: lower while idle less than "
                         f"{render_metric('latency_train_s', t_back)}, then higher (its idle power is higher)")
        elif t is None:
            lines.append(f"{name} vs {names[0]}, training session + idle: never lower")
        elif t == 0:
            lines.append(f"{name} vs {names[0]}, training session + idle: lower at any idle time")
        else:
            lines.append(f"{name} vs {names[0]}, training session + idle: lower once idle longer than "
                         f"{render_metric('latency_train_s', t)} (idle power {render_metric('power_idle_w', m['power_idle_w'])} "
                         f"against {render_metric('power_idle_w', base['power_idle_w'])})")
    return lines


def comparison_files(names: list[str], reports: list[Report]) -> dict[str, bytes]:
    """compare.json, compare.csv and compare.png for the runs (the metrics of :data:`COMPARE_METRICS`, with
    their units)."""
    from imcsim import plots

    series = [TaskSeries.of(n, r) for n, r in zip(names, reports, strict=True)]
    data = {
        "runs": names,
        "environment": {n: dict(r.environment) for n, r in zip(names, reports, strict=True)},
        "metrics": {n: {k: r.metrics.get(k) for k in COMPARE_METRICS if k in r.metrics}
                    for n, r in zip(names, reports, strict=True)},
        "metric_units": {k: unit_of(k) for k in COMPARE_METRICS if any(k in r.metrics for r in reports)},
        "cumulative": {s.name: {"tasks": ["deploy", *s.tasks], "write_pulses": s.writes.tolist(),
                                "energy_j": s.energy_j.tolist()} for s in series},
        "break_even": break_even_lines(series),
        "idle_break_even": idle_break_even_lines(names, reports),
    }
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "unit", *names])
    for key in COMPARE_METRICS:
        if any(key in r.metrics for r in reports):
            w.writerow([key, unit_of(key), *(repr(r.metrics[key]) if key in r.metrics else "" for r in reports)])
    png = plots.plot_cumulative(series)
    return {"compare.json": (json.dumps(data, indent=2) + "\n").encode(), "compare.csv": buf.getvalue().encode(),
            "compare.png": png}


def unique_names(names: list[str]) -> list[str]:
    """Run names made unique (a repeated name gets ``-2``, ``-3``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def render_comparison(names: list[str], reports: list[Report], console=None) -> str:
    """The console table and break-even lines."""
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    out = console or Console(file=buf, width=120, force_terminal=False, color_system=None)
    t = Table(title="runs side by side")
    t.add_column("metric")
    for n in names:
        t.add_column(n, justify="right")
    for key, values in compare_rows(names, reports):
        t.add_row(key, *values)
    out.print(t)
    for line in break_even_lines([TaskSeries.of(n, r) for n, r in zip(names, reports, strict=True)]):
        out.print(line)
    for line in idle_break_even_lines(names, reports):
        out.print(line)
    return buf.getvalue() if console is None else ""


__all__ = ["TaskSeries", "break_even", "comparison_files", "idle_break_even", "render_comparison", "unique_names"]
