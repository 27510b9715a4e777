"""The BingX simulator over real loopback sockets: auth, REST shapes, order rules, stops on the price path,
user and market streams, faults. No sleeps to wait for things: conditions are awaited with timeouts.

Every reply and push the test client reads is checked for its wire dialect (protocol §0) before a test
sees it: all era-dependent values in one message have one era's form (the configured one, or in
``mixed`` the one its envelope code or order id shows); tests then read it in the numeric era's form.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest
import yarl
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import signed_query
from gatebot.simulators.bingx import BingXSimulator, SimOptions, Switches
from tests.helpers import CAPTURES

D = Decimal
SL = "/openApi/swap/v2/trade/order"


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 30))


ERA_TYPE: dict[str, type] = {"numeric": int, "string": str}
ORDER_IDS = ("orderId", "triggerOrderId", "positionID")
ORDER_TIMES = ("time", "updateTime")
NUMBERS = {"contractId": ("quantityPrecision", "pricePrecision", "feeRate", "makerFeeRate", "takerFeeRate",
                          "tradeMinLimit", "tradeMinQuantity", "tradeMinUSDT", "maxLongLeverage", "maxShortLeverage",
                          "status"),
           "positionAmt": ("leverage", "liquidationPrice")}
"""A key that marks a kind of row -> its numbers that the string era sends as strings."""


def era_of(value: Any, wire: str, what: str) -> str:
    era = "string" if isinstance(value, str) else "numeric"
    assert wire in ("mixed", era), f"{what} {value!r} in the {wire} dialect"
    return era


def _int(value: Any, era: str, what: str) -> int:
    assert type(value) is ERA_TYPE[era] and str(value).isdigit(), f"{what} {value!r} is not a {era}-era integer"
    return int(value)


def _bracket(value: Any, era: str, *, placed: bool) -> dict[str, Any] | None:
    """An order's stopLoss/takeProfit, None for none: an object whose numbers are the era's (JSON numbers
    or strings); in the place reply JSON text ("" for none) in the numeric era."""
    if placed and era == "numeric":
        assert isinstance(value, str), value
        return json.loads(value) if value else None
    if placed and value == "":
        return None
    assert isinstance(value, dict) and {"type", "stopPrice", "workingType"} <= set(value), value
    for key in ("quantity", "stopPrice", "price"):
        assert isinstance(value[key], str) == (era == "string"), f"{key} {value[key]!r} in the {era} era"
    return value if value["type"] else None


def _rows(data: Any, era: str, *, placed: bool = False) -> None:
    """Every order, position and contract row in ``data``: its era-dependent values checked and read."""
    rows = data if isinstance(data, list) else [data]
    for row in rows:
        if isinstance(row, list | dict):
            for child in (row.values() if isinstance(row, dict) else row):
                if isinstance(child, list | dict):
                    _rows(child, era, placed=placed)
        if not isinstance(row, dict):
            continue
        if "orderId" in row and "tradeId" not in row:  # an order (fill rows keep documented string ids)
            for key in (*ORDER_IDS, *ORDER_TIMES):
                if key in row:
                    row[key] = _int(row[key], era, key)
            for key in ("stopLoss", "takeProfit"):
                if key in row:
                    row[key] = _bracket(row[key], era, placed=placed)
            if "stopGuaranteed" in row:
                flag = row["stopGuaranteed"]
                assert flag in ((False, True) if era == "numeric" else ("false", "true")), (flag, era)
                row["stopGuaranteed"] = flag in (True, "true")
        for marker, keys in NUMBERS.items():
            if marker in row:
                for key in keys:
                    assert isinstance(row[key], str) == (era == "string"), f"{key} {row[key]!r} in the {era} era"
                    row[key] = json.loads(row[key]) if era == "string" else row[key]


def read_reply(body: Any, wire: str, *, placed: bool, eras: list[str]) -> Any:
    """A REST reply checked for one era's forms and read as the numeric era shows it (the place-order
    reply wrapped in ``order``, brackets as dicts or None)."""
    if not isinstance(body, dict) or "code" not in body:
        return body
    era = era_of(body["code"], wire, "code")
    eras.append(era)
    body["code"] = _int(body["code"], era, "code")
    data = body.get("data")
    if placed and body["code"] == 0:
        if era == "string":
            assert "order" not in data and "orderId" in data, data
            data = {"order": data}
        else:
            assert set(data) == {"order"}, data
    _rows(data, era, placed=placed)
    if "data" in body:
        body["data"] = data
    return body


def read_push(push: dict[str, Any], wire: str, eras: list[str]) -> dict[str, Any]:
    """An ORDER_TRADE_UPDATE's ids (``i``, ``ti``) checked for one era and read as ints."""
    if push.get("e") == "ORDER_TRADE_UPDATE":
        o = push["o"]
        era = era_of(o["i"], wire, "o.i")
        eras.append(era)
        o["i"], o["ti"] = _int(o["i"], era, "o.i"), _int(o["ti"], era, "o.ti")
    return push


