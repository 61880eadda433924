"""Power management as components: the process corner of the chip's transistors and the power gating of its
blocks.

**Process corner** (:class:`ProcessCornerCard`): one transistor flavour of a technology (ITRS high performance
``HP``, low operating power ``LOP``, low standby power ``LSTP``, or a named cell library) with its nominal supply,
NMOS on current per width and off current per width at two temperatures. The static power of logic is its
leaking transistor width (per area, :class:`~imcsim.components.memory.LogicLeakageCard`) times the corner's off
current times the supply; between the two temperatures the off current is interpolated exponentially (a
subthreshold current grows exponentially with temperature), and the supply dependence is first order
(``P ~ vdd^2`` through DIBL, as :mod:`imcsim.components.memory` states). The corner's figures hold near its
nominal supply (:data:`SUPPLY_RANGE`) and over :data:`~imcsim.components.memory.TEMPERATURE_RANGE_K`.

**Power gating** (:class:`PowerGatingCard`): every gateable block (``DOMAINS``) sits in a power domain behind a
sleep transistor. A gated block keeps a residual fraction of its leakage (a logic block loses its state; a
block that holds state, the global buffer and volatile cells, drops to a retention voltage and keeps
``retention_residual``). Waking recharges the block's virtual rail: ``C_rail A vdd dV`` with ``dV = vdd`` for a
collapsed rail and ``vdd - v_retention`` for a retentive one (CACTI-P's wake-up energy, Li et al., ICCAD 2011;
HewlettPackard/cacti ``powergating.cc``), and takes ``wake_time``, during which the block leaks in full. The
schedule is static (weight-stationary layers run in a known order), so a block is woken ahead of its use and
waking costs no step time. A policy per domain decides which idle intervals are gated: ``never``; ``idle``,
the intervals longer than ``wake_time`` plus the break-even time ``E_wake / ((1 - residual) P_leak)`` (or
than ``idle_after`` where the card sets it); ``always``, every interval longer than ``wake_time``.

DRAM has its own low-power states (:class:`~imcsim.components.memory.DramCard`): between bursts it drops to
power-down (exit ``power_down_exit``, JEDEC ``tXP``) or, when the interval repays the exit, self refresh (exit
``self_refresh_exit``, ``tXSR``, spent in active standby); ``policy: never`` keeps it in active standby.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from imcsim.components.base import ComponentCard, Technology, node_ratio
from imcsim.errors import FieldError, PhysicsError
from imcsim.params import (
    CapacitancePerAreaFPerM2,
    CurrentPerWidthAPerM,
    LengthM,
    Number,
    TemperatureK,
    TimeS,
    VoltageV,
)

SUPPLY_RANGE = (0.7, 1.3)
"""Circuit supply over the corner's nominal supply within which the corner's currents are used with first-order
supply scaling; beyond it the transistor figures of another corner (or a card at that supply) are needed. The
bound is this model's choice: the ITRS tables give each flavour at one supply."""

TEMPERATURE_RANGE_K = (233.15, 398.15)
"""-40 to 125 C, the commercial-to-automotive junction range over which the leakage fits hold."""

Policy = Literal["never", "idle", "always"]

DOMAINS = {
    "periphery": "each stored matrix's subarrays (crossbars) with their sensing, converters and adders",
    "array": "volatile cells (SRAM) of the occupied subarrays, in retention while gated",
    "digital": "the near-memory digital unit",
    "write_drivers": "the write-driver pool",
    "buffer": "the global buffer's banks, in retention while gated",
    "dram": "off-chip DRAM: power-down or self refresh between bursts",
}
"""The power domains a policy may name."""

NOT_GATEABLE = {
    "interconnect": "wires carry no static power in this model",
    "always_on": "the power controller and clock generation that wake the others",
    "logic_leakage": "it is a leakage density, not a block; gate the blocks it applies to",
    "corner": "it is the transistor corner, not a block",
}


class ProcessCornerCard(ComponentCard):
    """One transistor flavour of a technology (see the module docstring)."""

    kind: Literal["process_corner"]
    flavour: Literal["HP", "LOP", "LSTP", "library"] = Field(description="ITRS device flavour, or a named library")
    library: str = Field("", description="the cell library's name (flavour: library)")
    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9, description="node of the device figures")
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0, description="nominal supply of the device figures")
    i_on_a_per_m: CurrentPerWidthAPerM = Field(alias="i_on", gt=0.0, le=1e4, description="NMOS on current per width")
    i_off_a_per_m: CurrentPerWidthAPerM = Field(alias="i_off", gt=0.0, le=1e2,
                                                description="NMOS off current per width at leakage_temperature")
    i_off_hot_a_per_m: CurrentPerWidthAPerM = Field(alias="i_off_hot", gt=0.0, le=1e2,
                                                    description="NMOS off current per width at hot_temperature")
    leakage_temperature_k: TemperatureK = Field(alias="leakage_temperature", ge=200.0, le=450.0)
    hot_temperature_k: TemperatureK = Field(alias="hot_temperature", ge=200.0, le=450.0)

    @model_validator(mode="after")
    def _consistent(self) -> ProcessCornerCard:
        if self.hot_temperature_k <= self.leakage_temperature_k:
            raise FieldError("hot_temperature", f"must be above leakage_temperature "
                             f"({self.leakage_temperature_k:g} K); got {self.hot_temperature_k:g} K")
        if self.i_off_hot_a_per_m < self.i_off_a_per_m:
            raise FieldError("i_off_hot", "a transistor leaks more when hotter: must be at least i_off")
        if self.flavour == "library" and not self.library.strip():
            raise FieldError("library", "flavour 'library' needs the library's name")
        return self

    @property
    def name(self) -> str:
        return self.library if self.flavour == "library" else self.flavour

    def i_off_at(self, temperature_k: float) -> float:
        """Off current per width (A/m) at ``temperature_k``: exponential between the two measured points."""
        lo, hi = TEMPERATURE_RANGE_K
        if not lo <= temperature_k <= hi:
            raise PhysicsError(f"{temperature_k:g} K is outside the {lo:g}..{hi:g} K over which the leakage "
                               "figures hold", key="temperature")
        t0, t1 = self.leakage_temperature_k, self.hot_temperature_k
        rate = math.log(self.i_off_hot_a_per_m / self.i_off_a_per_m) / (t1 - t0)
        return self.i_off_a_per_m * math.exp(rate * (temperature_k - t0))

    def leakage_per_width_w(self, temperature_k: float, vdd_v: float) -> float:
        """Static power per metre of leaking width at the circuit's supply (``I_off vdd0 (vdd / vdd0)^2``)."""
        return self.i_off_at(temperature_k) * self.vdd_v * (vdd_v / self.vdd_v) ** 2

    def check(self, tech: Technology, key: str) -> None:
        """Refuse a circuit whose supply or node is beyond where this corner's figures hold."""
        lo, hi = SUPPLY_RANGE
        ratio = tech.vdd_v / self.vdd_v
        if not lo <= ratio <= hi:
            raise PhysicsError(f"the circuit's {tech.vdd_v:g} V supply is {ratio:.3g}x the {self.name} corner's "
                               f"nominal {self.vdd_v:g} V, outside {lo:g}..{hi:g}x over which its currents hold; "
                               "give a corner characterised near that supply", key=f"{key}.vdd")
        node_ratio(self.node_m, tech, f"{key}.node")


