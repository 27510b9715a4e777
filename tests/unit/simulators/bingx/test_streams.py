"""The simulator's websockets (simulators/bingx/streams.py): subscribe acks, ping/pong, kline pushes closing each
candle once, an expired listenKey, and stream faults."""

from __future__ import annotations

import asyncio
import itertools
import json

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, market_stream, run, user_stream, with_sim


def test_subscribe_ack_ping_pong_and_kline_pushes_close_each_candle_once() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        s = await market_stream(sim, "BTC-USDT@kline_5m", "BTC-USDT@markPrice")
        ack = s.messages[0]
        assert ack == {"id": "id-0", "code": 0, "msg": "", "dataType": "", "data": None}
        start = sim.market_time_ms
        await sim.advance(3)
        await s.wait(lambda m: sum(1 for x in m if x.get("dataType") == "BTC-USDT@markPrice") == 12)
        klines = [m for m in s.messages if m.get("dataType") == "BTC-USDT@kline_5m"]
        marks = [m for m in s.messages if m.get("dataType") == "BTC-USDT@markPrice"]
        assert len(klines) == 12 and len(marks) == 12
        ts = [k["data"][0]["T"] for k in klines]
        assert ts == sorted(ts)
        # a client closes a candle when a later open time arrives: exactly 3, each once, in order
        closed = [a for a, b in itertools.pairwise(ts) if b > a]
        assert closed == [start, start + 300_000, start + 600_000]
        assert ts[-1] == start + 900_000 == sim.market_time_ms
        # the last push of each candle carries its final values, as REST shows them
        rest = (await c.raw("GET", C.KLINES, f"symbol=BTC-USDT&interval=5m&startTime={start}&limit=4"))[1]["data"]
        finals = [klines[i]["data"][0] for i in (2, 6, 10)]  # the close ticks
        for k, push in zip(rest, finals, strict=False):
            assert (k["open"], k["high"], k["low"], k["close"]) == (push["o"], push["h"], push["l"], push["c"])
        assert marks[-1]["data"]["p"] == klines[-1]["data"][0]["o"]
        # Ping every interval; Pong keeps the connection; no Pong -> dropped after 3
        await s.wait(lambda _: s.pings >= 2, timeout=3)
        s.answer_pings = False
        await asyncio.wait_for(s._task, 5)
        assert s.ws.close_code == 1008
        bad = await market_stream(sim)
        await bad.ws.send(json.dumps({"id": "x", "reqType": "sub", "dataType": "BTC-USDT@kline_7m"}))
        await bad.wait(lambda m: any(x.get("id") == "x" for x in m))
        assert bad.messages[-1]["code"] != 0
        await bad.close()
    run(lambda: with_sim(SimOptions(history_bars=5, ping_interval_s=0.2), body))


def test_expire_listen_key_then_put_is_refused_and_events_stop() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        key_hdr = {"X-BX-APIKEY": sim.options.api_key}
        key = (await c.raw("POST", C.LISTEN_KEY, headers=key_hdr))[1]["listenKey"]
        assert (await c.raw("PUT", C.LISTEN_KEY, f"listenKey={key}", key_hdr))[0] == 200
        sim.faults.expire_listen_key()
        await user.wait(lambda m: any(x.get("e") == "listenKeyExpired" for x in m))
        assert (await c.raw("PUT", C.LISTEN_KEY, f"listenKey={key}", key_hdr))[0] == 404
        before = len(user.messages)
        await c.ok("POST", SL, **entry(cid="after-expiry"))
        await sim.streams.flush()
        assert not [m for m in user.messages[before:] if m.get("e") == "ORDER_TRADE_UPDATE"]
        await user.close()
        # a fresh key works again (renewal), and the REST state shows the order the stream missed
        fresh = await user_stream(sim, c)
        await c.ok("POST", SL, **entry(cid="after-renewal"))
        await fresh.wait(lambda m: any(x.get("o", {}).get("c") == "after-renewal" for x in m))
        assert (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="after-expiry"))["order"]["status"] == "FILLED"
        await fresh.close()
    run(lambda: with_sim(SimOptions(history_bars=5), body))


def test_stream_faults_close_by_hand_partial_fills_duplicates_reject_stop() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        market = await market_stream(sim, "BTC-USDT@kline_5m")
        sim.faults.drop_market_streams()
        await asyncio.wait_for(market._task, 5)
        assert market.ws.close_code == 1012
        sim.faults.partial_fills(3)
        await c.ok("POST", SL, **entry(cid="pf", qty="0.03"))
        await user.wait(lambda m: sum(1 for x in m if x.get("o", {}).get("x") == "TRADE") == 3)
        trades = [u["o"] for u in user.of("ORDER_TRADE_UPDATE") if u["o"]["x"] == "TRADE"]
        assert [(t["X"], t["z"]) for t in trades] == [("PARTIALLY_FILLED", "0.01"), ("PARTIALLY_FILLED", "0.02"),
                                                      ("FILLED", "0.03")]
        assert len({t["td"] for t in trades}) == 3
        sim.faults.close_by_hand("BTC-USDT", "long", D("0.01"))
        await sim.streams.flush()
        await user.wait(lambda m: any(x.get("o", {}).get("c") == "" for x in m))
        manual = [u["o"] for u in user.of("ORDER_TRADE_UPDATE") if u["o"]["c"] == ""]
        assert manual[-1]["S"] == "SELL" and manual[-1]["x"] == "TRADE"
        assert user.of("ACCOUNT_UPDATE")[-1]["a"]["P"][0]["pa"] == "0.02"
        sim.faults.reject_next_stop(110411)
        price = sim.mark_price("BTC-USDT")
        r = await c.call("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                         stopPrice=price - 100, quantity=D("0.02"), clientOrderId="rej")
        assert r["code"] == 110411
        sim.faults.duplicate_user_events()
        n = len(user.of("ORDER_TRADE_UPDATE"))
        await c.ok("POST", SL, **entry(cid="dupev"))
        await user.wait(lambda m: sum(1 for x in m if x.get("o", {}).get("c") == "dupev") == 4)
        assert len(user.of("ORDER_TRADE_UPDATE")) == n + 4
        sim.faults.drop_user_streams()
        await asyncio.wait_for(user._task, 5)
        # with nobody connected the stop still fires; the REST state shows it
        await c.ok("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                   stopPrice=price - 100, quantity=D("0.03"), clientOrderId="down-sl")
        sim.faults.fire_stops_now("BTC-USDT")
        assert (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="down-sl"))["order"]["status"] == "FILLED"
        assert await c.ok("GET", C.POSITIONS) == []
    run(lambda: with_sim(SimOptions(history_bars=5), body))