class Client:
    """A minimal signed client: sorted keys, raw values signed, encoded values sent (the auth module)."""

    def __init__(self, sim: BingXSimulator, session: aiohttp.ClientSession) -> None:
        self.sim, self.session = sim, session
        self.eras: list[str] = []
        """The era of each reply read, in order."""
        self.last: Any = None
        """The last reply as it came, before it was checked and read."""

    async def raw(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
                  timeout: float = 5) -> tuple[int, Any]:
        url = yarl.URL(f"{self.sim.rest_url}{path}" + (f"?{query}" if query else ""), encoded=True)
        async with self.session.request(method, url, headers=headers or {},
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            text = await r.text()
        body = json.loads(text) if text.startswith("{") else text
        self.last = json.loads(text) if text.startswith("{") else text
        placed = method == "POST" and path in (SL, SL + "/test")
        return r.status, read_reply(body, self.sim.options.wire, placed=placed, eras=self.eras)

    async def call(self, method: str, path: str, timeout: float = 5, **params: Any) -> Any:
        params.setdefault("timestamp", int(time.time() * 1000))
        query = signed_query(params, self.sim.options.secret)
        status, body = await self.raw(method, path, query, {"X-BX-APIKEY": self.sim.options.api_key}, timeout)
        assert status == 200, body
        return body

    async def ok(self, method: str, path: str, **params: Any) -> Any:
        body = await self.call(method, path, **params)
        assert body["code"] == 0, body
        return body["data"]


async def with_sim(options: SimOptions, body: Callable[[BingXSimulator, Client], Awaitable[None]]) -> None:
    async with BingXSimulator(options) as sim, aiohttp.ClientSession() as session:
        await body(sim, Client(sim, session))


def gunzip(frame: str | bytes) -> str:
    assert isinstance(frame, bytes), "server frames are binary gzip"
    return zlib.decompress(frame, 16 + zlib.MAX_WBITS).decode()


class Stream:
    """A websocket reader that answers Ping and collects decoded JSON messages."""

    def __init__(self, ws: ClientConnection, wire: str = "mixed") -> None:
        self.ws = ws
        self.wire = wire
        self.eras: list[str] = []
        self.raw: list[dict[str, Any]] = []
        """The pushes as they came, before they were checked and read."""
        self.messages: list[dict[str, Any]] = []
        self.pings = 0
        self._task = asyncio.create_task(self._read())
        self.answer_pings = True

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._frames()

    async def _frames(self) -> None:
        async for frame in self.ws:
            text = gunzip(frame)
            if text == "Ping":
                self.pings += 1
                if self.answer_pings:
                    await self.ws.send("Pong")
                continue
            self.raw.append(json.loads(text))
            self.messages.append(read_push(json.loads(text), self.wire, self.eras))

    async def wait(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 5) -> None:
        async def poll() -> None:
            while not pred(self.messages):
                if self._task.done():
                    raise AssertionError(f"stream closed; got {self.messages}")
                await asyncio.sleep(0.005)
        await asyncio.wait_for(poll(), timeout)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("e") == kind]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()


async def user_stream(sim: BingXSimulator, client: Client) -> Stream:
    status, body = await client.raw("POST", C.LISTEN_KEY, headers={"X-BX-APIKEY": sim.options.api_key})
    assert status == 200 and set(body) == {"listenKey"}
    ws = await connect(f"{sim.ws_url}?listenKey={body['listenKey']}", compression=None, proxy=None)
    s = Stream(ws, sim.options.wire)
    await s.wait(lambda m: any(x.get("e") == "ACCOUNT_CONFIG_UPDATE" for x in m))
    return s


async def market_stream(sim: BingXSimulator, *topics: str) -> Stream:
    ws = await connect(sim.ws_url, compression=None, proxy=None)
    s = Stream(ws)
    for i, topic in enumerate(topics):
        await ws.send(json.dumps({"id": f"id-{i}", "reqType": "sub", "dataType": topic}))
    await s.wait(lambda m: sum(1 for x in m if x.get("id", "").startswith("id-")) == len(topics))
    return s


def entry(qty: str = "0.01", side: str = "BUY", ps: str = "BOTH", cid: str = "e-1", **extra: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USDT", "side": side, "positionSide": ps, "type": "MARKET", "quantity": D(qty),
            "clientOrderId": cid, **extra}


def sl_json(price: Decimal, **extra: Any) -> dict[str, Any]:
    return {"type": "STOP_MARKET", "stopPrice": price, "workingType": "MARK_PRICE", **extra}


# --- auth ----------------------------------------------------------------------------------------


