"""The exchange take-profit and a trailing stop on the BingX simulator (TAKE_PROFIT_MARKET and STOP_MARKET over its
REST and user stream), on hand-written markets: the same windows and the same hand-computed prices as the paper
bench's and the TOML replay's (tests/unit/core/test_take_profit.py, test_moving_stops.py,
tests/integration/test_protection_replay.py): entry at 100, stop 1% below (99.0), take-profit 1% above (101.0),
filled there when a candle reaches 101.5; a 1% trailing stop at 101.0, then 103.0, filled at 103.0."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.sessions import SYMBOL, session

D = Decimal
HISTORY = 120


def market(tmp: Path, live: list[tuple[float, float, float, float]]) -> Path:
    """Flat at 100 through the history and the first two live candles, then ``live``, then flat at its last
    close."""
    candles = [(100.0,) * 4] * (HISTORY + 2) + live + [(live[-1][3],) * 4] * 8
    rows = ["timestamp,open,high,low,close,volume"] + [f"{i * 300},{o},{h},{lo},{c},1"
                                                         for i, (o, h, lo, c) in enumerate(candles)]
    path = tmp / "market.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(("attached", "hedge"), [(True, False), (False, False), (True, True)],
                         ids=["attached-stop", "separate-stop", "hedge-mode"])
def test_a_take_profit_ends_the_position_on_the_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          attached: bool, hedge: bool) -> None:
    async def go() -> None:
        options = {"source": "csv", "csv": str(market(tmp_path, [(100, 101.5, 99.5, 100.5)])),
                   "stop_slippage_bps": D(0)}
        async with session(tmp_path, monkeypatch, attached=attached, hedge=hedge,
                           params="{ enter_on = 1, exit_on = 0 }", sim_options=options,
                           protection="leveraged_tp_pct = 0.04") as s:
            await s.candles_until(lambda: s.state == "protected" and s.engine.pos.rec.tp_live, "protected with a TP")
            view = s.sim.account_view()
            opened = sorted((o.role, o.stop_price) for o in await view.open_orders(SYMBOL))
            assert opened == [("stop", D("99.0")), ("take_profit", D("101.0"))]
            qty = s.engine.pos.rec.open_qty
            await s.candles_until(lambda: s.state == "flat", "flat after the take-profit")
            fills = await view.order_fills(SYMBOL, s.cid(1, "t"))
            assert [(f.qty, f.price, f.realized_pnl) for f in fills] == [(qty, D("101.0"), qty * D("1.0"))]
            assert await view.open_orders(SYMBOL) == []
            assert await s.violations() == []
        assert ("protected", "tp_filled", "exited_exit") in s.transitions()

    asyncio.run(go())


@pytest.mark.parametrize("attached", [True, False], ids=["attached-stop", "separate-stop"])
def test_a_trailing_stop_on_the_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attached: bool) -> None:
    async def go() -> None:
        live = [(102.0,) * 4, (104.0,) * 4, (103.5,) * 4, (103.5, 103.5, 102.5, 102.8)]
        options = {"source": "csv", "csv": str(market(tmp_path, live)), "stop_slippage_bps": D(0)}
        async with session(tmp_path, monkeypatch, attached=attached, params="{ enter_on = 1, exit_on = 0 }",
                           sim_options=options, protection="trailing_pct = 0.01") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            qty = s.engine.pos.rec.open_qty
            placed: list[Decimal] = []

            def note_and_flat() -> bool:
                price = s.engine.pos.rec.stop_price
                if price is not None and (not placed or placed[-1] != price):
                    placed.append(price)
                return s.state == "flat"

            await s.candles_until(note_and_flat, "flat after the trailing stop")
            assert placed == [D("99.0"), D("101.0"), D("103.0")]
            view = s.sim.account_view()
            fills = [f for n in (1, 2, 3) for f in await view.order_fills(SYMBOL, s.cid(1, "s", n))]
            assert [(f.price, f.realized_pnl) for f in fills] == [(D("103.0"), qty * D("3.0"))]
            assert await view.open_orders(SYMBOL) == []
            assert await s.violations() == []
        assert s.transitions().count(("protected", "move_stop", "protected")) == 2

    asyncio.run(go())


def test_ccxt_sees_one_stop_and_at_most_one_take_profit_at_every_poll(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An independent client's view while the bot trades with a take-profit and a trailing stop: after every
    candle (the bot idle), ccxt's ``bingx`` lists exactly one stop and at most one take-profit while a position is
    held, and nothing once it is not. (Between the new stop's placement and the old one's cancel, a move shows two
    for a round trip: the place-then-cancel that keeps the position guarded.)"""
    pytest.importorskip("ccxt", reason="ccxt is a test-only dependency")
    from tests.integration.test_ccxt import client

    async def go() -> None:
        live = [(101.0,) * 4, (101.5,) * 4, (101.5, 102.5, 101.0, 102.0), (102.0,) * 4, (100.9, 101.0, 100.0, 100.5)]
        options = {"source": "csv", "csv": str(market(tmp_path, live)), "stop_slippage_bps": D(0)}
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }",
                           sim_options=options, protection="leveraged_tp_pct = 0.1, trailing_pct = 0.01") as s:
            ex = client(s.sim)
            await asyncio.to_thread(ex.load_markets)
            held_polls = tp_seen = 0
            for _ in range(len(live) + 3):
                before = s.runner.bars
                await s.sim.advance(1)
                await s.until(lambda before=before: s.runner.bars > before, "the candle to reach the bot")
                await s.settle()
                orders = await asyncio.to_thread(ex.fetch_open_orders, "BTC/USDT:USDT")
                kinds = sorted(o["info"]["type"] for o in orders)
                held = s.engine.pos.rec.open_qty > 0 and s.state == "protected"
                if held:
                    held_polls += 1
                    tp_seen += kinds.count("TAKE_PROFIT_MARKET")
                    assert kinds.count("STOP_MARKET") == 1 and kinds.count("TAKE_PROFIT_MARKET") <= 1, kinds
                elif s.state == "flat":
                    assert kinds == [], kinds
            assert held_polls >= 3 and tp_seen >= 2
            assert s.transitions().count(("protected", "move_stop", "protected")) >= 1
            assert await s.violations() == []

    asyncio.run(go())
