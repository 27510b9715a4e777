"""The opportunity-gating evaluation: compounding, the original's 5-day windows and the out-of-sample split."""

from __future__ import annotations

import pytest

from gatebot.app.report import EvalTrade, evaluate, split_by_training, window_stats

STEP = 300_000  # 5m


def trade(pos: int, opened_bar: int, bars: int, ret: float, reason: str = "exit") -> EvalTrade:
    return EvalTrade(position=pos, side="long", opened_at=opened_bar * STEP, closed_at=(opened_bar + bars) * STEP,
                     exit_reason=reason, net=ret * 10_000, fees=4.0, ret=ret)


def test_compounding_drawdown_and_averages() -> None:
    ts = [trade(1, 10, 5, 0.10), trade(2, 20, 5, -0.05, "sl"), trade(3, 30, 5, 0.02)]
    e = evaluate(ts, start_ms=0, end_ms=3000 * STEP, interval_ms=STEP)
    assert e.compound_return_pct == pytest.approx((1.1 * 0.95 * 1.02 - 1) * 100)
    assert e.max_drawdown_pct == pytest.approx(5.0)
    assert e.trades == 3 and e.wins == 2 and e.exits == {"exit": 2, "sl": 1}
    assert e.avg_win_pct == pytest.approx(6.0) and e.avg_loss_pct == pytest.approx(-5.0)
    assert e.fees == 12.0


def test_windows_overlapping_and_not() -> None:
    ts = [trade(1, 10, 5, 0.10), trade(2, 1500, 5, -0.05)]
    # 2,880 candles: windows of 1,440 stepped by 72 -> (2880 - 1440) / 72 + 1 = 21 windows
    mean, rate, n = window_stats(ts, 0, 2880 * STEP, STEP)
    assert n == 21
    # the first trade lies in window 0 only; the second in every window that spans candles 1500..1505
    inside_second = sum(1 for k in range(21) if 72 * k <= 1500 and 72 * k + 1440 >= 1505)
    assert mean == pytest.approx((0.10 + inside_second * -0.05) / 21)
    assert rate == pytest.approx((1.0 + inside_second * 0.0) / (1 + inside_second))
    mean_n, _, n_n = window_stats(ts, 0, 2880 * STEP, STEP, step=1440)
    assert n_n == 2 and mean_n == pytest.approx((0.10 - 0.05) / 2)


def test_split_by_training_period() -> None:
    ts = [trade(1, 10, 5, 0.10), trade(2, 100, 5, -0.05)]
    # trained on candles up to open time 50*STEP: the entry at the close of candle 50 is still in sample
    parts = split_by_training(ts, 50 * STEP, STEP, start_ms=0, end_ms=200 * STEP)
    assert parts["in_sample"].trades == 1 and parts["out_of_sample"].trades == 1
    assert parts["out_of_sample"].compound_return_pct == pytest.approx(-5.0)
    edge = [trade(3, 51, 5, 0.01)]  # decided at 51*STEP = the close of candle 50
    assert split_by_training(edge, 50 * STEP, STEP, start_ms=0, end_ms=200 * STEP)["out_of_sample"].trades == 0