def test_signed_requests_accepted_and_bad_ones_rejected_with_bingx_codes() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        assert (await c.ok("GET", C.BALANCE))[0]["asset"] == "USDT"
        key = {"X-BX-APIKEY": sim.options.api_key}
        now = int(time.time() * 1000)
        q = signed_query({"timestamp": now, "symbol": "BTC-USDT"}, sim.options.secret)
        status, r = await c.raw("GET", C.POSITIONS, q)
        assert status == 200 and r["code"] == 100413  # no key
        status, r = await c.raw("GET", C.POSITIONS, q, {"X-BX-APIKEY": "other"})
        assert r["code"] == 100413
        status, r = await c.raw("GET", C.POSITIONS, q.rsplit("&signature=", 1)[0], key)
        assert r["code"] == 100412
        altered = q.replace("BTC-USDT", "ETH-USDT")
        assert (await c.raw("GET", C.POSITIONS, altered, key))[1]["code"] == 100001
        old = signed_query({"timestamp": now - 10_000, "symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, old, key))[1]["code"] == 100421
        future = signed_query({"timestamp": now + 5_000, "symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, future, key))[1]["code"] == 100421
        window = signed_query({"timestamp": now - 10_000, "recvWindow": 60_000}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, window, key))[1]["code"] == 0
        no_ts = signed_query({"symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, no_ts, key))[1]["code"] == 100421
        # the JSON value is signed raw and sent encoded: accepted
        data = await c.ok("POST", SL, **entry(stopLoss=sl_json(D(50000))))
        assert data["order"]["clientOrderID"] == "e-1"
    run(lambda: with_sim(SimOptions(), body))


def test_form_body_and_query_concatenation_is_verified() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        from gatebot.exchanges.bingx.auth import sign
        now = int(time.time() * 1000)
        query, form = f"symbol=BTC-USDT&timestamp={now}", "side=BOTH&leverage=7"
        sig = sign(sim.options.secret, query + form)
        url = yarl.URL(f"{sim.rest_url}{C.LEVERAGE}?{query}", encoded=True)
        async with c.session.post(url, data=f"{form}&signature={sig}", headers={
                "X-BX-APIKEY": sim.options.api_key, "Content-Type": "application/x-www-form-urlencoded"}) as r:
            reply = await r.json()
        assert reply["code"] == 0 and reply["data"]["leverage"] == 7, reply
    run(lambda: with_sim(SimOptions(), body))


# --- market data ---------------------------------------------------------------------------------


def test_contracts_klines_premium_index_shapes() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        _, r = await c.raw("GET", C.SERVER_TIME)
        assert abs(r["data"]["serverTime"] - time.time() * 1000) < 5000
        contract = (await c.raw("GET", C.CONTRACTS))[1]["data"][0]
        assert contract["symbol"] == "BTC-USDT" and contract["pricePrecision"] == 1
        assert contract["quantityPrecision"] == 4 and contract["apiStateOpen"] == "true"
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m&limit=1440"))[1]["data"]
        assert len(r) == 11  # 10 history + the forming candle
        times = [k["time"] for k in r]
        assert times == sorted(times) and all(t % 300_000 == 0 for t in times)
        assert times[-1] == sim.market_time_ms and all(isinstance(k["open"], str) for k in r)
        assert set(r[0]) == {"open", "close", "high", "low", "volume", "time"}
        r2 = (await c.raw("GET", "/openApi/swap/v2/quote/klines",
                          f"symbol=BTC-USDT&interval=5m&startTime={times[2]}&endTime={times[4]}"))[1]["data"]
        assert [k["time"] for k in r2] == times[2:5]
        await sim.advance(2)
        r3 = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m&limit=3"))[1]["data"]
        assert [k["time"] for k in r3] == [times[-1], times[-1] + 300_000, times[-1] + 600_000]
        mark = (await c.raw("GET", C.PREMIUM_INDEX, "symbol=BTC-USDT"))[1]["data"]
        assert D(mark["markPrice"]) == D(r3[-1]["open"])
        assert (await c.raw("GET", "/openApi/swap/v2/nothing"))[0] == 404
    run(lambda: with_sim(SimOptions(history_bars=10), body))


def test_kline_order_desc_switch() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m"))[1]["data"]
        times = [k["time"] for k in r]
        assert times == sorted(times, reverse=True)
    run(lambda: with_sim(SimOptions(history_bars=5, switches=Switches(kline_order="desc")), body))


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


# --- trading -------------------------------------------------------------------------------------


def test_market_entry_with_attached_stop_and_stop_triggered_on_the_path() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        price = sim.mark_price("BTC-USDT")
        stop = (price * D("0.999")).quantize(D("0.1"))
        placed = (await c.ok("POST", SL, **entry(qty="0.05", cid="E-1", stopLoss=sl_json(stop))))["order"]
        assert placed["clientOrderID"] == "e-1" and placed["orderId"] > 2**53 and placed["status"] == "FILLED"
        assert D(str(placed["stopLoss"]["stopPrice"])) == stop and placed["takeProfit"] is None
        pos = await c.ok("GET", C.POSITIONS, symbol="BTC-USDT")
        assert len(pos) == 1 and pos[0]["positionAmt"] == "0.05" and pos[0]["positionSide"] == "LONG"
        assert pos[0]["onlyOnePosition"] is True
        opens = (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]
        assert [(o["type"], o["clientOrderId"], o["side"], o["positionSide"], D(o["stopPrice"]), o["status"])
                for o in opens] == [("STOP_MARKET", "e-1-sl", "SELL", "BOTH", stop, "NEW")]  # §0: a working stop
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" for x in m))
        kinds = [(u["o"]["c"], u["o"]["x"], u["o"]["X"]) for u in user.of("ORDER_TRADE_UPDATE")]
        assert kinds == [("e-1", "NEW", "NEW"), ("e-1", "TRADE", "FILLED"), ("e-1-sl", "NEW", "NEW")]
        # play candles until the path crosses the stop
        for _ in range(200):
            if not (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]:
                break
            await sim.advance(1)
        stop_order = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="e-1-sl"))["order"]
        assert stop_order["status"] == "FILLED" and D(stop_order["avgPrice"]) <= stop
        await user.wait(lambda m: any(x["o"]["c"] == "e-1-sl" and x["o"]["x"] == "TRADE"
                                      for x in m if x.get("e") == "ORDER_TRADE_UPDATE"))
        fill = [u["o"] for u in user.of("ORDER_TRADE_UPDATE") if u["o"]["x"] == "TRADE"][-1]
        assert fill["o"] == "STOP_MARKET" and fill["i"] == stop_order["orderId"] and fill["X"] == "FILLED"
        assert D(fill["n"]) < 0 and fill["z"] == "0.05" and D(fill["L"]) == D(stop_order["avgPrice"])
        last_acct = user.of("ACCOUNT_UPDATE")[-1]["a"]
        assert last_acct["P"] == [{**last_acct["P"][0], "ps": "BOTH", "pa": "0"}] and last_acct["m"] == "ORDER"
        assert await c.ok("GET", C.POSITIONS, symbol="BTC-USDT") == []
        fills = (await c.ok("GET", C.FILL_HISTORY, symbol="BTC-USDT"))["fill_history_orders"]
        assert len(fills) == 2 and all(D(f["commission"]) < 0 for f in fills)
        assert [f["tradeId"] for f in fills] == ["1", "2"]
        bal = (await c.ok("GET", C.BALANCE))[0]
        total = sum(D(f["realisedPNL"]) + D(f["commission"]) for f in fills)
        assert D(bal["balance"]) == (D(10000) + total).quantize(D("0.0001"))
        assert D(last_acct["B"][0]["wb"]) == sim.core.account.balance
        # the core's own invariants-facing view agrees
        view = sim.account_view()
        assert (await view.position("BTC-USDT", "long")).qty == 0
        await user.close()
    run(lambda: with_sim(SimOptions(history_bars=5, volatility=0.004), body))


async def dialect_scenario(sim: BingXSimulator, c: Client) -> dict[str, Any]:
    """Every reply and push kind with era-dependent values once; what the client saw."""
    user = await user_stream(sim, c)
    price = sim.mark_price("BTC-USDT")
    placed = (await c.ok("POST", SL, **entry(qty="0.01", cid="w-1", stopLoss=sl_json(price - 100))))["order"]
    test = (await c.ok("POST", SL + "/test", **entry(cid="w-t")))["order"]
    (stop,) = (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]
    queried = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="w-1-sl"))["order"]
    entered = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="w-1"))["order"]
    (long,) = await c.ok("GET", C.POSITIONS, symbol="BTC-USDT")
    await c.ok("POST", SL, **entry(qty="0.03", side="SELL", cid="w-2"))  # reverses to a short of 0.02
    contracts = (await c.raw("GET", C.CONTRACTS))[1]["data"]
    unknown = [(await c.call("GET", SL, symbol="NOPE-USDT", clientOrderId="w-1"))["code"],
               (await c.call("GET", C.POSITIONS, symbol="NOPE-USDT"))["code"],
               (await c.raw("GET", C.KLINES, "symbol=NOPE-USDT&interval=5m"))[1]["code"],
               (await c.call("POST", SL, **{**entry(cid="w-3"), "symbol": "NOPE-USDT"}))["code"]]
    restricted = await c.call("POST", SL, **{**entry(cid="w-4"), "symbol": "ETH-USDT"})
    await user.wait(lambda m: sum(1 for x in m if x.get("e") == "ACCOUNT_UPDATE") >= 2)
    await user.close()
    return {"placed": placed, "test": test, "stop": stop, "queried": queried, "entered": entered, "long": long,
            "contracts": contracts, "unknown": unknown, "restricted": restricted, "pushes": user.messages,
            "rest_eras": c.eras, "push_eras": user.eras}


