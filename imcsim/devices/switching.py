"""Macrospin switching statistics for spin-torque (STT and SOT) writes.

Two regimes, combined as independent ways of switching (the write fails only
if neither switches the free layer), so the write error rate (WER) is the
product of the two failure probabilities:

* Thermally activated (long pulses, ``i = I / I_c0 < 1``): Neel-Brown rate with
  the barrier lowered linearly by the current,
  ``P_sw = 1 - exp(-t / tau0 * exp(-Delta * (1 - i)))``
  (Koch, Katine, Sun, PRL 92, 088302 (2004); tau0 ~ 1 ns attempt time).
* Precessional (short pulses, ``i > 1``): the macrospin write-error formula of
  Butler et al., IEEE Trans. Magn. 48, 4684 (2012), Eq. (27),
  ``WER = 1 - exp(-pi^2 Delta (i - 1) / (4 (i exp(2 (i - 1) t / tau_d) - 1)))``,
  with ``tau_d`` the characteristic precession (relaxation) time.

Both are vectorized over numpy arrays. Every function is monotone: a longer
or stronger pulse never raises the write error rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOLTZMANN_J_PER_K = 1.380649e-23  # exact, SI 2019 definition


def thermal_switch_probability(i_ratio, t_s, delta, tau0_s):
    """Probability that a sub-critical pulse switches the free layer (Neel-Brown)."""
    i_ratio = np.asarray(i_ratio, dtype=float)
    t_s = np.asarray(t_s, dtype=float)
    # The barrier-lowering law is defined up to i = 1; beyond it the barrier is gone.
    barrier = delta * np.clip(1.0 - i_ratio, 0.0, None)
    rate_per_s = np.exp(-barrier) / tau0_s
    return -np.expm1(-t_s * rate_per_s)


def precessional_error_rate(i_ratio, t_s, delta, tau_d_s):
    """Write error rate of a pulse above the critical current (Butler 2012).

    Returns 1.0 where ``i_ratio <= 1`` (no deterministic precessional switching).
    """
    i_ratio = np.asarray(i_ratio, dtype=float)
    t_s = np.asarray(t_s, dtype=float)
    over = np.clip(i_ratio - 1.0, 0.0, None)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # (i - 1) / (i e^{2 (i-1) t / tau} - 1), and its limit 1 / (1 + 2 t / tau) at i -> 1.
        x = 2.0 * over * t_s / tau_d_s
        denom = i_ratio * np.exp(x) - 1.0
        frac = np.where(over > 1e-9, over / denom, 1.0 / (1.0 + 2.0 * t_s / tau_d_s))
        wer = -np.expm1(-(np.pi**2) * delta / 4.0 * frac)
    return np.where(i_ratio > 1.0, np.clip(wer, 0.0, 1.0), 1.0)


def write_error_rate(i_ratio, t_s, delta, tau0_s, tau_d_s):
    """Probability that a write pulse of relative strength ``i_ratio`` fails to switch."""
    p_thermal_fail = 1.0 - thermal_switch_probability(i_ratio, t_s, delta, tau0_s)
    return np.clip(p_thermal_fail * precessional_error_rate(i_ratio, t_s, delta, tau_d_s), 0, 1)


def retention_time_s(delta, tau0_s):
    """Mean time before a thermally activated flip at zero current: tau0 * exp(Delta)."""
    return tau0_s * np.exp(delta)


@dataclass(frozen=True)
class WritePath:
    """A spin-torque write path at its operating point, for plots and inspection."""

    label: str
    ic0_a: float
    i_op_a: float
    t_op_s: float
    delta: float
    tau0_s: float
    tau_d_s: float

    def wer(self, i_a, t_s):
        return write_error_rate(np.asarray(i_a) / self.ic0_a, t_s, self.delta, self.tau0_s, self.tau_d_s)
