"""Magnetic tunnel junction: geometry, resistance, free-layer magnetics, read, disturb, temperature.

Physics used (each with its source):

* Free layer an ellipse of ``length x width``: area = pi/4 * length * width; volume = area * thickness.
* R_P = RA / area; R_AP(V) = R_P (1 + TMR(V)), TMR(V) = TMR0 / (1 + (V / V_half)^2) (Zhang, Zhao et al., IEEE
  TED 59, 819 (2012)). The barrier voltage of a current I in the AP state solves V = I R_AP(V).
* Thermal stability and anisotropy: ``Delta = E_b / (k_B T)`` with ``E_b = mu0 M_s H_k V / 2``, so the
  anisotropy field is ``mu0 H_k = 2 Delta k_B T / (M_s V)``; the precession time constant of the free layer
  is ``tau_d = (1 + alpha^2) / (alpha gamma mu0 H_k)`` (Sun, PRB 62, 570 (2000); Butler et al., IEEE Trans.
  Magn. 48, 4684 (2012)), one per free layer, used by every write path of the junction.
* STT critical current of a macrospin (``ic0_model: macrospin``): ``I_c0 = (4 e alpha / (hbar eta)) Delta
  k_B T`` (perpendicular; Sun 2000, Khvalkovskiy et al., J. Phys. D 46, 074001 (2013)); an in-plane layer
  adds its demagnetising field, ``x (1 + M_s / (2 H_k))``. The spin-torque efficiency of a tunnel junction
  depends on the starting state, ``eta(theta) = P / (2 (1 + P^2 cos theta))`` (Slonczewski, PRB 39, 6995
  (1989); PRB 71, 024411 (2005)), so P->AP (theta = 0) needs ``(1 + P^2) / (1 - P^2)`` times the current of
  AP->P. The documented alternative ``ic0_model: jc0_area`` scales a measured critical current density by the
  area (valid only for the junction size it was measured on) and splits it by the same asymmetry.
* Temperature (``run.temperature``): ``M_s(T) = M_s0 (1 - T / T_C)^beta`` and the spin polarisation
  ``P(T) = P0 (1 - a T^1.5)`` (spin-wave decay), as in the UMN MTJ compact model (Kim et al., CICC 2015); the
  anisotropy energy density follows ``K ~ M_s^n`` (Callen and Callen, J. Phys. Chem. Solids 27, 1271 (1966):
  n = l (l + 1) / 2 = 3 for uniaxial anisotropy), so ``Delta(T) = Delta_ref (m(T) / m(T_ref))^n T_ref / T``;
  TMR follows the polarisation through Julliere's ``TMR = 2 P^2 / (1 - P^2)`` and the spin-torque
  efficiency follows it too. RA is taken as temperature independent.
* Read: the bitline clamp holds ``v_read`` across the junction; the current is drawn from the supply
  ``vdd``, and the sense amplifier's reference branch draws the mid-point current, so one read costs
  ``vdd (I_cell + I_ref) t_read``, on average ``vdd (I_P + I_AP) t_read``. Read disturb is polarity-aware:
  the read current can only switch the state its direction destabilises (``read.polarity``), at the barrier
  ``Delta (1 - i)^2`` of a perpendicular layer (``Delta (1 - i)`` in-plane) (Taniguchi and Imamura, PRB 83,
  054432 (2011)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from imcsim.devices.switching import (
    BOLTZMANN_J_PER_K,
    MU0_H_PER_M,
    macrospin_ic0_a,
    precession_time_s,
    retention_time_s,
    thermal_switch_probability,
)
from imcsim.errors import FieldError, PhysicsError
from imcsim.params import (
    CurrentA,
    CurrentDensityAPerM2,
    CurrentPerWidthAPerM,
    LengthM,
    Number,
    Params,
    ResistanceAreaOhmM2,
    TemperatureK,
    TimeS,
    VoltageV,
)

TEMPERATURE_RANGE_K = (200.0, 450.0)  # the temperature laws below are fitted within (and checked against) this


class MTJParams(Params):
    """Card section ``mtj``: one MTJ pillar and its free layer."""

    length_m: LengthM = Field(alias="length", gt=5e-9, le=1e-6, description="free-layer ellipse long axis")
    width_m: LengthM = Field(alias="width", gt=5e-9, le=1e-6, description="free-layer ellipse short axis")
    ra_ohm_m2: ResistanceAreaOhmM2 = Field(
        alias="ra", gt=1e-14, le=1e-9, description="resistance-area product of the P state"
    )
    tmr0: Number = Field(alias="tmr", gt=0.0, le=10.0, description="zero-bias TMR ratio at the reference temperature")
    v_half_v: VoltageV = Field(alias="v_half", ge=0.05, le=5.0,
                                description="bias at which TMR halves (published 0.2-1 V)")
    delta: Number = Field(alias="delta", gt=1.0, le=300.0,
                          description="thermal stability factor E_b/kT at the reference temperature")
    tau0_s: TimeS = Field(alias="tau0", gt=1e-12, le=1e-6, description="attempt time")
    anisotropy: Literal["perpendicular", "in_plane"] = Field(
        "perpendicular", description="easy axis of the free layer: sets the barrier law and the critical current")
    damping: Number = Field(gt=1e-4, le=0.5, description="Gilbert damping alpha of the free layer")
    polarization: Number = Field(gt=0.01, lt=1.0, description="spin polarisation P of the tunnelling current")
    ms_a_per_m: CurrentPerWidthAPerM = Field(alias="ms", gt=1e4, le=3e6,
                                             description="saturation magnetisation at the reference temperature")
    free_layer_thickness_m: LengthM = Field(alias="free_layer_thickness", gt=0.2e-9, le=20e-9)
    curie_temperature_k: TemperatureK = Field(alias="curie_temperature", gt=450.0, le=2000.0,
                                              description="Curie temperature of the free layer")
    ms_exponent: Number = Field(0.4, gt=0.1, le=2.0, description="beta in M_s(T) = M_s0 (1 - T / T_C)^beta")
    anisotropy_exponent: Number = Field(3.0, gt=1.0, le=4.0,
                                        description="n in K ~ M_s^n (Callen-Callen scaling of the anisotropy)")
    polarization_decay: Number = Field(alias="polarization_decay", ge=0.0, le=1e-3,
                                       description="a in P(T) = P0 (1 - a T^1.5) (K^-1.5): spin-wave decay of the "
                                                   "polarisation, which lowers TMR and the spin torque")
    reference_temperature_k: TemperatureK = Field(300.0, alias="reference_temperature", ge=200.0, le=450.0,
                                                  description="temperature of delta, tmr and ms")
    v_breakdown_v: VoltageV = Field(alias="v_breakdown", ge=0.2, le=5.0,
                                    description="tunnel-barrier breakdown voltage (short pulses)")
    ic0_model: Literal["macrospin", "jc0_area"] = Field(
        "macrospin", description="STT critical current from Delta, damping and polarisation, or J_c0 x area")
    jc0_stt_a_per_m2: CurrentDensityAPerM2 | None = Field(
        None, alias="jc0_stt", gt=1e8, le=1e13,
        description="measured STT critical current density (only with ic0_model: jc0_area)")


class ReadParams(Params):
    """Card section ``read``: how a bit is sensed."""

    v_read_v: VoltageV = Field(alias="v_read", ge=0.01, le=1.5, description="voltage across the MTJ")
    t_read_s: TimeS = Field(alias="t_read", ge=1e-11, le=1e-6, description="sensing time per read")
    polarity: Literal["ap_to_p", "p_to_ap"] = Field(
        "ap_to_p", description="the switching direction the read current favours (only that state is disturbed)")
    max_ic0_fraction: Number = Field(
        alias="max_ic0_fraction", gt=0.0, lt=1.0,
        description="read-disturb rule: the read current may not exceed this fraction of the critical current")
    min_margin_a: CurrentA = Field(alias="min_margin", gt=0.0, le=1e-3,
                                   description="smallest P/AP current difference the sense amplifier resolves")
    scheme: Literal["auto", "concurrent", "sequential", "across_rows"] = Field(
        "auto", description="how the MTJs sharing one return line are read (SAS-MRAM; one-MTJ cells ignore it): "
                            "concurrent, one at a time, or groups laid across rows; auto picks concurrent where "
                            "every margin clears min_margin, else sequential")
    v_supply_v: VoltageV | None = Field(
        None, alias="v_supply", ge=0.05, le=3.3,
        description="read rail the cell and reference currents are drawn from (a rail of its own, below the core "
                    "supply; default: the transistor's vdd)")
    t_sense_s: TimeS | None = Field(
        None, alias="t_sense", ge=1e-12, le=1e-6,
        description="time the read current flows, the sense amplifier's enable window within t_read (default: "
                    "the whole t_read)")

    @model_validator(mode="after")
    def _window(self) -> ReadParams:
        if self.t_sense_s is not None and self.t_sense_s > self.t_read_s:
            raise FieldError("t_sense", f"the sense window ({self.t_sense_s:g} s) must fit in the read cycle "
                             f"t_read ({self.t_read_s:g} s)")
        if self.v_supply_v is not None and self.v_supply_v <= self.v_read_v:
            raise FieldError("v_supply", f"the read rail ({self.v_supply_v:g} V) must exceed the voltage it holds "
                             f"across the junction (v_read, {self.v_read_v:g} V)")
        return self

    @property
    def sense_s(self) -> float:
        """Time the read current flows."""
        return self.t_sense_s if self.t_sense_s is not None else self.t_read_s

    def rail_v(self, vdd_v: float) -> float:
        """The rail a read draws from."""
        return self.v_supply_v if self.v_supply_v is not None else vdd_v


@dataclass(frozen=True)
class MTJ:
    """Derived MTJ figures (SI) at one temperature. Build with :meth:`from_params`."""

    params: MTJParams
    temperature_k: float
    area_m2: float
    volume_m3: float
    r_p_ohm: float
    tmr0: float  # zero-bias TMR at the temperature
    delta: float  # thermal stability at the temperature
    ms_a_per_m: float
    mu0_hk_t: float
    tau_d_s: float
    ic0_p_to_ap_a: float
    ic0_ap_to_p_a: float

    @classmethod
    def from_params(cls, p: MTJParams, temperature_k: float = 300.0) -> MTJ:
        lo, hi = TEMPERATURE_RANGE_K
        if not lo <= temperature_k <= hi or temperature_k >= 0.9 * p.curie_temperature_k:
            raise PhysicsError(f"{temperature_k:g} K is outside the {lo:g}..{min(hi, 0.9 * p.curie_temperature_k):g} K "
                               "over which the MTJ's temperature laws hold", key="mtj.curie_temperature")
        area = math.pi / 4.0 * p.length_m * p.width_m
        volume = area * p.free_layer_thickness_m
        t_ref = p.reference_temperature_k

        def magnetisation(t: float) -> float:
            return (1.0 - t / p.curie_temperature_k) ** p.ms_exponent

        def spin_waves(t: float) -> float:
            return 1.0 - p.polarization_decay * t**1.5

        m_ratio = magnetisation(temperature_k) / magnetisation(t_ref)
        delta = p.delta * m_ratio**p.anisotropy_exponent * t_ref / temperature_k
        p_ratio = spin_waves(temperature_k) / spin_waves(t_ref)
        if spin_waves(temperature_k) <= 0.0 or spin_waves(t_ref) <= 0.0:
            raise PhysicsError(f"the polarisation decay {p.polarization_decay:g} K^-1.5 leaves no polarisation at "
                               f"{temperature_k:g} K", key="mtj.polarization_decay")
        # Julliere: TMR = 2 P^2 / (1 - P^2); the card's TMR sets P at the reference temperature
        pj2 = (p.tmr0 / (2.0 + p.tmr0)) * p_ratio**2
        tmr0 = 2.0 * pj2 / (1.0 - pj2)
        polarization = p.polarization * p_ratio
        ms = p.ms_a_per_m * m_ratio
        e_b = delta * BOLTZMANN_J_PER_K * temperature_k
        mu0_hk = 2.0 * e_b / (ms * volume)
        h_eff = mu0_hk + (MU0_H_PER_M * ms / 2.0 if p.anisotropy == "in_plane" else 0.0)
        pol2 = polarization**2
        eta_p = polarization / (2.0 * (1.0 + pol2))  # starting from P (theta = 0): the P->AP write
        eta_ap = polarization / (2.0 * (1.0 - pol2))  # starting from AP (theta = pi)
        if p.ic0_model == "macrospin":
            demag = 1.0 + (MU0_H_PER_M * ms / (2.0 * mu0_hk) if p.anisotropy == "in_plane" else 0.0)
            ic_p = macrospin_ic0_a(delta, temperature_k, p.damping, eta_p) * demag
            ic_ap = macrospin_ic0_a(delta, temperature_k, p.damping, eta_ap) * demag
        else:
            if p.jc0_stt_a_per_m2 is None:
                raise PhysicsError("jc0_area needs the measured critical current density mtj.jc0_stt (e.g. "
                                   "'3.9e6 A/cm^2', Ikeda et al. 2010)", key="mtj.ic0_model")
            mean = p.jc0_stt_a_per_m2 * area  # a measured J_c0 is the mean of the two directions
            eta_mean = 2.0 / (1.0 / eta_p + 1.0 / eta_ap)
            ic_p, ic_ap = mean * eta_mean / eta_p, mean * eta_mean / eta_ap
        return cls(params=p, temperature_k=temperature_k, area_m2=area, volume_m3=volume,
                   r_p_ohm=p.ra_ohm_m2 / area, tmr0=tmr0, delta=delta, ms_a_per_m=ms, mu0_hk_t=mu0_hk,
                   tau_d_s=precession_time_s(p.damping, h_eff), ic0_p_to_ap_a=ic_p, ic0_ap_to_p_a=ic_ap)

    # --- resistance -----------------------------------------------------------------

    @property
    def r_ap0_ohm(self) -> float:
        return self.r_p_ohm * (1.0 + self.tmr0)

    @property
    def barrier_exponent(self) -> float:
        """n in the current-lowered barrier Delta (1 - i)^n: 2 for a perpendicular free layer, 1 in-plane."""
        return 2.0 if self.params.anisotropy == "perpendicular" else 1.0

    def tmr_at(self, v: float) -> float:
        return self.tmr0 / (1.0 + (v / self.params.v_half_v) ** 2)

    def r_ap_at(self, v: float) -> float:
        return self.r_p_ohm * (1.0 + self.tmr_at(v))

    def ap_voltage_at_current(self, i_a: float) -> float:
        """Barrier voltage of a current ``i_a`` through the AP state: the root of V = I R_AP(V) (R_AP falls with V,
        so the fixed point is unique and the iteration contracts)."""
        v = i_a * self.r_ap0_ohm
        for _ in range(60):
            nxt = i_a * self.r_ap_at(v)
            if abs(nxt - v) < 1e-9:
                return nxt
            v = 0.5 * (v + nxt)
        return v

    def ic0_a(self, direction: str) -> float:
        """STT critical current of a write toward ``direction`` ('ap': P->AP, 'p': AP->P)."""
        return self.ic0_p_to_ap_a if direction == "ap" else self.ic0_ap_to_p_a

    @property
    def ic0_mean_a(self) -> float:
        return 0.5 * (self.ic0_p_to_ap_a + self.ic0_ap_to_p_a)

    # --- read -----------------------------------------------------------------------

    def read_currents_a(self, v_read: float, r_series_ohm: float = 0.0) -> tuple[float, float]:
        """(I_P, I_AP) with ``v_read`` across the junction (and ``r_series_ohm`` in series, if any)."""
        return v_read / (self.r_p_ohm + r_series_ohm), v_read / (self.r_ap_at(v_read) + r_series_ohm)

    def sense_margin_a(self, v_read: float, r_series_ohm: float = 0.0) -> float:
        i_p, i_ap = self.read_currents_a(v_read, r_series_ohm)
        return i_p - i_ap

    def read_energy_j(self, read: ReadParams, vdd_v: float, r_series_ohm: float = 0.0) -> float:
        """Supply energy of one read, averaged over the P and AP states: the cell branch (mean current) and the
        sense amplifier's reference branch (the mid-point current), both drawn from the read rail (``vdd``
        unless the card gives ``read.v_supply``) for the sense window (``read.t_sense``, else ``t_read``)."""
        i_p, i_ap = self.read_currents_a(read.v_read_v, r_series_ohm)
        return read.rail_v(vdd_v) * (i_p + i_ap) * read.sense_s

    def check_read_rail(self, read: ReadParams, r_on_ohm: float, key: str = "read.v_supply") -> None:
        """The read rail holds ``v_read`` on the junction through the access transistor: it must exceed
        ``v_read`` by the transistor's drop at the P-state read current."""
        if read.v_supply_v is None:
            return
        i_p, _ = self.read_currents_a(read.v_read_v)
        need = read.v_read_v + i_p * r_on_ohm
        if read.v_supply_v < need:
            raise PhysicsError(f"{read.v_supply_v:g} V cannot hold {read.v_read_v:g} V on the junction: the "
                               f"{i_p * 1e6:.1f} uA read current drops {i_p * r_on_ohm:.3g} V across the access "
                               f"transistor; the rail needs at least {need:.3g} V", key=key)

    def read_disturb_ratio(self, read: ReadParams, r_series_ohm: float = 0.0) -> float:
        """Read current over the critical current of the state the read polarity can disturb."""
        i_p, i_ap = self.read_currents_a(read.v_read_v, r_series_ohm)
        if read.polarity == "ap_to_p":
            return i_ap / self.ic0_ap_to_p_a
        return i_p / self.ic0_p_to_ap_a

    def read_disturb_probability(self, read: ReadParams, r_series_ohm: float = 0.0) -> float:
        """Probability that one read flips a cell in the state its polarity destabilises (Neel-Brown, barrier
        Delta (1 - i)^n); a cell in the other state is stabilised and never flips."""
        return float(thermal_switch_probability(self.read_disturb_ratio(read, r_series_ohm), read.sense_s,
                                                self.delta, self.params.tau0_s, self.barrier_exponent))

    def check_read(self, read: ReadParams, r_series_ohm: float = 0.0) -> None:
        """The read obeys the read-disturb rule and gives the sense amplifier the margin it needs."""
        margin = self.sense_margin_a(read.v_read_v, r_series_ohm)
        if margin < read.min_margin_a:
            raise PhysicsError(f"{read.v_read_v:g} V gives a sense margin of {margin * 1e6:.1f} uA, below the "
                               f"{read.min_margin_a * 1e6:.1f} uA the sense amplifier resolves (read.min_margin)",
                               key="read.v_read")
        self.check_read_rule(read, r_series_ohm)

    def check_read_rule(self, read: ReadParams, r_series_ohm: float = 0.0) -> None:
        """The read current stays within the read-disturb rule (a fraction of the critical current)."""
        ratio = self.read_disturb_ratio(read, r_series_ohm)
        if ratio > read.max_ic0_fraction:
            raise PhysicsError(
                f"{read.v_read_v:g} V drives {ratio:.2f} x the critical current of the state a read can disturb; "
                f"the read rule allows {read.max_ic0_fraction:g} x (lower read.v_read or raise mtj.ra)",
                key="read.v_read")

    def check_barrier(self, i_a: float, key: str) -> float:
        """Barrier voltage of a write current ``i_a`` through the junction (worst case: the AP state), refused
        above the breakdown voltage."""
        v = self.ap_voltage_at_current(i_a)
        if v > self.params.v_breakdown_v:
            raise PhysicsError(f"{i_a * 1e6:.0f} uA puts {v:.2f} V across the tunnel barrier in the AP state, above its "
                               f"breakdown voltage {self.params.v_breakdown_v:g} V (mtj.v_breakdown)", key=key)
        return v

    def retention_s(self) -> float:
        return float(retention_time_s(self.delta, self.params.tau0_s))

    def figures(self, read: ReadParams, vdd_v: float, r_series_ohm: float = 0.0) -> dict[str, tuple[float, str]]:
        """Geometry, magnetics, resistance, read and retention figures (name -> (value, unit))."""
        return {
            "mtj_area": (self.area_m2, "m^2"),
            "r_p": (self.r_p_ohm, "Ohm"),
            "r_ap_at_read": (self.r_ap_at(read.v_read_v), "Ohm"),
            "delta_at_temperature": (self.delta, ""),
            "mu0_hk": (self.mu0_hk_t, "T"),
            "tau_d": (self.tau_d_s, "s"),
            "ic0_stt_p_to_ap": (self.ic0_p_to_ap_a, "A"),
            "ic0_stt_ap_to_p": (self.ic0_ap_to_p_a, "A"),
            "sense_margin": (self.sense_margin_a(read.v_read_v, r_series_ohm), "A"),
            "read_energy_per_bit": (self.read_energy_j(read, vdd_v, r_series_ohm), "J"),
            "read_current_over_ic0": (self.read_disturb_ratio(read, r_series_ohm), ""),
            "read_disturb_probability": (self.read_disturb_probability(read, r_series_ohm), ""),
            "retention": (self.retention_s(), "s"),
        }