@pytest.mark.parametrize("wire", ["numeric", "string", "mixed"])
def test_each_wire_dialect_speaks_one_era_per_message(wire: Any) -> None:
    """Protocol §0: ``numeric`` and ``string`` speak one era throughout (the client checks every message's
    forms: ids, times, codes, numbers, the bare or wrapped place reply, brackets); ``mixed`` draws an era
    per message from generators seeded with the simulator's seed: both appear, and the same seed gives
    the same sequence. Era-independent facts of the captures hold in each dialect."""
    options = SimOptions(history_bars=5, symbols=["BTC-USDT", "ETH-USDT"], restricted_symbols=["ETH-USDT"],
                         wire=wire)
    seen: list[dict[str, Any]] = []

    async def body(sim: BingXSimulator, c: Client) -> None:
        seen.append(await dialect_scenario(sim, c))

    run(lambda: with_sim(options, body))
    out = seen[0]
    placed, stop = out["placed"], out["stop"]
    assert placed["clientOrderID"] == "w-1" and placed["orderId"] > 2**53 and placed["status"] == "FILLED"
    def bracket(b: dict[str, Any]) -> tuple[str, Decimal, str]:
        return b["type"], D(str(b["stopPrice"])), b["workingType"]
    assert bracket(placed["stopLoss"]) == bracket(out["entered"]["stopLoss"]) == ("STOP_MARKET", D(stop["stopPrice"]),
                                                                                  "MARK_PRICE")
    assert placed["takeProfit"] is None and out["entered"]["takeProfit"] is None and stop["stopLoss"] is None
    assert out["test"]["clientOrderId"] == "w-t" and out["test"]["orderId"] == 0
    assert stop == {**out["queried"], "updateTime": stop["updateTime"]} and stop["status"] == "NEW"
    assert (stop["triggerOrderId"], stop["positionID"]) == (0, 0) and stop["time"] == placed["time"]
    assert (out["long"]["leverage"], out["long"]["liquidationPrice"]) == (5, 0)
    assert [(k["symbol"], k["quantityPrecision"], k["pricePrecision"], k["apiStateOpen"]) for k in out["contracts"]] \
        == [("BTC-USDT", 4, 1, "true"), ("ETH-USDT", 4, 1, "false")]
    assert out["unknown"] == [109425] * 4
    restricted = out["restricted"]
    assert (restricted["code"], restricted["msg"]) == (100421, "This pair is currently restricted from API trading")
    # one-way: the net position, BOTH, negative for the short the reversal left
    positions = [p for u in out["pushes"] if u.get("e") == "ACCOUNT_UPDATE" for p in u["a"]["P"]]
    assert [(p["ps"], p["pa"]) for p in positions] == [("BOTH", "0.01"), ("BOTH", "-0.02")]
    # T never goes back within one order (ccxt drops an update whose T does)
    times: dict[int, list[int]] = {}
    for u in out["pushes"]:
        if u.get("e") == "ORDER_TRADE_UPDATE":
            times.setdefault(u["o"]["i"], []).append(u["o"]["T"])
            assert u["T"] == u["o"]["T"]
    assert len(times) == 3 and all(t == sorted(t) and t[0] > 0 for t in times.values())
    eras = set(out["rest_eras"]) | set(out["push_eras"])
    if wire != "mixed":
        assert eras == {wire}
        return
    assert eras == {"numeric", "string"} and set(out["push_eras"]) == {"numeric", "string"}
    run(lambda: with_sim(options, body))
    assert (seen[1]["rest_eras"], seen[1]["push_eras"]) == (out["rest_eras"], out["push_eras"]), "seeded"
    run(lambda: with_sim(msgspec.structs.replace(options, seed=7), body))
    assert (seen[2]["rest_eras"], seen[2]["push_eras"]) != (out["rest_eras"], out["push_eras"])


