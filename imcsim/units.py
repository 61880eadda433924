"""Unit strings -> SI floats. The one place where units are parsed.

Quantities in YAML may be written with units ("10 ns", "0.6 pJ", "25 uS",
"100 nm", "1.2 V", "5 Ohm*um^2", "2e6 A/cm^2", "200 uOhm*cm", "150 %").
Inside imcsim every quantity is a plain float in SI units, and the unit is
part of the variable name (``t_pulse_s``, ``e_write_j``). Rendering back to
human units (pJ, ns, um^2) happens only in :func:`format_si`.

A unit expression is a product or quotient of prefixed base units with
optional integer exponents: ``A/cm^2``, ``Ohm*um^2``, ``J/(bit)`` is not
supported (bits are counts, not units). Dimensions are tracked as exponents
of (kg, m, s, A, K) so a length can never be given where a time is expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Dimension vector: exponents of (kg, m, s, A, K).
Dim = tuple[int, int, int, int, int]

DIMENSIONLESS: Dim = (0, 0, 0, 0, 0)
LENGTH: Dim = (0, 1, 0, 0, 0)
AREA: Dim = (0, 2, 0, 0, 0)
TIME: Dim = (0, 0, 1, 0, 0)
FREQUENCY: Dim = (0, 0, -1, 0, 0)
CURRENT: Dim = (0, 0, 0, 1, 0)
TEMPERATURE: Dim = (0, 0, 0, 0, 1)
ENERGY: Dim = (1, 2, -2, 0, 0)
POWER: Dim = (1, 2, -3, 0, 0)
VOLTAGE: Dim = (1, 2, -3, -1, 0)
RESISTANCE: Dim = (1, 2, -3, -2, 0)
CONDUCTANCE: Dim = (-1, -2, 3, 2, 0)
CAPACITANCE: Dim = (-1, -2, 4, 2, 0)
RESISTANCE_AREA: Dim = (1, 4, -3, -2, 0)  # Ohm*m^2 (MTJ RA product)
RESISTIVITY: Dim = (1, 3, -3, -2, 0)  # Ohm*m
CURRENT_DENSITY: Dim = (0, -2, 0, 1, 0)  # A/m^2
ENERGY_DENSITY: Dim = (1, -1, -2, 0, 0)  # J/m^3 (anisotropy constant)
MAGNETIZATION: Dim = (0, -1, 0, 1, 0)  # A/m
CAPACITANCE_PER_LENGTH: Dim = (-1, -3, 4, 2, 0)  # F/m (wire capacitance)
POWER_DENSITY: Dim = (1, 0, -3, 0, 0)  # W/m^2 (leakage per area)
INVERSE_LENGTH: Dim = (0, -1, 0, 0, 0)  # 1/m (transistor width per area of logic)
CAPACITANCE_PER_AREA: Dim = (-1, -4, 4, 2, 0)  # F/m^2 (rail capacitance per area)

DIM_NAMES: dict[Dim, str] = {
    DIMENSIONLESS: "a plain number",
    LENGTH: "a length (e.g. '100 nm')",
    AREA: "an area (e.g. '0.1 um^2')",
    TIME: "a time (e.g. '10 ns')",
    FREQUENCY: "a frequency (e.g. '500 MHz')",
    CURRENT: "a current (e.g. '80 uA')",
    TEMPERATURE: "a temperature (e.g. '300 K')",
    ENERGY: "an energy (e.g. '0.6 pJ')",
    POWER: "a power (e.g. '1 mW')",
    VOLTAGE: "a voltage (e.g. '1.2 V')",
    RESISTANCE: "a resistance (e.g. '3 kOhm')",
    CONDUCTANCE: "a conductance (e.g. '25 uS')",
    CAPACITANCE: "a capacitance (e.g. '1 fF')",
    RESISTANCE_AREA: "a resistance-area product (e.g. '5 Ohm*um^2')",
    RESISTIVITY: "a resistivity (e.g. '200 uOhm*cm')",
    CURRENT_DENSITY: "a current density (e.g. '2e6 A/cm^2')",
    ENERGY_DENSITY: "an energy density (e.g. '8e5 J/m^3')",
    MAGNETIZATION: "a magnetization (e.g. '1.1e6 A/m')",
    CAPACITANCE_PER_LENGTH: "a capacitance per length (e.g. '0.2 fF/um')",
    POWER_DENSITY: "a power per area (e.g. '10 mW/mm^2')",
    INVERSE_LENGTH: "a width per area (e.g. '0.1 um/um^2')",
    CAPACITANCE_PER_AREA: "a capacitance per area (e.g. '1 fF/um^2')",
}

DIM_SYMBOLS: dict[Dim, str] = {
    LENGTH: "m",
    AREA: "m^2",
    TIME: "s",
    FREQUENCY: "Hz",
    CURRENT: "A",
    TEMPERATURE: "K",
    ENERGY: "J",
    POWER: "W",
    VOLTAGE: "V",
    RESISTANCE: "Ohm",
    CONDUCTANCE: "S",
    CAPACITANCE: "F",
    RESISTANCE_AREA: "Ohm*m^2",
    RESISTIVITY: "Ohm*m",
    CURRENT_DENSITY: "A/m^2",
    ENERGY_DENSITY: "J/m^3",
    MAGNETIZATION: "A/m",
    CAPACITANCE_PER_LENGTH: "F/m",
    POWER_DENSITY: "W/m^2",
    INVERSE_LENGTH: "1/m",
    CAPACITANCE_PER_AREA: "F/m^2",
}

_BASE_UNITS: dict[str, tuple[float, Dim]] = {
    "m": (1.0, LENGTH),
    "s": (1.0, TIME),
    "A": (1.0, CURRENT),
    "K": (1.0, TEMPERATURE),
    "g": (1e-3, (1, 0, 0, 0, 0)),
    "Hz": (1.0, FREQUENCY),
    "J": (1.0, ENERGY),
    "eV": (1.602176634e-19, ENERGY),
    "W": (1.0, POWER),
    "V": (1.0, VOLTAGE),
    "Ohm": (1.0, RESISTANCE),
    "ohm": (1.0, RESISTANCE),
    "Ω": (1.0, RESISTANCE),
    "S": (1.0, CONDUCTANCE),
    "F": (1.0, CAPACITANCE),
    "%": (0.01, DIMENSIONLESS),
}

_PREFIXES: dict[str, float] = {
    "a": 1e-18,
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "µ": 1e-6,
    "μ": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
}

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY_RE = re.compile(rf"^\s*({_NUMBER})\s*(.*?)\s*$")
_FACTOR_RE = re.compile(r"^([^\^]+?)(?:\^([+-]?\d+))?$")


class UnitError(ValueError):
    """A quantity string that cannot be parsed, or has the wrong dimension."""


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: SI magnitude and its dimension vector."""

    value: float
    dim: Dim


