"""Wear by mechanism: how many write cycles a cell survives under its own write stress.

* Tunnel-barrier breakdown (STT-written junctions, and reads): time-dependent dielectric breakdown of the
  MgO barrier under the power-law voltage model, ``t_bd(V) = t_ref (V_ref / V)^m`` (the V-model of MgO
  barriers: Amara-Dababi et al., APL 99, 083501 (2011); Carboni et al., IEEE TED 65, 2470 (2018), who model
  breakdown-limited endurance under pulsed cycling). Damage adds pulse by pulse (Miner's rule), so a write of
  width t at V uses ``t / t_bd(V)`` of the barrier's life and the junction survives ``t_bd(V) / t`` writes.
* Heavy-metal line electromigration (SOT and SAS-MRAM write lines): Black's law, ``MTTF = t_ref (J_ref /
  J)^n exp(E_a / k_B (1 / T - 1 / T_ref))`` (Black, IEEE Trans. Electron Devices 16, 338 (1969)), with the
  pulses' on-time adding up; a pulsed line lives at least as long as a DC one, so this bound is conservative.

Every mechanism gives cycles to failure per write event of the cell; the cell's endurance is their
harmonic combination (the damages add).
"""

from __future__ import annotations

import math

from pydantic import Field

from imcsim.devices.switching import BOLTZMANN_J_PER_K
from imcsim.params import CurrentDensityAPerM2, Number, Params, TemperatureK, TimeS, VoltageV

EV_J = 1.602176634e-19


class WearParams(Params):
    """Card section ``wear``: the published stress laws the cell's endurance follows."""

    tddb_time_s: TimeS = Field(alias="tddb_time", gt=1e-9, le=1e12,
                               description="time to barrier breakdown under a constant tddb_voltage")
    tddb_voltage_v: VoltageV = Field(alias="tddb_voltage", gt=0.05, le=5.0)
    tddb_exponent: Number = Field(gt=1.0, le=100.0, description="m of the power-law voltage model")
    em_time_s: TimeS | None = Field(None, alias="em_time", gt=1.0, le=1e12,
                                    description="heavy-metal line electromigration lifetime at em_current_density")
    em_current_density_a_per_m2: CurrentDensityAPerM2 | None = Field(None, alias="em_current_density", gt=1e8,
                                                                      le=1e14)
    em_exponent: Number = Field(2.0, gt=0.5, le=5.0, description="current exponent n of Black's law")
    em_activation_energy_ev: Number = Field(1.0, alias="em_activation_energy", gt=0.1, le=3.0,
                                            description="activation energy of Black's law (eV)")
    em_temperature_k: TemperatureK = Field(378.15, alias="em_temperature", ge=200.0, le=600.0,
                                           description="temperature of the em_time figure")


def barrier_cycles(wear: WearParams, v_barrier: float, t_pulse_s: float) -> float:
    """Pulses of ``v_barrier`` for ``t_pulse_s`` a junction survives (inf at zero voltage)."""
    if v_barrier <= 0.0:
        return math.inf
    t_bd = wear.tddb_time_s * (wear.tddb_voltage_v / v_barrier) ** wear.tddb_exponent
    return t_bd / t_pulse_s


def line_cycles(wear: WearParams, j_a_per_m2: float, t_pulse_s: float, temperature_k: float) -> float:
    """Pulses of current density ``j`` for ``t_pulse_s`` a heavy-metal line survives (inf without a law)."""
    if wear.em_time_s is None or wear.em_current_density_a_per_m2 is None or j_a_per_m2 <= 0.0:
        return math.inf
    arrhenius = math.exp(wear.em_activation_energy_ev * EV_J / BOLTZMANN_J_PER_K
                         * (1.0 / temperature_k - 1.0 / wear.em_temperature_k))
    mttf = wear.em_time_s * (wear.em_current_density_a_per_m2 / j_a_per_m2) ** wear.em_exponent * arrhenius
    return mttf / t_pulse_s


def combined(*cycles: float) -> float:
    """Endurance of several mechanisms acting on each write: their damages add (harmonic combination)."""
    damage = sum(1.0 / c for c in cycles if c > 0.0 and math.isfinite(c))
    return 1.0 / damage if damage > 0.0 else math.inf
