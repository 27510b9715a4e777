"""The benchmarks' own plugin module (loaded by dotted path from a TOML ``[plugins]`` table), so that no
benchmark depends on the tests: a strategy that enters on every ``every``-th candle and exits one candle later."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext
from gatebot.plugins.hookspecs import hookimpl


class RepeatParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    side: Literal["long", "short"] = "long"
    every: int = 2
    """Enter on candles 1, 1+every, ... after warm-up, and exit one candle after each entry."""
    fraction: float = 0.5


class Repeat:
    """Enters and exits on a fixed rhythm: every decision is a command, which is what a latency probe needs."""

    Params: ClassVar[type[msgspec.Struct]] = RepeatParams
    history = 1

    def __init__(self, params: RepeatParams, context: StrategyContext) -> None:
        self.p = params
        self.live = 0
        self._seen = -1
        self._candles = 0

    def on_candle(self, candle: CandleClosed) -> None:
        self._candles += 1

    def decide(self, view: PositionView) -> Decision:
        if self._candles != self._seen:
            self._seen = self._candles
            self.live += 1
        if view.state == "flat" and (self.live - 1) % self.p.every == 0:
            return Enter(side=self.p.side, fraction=self.p.fraction)
        if view.state == "protected" and view.bars_held >= 1:
            return Exit(reason="repeat")
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"repeat": Repeat}
