"""The exchange take-profit on the BingX simulator (TAKE_PROFIT_MARKET over its REST and user stream), on a
hand-written market: the same window and the same hand-computed prices as the paper bench's
(tests/unit/core/test_take_profit.py): entry at 100, stop 1% below (99.0), take-profit 1% above (101.0), filled
there when a candle reaches 101.5; the stop canceled, nothing left working."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.sessions import SYMBOL, session

D = Decimal
HISTORY = 120


def market(tmp: Path) -> Path:
    """Flat at 100 through the history and the first two live candles, then one up to 101.5."""
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(HISTORY + 10):
        o, h, lo, c = (100, 101.5, 99.5, 100.5) if i == HISTORY + 2 else (100.5,) * 4 if i > HISTORY + 2 else (100,) * 4
        rows.append(f"{i * 300},{o},{h},{lo},{c},1")
    path = tmp / "market.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("attached", [True, False], ids=["attached-stop", "separate-stop"])
def test_a_take_profit_ends_the_position_on_the_simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          attached: bool) -> None:
    async def go() -> None:
        options = {"source": "csv", "csv": str(market(tmp_path)), "stop_slippage_bps": D(0)}
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
