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


@pytest.mark.parametrize("attached", [True, False], ids=["attached-stop", "separate-stop"])
def test_a_take_profit_ends_the_position_on_the_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          attached: bool) -> None:
    async def go() -> None:
        options = {"source": "csv", "csv": str(market(tmp_path, [(100, 101.5, 99.5, 100.5)])),
                   "stop_slippage_bps": D(0)}
        async with session(tmp_path, monkeypatch, attached=attached, params="{ enter_on = 1, exit_on = 0 }",
                           sim_options=options, protection="leveraged_tp_pct = 0.04") as s:
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
