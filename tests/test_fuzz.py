"""Fuzzing every input surface: configs, cards, --set values, report and data files (generator: tests/fuzz.py).

Each generated input must be accepted, with hardware that builds and has finite, non-negative figures, or
refused with an InputError naming the file and the key; nothing may raise anything else, hang, or run code
from a data file. The default run draws a few hundred inputs; ``python -m pytest -m slow`` draws 10,000.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import Chooser, Generator, judge

FAST_EXAMPLES = 200
SLOW_EXAMPLES = 10_000
_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Generator:
    return Generator(tmp_path_factory.mktemp("fuzz"))


def _check(generator: Generator, data) -> None:
    case = generator.make(Chooser(data=data))
    verdict = judge(case)
    assert verdict is None, f"{case.note}: {verdict}"


@settings(max_examples=FAST_EXAMPLES, **_SETTINGS)
@given(data=st.data())
def test_every_input_is_accepted_or_refused_with_file_and_key(generator, data):
    _check(generator, data)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **_SETTINGS)
@given(data=st.data())
def test_every_input_is_accepted_or_refused_ten_thousand_cases(generator, data):
    _check(generator, data)


@settings(max_examples=40, **_SETTINGS)
@given(data=st.data())
def test_the_cli_answers_a_bad_input_with_exit_2_and_one_line(generator, data):
    from imcsim import cli

    case = generator.make(Chooser(data=data))
    if case.data is not None:
        return  # data files are read by a run; their refusals are checked by the in-process judge
    argv = ["validate", str(case.config), "--library", str(case.library)]
    for item in case.overrides:
        argv += ["--set", item]
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    err = stderr.getvalue()
    assert code in (0, 2), f"{case.note}: exit {code}: {err[-300:]}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1, f"{case.note}: {err[:500]}"
        assert err.startswith("imcsim: error: ")
