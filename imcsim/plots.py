"""Plots rendered from models and reports (matplotlib, no display needed)."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

CURRENT_RATIOS = (0.6, 0.9, 1.2, 1.5, 2.0, 3.0)


def plot_switching(path, out: Path, title: str) -> Path:
    """Switching probability vs pulse width (several currents) and write error rate vs current."""
    t = np.logspace(-11, -6, 300)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_pulse_histogram(pulses_by_distance: dict[int, np.ndarray], out: Path, title: str) -> Path:
    """Histogram of write-and-verify pulses per transition, one series per level distance."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    top = max((int(p.max()) for p in pulses_by_distance.values() if p.size), default=1)
    bins = np.arange(0, top + 2) - 0.5
    for d, pulses in sorted(pulses_by_distance.items()):
        ax.hist(pulses, bins=bins, histtype="step", label=f"{d} level(s): mean {pulses.mean():.1f}")
    ax.set_xlabel("pulses per transition")
    ax.set_ylabel("cells")
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_cumulative(series) -> bytes:
    """PNG bytes: cumulative write pulses and energy over the task sequence, one line per run."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in series:
        x = np.arange(len(s.writes))
        ax1.plot(x, s.writes, marker="o", label=s.name)
        ax2.plot(x, s.energy_j * 1e3, marker="o", label=s.name)
    longest = max(series, key=lambda s: len(s.writes))
    for ax in (ax1, ax2):
        ax.set_xticks(np.arange(len(longest.writes)))
        ax.set_xticklabels(["deploy", *longest.tasks], rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("cumulative write pulses")
    ax2.set_ylabel("cumulative energy (mJ)")
    ax1.set_title("writes over the task sequence")
    ax2.set_title("energy over the task sequence")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
