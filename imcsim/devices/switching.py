"""Macrospin switching statistics for spin-torque (STT and SOT) writes.

One failure probability per pulse, from one of two regimes of the same process (never their product):

* Thermally activated (``i = I / I_c0 < 1``): the Neel-Brown rate over the barrier the current lowers,
  ``P_fail = exp(-t / tau0 * exp(-E_b(i)))`` with ``E_b(i) = Delta (1 - i)^n``. For a perpendicular free
  layer the Fokker-Planck solution gives ``n = 2`` (Taniguchi and Imamura, PRB 83, 054432 (2011); Butler
  et al., IEEE Trans. Magn. 48, 4684 (2012), section II); the in-plane form ``n = 1`` is Koch, Katine and
  Sun, PRL 92, 088302 (2004). ``tau0`` is the attempt time (about 1 ns).
* Precessional (``i > 1``): the macrospin write-error rate of Butler et al. (2012), Eq. (27),
  ``WER = 1 - exp(-pi^2 Delta (i - 1) / (4 (i exp(2 (i - 1) t / tau_d) - 1)))``, whose thermal initial-angle
  distribution already holds the thermal part; ``tau_d`` is the free layer's precession time constant
  (:func:`precession_time_s`).

The two meet at ``i = 1``. The Neel-Brown law with a vanishing barrier (a rate of ``1 / tau0``) is outside
its validity (it needs ``E_b`` of several kT), so below ``I_c0`` the failure probability is bounded below by
Butler's value at ``i = 1`` (the failure at the critical current, ``1 - exp(-pi^2 Delta / (4 (1 + 2 t /
tau_d)))``): a weaker pulse never writes more reliably than the critical one. The result is continuous at
``i = 1`` wherever the thermal bound lies under it (every pulse longer than a few ``tau0`` with ``Delta`` of
tens) and monotone everywhere: a longer or stronger pulse never raises the error rate.

Everything is vectorized over numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOLTZMANN_J_PER_K = 1.380649e-23  # exact, SI 2019 definition
ELEMENTARY_CHARGE_C = 1.602176634e-19  # exact, SI 2019
HBAR_J_S = 1.054571817e-34  # CODATA 2018
MU0_H_PER_M = 1.25663706212e-6  # CODATA 2018
GYROMAGNETIC_RAD_PER_S_T = 1.76085963e11  # electron gyromagnetic ratio, CODATA 2018


def thermal_barrier(i_ratio, delta, exponent: float = 2.0):
    """Energy barrier (in kT) left by a sub-critical current ``i_ratio`` (0 at and above the critical current)."""
    return delta * np.clip(1.0 - np.asarray(i_ratio, dtype=float), 0.0, None) ** exponent


def thermal_switch_probability(i_ratio, t_s, delta, tau0_s, exponent: float = 2.0):
    """Probability that a sub-critical pulse (or a read) switches the free layer (Neel-Brown)."""
    t_s = np.asarray(t_s, dtype=float)
    rate_per_s = np.exp(-thermal_barrier(i_ratio, delta, exponent)) / tau0_s
    return -np.expm1(-t_s * rate_per_s)


def precessional_error_rate(i_ratio, t_s, delta, tau_d_s):
    """Write error rate of a pulse above the critical current (Butler 2012, Eq. 27).

    Returns 1.0 where ``i_ratio <= 1`` (no deterministic precessional switching); the value at ``i -> 1+``
    is :func:`critical_error_rate`.
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


def critical_error_rate(t_s, delta, tau_d_s):
    """Butler's write error rate at the critical current (``i -> 1+``)."""
    t_s = np.asarray(t_s, dtype=float)
    return -np.expm1(-(np.pi**2) * delta / 4.0 / (1.0 + 2.0 * t_s / tau_d_s))


def write_error_rate(i_ratio, t_s, delta, tau0_s, tau_d_s, exponent: float = 2.0):
    """Probability that a write pulse of relative strength ``i_ratio`` fails to switch (see the module doc)."""
    i_ratio = np.asarray(i_ratio, dtype=float)
    thermal_fail = 1.0 - thermal_switch_probability(i_ratio, t_s, delta, tau0_s, exponent)
    below = np.maximum(thermal_fail, critical_error_rate(t_s, delta, tau_d_s))
    return np.clip(np.where(i_ratio > 1.0, precessional_error_rate(i_ratio, t_s, delta, tau_d_s), below), 0.0, 1.0)


