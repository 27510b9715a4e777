"""SMA cross: the small example strategy that tests and benchmarks use.

Long when the fast SMA crosses above the slow one, short when it crosses below; an opposite cross
exits, and the engine asks again after the exit settles so the reversal enters on the same candle.
The stop is not the strategy's business: the engine places it on the exchange.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, ClassVar

import msgspec

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext


class SmaCrossParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    fast: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    slow: Annotated[int, msgspec.Meta(ge=2, le=5000)] = 30
    fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    """Share of the available balance used as margin for each entry."""
    allow_short: bool = True

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")


class SmaCross:
    Params: ClassVar[type[msgspec.Struct]] = SmaCrossParams

    def __init__(self, params: SmaCrossParams, context: StrategyContext) -> None:
        self.p = params
        self.history = params.slow + 1
        self._closes: deque[float] = deque(maxlen=params.slow)
        self._recent: deque[float] = deque(maxlen=params.fast)
        self._prev_diff: float | None = None
        self.cross = 0
        """+1 on the candle where fast crossed above slow, -1 where it crossed below, else 0."""

    def on_candle(self, candle: CandleClosed) -> None:
        closes = self._closes
        closes.append(candle.close)
        self._recent.append(candle.close)
        if len(closes) < self.p.slow:
            self.cross = 0
            return
        fast = sum(self._recent) / self.p.fast
        diff = fast - sum(closes) / self.p.slow
        prev = self._prev_diff
        self._prev_diff = diff
        if prev is None:
            self.cross = 0
        elif prev <= 0 < diff:
            self.cross = 1
        elif prev >= 0 > diff:
            self.cross = -1
        else:
            self.cross = 0

    def decide(self, view: PositionView) -> Decision:
        if not self.cross:
            return None
        if view.state == "flat":
            if self.cross > 0:
                return Enter(side="long", fraction=self.p.fraction)
            if self.p.allow_short:
                return Enter(side="short", fraction=self.p.fraction)
            return None
        if view.state == "protected" and (view.side == "long") == (self.cross < 0):
            return Exit(reason="cross")
        return None
