"""Spin-orbit-torque write line: the heavy-metal strip shared by SOT and SAS-MRAM cells.

* Strip resistance R = rho * L / (w * t) for a strip of ``n`` MTJ pitches.
* Critical current I_c0 = J_c0 * w * t (current density times cross-section).
* Electrical work of a write pulse of current I for t: ``I^2 R t`` in the strip
  plus ``I V_drop t`` in the write transistor that delivers it.
"""

from __future__ import annotations

from pydantic import Field

from imcsim.params import CurrentDensityAPerM2, LengthM, Params, ResistivityOhmM, TimeS


class HeavyMetalParams(Params):
    """Card section ``heavy_metal``: the shared SOT write line."""

    material: str = Field(description="heavy-metal name, for the record")
    resistivity_ohm_m: ResistivityOhmM = Field(alias="resistivity", gt=1e-8, le=1e-5)
    thickness_m: LengthM = Field(alias="thickness", gt=0.5e-9, le=50e-9)
    width_m: LengthM = Field(alias="width", gt=5e-9, le=2e-6)
    pitch_m: LengthM = Field(alias="pitch", gt=5e-9, le=2e-6, description="strip length per MTJ")
    jc0_sot_a_per_m2: CurrentDensityAPerM2 = Field(
        alias="jc0_sot", gt=1e9, le=1e14, description="SOT critical current density"
    )
    tau_d_s: TimeS = Field(alias="tau_d", gt=1e-13, le=1e-7, description="precessional time constant")

    def resistance_ohm(self, n_sites: int = 1) -> float:
        """Strip resistance for ``n_sites`` MTJ pitches: rho * L / (w * t)."""
        return self.resistivity_ohm_m * self.pitch_m * n_sites / (self.width_m * self.thickness_m)

    @property
    def ic0_a(self) -> float:
        """SOT critical current: J_c0 times the strip cross-section."""
        return self.jc0_sot_a_per_m2 * self.width_m * self.thickness_m


def pulse_energy_j(i_a: float, t_s: float, r_line_ohm: float, v_drop_v: float) -> float:
    """Work of a current pulse through a line of ``r_line_ohm`` behind a transistor dropping ``v_drop_v``."""
    return i_a * i_a * r_line_ohm * t_s + i_a * v_drop_v * t_s
