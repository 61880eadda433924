"""What every circuit block shares: its card, its cost at a reference node, and scaling to the circuit's node.

A component is one class that owns its actions (each with an explicit kind), its area, its scaling with
technology node and supply voltage, the range that scaling holds in, and its sources (the card's
``references``). Component cards live in ``circuits/components/``; a circuit card names one per role, with
per-field overrides (``components: {sense_amp: {card: latch_sense_amp_28nm, energy: 5 fJ}}``).
"""

from __future__ import annotations

from pydantic import Field

from imcsim.actions import ActionCost, ActionSpec
from imcsim.errors import PhysicsError
from imcsim.params import AreaM2, EnergyJ, FrequencyHz, LengthM, Params, VoltageV

SCALING_RANGE = (0.25, 4.0)
"""Feature-size ratios (target / reference node) over which this model uses first-order scaling: energy follows
the switched capacitance (proportional to F) and V^2, area F^2 (Dennard et al., IEEE JSSC 9(5), 1974). Measured
scaling departs from these laws at deep nodes (Stillmaker and Baas, Integration 58, 2017, fit 180 nm to 7 nm
separately per node for that reason); the factor of 4 is this model's chosen bound, not a published threshold,
so a component card measured nearer the circuit's node is asked for beyond it."""


class Technology(Params):
    """The node, supply and clock a circuit is built in (card section ``technology``)."""

    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9)
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0)
    clock_hz: FrequencyHz = Field(alias="clock", gt=1e6, le=1e10)


class CostPoint(Params):
    """A cost measured or published at a reference node and supply."""

    energy_j: EnergyJ = Field(alias="energy", ge=0.0, le=1e-9, description="energy per action")
    area_m2: AreaM2 = Field(alias="area", ge=0.0, le=1e-6, description="area per instance")
    node_m: LengthM = Field(alias="node", gt=1e-9, le=500e-9, description="reference technology node")
    vdd_v: VoltageV = Field(alias="vdd", gt=0.1, le=5.0, description="reference supply voltage")

    def scaled(self, tech: Technology, key: str) -> tuple[float, float]:
        """(energy J, area m^2) at the circuit's node and supply; refuses a node outside :data:`SCALING_RANGE`."""
        s = node_ratio(self.node_m, tech, key)
        return self.energy_j * s * (tech.vdd_v / self.vdd_v) ** 2, self.area_m2 * s * s


def node_ratio(reference_node_m: float, tech: Technology, key: str) -> float:
    """The circuit's feature size over a card's reference node; refuses a ratio outside :data:`SCALING_RANGE`
    (naming ``key``)."""
    s = tech.node_m / reference_node_m
    lo, hi = SCALING_RANGE
    if not lo <= s <= hi:
        raise PhysicsError(
            f"scaling from its {reference_node_m * 1e9:g} nm reference to the circuit's {tech.node_m * 1e9:g} nm "
            f"node is a factor {s:.3g}, outside the {lo:g}..{hi:g} over which first-order CMOS scaling holds; "
            "give a component card measured nearer that node", key=key)
    return s


class ComponentCard(Params):
    """A component card: its kind, what it is, and its sources; kinds add their cost fields."""

    kind: str
    description: str = ""
    references: dict[str, str] = Field(default_factory=dict)
    card: str | None = Field(None, description="the component card this entry was read from")


class PointCard(ComponentCard, CostPoint):
    """A component card with one cost point (most blocks)."""


class Component:
    """A circuit block in a circuit, at the circuit's node and supply.

    ``role`` is the name its actions carry in the circuit's action table (``sense_amp``);
    :meth:`actions` returns action name -> :class:`ActionSpec`, :attr:`area_m2` is one instance's area.
    """

    def __init__(self, role: str, card: ComponentCard, tech: Technology):
        self.role = role
        self.card = card
        self.energy_j, self.area_m2 = (card.scaled(tech, f"components.{role}.node") if isinstance(card, CostPoint)
                                       else (0.0, 0.0))

    @staticmethod
    def spec(energy_j: float, description: str, kind: str = "compute", latency_s: float = 0.0) -> ActionSpec:
        return ActionSpec(ActionCost(energy_j, latency_s), description, kind)

    def actions(self) -> dict[str, ActionSpec]:
        raise NotImplementedError
