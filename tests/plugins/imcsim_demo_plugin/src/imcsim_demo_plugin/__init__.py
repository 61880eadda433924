"""An imcsim plug-in: the device kind ``demo_sram``, an SRAM cell under another name.

It shows the whole contract: a card model with its own ``kind``, a builder taking (card, seed), and a
``register(devices)`` function named by an entry point in the group ``imcsim.devices``.
"""

from __future__ import annotations

from typing import Literal

from imcsim.devices.sram import SRAM, SRAMCard


class DemoSRAMCard(SRAMCard):
    """An SRAM card of kind ``demo_sram``."""

    kind: Literal["demo_sram"]


def register(devices) -> None:
    devices.register("demo_sram", DemoSRAMCard, lambda card, seed: SRAM.from_card(card),
                     "demo plug-in: a 6T SRAM cell registered by another package")
