"""Registers the sma_cross example strategy."""

from __future__ import annotations

from gatebot.plugins.hookspecs import hookimpl
from gatebot.strategies.sma_cross.strategy import SmaCross


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"sma_cross": SmaCross}
