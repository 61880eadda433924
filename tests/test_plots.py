"""Plots are readable: units on the axes, no offset notation, tiny variations as relative change, a 2-D
sweep in one colour per value of the second key, Pareto points labelled."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.ticker import EngFormatter

from imcsim import plots


@pytest.fixture
def figure(monkeypatch):
    """The figure a plot function made, instead of its PNG."""
    made = {}

    def keep(fig):
        fig.canvas.draw()
        made["fig"] = fig
        return b""

    monkeypatch.setattr(plots, "_png", keep)
    return made


def test_a_metric_axis_carries_its_unit_and_no_offset(figure):
    y = np.array([1.5845e1, 1.5846e1, 1.5847e1]) * 1e-3 + np.array([0.0, 2e-3, 5e-3])  # joules
    plots.plot_metric_vs_param(["1ns", "2ns", "4ns"], np.array([1.0, 2.0, 4.0]), y, "device.write.t_set (ns)",
                               "energy_train_j")
    ax = figure["fig"].axes[0]
    assert isinstance(ax.yaxis.get_major_formatter(), EngFormatter)
    assert ax.yaxis.get_major_formatter().unit == "J"
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert all(label.get_text().endswith("J") for label in ax.get_yticklabels() if label.get_text())
    assert ax.get_xlabel() == "device.write.t_set (ns)"


def test_a_tiny_variation_is_shown_as_relative_change(figure):
    y = 15.845 + np.array([0.0, 1e-5, 3e-5])  # 2 ppm of 15.8 J: offset notation would hide it
    plots.plot_metric_vs_param(["1", "2", "3"], np.array([1.0, 2.0, 3.0]), y, "k", "energy_train_j")
    ax = figure["fig"].axes[0]
    assert "ppm" in ax.get_ylabel()
    assert "15.845 J" in ax.get_ylabel()
    assert ax.get_lines()[0].get_ydata()[-1] == pytest.approx(3e-5 / 15.845 * 1e6)
    assert ax.yaxis.get_offset_text().get_text() == ""


def test_a_two_key_sweep_draws_one_series_per_value_of_the_second_key(figure):
    x = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    groups = ["2", "2", "4", "4", "8", "8"]
    y = np.arange(6, dtype=float) * 1e-3
    plots.plot_metric_vs_param([str(v) for v in x], x, y, "t", "energy_train_j", groups=groups, group_key="n_mtj")
    ax = figure["fig"].axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3
    assert len({line.get_color() for line in lines}) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["n_mtj = 2", "n_mtj = 4", "n_mtj = 8"]


def test_pareto_points_are_labelled(figure):
    x = np.array([1.0, 2.0, 3.0, 2.5]) * 1e-3
    y = np.array([3.0, 2.0, 1.0, 2.5]) * 1e-6
    labels = ["a", "b", "c", "d"]
    plots.plot_pareto(x, y, "energy_train_j", "latency_train_s", labels)
    ax = figure["fig"].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c"]  # d is dominated by b
    assert ax.xaxis.get_major_formatter().unit == "J"
    assert ax.yaxis.get_major_formatter().unit == "s"


def test_compare_energy_axis_is_in_joules_with_prefixes(figure):
    series = [SimpleNamespace(name="lora", writes=np.array([0, 10, 20]), energy_j=np.array([0.0, 350.0, 700.0]),
                              tasks=["t1", "t2"])]
    plots.plot_cumulative(series)
    energy_ax = figure["fig"].axes[1]
    assert energy_ax.yaxis.get_major_formatter().unit == "J"
    assert any(label.get_text().endswith("00 J") for label in energy_ax.get_yticklabels())
    assert energy_ax.yaxis.get_offset_text().get_text() == ""