def corner_warnings(components, prefix: str = "components") -> list[tuple[str, str]]:
    """(key, message) for each component card whose own leakage figure is of another transistor flavour than
    the chip's corner (``components``: a circuit card's components section)."""
    corner = components.corner
    out = []
    for role in type(components).model_fields:
        card = getattr(components, role, None)
        flavour = getattr(card, "flavour", None)
        if isinstance(card, ProcessCornerCard) or flavour is None or flavour == corner.name:
            continue
        out.append((f"{prefix}.{role}.flavour", f"{flavour} figures on a chip whose corner is {corner.name} "
                    f"({prefix}.corner): two corners on one chip; give a card of the {corner.name} flavour, or "
                    "say so where the design mixes them"))
    return out


class PowerGatingCard(ComponentCard):
    """Power gating of the chip's blocks (see the module docstring)."""

    kind: Literal["power_gating"]
    policy: Policy = Field(description="the policy of every domain not named in domains")
    domains: dict[str, Policy] = Field(default_factory=dict, description="policy per domain: " + ", ".join(DOMAINS))
    residual: Number = Field(ge=0.0, le=1.0, description="leakage a gated logic block keeps, as a fraction")
    retention_residual: Number = Field(ge=0.0, le=1.0, description="leakage a gated block that holds state keeps "
                                       "at its retention voltage, as a fraction")
    v_retention_v: VoltageV = Field(alias="v_retention", gt=0.0, le=5.0, description="rail voltage of a "
                                    "retentive block while gated")
    rail_capacitance_f_per_m2: CapacitancePerAreaFPerM2 = Field(
        alias="rail_capacitance", gt=0.0, le=1.0, description="virtual-rail capacitance per area of gated logic, "
        "recharged at every wake-up")
    wake_time_s: TimeS = Field(alias="wake_time", ge=0.0, le=1e-3, description="time from the wake signal to a "
                               "usable block")
    idle_after_s: TimeS | None = Field(None, alias="idle_after", gt=0.0, le=1.0,
                                       description="policy idle: gate intervals longer than this instead of the "
                                       "break-even time")

    @model_validator(mode="after")
    def _consistent(self) -> PowerGatingCard:
        for name in self.domains:
            if name in NOT_GATEABLE:
                raise FieldError(f"domains.{name}", f"cannot be gated ({NOT_GATEABLE[name]}); gateable: "
                                 + ", ".join(DOMAINS))
            if name not in DOMAINS:
                raise FieldError(f"domains.{name}", "is not a power domain; gateable: " + ", ".join(DOMAINS))
        if self.idle_after_s is not None and self.idle_after_s < self.wake_time_s:
            raise FieldError("idle_after", f"{self.idle_after_s:g} s is shorter than the {self.wake_time_s:g} s a "
                             "block takes to wake: a block gated for that interval could not be awake in time; "
                             "give at least wake_time")
        return self

    def policy_of(self, domain: str) -> str:
        return self.domains.get(domain, self.policy)

    def wake_energy_j(self, area_m2: float, vdd_v: float, retentive: bool) -> float:
        """Energy to recharge a gated block's virtual rail (CACTI-P: ``C vdd dV``)."""
        dv = max(0.0, vdd_v - self.v_retention_v) if retentive else vdd_v
        return self.rail_capacitance_f_per_m2 * area_m2 * vdd_v * dv

    def threshold_s(self, domain: str, power_w: float, wake_j: float, residual: float) -> float:
        """Shortest idle interval the domain's policy gates (inf: never)."""
        policy = self.policy_of(domain)
        if policy == "never" or power_w <= 0.0:
            return math.inf
        if policy == "always":
            return self.wake_time_s
        if self.idle_after_s is not None:
            return self.idle_after_s
        saved = (1.0 - residual) * power_w
        return self.wake_time_s + wake_j / saved if saved > 0 else math.inf


__all__ = ["DOMAINS", "NOT_GATEABLE", "SUPPLY_RANGE", "TEMPERATURE_RANGE_K", "PowerGatingCard", "ProcessCornerCard",
           "corner_warnings"]
