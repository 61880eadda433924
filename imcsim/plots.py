"""Plots rendered from models and reports as PNG bytes.

Figures are made with :class:`matplotlib.figure.Figure` and its Agg canvas, never through pyplot: importing
this module leaves a notebook's backend and open figures as they were.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, ScalarFormatter

from imcsim import __version__
from imcsim.files import SIGNATURE
from imcsim.metrics import REGISTRY, unit_of

CURRENT_RATIOS = (0.6, 0.9, 1.2, 1.5, 2.0, 3.0)


def plot_switching(path, title: str) -> bytes:
    """PNG bytes: switching probability vs pulse width (several currents) and write error rate vs current."""
    t = np.logspace(-11, -6, 300)
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 4.2))
    for r in CURRENT_RATIOS:
        ax1.semilogx(t * 1e9, 1.0 - path.wer(r * path.ic0_a, t), label=f"I = {r:g} I_c0")
    ax1.axvline(path.t_op_s * 1e9, color="k", ls=":", lw=1)
    ax1.set_xlabel("pulse width (ns)")
    ax1.set_ylabel("switching probability")
    ax1.set_title(path.label)
    ax1.legend(fontsize=8)
    i = np.linspace(0.3, 4.0, 300) * path.ic0_a
    for width in sorted({path.t_op_s / 4, path.t_op_s, path.t_op_s * 4}):
        wer = np.clip(path.wer(i, width), 1e-30, 1.0)
        ax2.semilogy(i * 1e6, wer, label=f"t = {width * 1e9:.3g} ns")
    ax2.plot([path.i_op_a * 1e6], [max(float(path.wer(path.i_op_a, path.t_op_s)), 1e-30)], "ko",
             label="operating point")
    ax2.set_xlabel("write current (uA)")
    ax2.set_ylabel("write error rate")
    ax2.set_ylim(1e-30, 2)
    ax2.legend(fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(title, 110)))
    return _png(fig)


def plot_pulse_histogram(pulses_by_distance: dict[int, np.ndarray], title: str) -> bytes:
    """PNG bytes: histogram of write-and-verify pulses per transition, one series per level distance."""
    fig, ax = _subplots(figsize=(6.5, 4.2))
    top = max((int(p.max()) for p in pulses_by_distance.values() if p.size), default=1)
    bins = np.arange(0, top + 2) - 0.5
    for d, pulses in sorted(pulses_by_distance.items()):
        ax.hist(pulses, bins=bins, histtype="step", label=f"{d} level(s): mean {pulses.mean():.1f}")
    ax.set_xlabel("pulses per transition")
    ax.set_ylabel("cells")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_cumulative(series) -> bytes:
    """PNG bytes: cumulative write pulses and energy over the task sequence, one line per run."""
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 4.2))
    for s in series:
        x = np.arange(len(s.writes))
        ax1.plot(x, s.writes, marker="o", label=s.name)
        ax2.plot(x, s.energy_j, marker="o", label=s.name)
    _format_axis(ax1.yaxis, "")
    _format_axis(ax2.yaxis, "J")
    longest = max(series, key=lambda s: len(s.writes))
    for ax in (ax1, ax2):
        ax.set_xticks(np.arange(len(longest.writes)))
        ax.set_xticklabels(["deploy", *longest.tasks], rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("cumulative write pulses")
    ax2.set_ylabel("cumulative energy")
    ax1.set_title("writes over the task sequence")
    ax2.set_title("energy over the task sequence")
    return _png(fig)


def _better_larger(metric: str) -> bool:
    """Larger is better for a registered figure of merit (accuracy, lifetime, TOPS/W); the rest are costs."""
    m = REGISTRY.get(metric)
    return m is not None and m.higher_is_better


def pareto_front(x: np.ndarray, y: np.ndarray, x_larger: bool = False, y_larger: bool = False) -> np.ndarray:
    """Indices of the points no other point beats in both coordinates, sorted by x."""
    sx = -x if x_larger else x
    sy = -y if y_larger else y
    order = np.lexsort((sy, sx))  # by x, then y
    front, best = [], np.inf
    for i in order:
        if sy[i] < best:
            front.append(i)
            best = sy[i]
    return np.array(front, dtype=np.int64)


def _subplots(*grid: int, figsize: tuple[float, float]):
    """A figure on its own Agg canvas and its axes (as ``pyplot.subplots`` returns them, without pyplot)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*grid)


