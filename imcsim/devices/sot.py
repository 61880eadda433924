"""Spin-orbit-torque write line: the heavy-metal strip shared by SOT and SAS-MRAM cells.

* Strip resistance R = rho(T) * L / (w * t) for a strip of ``n`` MTJ pitches, with a linear temperature
  coefficient of resistivity, ``rho(T) = rho_ref (1 + TCR (T - T_ref))`` (thin beta-W is disordered and its
  TCR is small and negative).
* Critical current I_c0 = J_c0 * w * t (the measured long-pulse critical current density times the
  cross-section); short pulses need more (:func:`imcsim.devices.switching.sot_critical_current_a`).
* Geometry (``assist``): the SOT torque is collinear with the STT anti-damping torque only for an in-plane
  free layer whose easy axis lies across the strip (type y; Liu et al., Science 336, 555 (2012)); for a
  perpendicular free layer (type z) it is orthogonal to the easy axis (Wang et al., Nature Electronics 1, 582
  (2018), SOT-assisted STT switching of perpendicular junctions).
* Supply energy of a write pulse of current I for t from a rail V: ``V I t`` (the driver burns what the
  line and transistor do not).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from imcsim.errors import PhysicsError
from imcsim.params import (
    CurrentDensityAPerM2,
    CurrentPerWidthAPerM,
    LengthM,
    Number,
    Params,
    ResistivityOhmM,
    TemperatureK,
)


class HeavyMetalParams(Params):
    """Card section ``heavy_metal``: the shared SOT write line."""

    material: str = Field(description="heavy-metal name, for the record")
    resistivity_ohm_m: ResistivityOhmM = Field(alias="resistivity", gt=1e-8, le=1e-5)
    tcr_per_k: Number = Field(0.0, alias="tcr", ge=-5e-3, le=5e-3,
                              description="temperature coefficient of the resistivity (1/K)")
    reference_temperature_k: TemperatureK = Field(300.0, alias="reference_temperature", ge=200.0, le=450.0)
    thickness_m: LengthM = Field(alias="thickness", gt=0.5e-9, le=50e-9)
    width_m: LengthM = Field(alias="width", gt=5e-9, le=2e-6)
    pitch_m: LengthM = Field(alias="pitch", gt=5e-9, le=2e-6, description="strip length per MTJ")
    jc0_sot_a_per_m2: CurrentDensityAPerM2 = Field(
        alias="jc0_sot", gt=1e9, le=1e14, description="SOT critical current density (long pulses)"
    )
    assist: Literal["orthogonal", "collinear"] = Field(
        "orthogonal",
        description="how SOT and STT torques combine: orthogonal (perpendicular free layer, type z) or collinear "
                    "(in-plane free layer with its easy axis across the strip, type y)")
    in_plane_field_a_per_m: CurrentPerWidthAPerM | None = Field(
        None, alias="in_plane_field", gt=0.0, le=1e7,
        description="in-plane field along the current that breaks the symmetry of SOT switching of a perpendicular "
                    "free layer (an external or embedded magnet)")
    field_free: str | None = Field(
        None, min_length=1, description="the reference of a field-free mechanism the design relies on instead of "
                                        "an in-plane field (a key of the card's references)")

    def resistivity_at(self, temperature_k: float) -> float:
        rho = self.resistivity_ohm_m * (1.0 + self.tcr_per_k * (temperature_k - self.reference_temperature_k))
        if rho <= 0.0:
            raise PhysicsError(f"the resistivity falls to {rho:.3g} Ohm m at {temperature_k:g} K; the linear law holds "
                               "only while it stays positive", key="heavy_metal.tcr")
        return rho

    def resistance_ohm(self, n_sites: int = 1, temperature_k: float = 300.0) -> float:
        """Strip resistance for ``n_sites`` MTJ pitches: rho(T) * L / (w * t)."""
        return self.resistivity_at(temperature_k) * self.pitch_m * n_sites / (self.width_m * self.thickness_m)

    @property
    def ic0_a(self) -> float:
        """SOT critical current (long pulses): J_c0 times the strip cross-section."""
        return self.jc0_sot_a_per_m2 * self.width_m * self.thickness_m

    def current_density(self, i_a: float) -> float:
        return i_a / (self.width_m * self.thickness_m)


def check_sot_symmetry(hm: HeavyMetalParams, mtj, what: str, references: dict[str, str]) -> None:
    """SOT alone switches a perpendicular free layer deterministically only when something breaks the symmetry
    (an in-plane field along the current, or a cited field-free mechanism); ``what`` is the write that relies
    on it. An in-plane free layer (type y or x) needs neither."""
    if mtj.anisotropy != "perpendicular" or hm.in_plane_field_a_per_m is not None:
        return
    if hm.field_free is None:
        raise PhysicsError(f"{what} switches a perpendicular free layer by SOT alone, which is not deterministic "
                           "without a symmetry-breaking in-plane field; give heavy_metal.in_plane_field, or cite a "
                           "field-free mechanism in heavy_metal.field_free", key="heavy_metal.in_plane_field")
    if hm.field_free not in references:
        raise PhysicsError(f"{hm.field_free!r} is not a key of the card's references", key="heavy_metal.field_free")


def check_geometry(hm: HeavyMetalParams, mtj) -> None:
    """The strip covers the pillar, and the assist geometry matches the free layer and its orientation."""
    if hm.width_m < mtj.width_m:
        raise PhysicsError(f"must cover the MTJ width {mtj.width_m * 1e9:.0f} nm (got {hm.width_m * 1e9:.0f} nm)",
                           key="heavy_metal.width")
    if hm.assist == "collinear" and mtj.anisotropy == "perpendicular":
        raise PhysicsError("collinear SOT and STT torques need an in-plane free layer with its easy axis across the "
                           "strip (type y); this card's free layer is perpendicular (mtj.anisotropy): use orthogonal",
                           key="heavy_metal.assist")
    if hm.assist == "collinear" and hm.width_m < mtj.length_m:
        raise PhysicsError(f"a type-y junction lies with its long axis ({mtj.length_m * 1e9:.0f} nm) across the strip, "
                           f"which must cover it (got {hm.width_m * 1e9:.0f} nm)", key="heavy_metal.width")


def supply_energy_j(v_supply: float, i_a: float, t_s: float) -> float:
    """Energy drawn from a rail ``v_supply`` by a current ``i_a`` for ``t_s``."""
    return v_supply * i_a * t_s
