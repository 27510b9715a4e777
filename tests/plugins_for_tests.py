"""A plugin module the tests load by dotted path from a TOML `[plugins]` table: ``broken`` and ``scripted``
(gatebot.strategies.scripted, the one the benchmarks load too)."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, PositionView, StrategyContext
from gatebot.plugins.hookspecs import hookimpl
from gatebot.strategies.scripted import Scripted


class BrokenParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    message: str = "boom"


class Broken:
    """A strategy that raises on every candle."""

    Params: ClassVar[type[msgspec.Struct]] = BrokenParams
    history = 1

    def __init__(self, params: BrokenParams, context: StrategyContext) -> None:
        self.message = params.message

    def on_candle(self, candle: CandleClosed) -> None:
        raise RuntimeError(self.message)

    def decide(self, view: PositionView) -> Decision:
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"broken": Broken, "scripted": Scripted}