ERA_CAPTURES: dict[str, dict[str, str]] = {
    "numeric": {"place": "rest/place-wrapped-numbers-jkorf", "query": "rest/query-numbers-pending-jkorf",
                "open": "rest/open_orders-jkorf", "cancel": "rest/cancel-jkorf",
                "contracts": "rest/contracts-numbers-jkorf", "positions": "rest/positions-numbers-one-way-ccxt"},
    "string": {"place": "rest/place-bare-unified-stoploss-static", "query": "rest/query-string-ids-static",
               "stop": "rest/query-stop-market-new-static", "all": "rest/all_orders-string-ids-static",
               "contracts": "rest/contracts-strings-ccxt", "positions": "rest/positions-string-leverage-static",
               "margin": "rest/margin_type-string-code-static", "mode": "rest/position_mode-string-code-ccxt",
               "fill": "user/order_trade_update-fill-one-way-ccxt-issue",
               "position": "user/account_update-position-ccxt-pro"},
}
"""Per era, what the simulator says -> a real capture of that era saying it (tests/captures)."""
ERA_OVERLAP = {("string", "contracts", ".code")}
"""ccxt's contracts sample has string fields under a numeric code: BingX's eras overlap; the simulator's
two do not reproduce every mix of them (the codec reads any)."""