def retention_time_s(delta, tau0_s):
    """Mean time before a thermally activated flip at zero current: tau0 * exp(Delta)."""
    return tau0_s * np.exp(delta)


def precession_time_s(damping: float, mu0_hk_t: float) -> float:
    """Precession (relaxation) time constant of a macrospin free layer, ``(1 + alpha^2) / (alpha gamma mu0 H_k)``
    (Sun, PRB 62, 570 (2000); the time unit of Butler et al. 2012)."""
    return (1.0 + damping**2) / (damping * GYROMAGNETIC_RAD_PER_S_T * mu0_hk_t)


def macrospin_ic0_a(delta: float, temperature_k: float, damping: float, efficiency: float) -> float:
    """STT critical current of a perpendicular macrospin, ``I_c0 = (4 e alpha / (hbar eta)) Delta k_B T``
    (Sun 2000; Khvalkovskiy et al., J. Phys. D 46, 074001 (2013), Eq. 14): it scales with the barrier
    ``Delta k_B T``, not with the area."""
    e_b = delta * BOLTZMANN_J_PER_K * temperature_k
    return 4.0 * ELEMENTARY_CHARGE_C * damping * e_b / (HBAR_J_S * efficiency)


def sot_time_s(mu0_hk_t: float) -> float:
    """Time scale of spin-orbit-torque reversal of a perpendicular free layer, ``pi / (gamma mu0 H_k)``: the
    damping-like torque at the critical strength (``H_DL = H_k / 2``) turns the magnetisation by pi/2 with no
    incubation, since it acts at full strength on the equilibrium state (Garello et al., APL 105, 212402 (2014)
    observe no incubation). It equals ``pi alpha / (1 + alpha^2)`` times the free layer's ``tau_d``: one time
    constant per free layer."""
    return np.pi / (GYROMAGNETIC_RAD_PER_S_T * mu0_hk_t)


def sot_critical_current_a(ic0_a, t_s, tau_sot_s):
    """Critical current of an SOT pulse of width ``t``: ``I_c0 (1 + tau_sot / t)``, constant for long pulses and
    rising as 1/t for short ones, the charge-limited regime (Garello et al. 2014)."""
    return ic0_a * (1.0 + tau_sot_s / np.asarray(t_s, dtype=float))


def sot_error_rate(i_ratio, t_s, delta, tau0_s):
    """Failure probability of an SOT pulse at ``i_ratio = I / I_c(t)`` (:func:`sot_critical_current_a`).

    Below the pulse's critical current, thermal activation over the barrier the SOT lowers, quasi-linearly in the
    current for spin-orbit torque (Lee et al., APL 104, 072413 (2014)): ``exp(-t / tau0 exp(-Delta (1 - i)))``.
    Above it the reversal is deterministic but for thermal fluctuations of the threshold; their Boltzmann weight
    under the same linear barrier is ``exp(-Delta (i - 1))``, so the failure continues as ``exp(-t / tau0)
    exp(-Delta (i - 1))``: continuous at ``i = 1`` and monotone in current and width (a first-order model).
    """
    i_ratio = np.asarray(i_ratio, dtype=float)
    t_s = np.asarray(t_s, dtype=float)
    below = np.exp(-t_s / tau0_s * np.exp(-delta * np.clip(1.0 - i_ratio, 0.0, None)))
    above = np.exp(-t_s / tau0_s) * np.exp(-delta * np.clip(i_ratio - 1.0, 0.0, None))
    return np.clip(np.where(i_ratio > 1.0, above, below), 0.0, 1.0)


@dataclass(frozen=True)
class WritePath:
    """A spin-torque write path at its operating point, for plots and inspection."""

    label: str
    ic0_a: float
    i_op_a: float
    t_op_s: float
    delta: float
    tau0_s: float
    tau_d_s: float  # the free layer's time constant of the law: tau_d (stt) or tau_sot (sot)
    exponent: float = 2.0
    torque: str = "stt"  # "stt": Butler's precessional law; "sot": the charge-limited law

    def wer(self, i_a, t_s):
        if self.torque == "sot":
            ic = sot_critical_current_a(self.ic0_a, t_s, self.tau_d_s)
            return sot_error_rate(np.asarray(i_a) / ic, t_s, self.delta, self.tau0_s)
        return write_error_rate(np.asarray(i_a) / self.ic0_a, t_s, self.delta, self.tau0_s, self.tau_d_s,
                                self.exponent)
