"""Shared fixtures: the repository root and a small hardware model built from the shipped cards."""

from __future__ import annotations

from pathlib import Path

import pytest

from imcsim.api import build_hardware
from imcsim.config import load_config

ROOT = Path(__file__).resolve().parents[1]
MAIN_CONFIG = ROOT / "configs" / "sas_mram_repnet.yaml"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def hardware():
    """A fresh SAS-MRAM bit-serial macro from the main config's cards."""
    return build_hardware(load_config(MAIN_CONFIG))


@pytest.fixture
def small_hardware():
    """The same cards with 8 x 16 subarrays, for hand-checked counts."""
    return build_hardware(
        load_config(MAIN_CONFIG, ["circuit.array.rows=8", "circuit.array.cols=16"])
    )
