"""The scripted test strategy (strategies/scripted.py): with ``every`` and ``hold`` it holds each position
``hold`` candles before its exit signal (the chaos driver's take-profit runs, where the stop moves meanwhile)."""

from __future__ import annotations

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Enter, Exit, PositionView, StrategyContext
from gatebot.strategies.scripted import Scripted, ScriptParams

CANDLE = CandleClosed(symbol="BTC-USDT", interval="5m", open_time=0, open=1.0, high=1.0, low=1.0, close=1.0,
                      volume=0.0, ts=0)


def test_a_position_is_held_hold_candles_then_exited_and_entries_come_every_n_candles() -> None:
    s = Scripted(ScriptParams(every=4, hold=3), StrategyContext(instance="t", symbol="BTC-USDT", interval="5m",
                                                                 leverage=4))
    held = [PositionView(state="protected", side="long", bars_held=b) for b in (1, 2, 3)]
    views = [PositionView(state="flat"), *held, PositionView(state="flat")]
    decisions = []
    for view in views:
        s.on_candle(CANDLE)
        decisions.append(type(s.decide(view)).__name__)
    assert decisions == [Enter.__name__, "NoneType", "NoneType", Exit.__name__, Enter.__name__]
