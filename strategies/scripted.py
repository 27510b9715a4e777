"""A strategy that does what its parameters say, on chosen candles: enter on the n-th candle, exit on the m-th, or
repeat (enter every ``every`` candles, exit one candle after each entry). The tests drive whole trades with it and
the benchmarks a command on every other candle, so it lives here, where both can load it, and not in either.
Not registered by an entry point: a config loads it by dotted path, ``[plugins] modules =
["gatebot.strategies.scripted"]``, and names it ``strategy = "scripted"``."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext
from gatebot.plugins.hookspecs import hookimpl


class ScriptParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    side: Literal["long", "short"] = "long"
    enter_on: int = 1
    """Enter on the n-th live candle (1 = the first after warm-up)."""
    exit_on: int = 0
    """Exit signal on the n-th live candle (0 = never)."""
    fraction: float = 0.5
    every: int = 0
    """> 0: repeat: enter on candles 1, 1+every, ... and exit ``hold`` candles after each entry."""
    hold: int = 1
    """With ``every``: the candles a position is held before its exit signal (its stop may move meanwhile)."""


class Scripted:
    """A strategy that does what its parameters say, on chosen candles: for integration tests."""

    Params: ClassVar[type[msgspec.Struct]] = ScriptParams
    history = 1

    def __init__(self, params: ScriptParams, context: StrategyContext) -> None:
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
        p, n = self.p, self.live
        if p.every:
            if view.state == "flat" and (n - p.enter_on) % p.every == 0:
                return Enter(side=p.side, fraction=p.fraction)
            if view.state == "protected" and view.bars_held >= p.hold:
                return Exit(reason="scripted")
            return None
        if view.state == "flat" and n == p.enter_on:
            return Enter(side=p.side, fraction=p.fraction)
        if view.state == "protected" and p.exit_on and n == p.exit_on:
            return Exit(reason="scripted")
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"scripted": Scripted}
