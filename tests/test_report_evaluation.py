"""The one evaluation (app/evaluation.py): out of sample first, compounding, mark-to-market drawdown, costs on
their own lines, the open position at the last mark, non-overlapping 5-day windows after the warm-up."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pytest

from gatebot.app.evaluation import WINDOW_MS, JournalFacts, TradeRow, evaluate, format_evaluation
from gatebot.core.position import PositionRecord

STEP = 300_000  # 5m
DAY = 86_400_000


def candles(closes: list[float]) -> np.ndarray:
    n = len(closes)
    t = np.arange(n, dtype=float) * STEP
    c = np.array(closes)
    return np.column_stack([t, c, c, c, c, np.ones(n)])


def trade(pos: int, opened_bar: int, bars: int, entry: float, exit: float, qty: str = "1", reason: str = "exit",
          fees: str = "0") -> TradeRow:
    q = D(qty)
    return TradeRow(position=pos, side="long", qty=q, entry_price=D(repr(entry)), exit_price=D(repr(exit)),
                    opened_at=opened_bar * STEP, filled_at=opened_bar * STEP, closed_at=(opened_bar + bars) * STEP,
                    exit_reason=reason, realized_pnl=(D(repr(exit)) - D(repr(entry))) * q, fees=D(fees),
                    entry_fees=D(fees) / 2, funding=D(0))


def facts(trades: list[TradeRow], *, training: tuple[int, int] | None = None, warmup: int = 0,
          open_rec: PositionRecord | None = None, n: int = 100) -> JournalFacts:
    return JournalFacts(instance="x", initial_balance=D(1000), trades=trades, open=open_rec, funding_times={},
                        first_ts=STEP, last_ts=n * STEP, interval_ms=STEP, warmup_candles=warmup, training=training)


def test_compounding_and_drawdown_marked_to_market_see_the_dip_inside_a_trade() -> None:
    closes = [100.0] * 100
    closes[12] = 50.0  # the held position dips to 50 one candle, then closes at 110
    ev = evaluate(facts([trade(1, 10, 10, 100.0, 110.0, qty="10", fees="2")]), candles(closes))
    whole = ev["whole"]
    assert whole["net"] == "98.00" and ev["final_equity"] == "1098.00"
    assert whole["compound_return_pct"] == pytest.approx(9.8)
    # at the dip: 1000 + 10 * (50 - 100) - 1 (entry fee) = 499: 50.1% below the peak of 1000
    assert whole["max_drawdown_pct"] == pytest.approx(50.1)
    assert ev["marks"] == "candle closes"
    without = evaluate(facts([trade(1, 10, 10, 100.0, 110.0, qty="10", fees="2")]))
    assert without["whole"]["max_drawdown_pct"] == 0.0 and without["marks"] == "entries and trade closes"


def test_out_of_sample_comes_first_and_the_training_window_is_its_own_part() -> None:
    ts = [trade(1, 5, 5, 100.0, 110.0), trade(2, 40, 5, 100.0, 90.0), trade(3, 80, 5, 100.0, 101.0)]
    # trained on candles 30..60 (open times): the trade decided at the close of candle 39 is in sample
    ev = evaluate(facts(ts, training=(30 * STEP, 60 * STEP)), candles([100.0] * 100))
    assert [p["kind"] for p in ev["parts"]] == ["out_of_sample", "in_sample"]
    oos, ins = ev["parts"]
    assert oos["trades"] == 2 and ins["trades"] == 1, "before and after the training window are out of sample"
    assert ins["net"] == "-10.00"
    text = format_evaluation(ev)
    assert text.index("out of sample") < text.index("IN SAMPLE")
    edge = evaluate(facts([trade(4, 61, 5, 100.0, 100.0)], training=(30 * STEP, 60 * STEP)))
    assert edge["parts"][1]["trades"] == 1, "decided at the close of the last training candle: in sample"


def test_no_training_window_is_all_out_of_sample() -> None:
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)]))
    assert len(ev["parts"]) == 1 and ev["parts"][0]["kind"] == "out_of_sample" and ev["parts"][0]["trades"] == 1


def test_open_position_is_valued_at_the_last_mark() -> None:
    rec = PositionRecord(state="protected", seq=2, side="long", entry_qty=D(2), filled_qty=D(2), entry_cost=D(200),
                         fees=D(1), opened_at=50 * STEP, stop_price=D(99))
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)], open_rec=rec), candles([100.0] * 99 + [105.0]))
    assert ev["open_position"]["net"] == "9.00"  # 2 * (105 - 100) - 1
    assert ev["final_equity"] == "1019.00"
    assert ev["equity_curve"]["equity"][-1] == pytest.approx(1019.0)
    assert ev["whole"]["trades"] == 1 and ev["whole"]["open_positions"] == 1


def test_five_day_windows_do_not_overlap_skip_the_warm_up_and_count_a_trade_where_it_closes() -> None:
    per_day = DAY // STEP
    n = 12 * per_day  # 12 days
    warm = per_day  # one day of warm-up: 11 days left, two whole windows
    crossing = trade(1, warm + 5 * per_day - 10, 20, 100.0, 110.0, qty="10")  # crosses the first boundary
    ts = [trade(2, warm + 10, 5, 100.0, 95.0, qty="10"), crossing]
    ev = evaluate(facts(ts, warmup=warm, n=n), candles([100.0] * n))
    w = ev["whole"]["windows"]
    assert w["count"] == 2
    first = -50 / 1000
    second = 100 / 950
    assert w["returns_pct"] == pytest.approx([first * 100, second * 100])
    assert w["mean_return_pct"] == pytest.approx((first + second) / 2 * 100)
    assert WINDOW_MS == 5 * DAY


def test_a_run_shorter_than_a_window_says_so() -> None:
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)]), candles([100.0] * 100))
    assert ev["whole"]["windows"]["count"] == 0
    assert "none (the period after the warm-up is 0.3 days, shorter than one window)" in format_evaluation(ev)
    assert "over 0 windows" not in format_evaluation(ev)


def test_slippage_is_a_line_of_its_own() -> None:
    stop = trade(1, 5, 5, 100.5, 98.0, reason="sl")  # entered 0.5 above the decision close, stopped 1 below 99
    stop.stop_price = D(99)
    ev = evaluate(facts([stop]), candles([100.0] * 100))
    assert ev["whole"]["slippage"] == "1.50"
    assert "slippage +1.50 USDT" in format_evaluation(ev)
