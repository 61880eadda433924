"""Last-layer training: only each task's head trains on a frozen backbone."""

from __future__ import annotations

from imcsim.methods.base import FrozenBackbone
from imcsim.registry import METHODS


class LastLayer(FrozenBackbone):
    """Heads only (the default of every hook)."""


METHODS.register("last_layer", LastLayer(), "heads only on a frozen backbone (the linear-probe baseline)")
