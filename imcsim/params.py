"""Typed parameter models shared by every card: strict, frozen, unit-aware.

A field holding a physical quantity is annotated with one of the quantity
types below (``TimeS``, ``EnergyJ``, ...). YAML may give it as a string with
units ("10 ns") or as a bare number in SI units; after validation it is a
plain float in SI units. Python attribute names carry the unit
(``t_read_s``); YAML keys are the alias without it (``t_read``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from imcsim import units
from imcsim.units import Dim, UnitError


def _quantity(dim: Dim):
    def parse(value: Any) -> float:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            try:
                return units.to_si(value, dim)
            except UnitError as err:
                raise ValueError(str(err)) from None
        raise ValueError(f"expected {units.DIM_NAMES.get(dim, 'a quantity')}, got {value!r}")

    parse.dim = dim  # type: ignore[attr-defined]  # read back by error rendering
    return BeforeValidator(parse)


def field_dim(model: type[BaseModel], name: str) -> Dim | None:
    """The dimension of a quantity field (None for plain fields)."""
    info = model.model_fields.get(name)
    if info is None:
        return None
    for meta in info.metadata:
        dim = getattr(getattr(meta, "func", None), "dim", None)
        if dim is not None:
            return dim
    return None


Number = Annotated[float, _quantity(units.DIMENSIONLESS)]
LengthM = Annotated[float, _quantity(units.LENGTH)]
AreaM2 = Annotated[float, _quantity(units.AREA)]
TimeS = Annotated[float, _quantity(units.TIME)]
FrequencyHz = Annotated[float, _quantity(units.FREQUENCY)]
CurrentA = Annotated[float, _quantity(units.CURRENT)]
TemperatureK = Annotated[float, _quantity(units.TEMPERATURE)]
EnergyJ = Annotated[float, _quantity(units.ENERGY)]
PowerW = Annotated[float, _quantity(units.POWER)]
VoltageV = Annotated[float, _quantity(units.VOLTAGE)]
ResistanceOhm = Annotated[float, _quantity(units.RESISTANCE)]
ConductanceS = Annotated[float, _quantity(units.CONDUCTANCE)]
CapacitanceF = Annotated[float, _quantity(units.CAPACITANCE)]
ResistanceAreaOhmM2 = Annotated[float, _quantity(units.RESISTANCE_AREA)]
ResistivityOhmM = Annotated[float, _quantity(units.RESISTIVITY)]
CurrentDensityAPerM2 = Annotated[float, _quantity(units.CURRENT_DENSITY)]
CurrentPerWidthAPerM = Annotated[float, _quantity(units.MAGNETIZATION)]  # A/m, e.g. '1 mA/um'
CapacitancePerLengthFPerM = Annotated[float, _quantity(units.CAPACITANCE_PER_LENGTH)]  # e.g. '0.2 fF/um'
PowerDensityWPerM2 = Annotated[float, _quantity(units.POWER_DENSITY)]  # e.g. '10 mW/mm^2'
WidthPerAreaPerM = Annotated[float, _quantity(units.INVERSE_LENGTH)]  # e.g. '0.1 um/um^2'
CapacitancePerAreaFPerM2 = Annotated[float, _quantity(units.CAPACITANCE_PER_AREA)]  # e.g. '1 fF/um^2'


class Params(BaseModel):
    """Base of every card and config section: unknown keys are errors, values frozen.

    A card reads its YAML keys (the aliases) and dumps them too, so whatever a card dumps, JSON or a
    mapping, validates back to an equal card (the round trip the caches keyed by a card's JSON rely on).
    Code that needs the attribute names asks for them with ``by_alias=False``.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=False, validate_by_alias=True,
        serialize_by_alias=True, strict=True, allow_inf_nan=False,
    )
