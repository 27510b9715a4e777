"""The simulator's fault injection (simulators/bingx/faults.py), in-process and over HTTP: a failure after its
effect leaves exactly one order; the control endpoint, auto mode, closes by hand, advancing the market."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import signed_query
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, market_stream, run, with_sim


def test_fail_next_after_effect_creates_exactly_one_order() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        sim.faults.fail_next(SL, "5xx", after_effect=True)
        status, _ = await c.raw("POST", SL, signed_query({**entry(cid="x-1"), "timestamp": int(time.time() * 1000)},
                                                         sim.options.secret), {"X-BX-APIKEY": sim.options.api_key})
        assert status == 500
        sim.faults.fail_next(SL, "timeout", after_effect=True)
        with pytest.raises(TimeoutError):
            await c.call("POST", SL, timeout=0.3, **entry(cid="x-2"))
        # the adapter's rule: query by client id, never resend blindly -> exactly one order each
        for cid in ("x-1", "x-2"):
            q = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId=cid))["order"]
            assert q["status"] == "FILLED"
            assert sum(1 for o in sim.core.account.orders if o.client_id == cid) == 1
        sim.faults.fail_next(SL, "5xx")  # before the effect: nothing placed
        status, _ = await c.raw("POST", SL, signed_query({**entry(cid="x-3"), "timestamp": int(time.time() * 1000)},
                                                         sim.options.secret), {"X-BX-APIKEY": sim.options.api_key})
        assert status == 500 and sim.core.order("x-3") is None
        sim.faults.fail_next(C.POSITIONS, "rate_limit")
        assert (await c.call("GET", C.POSITIONS))["code"] == 100410
        sim.faults.fail_next(C.POSITIONS, "busy")
        assert (await c.call("GET", C.POSITIONS))["code"] == 100500
        assert (await c.call("GET", C.POSITIONS))["code"] == 0
    run(lambda: with_sim(SimOptions(history_bars=5), body))


def test_http_fault_control_and_auto_mode() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        s = await market_stream(sim, "BTC-USDT@kline_5m")
        start = sim.market_time_ms
        assert start % 300_000 == 0  # (it ran ahead of the wall clock from "now" at start: auto at 3000x)
        # three candles opened from ``start`` on (a push of the candle before it may still arrive first)
        await s.wait(lambda m: len({x["data"][0]["T"] for x in m if x.get("dataType") == "BTC-USDT@kline_5m"
                                    and x["data"][0]["T"] >= start}) >= 3, timeout=10)
        assert sim.market_time_ms >= start + 600_000
        async with c.session.post(f"{sim.rest_url}/__sim/fault", json={"op": "fail_next", "path": C.POSITIONS,
                                                                       "kind": "busy"}) as r:
            assert (await r.json())["code"] == 0
        assert (await c.call("GET", C.POSITIONS))["code"] == 100500
        async with c.session.post(f"{sim.rest_url}/__sim/fault", json={"op": "bogus"}) as r:
            assert r.status == 400
        await s.close()
    run(lambda: with_sim(SimOptions(history_bars=5, mode="auto", speed=3000), body))


def test_http_fault_ops_close_by_hand_and_advance_and_bad_listen_key() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        await c.ok("POST", SL, **entry(cid="hand", qty="0.02"))
        async with c.session.post(f"{sim.rest_url}/__sim/fault", json={
                "op": "close_by_hand", "symbol": "BTC-USDT", "side": "long", "qty": "0.005"}) as r:
            assert (await r.json())["code"] == 0
        pos = await c.ok("GET", C.POSITIONS)
        assert pos[0]["positionAmt"] == "0.015"
        start = sim.market_time_ms
        async with c.session.post(f"{sim.rest_url}/__sim/fault", json={"op": "advance", "candles": 2}) as r:
            assert (await r.json())["data"]["marketTime"] == start + 600_000
        ws = await connect(f"{sim.ws_url}?listenKey=nope", compression=None, proxy=None)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008
    run(lambda: with_sim(SimOptions(history_bars=5), body))


def test_a_take_profit_canceled_by_hand_and_a_tick_through_stop_and_take_profit() -> None:
    """The chaos driver's take-profit faults: the operator cancels the take-profit in the UI (over HTTP, as the
    driver does), and one tick's wicks reach both the stop and the take-profit: the stop fills (the worse case),
    the take-profit then triggers with nothing to close, and the price ends where it was."""
    async def body(sim: BingXSimulator, c: Client) -> None:
        await c.ok("POST", SL, **entry(cid="e-1"))
        price = sim.mark_price("BTC-USDT")

        async def protective(kind: str, cid: str, at: D) -> None:
            await c.ok("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type=kind, stopPrice=at,
                       quantity=D("0.01"), clientOrderId=cid, workingType="MARK_PRICE")

        await protective("STOP_MARKET", "s-1", price - 300)
        await protective("TAKE_PROFIT_MARKET", "t-1", price + 300)
        async with c.session.post(f"{sim.rest_url}/__sim/fault", json={"op": "cancel_by_hand",
                                                                       "client_id": "t-1"}) as r:
            assert (await r.json())["code"] == 0
        assert sim.core.order("t-1").status == "canceled"
        assert [o.client_id for o in sim.core.open_orders("BTC-USDT")] == ["s-1"]
        await protective("TAKE_PROFIT_MARKET", "t-2", price + 300)
        sim.faults.wick_through_triggers("BTC-USDT")
        assert sim.core.order("s-1").status == "filled" and sim.core.order("t-2").status != "filled"
        assert sim.core.open_orders("BTC-USDT") == [] and sim.core.holding("BTC-USDT", "long") is None
        assert sim.mark_price("BTC-USDT") == price
    run(lambda: with_sim(SimOptions(history_bars=5), body))
