"""The walk-forward's window arithmetic, its stitching of the windows' journals, and its refusals."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from gatebot.app.cli import main
from gatebot.app.evaluation import JournalFacts, TradeRow, evaluate
from gatebot.app.walkforward import candles_of, stitch, windows
from gatebot.core.config import ConfigError
from gatebot.core.position import PositionRecord

STEP = 900_000


@pytest.mark.parametrize(("n", "train", "test", "warmup"), [
    (28_105, 8640, 2880, 159), (1000, 600, 100, 0), (1000, 600, 400, 599), (1000, 999, 5, 10), (10, 3, 3, 3),
])
def test_train_and_test_never_overlap_and_the_tests_tile_the_rest(n: int, train: int, test: int,
                                                                  warmup: int) -> None:
    ws = windows(n, train, test, warmup)
    assert [w.index for w in ws] == list(range(len(ws)))
    assert ws[0].train == (0, train)
    assert ws[0].test[0] == train and ws[-1].test[1] == n, "every candle after the first training span is tested"
    for w in ws:
        assert w.train[1] - w.train[0] == train, "every window trains on N candles"
        assert w.train[1] == w.test[0], "the test span starts right after its training span: no overlap, no gap"
        assert 0 < w.test[1] - w.test[0] <= test
    for a, b in itertools.pairwise(ws):
        assert a.test[1] == b.test[0], "adjacent test spans: one contiguous out-of-sample span, nothing twice"
        assert b.train[0] - a.train[0] == test, "the windows roll by the test span"
        assert a.test[1] - a.test[0] == test, "only the last span may be shorter"
    assert sum(w.test[1] - w.test[0] for w in ws) == n - train


def test_the_warm_up_is_taken_from_before_the_test_span_only() -> None:
    for w in windows(5000, 1000, 700, 159):
        start, end = w.replay
        assert end == w.test[1], "the replay ends with its test span"
        assert start == w.test[0] - 159, "the warm-up is the candles right before the test span"
        assert w.train[0] <= start < w.test[0], "the warm-up lies inside the window's own training span"


def test_monthly_windows_on_the_15m_file_are_thirty_days() -> None:
    assert candles_of("30d", "15m", "--test") == 2880
    assert candles_of("90d", "15m", "--train") == 8640
    assert candles_of("2880", "15m", "--test") == 2880
    assert candles_of("12h", "15m", "--test") == 48


@pytest.mark.parametrize(("text", "message"), [("7m", "not a whole number of 15m candles"),
                                                ("30x", "a number of candles"), ("d", "a number of candles"),
                                                ("-3", "a number of candles")])
def test_a_bad_span_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        candles_of(text, "15m", "--test")


@pytest.mark.parametrize(("n", "train", "test", "warmup", "message"), [
    (100, 100, 10, 0, "nothing is left to test on"), (100, 0, 10, 0, "at least 1 candle"),
    (100, 10, 0, 0, "at least 1 candle"), (1000, 100, 10, 159, "warms up on 159 candles"),
])
def test_windows_that_cannot_be_are_refused(n: int, train: int, test: int, warmup: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        windows(n, train, test, warmup)


# --- stitching -----------------------------------------------------------------------------------------------


def _rows(start_ms: int, closes: list[float]) -> np.ndarray:
    return np.array([[start_ms + i * STEP, c, c, c, c, 1.0] for i, c in enumerate(closes)])


def _trade(n: int, opened: int, closed: int, qty: str, entry: str, exit_: str) -> TradeRow:
    pnl = (Decimal(exit_) - Decimal(entry)) * Decimal(qty)
    return TradeRow(position=n, side="long", qty=Decimal(qty), entry_price=Decimal(entry), exit_price=Decimal(exit_),
                    opened_at=opened, filled_at=opened, closed_at=closed, exit_reason="exit", realized_pnl=pnl,
                    fees=Decimal("1"), entry_fees=Decimal("0.5"), funding=Decimal(0))


def _facts(trades: list[TradeRow], open_: PositionRecord | None = None) -> JournalFacts:
    return JournalFacts(instance="og", initial_balance=Decimal(1000), trades=trades, open=open_, funding_times={},
                        first_ts=trades[0].opened_at if trades else None,
                        last_ts=trades[-1].closed_at if trades else None, interval_ms=STEP, warmup_candles=2,
                        training=None)


def test_stitching_compounds_each_window_from_the_equity_the_ones_before_it_ended_on() -> None:
    t0 = 1_735_689_600_000
    a_rows, b_rows = _rows(t0, [100.0] * 10), _rows(t0 + 8 * STEP, [100.0, 100.0, 100.0, 105.0, 110.0, 110.0])
    # window a: +101 - 1 fee = +100 on 1000 (+10%); window b: the same trade at its own balance, and a position
    # still open at its end (long 1 @ 100, marked at the last close 110)
    a = _facts([_trade(1, t0 + 3 * STEP, t0 + 5 * STEP, "1.01", "100", "200")])
    held = PositionRecord(seq=2, state="protected", side="long", filled_qty=Decimal(1), entry_cost=Decimal(100),
                          fees=Decimal("0.5"), opened_at=t0 + 13 * STEP)
    b = _facts([_trade(1, t0 + 11 * STEP, t0 + 12 * STEP, "1.01", "100", "200")], held)
    s = stitch([a, b], [a_rows, b_rows])
    assert [t.position for t in s.trades] == [1, 2, 3], "numbered anew across the windows"
    assert s.trades[1].qty == Decimal("1.01") * Decimal("1.1"), "window b scaled by the equity a ended on"
    assert s.trades[1].fees == Decimal("1.1") and s.trades[1].net == Decimal("110")
    end = s.trades[2]
    assert end.exit_reason == "window_end" and end.closed_at == t0 + 14 * STEP, "closed at b's last close"
    assert end.net == (Decimal(10) - Decimal("0.5")) * Decimal("1.1")
    ev = evaluate(s, np.concatenate([a_rows[2:], b_rows[2:]]))
    part = ev["parts"][0]
    factor = 1.1 * 1.1 * (1 + 9.5 * 1.1 / 1210)
    assert part["compound_return_pct"] == pytest.approx((factor - 1) * 100)
    assert Decimal(ev["final_equity"]) == Decimal("1220.45"), "1000 + 100 + 110 + 10.45"
    assert part["exits"] == {"exit": 2, "window_end": 1}
    assert all(t["sample"] == "out_of_sample" for t in ev["trades_table"])


def test_windows_of_different_balances_are_not_stitched() -> None:
    a = _facts([])
    b = JournalFacts(**{**{f: getattr(a, f) for f in a.__struct_fields__}, "initial_balance": Decimal(5)})
    with pytest.raises(ValueError, match="one positive balance"):
        stitch([a, b], [_rows(0, [1.0]), _rows(STEP, [1.0])])


# --- refusals ------------------------------------------------------------------------------------------------

SMA = """
mode = "replay"
state_dir = "{state}"
[exchanges.paper]
type = "paper"
[[instances]]
name = "s"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "15m"
leverage = 4
"""


def test_a_strategy_that_cannot_train_is_refused_in_one_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "sma.toml"
    cfg.write_text(SMA.format(state=tmp_path / "state"))
    csv = tmp_path / "c.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{1_735_689_600_000 + i * STEP},100,101,99,100,1\n" for i in range(50)))
    assert main(["walk-forward", str(cfg), "--candles", str(csv), "--train", "20", "--test", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "strategy sma_cross cannot train" in err and "instance s" in err
    assert not (tmp_path / "state").exists(), "refused before anything was written"