def _dim_add(a: Dim, b: Dim, sign: int = 1) -> Dim:
    return tuple(x + sign * y for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _dim_scale(a: Dim, k: int) -> Dim:
    return tuple(x * k for x in a)  # type: ignore[return-value]


def _parse_unit_token(token: str) -> tuple[float, Dim]:
    if token in _BASE_UNITS:
        return _BASE_UNITS[token]
    for prefix, scale in _PREFIXES.items():
        if token.startswith(prefix) and token[len(prefix) :] in _BASE_UNITS:
            base_scale, dim = _BASE_UNITS[token[len(prefix) :]]
            return scale * base_scale, dim
    raise UnitError(f"unknown unit {_echo(token)}")


def parse_unit(expr: str) -> tuple[float, Dim]:
    """Parse a unit expression such as ``A/cm^2`` into (SI scale, dimension)."""
    expr = expr.strip().replace("·", "*").replace(" ", "")
    if not expr:
        return 1.0, DIMENSIONLESS
    scale = 1.0
    dim = DIMENSIONLESS
    # Split into factors, remembering whether each one divides.
    parts = re.split(r"([*/])", expr)
    sign = 1
    for part in parts:
        if part == "*":
            sign = 1
            continue
        if part == "/":
            sign = -1
            continue
        m = _FACTOR_RE.match(part)
        if not m or not part:
            raise UnitError(f"cannot read unit expression {_echo(expr)}")
        token, exp_s = m.group(1), m.group(2)
        exp = int(exp_s) if exp_s else 1
        s, d = _parse_unit_token(token)
        scale *= s ** (sign * exp)
        dim = _dim_add(dim, _dim_scale(d, exp), sign)
    return scale, dim


def parse_quantity(text: str | float | int) -> Quantity:
    """Parse ``"10 ns"`` (or a bare number, taken as SI) into a :class:`Quantity`."""
    if isinstance(text, bool):
        raise UnitError(f"expected a number, got {_echo(text)}")
    if isinstance(text, int | float):
        return Quantity(float(text), DIMENSIONLESS)
    m = _QUANTITY_RE.match(str(text))
    if not m:
        raise UnitError(f"cannot read {_echo(text)} as a number with a unit")
    number = float(m.group(1))
    scale, dim = parse_unit(m.group(2))
    return Quantity(number * scale, dim)


def to_si(text: str | float | int, dim: Dim) -> float:
    """Parse ``text`` and check it has dimension ``dim``; return the SI float.

    A bare number (int/float, or a string with no unit) is accepted for any
    dimension and taken to be in SI units already. A string with a unit must
    have the dimension asked for: units that cancel (``2 ms/Ms``) or a percent
    are plain numbers, refused for a dimensioned quantity.
    """
    if isinstance(text, bool):
        raise UnitError(f"expected {DIM_NAMES.get(dim, 'a quantity')}, got {_echo(text)}")
    try:
        if isinstance(text, int | float):
            value = float(text)
        else:
            q = parse_quantity(text)
            has_unit = bool(_QUANTITY_RE.match(str(text)).group(2))  # a bare number is SI for any dimension
            if has_unit and q.dim != dim:
                raise UnitError(
                    f"expected {DIM_NAMES.get(dim, 'a quantity')}, got {_echo(text)} "
                    f"({DIM_NAMES.get(q.dim, 'another dimension') if q.dim != DIMENSIONLESS else 'a plain number'}"
                    f"{' once its units cancel' if q.dim == DIMENSIONLESS and not text.strip().endswith('%') else ''})"
                )
            value = q.value
    except OverflowError:
        raise UnitError(f"expected a finite number, got {_echo(text)} (too large)") from None
    if not math.isfinite(value):
        raise UnitError(f"expected a finite number, got {_echo(text)}")
    return value


def _echo(value: object) -> str:
    from imcsim.errors import shorten

    return shorten(value)


# Rendering -----------------------------------------------------------------

NAME_SUFFIX_UNITS = {"_j": "J", "_s": "s", "_m2": "m^2", "_w": "W", "_bytes": "B", "_hz": "Hz"}
"""The unit a metric or key name ends in (``energy_train_j`` is in J)."""


def unit_of_name(name: str) -> str:
    """The SI unit a metric name carries in its suffix; '' for a plain number."""
    return next((u for suffix, u in NAME_SUFFIX_UNITS.items() if name.endswith(suffix)), "")

SECONDS_PER_YEAR = 365.25 * 24 * 3600

_RENDER_PREFIXES = [
    (1e12, "T"),
    (1e9, "G"),
    (1e6, "M"),
    (1e3, "k"),
    (1.0, ""),
    (1e-3, "m"),
    (1e-6, "u"),
    (1e-9, "n"),
    (1e-12, "p"),
    (1e-15, "f"),
    (1e-18, "a"),
]


def format_si(value: float, unit: str, digits: int = 3) -> str:
    """Render an SI float in human units: ``format_si(6.1e-13, 'J') == '610 fJ'``.

    Areas (unit ``m^2``) are shown in um^2 or mm^2, the units architects use.
    """
    if unit == "m^2":
        if value == 0:
            return "0 um^2"
        if abs(value) >= 1e-6:
            return f"{value * 1e6:.{digits}g} mm^2"
        return f"{value * 1e12:.{digits}g} um^2"
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".rstrip()
    if unit == "s" and abs(value) >= SECONDS_PER_YEAR:
        return f"{value / SECONDS_PER_YEAR:.{digits}g} years"
    mag = abs(value)
    for scale, prefix in _RENDER_PREFIXES:
        if mag >= scale * 0.9995:
            return f"{value / scale:.{digits}g} {prefix}{unit}".rstrip()
    scale, prefix = _RENDER_PREFIXES[-1]
    return f"{value / scale:.{digits}g} {prefix}{unit}".rstrip()
