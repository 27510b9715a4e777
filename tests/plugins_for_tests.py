"""A plugin module the tests load by dotted path from a TOML `[plugins]` table: ``broken``, ``scripted``
(gatebot.strategies.scripted, the one the benchmarks load too) and ``peeking`` (a planted look-ahead)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, PositionView, StrategyContext
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


class PeekParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    peek_at_ms: int = 0
    """The open time of the one candle whose decision reads the next candle's close (in the batch path)."""
    expose: bool = True
    """Expose the peeked close as the feature ``next_close`` (False: only the decision shows it)."""


class Peeking:
    """A planted one-candle look-ahead: at one candle, the batch path's prepared series tells it the next
    close, and it enters with a fraction computed from it (the rolling path cannot know it: it waits)."""

    Params: ClassVar[type[msgspec.Struct]] = PeekParams
    history = 1

    def __init__(self, params: PeekParams, context: StrategyContext) -> None:
        self.p = params
        self._next: dict[int, float] = {}
        self._peeked: float | None = None

    def prepare(self, rows: Any) -> None:
        times, closes = rows[:, 0].tolist(), rows[:, 4].tolist()
        self._next = {int(t): c for t, c in zip(times, closes[1:], strict=False)}

    def on_candle(self, candle: CandleClosed) -> None:
        self._peeked = self._next.get(candle.open_time) if candle.open_time == self.p.peek_at_ms else None

    def features(self) -> dict[str, float]:
        return {"next_close": self._peeked} if self.p.expose and self._peeked is not None else {}

    def decide(self, view: PositionView) -> Decision:
        if self._peeked is None or view.state != "flat":
            return None
        return Enter(side="long", fraction=0.1 + self._peeked % 1.0 / 2)


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"broken": Broken, "scripted": Scripted, "peeking": Peeking}
