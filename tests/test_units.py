"""Unit parsing and rendering: imcsim.units is the one place units are read."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcsim import units
from imcsim.units import (
    AREA,
    CONDUCTANCE,
    CURRENT,
    CURRENT_DENSITY,
    DIMENSIONLESS,
    ENERGY,
    FREQUENCY,
    LENGTH,
    MAGNETIZATION,
    RESISTANCE,
    RESISTANCE_AREA,
    RESISTIVITY,
    SECONDS_PER_YEAR,
    TIME,
    VOLTAGE,
    UnitError,
    format_si,
    parse_quantity,
    to_si,
)

# --- parse_quantity ------------------------------------------------------------

PARSE_CASES = [
    ("10 ns", 10e-9, TIME),
    ("0.6 pJ", 0.6e-12, ENERGY),
    ("25 uS", 25e-6, CONDUCTANCE),
    ("100 nm", 100e-9, LENGTH),
    ("1.2 V", 1.2, VOLTAGE),
    ("5 Ohm*um^2", 5e-12, RESISTANCE_AREA),
    ("2e6 A/cm^2", 2e10, CURRENT_DENSITY),
    ("200 uOhm*cm", 2e-6, RESISTIVITY),
    ("150 %", 1.5, DIMENSIONLESS),
    ("1 mA/um", 1e3, MAGNETIZATION),
    ("700 MHz", 7e8, FREQUENCY),
    ("80 uA", 80e-6, CURRENT),
    ("3 kOhm", 3e3, RESISTANCE),
    ("3 ohm", 3.0, RESISTANCE),
    ("3 Ω", 3.0, RESISTANCE),
    ("1 µs", 1e-6, TIME),  # micro sign U+00B5
    ("1 μs", 1e-6, TIME),  # Greek mu U+03BC
    ("0.1 um^2", 0.1e-12, AREA),
    ("1 eV", 1.602176634e-19, ENERGY),
    ("2 s^-1", 2.0, FREQUENCY),
    ("10ns", 10e-9, TIME),  # no space
    ("  10 ns  ", 10e-9, TIME),  # surrounding blanks
    ("-3 ns", -3e-9, TIME),
    ("+3 ns", 3e-9, TIME),
    (".5 ns", 0.5e-9, TIME),
    ("1.5E-3 s", 1.5e-3, TIME),
    ("5 Ohm·um^2", 5e-12, RESISTANCE_AREA),  # middle dot as product
    ("8e5 J/m^3", 8e5, units.ENERGY_DENSITY),
    ("1 kg", 1.0, (1, 0, 0, 0, 0)),
    ("3", 3.0, DIMENSIONLESS),
    ("2.5e-9", 2.5e-9, DIMENSIONLESS),
]


@pytest.mark.parametrize(("text", "value", "dim"), PARSE_CASES)
def test_parse_quantity_value_and_dimension(text, value, dim):
    q = parse_quantity(text)
    assert q.dim == dim
    assert q.value == pytest.approx(value, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(("text", "value", "dim"), PARSE_CASES)
def test_to_si_accepts_matching_dimension(text, value, dim):
    assert to_si(text, dim) == pytest.approx(value, rel=1e-12, abs=0.0)


@pytest.mark.parametrize("number", [0, 7, -2, 1.5, 2.5e-9])
def test_bare_python_numbers_are_si_for_any_dimension(number):
    assert parse_quantity(number) == units.Quantity(float(number), DIMENSIONLESS)
    for dim in (TIME, LENGTH, ENERGY, DIMENSIONLESS):
        value = to_si(number, dim)
        assert isinstance(value, float)
        assert value == float(number)


def test_bare_number_string_is_si_for_any_dimension():
    assert to_si("2e-9", TIME) == 2e-9
    assert to_si("100", LENGTH) == 100.0


def test_unit_expression_scales():
    assert units.parse_unit("A/cm^2") == (pytest.approx(1e4), CURRENT_DENSITY)
    assert units.parse_unit("") == (1.0, DIMENSIONLESS)
    scale, dim = units.parse_unit("Ohm*um^2")
    assert scale == pytest.approx(1e-12)
    assert dim == RESISTANCE_AREA


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dim", "expected_words"),
    [
        ("10 nm", TIME, ("a time", "a length")),
        ("10 ns", LENGTH, ("a length", "a time")),
        ("0.6 pJ", VOLTAGE, ("a voltage", "an energy")),
        ("25 uS", RESISTANCE, ("a resistance", "a conductance")),
        ("700 MHz", TIME, ("a time", "a frequency")),
        ("2e6 A/cm^2", CURRENT, ("a current", "a current density")),
        ("5 Ohm*um^2", RESISTIVITY, ("a resistivity", "a resistance-area")),
        ("1 kg", TIME, ("a time",)),
    ],
)
def test_dimension_mismatch_raises(text, dim, expected_words):
    with pytest.raises(UnitError) as info:
        to_si(text, dim)
    msg = str(info.value)
    assert text in msg
    for word in expected_words:
        assert word in msg


@pytest.mark.parametrize("dim", [TIME, LENGTH, CURRENT])
def test_percent_is_only_a_plain_number(dim):
    assert to_si("150 %", DIMENSIONLESS) == pytest.approx(1.5)
    with pytest.raises(UnitError, match="150 %"):
        to_si("150 %", dim)


def test_unit_error_is_a_value_error():
    assert issubclass(UnitError, ValueError)


@pytest.mark.parametrize("text", ["10 furlong", "3 parsec", "1 Ns", "2 xV", "5 bit", "1 mOhms"])
def test_unknown_unit_raises(text):
    with pytest.raises(UnitError, match="unknown unit"):
        parse_quantity(text)
    with pytest.raises(UnitError):
        to_si(text, TIME)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "abc", "ns", "ten ns", "1..2 ns", "1 m^x", "1 /s", "1 s/", "1 s**2", "1 A//m"],
)
def test_unreadable_quantity_raises(text):
    with pytest.raises(UnitError):
        parse_quantity(text)
    with pytest.raises(UnitError):
        to_si(text, TIME)


@pytest.mark.parametrize(
    "value",
    ["nan", "inf", "-inf", "NaN ns", "inf s", "1e400", "1e400 ns", "-1e400 s",
     math.nan, math.inf, -math.inf],
)
def test_non_finite_rejected(value):
    with pytest.raises(UnitError):
        to_si(value, TIME)


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("dim", [TIME, DIMENSIONLESS])
def test_booleans_rejected(value, dim):
    with pytest.raises(UnitError, match=repr(value)):
        to_si(value, dim)
    with pytest.raises(UnitError):
        parse_quantity(value)


# --- format_si ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (6.1e-13, "J", "610 fJ"),
        (-6.1e-13, "J", "-610 fJ"),
        (1.4e-9, "s", "1.4 ns"),
        (7e8, "Hz", "700 MHz"),
        (80e-6, "A", "80 uA"),
        (1.0, "V", "1 V"),
        (3e3, "Ohm", "3 kOhm"),
        (2.5e12, "Hz", "2.5 THz"),
        (1e-18, "J", "1 aJ"),
        (999.9e-15, "J", "1 pJ"),  # rounds up into the next prefix, not '1e+03 fJ'
        (0.0, "J", "0 J"),
        (0.1e-12, "m^2", "0.1 um^2"),
        (419e-12, "m^2", "419 um^2"),
        (2e-6, "m^2", "2 mm^2"),
        (0.0, "m^2", "0 um^2"),
        (10 * SECONDS_PER_YEAR, "s", "10 years"),
        (1e9, "s", "31.7 years"),
        (SECONDS_PER_YEAR * 0.5, "s", "15.8 Ms"),
    ],
)
def test_format_si(value, unit, text):
    assert format_si(value, unit) == text


def test_format_si_digits():
    assert format_si(6.1234e-13, "J") == "612 fJ"
    assert format_si(6.1234e-13, "J", digits=4) == "612.3 fJ"


@pytest.mark.parametrize(("value", "text"), [(math.inf, "inf J"), (-math.inf, "-inf J"), (math.nan, "nan J")])
def test_format_si_non_finite(value, text):
    assert format_si(value, "J") == text


# --- properties -----------------------------------------------------------------

# Written out here rather than read from imcsim.units, so a wrong table entry fails.
_PREFIX_SCALES = {
    "": 1.0, "a": 1e-18, "f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6,
    "m": 1e-3, "c": 1e-2, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
}

# Keep v * scale a normal float, so the comparison is about parsing, not underflow.
_finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e290, max_value=1e290).filter(
    lambda v: v == 0.0 or abs(v) > 1e-280
)


@given(v=_finite, prefix=st.sampled_from(sorted(_PREFIX_SCALES)))
@settings(max_examples=300, deadline=None, database=None)
def test_prefixed_seconds_round_trip(v, prefix):
    scale = _PREFIX_SCALES[prefix]
    got = to_si(f"{v} {prefix}s", TIME)
    assert math.isclose(got, v * scale, rel_tol=1e-12, abs_tol=0.0)


@given(v=_finite, prefix=st.sampled_from(sorted(_PREFIX_SCALES)))
@settings(max_examples=100, deadline=None, database=None)
def test_prefixed_seconds_wrong_dimension(v, prefix):
    with pytest.raises(UnitError):
        to_si(f"{v} {prefix}s", LENGTH)


_units_for_format = st.sampled_from(["J", "s", "m^2", "Hz", "A", "V", "Ohm", "m", "", "W"])


@given(value=st.floats(allow_nan=False, allow_infinity=False), unit=_units_for_format,
       digits=st.integers(min_value=1, max_value=8))
@settings(max_examples=300, deadline=None, database=None)
def test_format_si_never_raises_for_finite_floats(value, unit, digits):
    text = format_si(value, unit, digits)
    assert isinstance(text, str)
    assert text.strip()
    assert "\n" not in text
    if unit == "s" and abs(value) >= SECONDS_PER_YEAR:
        assert text.endswith(" years")
    elif unit == "m^2":
        assert text.endswith(("um^2", "mm^2"))
    elif unit:
        assert text.endswith(unit)


@given(value=st.floats(min_value=1e-290, max_value=1e290), sign=st.sampled_from([1.0, -1.0]),
       unit_dim=st.sampled_from([("J", ENERGY), ("s", TIME), ("m^2", AREA), ("Hz", FREQUENCY), ("V", VOLTAGE)]))
@settings(max_examples=300, deadline=None, database=None)
def test_format_si_parses_back(value, sign, unit_dim):
    """What format_si writes (outside 'years') reads back to within its 3 digits."""
    unit, dim = unit_dim
    value *= sign
    if unit == "s" and abs(value) >= SECONDS_PER_YEAR:
        return
    text = format_si(value, unit)
    assert to_si(text, dim) == pytest.approx(value, rel=5e-3)
