"""A test client of the BingX simulator over real loopback sockets (REST and both streams), shared by the
simulator's tests: every reply and push it reads is checked for its wire dialect (protocol §0) before a test
sees it: all era-dependent values in one message have one era's form (the configured one, or in ``mixed`` the
one its envelope code or order id shows); tests then read it in the numeric era's form. No sleeps to wait for
things: conditions are awaited with timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import yarl
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import signed_query
from gatebot.simulators.bingx import BingXSimulator, SimOptions

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