def _png(fig) -> bytes:
    """The figure as PNG bytes, signed in its ``Software`` text so imcsim may later replace the file it lands in."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": f"{SIGNATURE.decode()} {__version__}"})
    return buf.getvalue()


TINY_VARIATION = 1e-3
"""Below this spread relative to their mean, values are plotted as their relative change (ppm)."""


def _format_axis(axis, unit: str) -> None:
    """Readable ticks: SI prefixes with the unit where there is one, never an offset (set after the scale:
    on a log axis the minor ticks, which label ranges within a decade, get the same form)."""

    def formatter():
        if unit and unit != "m^2":
            return EngFormatter(unit=unit, places=None)
        plain = ScalarFormatter(useOffset=False)
        plain.set_powerlimits((-3, 4))
        return plain

    axis.set_major_formatter(formatter())
    if axis.get_scale() == "log":
        axis.set_minor_formatter(formatter())


def _values_for_axis(values: np.ndarray, name: str) -> tuple[np.ndarray, str, str]:
    """(values to plot, unit for the formatter, axis label) of a metric or key: in its registered unit (a key's
    from its suffix), in mm^2 for areas, or as the relative change in ppm from the first value when the values
    hardly vary."""
    unit = "" if unit_of(name) == "1" else unit_of(name)
    finite = values[np.isfinite(values)]
    ref = float(np.mean(np.abs(finite))) if finite.size else 0.0
    if finite.size > 1 and ref > 0 and 0 < np.ptp(finite) < TINY_VARIATION * ref:
        base = float(finite[0])
        shown = f"{base:.6g} {unit}".strip()
        return (values / base - 1.0) * 1e6, "", f"{name}: change from {shown} (ppm)"
    if unit == "m^2":
        return values * 1e6, "", f"{name} (mm^2)"
    return values, unit, name


def plot_metric_vs_param(values: list, x: np.ndarray | None, y: np.ndarray, key: str, metric: str,
                         log_x: bool = False, groups: list | None = None, group_key: str = "") -> bytes:
    """PNG bytes: ``metric`` against the swept ``key`` (numbers on an axis; other values as categories); with
    ``groups`` (the values of another swept key, one per point) one coloured series per group value."""
    fig, ax = _subplots(figsize=(6.4, 4.2))
    y, y_unit, y_label = _values_for_axis(np.asarray(y, dtype=float), metric)
    if x is None:
        cats = sorted({str(v) for v in values})
        x_plot = np.array([cats.index(str(v)) for v in values], dtype=float)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, rotation=30, ha="right", fontsize=8)
        x_label = key
    else:
        x_plot, x_unit, x_label = _values_for_axis(np.asarray(x, dtype=float), key)
        if log_x and x_label == key:
            ax.set_xscale("log")
        _format_axis(ax.xaxis, x_unit)
    series = {None: np.arange(len(y))} if groups is None else {
        g: np.array([i for i, v in enumerate(groups) if str(v) == g]) for g in sorted({str(v) for v in groups})}
    for name, idx in series.items():
        order = idx[np.argsort(x_plot[idx], kind="stable")]
        one_per_x = len(set(x_plot[order])) == len(order)
        ax.plot(x_plot[order], y[order], marker="o", linestyle="-" if one_per_x else "none",
                label=None if name is None else f"{group_key} = {name}")
    if groups is not None:
        ax.legend(fontsize=8)
    _format_axis(ax.yaxis, y_unit)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{metric} against {key}")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_pareto(x: np.ndarray, y: np.ndarray, mx: str, my: str, labels: list[str] | None = None) -> bytes:
    """PNG bytes: every point of two metrics with their Pareto front drawn; the front's points carry their
    ``labels`` (e.g. the swept values)."""
    fig, ax = _subplots(figsize=(6.4, 4.6))
    front = pareto_front(x, y, _better_larger(mx), _better_larger(my))
    xs, x_unit, x_label = _values_for_axis(np.asarray(x, dtype=float), mx)
    ys, y_unit, y_label = _values_for_axis(np.asarray(y, dtype=float), my)
    ax.scatter(xs, ys, s=14, alpha=0.5, label="points")
    ax.plot(xs[front], ys[front], color="C3", marker="o", label=f"Pareto front ({len(front)})")
    for i in front if labels is not None else ():
        ax.annotate(labels[i], (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _format_axis(ax.xaxis, x_unit)
    _format_axis(ax.yaxis, y_unit)
    ax.set_xlabel(x_label + (" (higher is better)" if _better_larger(mx) else " (lower is better)"))
    ax.set_ylabel(y_label + (" (higher is better)" if _better_larger(my) else " (lower is better)"))
    ax.set_title(f"{my} against {mx}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
