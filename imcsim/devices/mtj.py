"""Magnetic tunnel junction: geometry, resistance, read, thermal stability.

Physics used:
* Free layer an ellipse of ``length x width``: area = pi/4 * length * width.
* R_P = RA / area; R_AP = R_P * (1 + TMR(V)).
* Bias dependence of TMR: TMR(V) = TMR0 / (1 + (V / V_half)^2), the usual
  empirical fit with V_half the bias at which TMR halves
  (e.g. Zhao et al., "Spin-MTJ compact model", IEEE TED 2006 / NVSim MTJ model).
* Read: a voltage V_read across the MTJ for t_read; the cell energy is
  V * I * t; the sense margin is the current difference I_P - I_AP.
* Thermal stability Delta = E_b / (k_B T) gives retention tau0 * exp(Delta) and
  the STT read-disturb probability through the Neel-Brown law with the read
  current as a fraction of the STT critical current I_c0 = J_c0 * area.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import Field

from imcsim.devices.switching import retention_time_s, thermal_switch_probability
from imcsim.params import (
    CurrentDensityAPerM2,
    LengthM,
    Number,
    Params,
    ResistanceAreaOhmM2,
    TimeS,
    VoltageV,
)


class MTJParams(Params):
    """Card section ``mtj``: one perpendicular MTJ pillar."""

    length_m: LengthM = Field(alias="length", gt=5e-9, le=1e-6, description="free-layer ellipse long axis")
    width_m: LengthM = Field(alias="width", gt=5e-9, le=1e-6, description="free-layer ellipse short axis")
    ra_ohm_m2: ResistanceAreaOhmM2 = Field(
        alias="ra", gt=1e-14, le=1e-9, description="resistance-area product of the P state"
    )
    tmr0: Number = Field(alias="tmr", gt=0.0, le=10.0, description="zero-bias TMR ratio (1.5 = 150 %)")
    v_half_v: VoltageV = Field(alias="v_half", ge=0.05, le=5.0,
                                description="bias at which TMR halves (published 0.2-1 V)")
    delta: Number = Field(alias="delta", gt=1.0, le=300.0, description="thermal stability factor E_b/kT")
    jc0_stt_a_per_m2: CurrentDensityAPerM2 = Field(
        alias="jc0_stt", gt=1e8, le=1e13, description="STT critical current density (zero temperature)"
    )
    tau0_s: TimeS = Field(alias="tau0", gt=1e-12, le=1e-6, description="attempt time")


class ReadParams(Params):
    """Card section ``read``: how a bit is sensed."""

    v_read_v: VoltageV = Field(alias="v_read", ge=0.01, le=1.5, description="voltage across the MTJ")
    t_read_s: TimeS = Field(alias="t_read", ge=1e-11, le=1e-6, description="sensing time per read")


@dataclass(frozen=True)
class MTJ:
    """Derived MTJ figures (SI). Build with :meth:`from_params`."""

    params: MTJParams
    area_m2: float
    r_p_ohm: float
    r_ap0_ohm: float
    ic0_stt_a: float

    @classmethod
    def from_params(cls, p: MTJParams) -> MTJ:
        area = math.pi / 4.0 * p.length_m * p.width_m
        r_p = p.ra_ohm_m2 / area
        return cls(
            params=p,
            area_m2=area,
            r_p_ohm=r_p,
            r_ap0_ohm=r_p * (1.0 + p.tmr0),
            ic0_stt_a=p.jc0_stt_a_per_m2 * area,
        )

    def tmr_at(self, v: float) -> float:
        return self.params.tmr0 / (1.0 + (v / self.params.v_half_v) ** 2)

    def r_ap_at(self, v: float) -> float:
        return self.r_p_ohm * (1.0 + self.tmr_at(v))

    def read_currents_a(self, v_read: float) -> tuple[float, float]:
        """(I_P, I_AP) at the read voltage."""
        return v_read / self.r_p_ohm, v_read / self.r_ap_at(v_read)

    def sense_margin_a(self, v_read: float) -> float:
        i_p, i_ap = self.read_currents_a(v_read)
        return i_p - i_ap

    def read_energy_j(self, read: ReadParams) -> float:
        """Cell energy of one read, averaged over the P and AP states."""
        i_p, i_ap = self.read_currents_a(read.v_read_v)
        return read.v_read_v * 0.5 * (i_p + i_ap) * read.t_read_s

    def read_disturb_probability(self, read: ReadParams) -> float:
        """Probability that one read flips the bit by STT (P-state current, the larger)."""
        i_p, _ = self.read_currents_a(read.v_read_v)
        p = self.params
        return float(thermal_switch_probability(i_p / self.ic0_stt_a, read.t_read_s, p.delta, p.tau0_s))

    def retention_s(self) -> float:
        return float(retention_time_s(self.params.delta, self.params.tau0_s))

    def read_figures(self, read: ReadParams) -> dict[str, tuple[float, str]]:
        """Geometry, resistance, read and retention figures (name -> (value, unit))."""
        return {
            "mtj_area": (self.area_m2, "m^2"),
            "r_p": (self.r_p_ohm, "Ohm"),
            "r_ap_at_read": (self.r_ap_at(read.v_read_v), "Ohm"),
            "sense_margin": (self.sense_margin_a(read.v_read_v), "A"),
            "read_energy_per_bit": (self.read_energy_j(read), "J"),
            "read_disturb_probability": (self.read_disturb_probability(read), ""),
            "retention": (self.retention_s(), "s"),
        }
