"""The code passes its own lint (ruff with bug-catching rules, see pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    paths = [p for p in ("imcsim", "tests", "benchmarks") if (ROOT / p).is_dir()]
    res = subprocess.run([ruff, "check", *paths], cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