def json_kinds(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where ours and a capture differ in JSON type, over the keys both have (first rows of lists)."""
    def kind(v: Any) -> str:
        return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else type(v).__name__
    if kind(ours) != kind(theirs):
        return [path]
    if isinstance(ours, dict):
        return [p for k in sorted(ours.keys() & theirs.keys()) for p in json_kinds(ours[k], theirs[k], f"{path}.{k}")]
    if isinstance(ours, list) and ours and theirs:
        return json_kinds(ours[0], theirs[0], f"{path}[0]")
    return []


@pytest.mark.parametrize("era", ["numeric", "string"])
def test_each_era_sends_the_json_types_of_that_eras_captures(era: Any) -> None:
    """The simulator in one era, reply by reply and push by push, against a real reply of that era: every
    field both have has the capture's JSON type (number, string, bool, object) at every depth."""
    ours: dict[str, Any] = {}

    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        price = sim.mark_price("BTC-USDT")
        steps: list[tuple[str, str, str, dict[str, Any]]] = [
            ("place", "POST", SL, entry(cid="k-1", stopLoss=sl_json(price - 100))),
            ("query", "GET", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1"}),
            ("stop", "GET", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1-sl"}),
            ("open", "GET", C.OPEN_ORDERS, {"symbol": "BTC-USDT"}),
            ("positions", "GET", C.POSITIONS, {"symbol": "BTC-USDT"}),
            ("mode", "GET", C.POSITION_MODE, {}), ("margin", "GET", C.MARGIN_TYPE, {"symbol": "BTC-USDT"}),
            ("cancel", "DELETE", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1-sl"}),
            ("all", "GET", C.ALL_ORDERS, {"symbol": "BTC-USDT"})]
        for name, method, path, params in steps:
            await c.ok(method, path, **params)
            ours[name] = c.last
        await c.raw("GET", C.CONTRACTS)
        ours["contracts"] = c.last
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" for x in m))
        ours["fill"] = next(u for u in user.raw if u.get("e") == "ORDER_TRADE_UPDATE" and u["o"]["x"] == "TRADE")
        ours["position"] = next(u for u in user.raw if u.get("e") == "ACCOUNT_UPDATE")
        await user.close()

    run(lambda: with_sim(SimOptions(history_bars=5, wire=era), body))
    differ = {}
    for name, capture in ERA_CAPTURES[era].items():
        theirs = json.loads(json.loads((CAPTURES / f"{capture}.json").read_text())["body"])
        paths = [p for p in json_kinds(ours[name], theirs) if (era, name, p) not in ERA_OVERLAP]
        if paths:
            differ[capture] = paths
    assert differ == {}


def test_triggered_stop_reported_under_each_switch() -> None:
    async def scenario(switches: Switches) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        async def body(sim: BingXSimulator, c: Client) -> None:
            user = await user_stream(sim, c)
            price = sim.mark_price("BTC-USDT")
            await c.ok("POST", SL, **entry(cid="e-2", stopLoss=sl_json(price - 100, clientOrderId="My-Stop")))
            sim.faults.set_mark_price("BTC-USDT", price - 150)
            await sim.streams.flush()
            await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" and x["a"]["P"][0]["pa"] == "0" for x in m))
            out.extend(u["o"] for u in user.of("ORDER_TRADE_UPDATE"))
            q = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="my-stop"))["order"]
            out.append({"query": q})
            fills = (await c.ok("GET", C.FILL_HISTORY, symbol="BTC-USDT"))["fill_history_orders"]
            out.append({"fills": fills})
            await user.close()
        await with_sim(SimOptions(history_bars=5, switches=switches), body)
        return out

    async def all_switches() -> None:
        same = await scenario(Switches())
        trade = [o for o in same if o.get("x") == "TRADE"][-1]
        assert trade["c"] == "my-stop" and trade["o"] == "STOP_MARKET"
        assert same[-2]["query"]["status"] == "FILLED" and same[-2]["query"]["triggerOrderId"] == 0

        derived = await scenario(Switches(stop_fill_event="derived_id"))
        trade = [o for o in derived if o.get("x") == "TRADE"][-1]
        stop_id = derived[-2]["query"]["orderId"]
        assert trade["c"] == "" and trade["o"] == "MARKET" and trade["ti"] == stop_id and trade["i"] != stop_id
        assert derived[-2]["query"]["triggerOrderId"] == trade["i"]
        assert derived[-1]["fills"][-1]["orderId"] == str(trade["i"])

        dropped = await scenario(Switches(drop_trigger_fill_events=True))
        assert not [o for o in dropped if o.get("c") == "my-stop" and o.get("x") == "TRADE"]
        assert dropped[-2]["query"]["status"] == "FILLED"
    run(all_switches)


def test_hedge_and_one_way_rules() -> None:
    async def one_way(sim: BingXSimulator, c: Client) -> None:
        r = await c.call("POST", SL, **entry(ps="LONG"))
        assert r["code"] == 109400 and "One-way" in r["msg"]
        r = await c.call("POST", SL, **{k: v for k, v in entry().items() if k != "positionSide"})
        assert r["code"] == 109400  # omitted positionSide defaults to LONG
        assert (await c.call("POST", C.LEVERAGE, symbol="BTC-USDT", side="LONG", leverage=5))["code"] == 109400
        await c.ok("POST", SL, **entry(cid="ow-1"))
        r = await c.call("POST", SL, **entry(cid="ow-2", side="BUY", reduceOnly=True))
        assert r["code"] == 101290  # reduce-only buy against a long
        closed = await c.ok("POST", SL, **entry(cid="ow-3", side="SELL", reduceOnly=True))
        assert closed["order"]["status"] == "FILLED"
        assert await c.ok("GET", C.POSITIONS) == []
        r = await c.call("POST", SL, **entry(cid="ow-4", side="SELL", reduceOnly=True))
        assert r["code"] == 101205
        # an opposite order without reduceOnly nets, then opens the other side
        await c.ok("POST", SL, **entry(cid="ow-5", qty="0.01"))
        await c.ok("POST", SL, **entry(cid="ow-6", qty="0.03", side="SELL"))
        pos = await c.ok("GET", C.POSITIONS)
        assert [(p["positionSide"], p["positionAmt"]) for p in pos] == [("SHORT", "0.02")]

    async def hedge(sim: BingXSimulator, c: Client) -> None:
        assert (await c.ok("GET", C.POSITION_MODE))["dualSidePosition"] == "true"
        r = await c.call("POST", SL, **entry(ps="BOTH"))
        assert r["code"] == 109400 and "Hedge" in r["msg"]
        r = await c.call("POST", SL, **entry(ps="LONG", reduceOnly=True))
        assert r["code"] == 109400 and "ReduceOnly" in r["msg"]
        for side in ("LONG", "SHORT"):
            assert (await c.ok("POST", C.LEVERAGE, symbol="BTC-USDT", side=side, leverage=3))["leverage"] == 3
        assert (await c.call("POST", C.LEVERAGE, symbol="BTC-USDT", side="BOTH", leverage=3))["code"] == 109400
        await c.ok("POST", SL, **entry(cid="h-1", ps="LONG"))
        await c.ok("POST", SL, **entry(cid="h-2", ps="SHORT", side="SELL"))
        pos = {p["positionSide"]: p["positionAmt"] for p in await c.ok("GET", C.POSITIONS)}
        assert pos == {"LONG": "0.01", "SHORT": "0.01"}
        price = sim.mark_price("BTC-USDT")
        stop = await c.ok("POST", SL, symbol="BTC-USDT", side="BUY", positionSide="SHORT", type="STOP_MARKET",
                          stopPrice=price + 500, quantity=D("0.01"), clientOrderId="h-sl", workingType="MARK_PRICE")
        assert stop["order"]["positionSide"] == "SHORT" and stop["order"]["side"] == "BUY"
        await c.ok("POST", SL, **entry(cid="h-3", ps="LONG", side="SELL"))  # SELL + LONG closes
        pos = {p["positionSide"]: p["positionAmt"] for p in await c.ok("GET", C.POSITIONS)}
        assert pos == {"SHORT": "0.01"}
        r = await c.call("POST", C.POSITION_MODE, dualSidePosition="false")
        assert r["code"] == 109400  # positions / orders open
        lev = await c.ok("GET", C.LEVERAGE, symbol="BTC-USDT")
        assert (lev["longLeverage"], lev["shortLeverage"]) == (3, 3)

    run(lambda: with_sim(SimOptions(history_bars=5), one_way))
    run(lambda: with_sim(SimOptions(history_bars=5, hedge_mode=True), hedge))


def test_order_errors_duplicates_cancel_and_close_position_stops() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        await c.ok("POST", SL, **entry(cid="dup"))
        r = await c.call("POST", SL, **entry(cid="DUP"))
        assert r["code"] == 101481  # lower-cased by the server: the same id
        assert (await c.call("GET", SL, symbol="BTC-USDT", orderId=123))["code"] == 109421
        assert (await c.call("GET", SL, symbol="BTC-USDT", clientOrderId="nope"))["code"] == 109421
        price = sim.mark_price("BTC-USDT")
        r = await c.call("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                         stopPrice=price + 100, quantity=D("0.01"), clientOrderID="wrong-side")
        assert r["code"] == 110411
        stop = await c.ok("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                          stopPrice=price - 1000, closePosition="true", clientOrderID="whole")
        assert stop["order"]["origQty"] == "0.01" and stop["order"]["closePosition"] == "true"
        r = await c.call("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                         stopPrice=price - 900, closePosition="true", clientOrderID="whole-2")
        assert r["code"] == 110406
        canceled = await c.ok("DELETE", SL, symbol="BTC-USDT", orderId=stop["order"]["orderId"])
        assert canceled["order"]["status"] == "CANCELLED"
        r = await c.call("DELETE", SL, symbol="BTC-USDT", orderId=stop["order"]["orderId"])
        assert r["code"] == 109421  # already gone
        r = await c.call("DELETE", SL, symbol="BTC-USDT", clientOrderId="never")
        assert r["code"] == 109421
        assert (await c.call("POST", SL, **entry(cid="tiny", qty="0.00001")))["code"] == 101400
        assert (await c.call("POST", SL, **entry(cid="huge", qty="100")))["code"] == 101204
        hist = (await c.ok("GET", C.ALL_ORDERS, symbol="BTC-USDT"))["orders"]
        assert {o["clientOrderId"]: o["status"] for o in hist} == {"dup": "FILLED", "whole": "CANCELLED"}
        test = await c.ok("POST", SL + "/test", **entry(cid="t-1"))
        assert test["order"]["clientOrderId"] == "t-1" and sim.core.order("t-1") is None
    run(lambda: with_sim(SimOptions(history_bars=5), body))


# --- faults --------------------------------------------------------------------------------------


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


def test_rate_limit_http429_switch_and_budget() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        statuses = [(await c.raw("GET", C.SERVER_TIME))[0] for _ in range(6)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses
    run(lambda: with_sim(SimOptions(history_bars=5, rate_limit_per_s=0.1, rate_limit_burst=3,
                                    switches=Switches(rate_limit_signal="http429")), body))


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


def test_csv_source_is_retimed_onto_the_clock(tmp_path: Any) -> None:
    path = tmp_path / "c.csv"
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"{1_600_000_000_000 + i * 300_000},{100 + i},{101 + i},{99 + i},{100.5 + i},10" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")

    async def body(sim: BingXSimulator, c: Client) -> None:
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m"))[1]["data"]
        assert [k["open"] for k in r] == [f"{100 + i}.0" for i in range(6)]
        assert r[-1]["time"] == sim.market_time_ms and r[-1]["time"] % 300_000 == 0
    run(lambda: with_sim(SimOptions(history_bars=5, source="csv", csv=str(path)), body))


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


def test_gatebot_sim_passes_every_option_to_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    """``gatebot sim --auto ...`` reaches the simulator's own parser (a subcommand would otherwise take
    the options for its own and refuse them)."""
    from gatebot.app.cli import main
    from gatebot.simulators.bingx.__main__ import parse

    with pytest.raises(SystemExit) as done:
        main(["sim", "--help"])
    assert done.value.code == 0 and "usage: gatebot sim" in capsys.readouterr().out
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    import gatebot.simulators.bingx.__main__ as sim_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim_module, "main", fake_main)
        assert main(["-v", "sim", "--auto", "--speed", "600", "--orphan-stops", "cancel", "--wire", "string"]) == 0
    assert seen == [["--auto", "--speed", "600", "--orphan-stops", "cancel", "--wire", "string"]]
    options = parse(seen[0])
    assert options.mode == "auto" and options.speed == 600 and options.switches.orphan_stops == "cancel"
    assert options.wire == "string" and parse([]).wire == "mixed"


def test_funding_is_pushed_listed_in_income_history_and_its_rates_in_the_funding_rate_history() -> None:
    from gatebot.exchanges.paper.funding import FundingOptions

    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        await c.ok("POST", SL, **entry(qty="0.05", cid="f-1"))
        hour = 3_600_000
        start = sim.market_time_ms
        while sim.market_time_ms // hour == start // hour:
            await sim.advance(1)
        funding_time = sim.market_time_ms // hour * hour
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" and x["a"]["m"] == "FUNDING_FEE" for x in m))
        [push] = [u["a"] for u in user.of("ACCOUNT_UPDATE") if u["a"]["m"] == "FUNDING_FEE"]
        [paid] = sim.core.account.funding
        assert paid.funding_time == funding_time and paid.side == "long" and paid.qty == D("0.05")
        exact = D("0.05") * paid.mark_price * D("0.0002")
        assert paid.paid == exact.quantize(D("0.00000001"), "ROUND_CEILING")
        assert D(push["B"][0]["bc"]) == -paid.paid and "P" not in push, "a cross position pushes the balance only"
        assert D(push["B"][0]["wb"]) == sim.core.account.balance
        rows = await c.ok("GET", C.INCOME, symbol="BTC-USDT", incomeType="FUNDING_FEE")
        assert len(rows) == 1 and D(rows[0]["income"]) == -paid.paid
        assert rows == [{"symbol": "BTC-USDT", "incomeType": "FUNDING_FEE", "income": rows[0]["income"],
                         "asset": "USDT", "info": "Funding Fee", "time": funding_time,
                         "tranId": f"{funding_time}_BTC-USDT_long", "tradeId": f"{funding_time}_BTC-USDT"}]
        assert await c.ok("GET", C.INCOME, symbol="BTC-USDT", incomeType="FUNDING_FEE",
                          startTime=funding_time + 1) == []
        every = await c.ok("GET", C.INCOME, symbol="BTC-USDT")
        assert {r["incomeType"] for r in every} == {"FUNDING_FEE", "TRADING_FEE"}
        body_ = await c.call("GET", C.INCOME, incomeType="DEPOSIT")
        assert body_["code"] == 109400
        status, rates = await c.raw("GET", C.FUNDING_RATE, "symbol=BTC-USDT&limit=3")
        assert status == 200 and rates["data"][-1] == {"symbol": "BTC-USDT", "fundingRate": "0.0002",
                                                       "fundingTime": funding_time}
        assert [r["fundingTime"] for r in rates["data"]] == [funding_time - 2 * hour, funding_time - hour, funding_time]
        status, index = await c.raw("GET", C.PREMIUM_INDEX, "symbol=BTC-USDT")
        assert index["data"]["nextFundingTime"] == funding_time + hour and index["data"]["lastFundingRate"] == "0.0002"
        await user.close()
    run(lambda: with_sim(SimOptions(history_bars=5, volatility=0.0005,
                                    funding=FundingOptions(rate=D("0.0002"), interval_h=1)), body))
