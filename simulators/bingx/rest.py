"""The REST side (protocol page §3): one aiohttp handler that routes, injects faults, rate-limits,
authenticates, and wraps replies in BingX's ``{"code","msg","data"}`` envelope (HTTP 200 for business
errors). Market-data endpoints live here; trading and account endpoints in their own modules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web

from gatebot.core.instrument import to_decimal
from gatebot.core.intervals import INTERVALS
from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import fmt
from gatebot.simulators.bingx import account, trading
from gatebot.simulators.bingx.auth_check import ApiError, check
from gatebot.simulators.bingx.views import Bare, Wire, code, funding_rate_rows, num

if TYPE_CHECKING:
    from gatebot.simulators.bingx.server import BingXSimulator

Params = dict[str, str]
Handler = Callable[["BingXSimulator", Params], Awaitable[Any]]
Auth = Literal["public", "signed", "key"]
REPLY_FLUSH_S = 0.5


# --- market data ---------------------------------------------------------------------------------


async def server_time(sim: BingXSimulator, p: Params) -> Any:
    return {"serverTime": sim.sign_ms()}


async def contracts(sim: BingXSimulator, p: Params) -> Any:
    o = sim.options
    out = []
    for i, s in enumerate(o.symbols):
        if p.get("symbol") and p["symbol"] != s:
            continue
        inst = sim.core.instruments[s]
        numbers = {"quantityPrecision": o.quantity_precision, "pricePrecision": o.price_precision,
                   "feeRate": float(o.fee_rate), "makerFeeRate": float(o.fee_rate), "takerFeeRate": float(o.fee_rate),
                   "tradeMinLimit": 0, "tradeMinQuantity": float(inst.min_qty),
                   "tradeMinUSDT": float(inst.min_notional), "maxLongLeverage": o.max_leverage,
                   "maxShortLeverage": o.max_leverage, "status": 1}
        api = "false" if s in o.restricted_symbols else "true"
        out.append({
            "contractId": str(100 + i), "symbol": s, "size": "0", **{k: Wire("number", v) for k, v in numbers.items()},
            "currency": "USDT", "asset": s.split("-")[0], "apiStateOpen": api, "apiStateClose": api,
            "ensureOrder": True, "brokerState": "true", "launchTime": 1586275200000, "maintainTime": 0, "offTime": 0,
            "displayName": s,
        })
    return out


def _market(sim: BingXSimulator, p: Params) -> Any:
    return sim.markets[trading.known_symbol(sim, p)]


async def klines(sim: BingXSimulator, p: Params) -> Any:
    market = _market(sim, p)
    interval = p.get("interval", "")
    if interval not in INTERVALS:
        raise ApiError(109400, f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    try:
        limit = min(int(p.get("limit") or 500), C.KLINE_LIMIT)
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
    except ValueError:
        raise ApiError(109400, "invalid startTime/endTime/limit") from None
    rows = [{"open": fmt(o), "close": fmt(c), "high": fmt(h), "low": fmt(lo), "volume": fmt(v), "time": t}
            for t, o, h, lo, c, v in market.klines_in(interval, start, end, limit, sim.options.price_precision)]
    if sim.options.switches.kline_order == "desc":
        rows.reverse()
    return rows


async def premium_index(sim: BingXSimulator, p: Params) -> Any:
    def one(symbol: str) -> dict[str, Any]:
        mark = num(sim.mark_price(symbol))
        funding = sim.funding
        nxt = funding.last_time(sim.market_time_ms) + funding.step_ms
        return {"symbol": symbol, "markPrice": mark, "indexPrice": mark,
                "lastFundingRate": num(funding.rate_at(nxt)), "nextFundingTime": nxt, "time": sim.step_ms}
    if p.get("symbol"):
        _market(sim, p)
        return one(p["symbol"])
    return [one(s) for s in sim.markets]


async def funding_rate(sim: BingXSimulator, p: Params) -> Any:
    market = _market(sim, p)
    try:
        limit = min(int(p.get("limit") or 100), 1000)
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
    except ValueError:
        raise ApiError(109400, "invalid startTime/endTime/limit") from None
    return funding_rate_rows(sim, market.symbol, start, end, limit)


async def ticker_24h(sim: BingXSimulator, p: Params) -> Any:
    """``GET /openApi/swap/v2/quote/ticker``: 24 h statistics from the candles of the last day (market time);
    the book is the last price on both sides (the simulator fills any size there), its sizes 0."""
    def one(symbol: str) -> dict[str, Any]:
        market = sim.markets[symbol]
        rows = market.klines(market.market_time - 86_400_000 + market.step, None, 2**31)
        last = sim.mark_price(symbol)
        first = to_decimal(rows[0][1]) if rows else last
        change = last - first
        pct = (change / first * 100).quantize(Decimal("0.01")) if first else Decimal(0)
        return {"symbol": symbol, "priceChange": num(change), "priceChangePercent": num(pct), "lastPrice": num(last),
                "lastQty": "0", "highPrice": fmt(max((r[2] for r in rows), default=float(last))),
                "lowPrice": fmt(min((r[3] for r in rows), default=float(last))),
                "volume": num(sum((to_decimal(r[5]) for r in rows), Decimal(0))),
                "quoteVolume": num(sum((to_decimal(r[5]) * to_decimal(r[4]) for r in rows), Decimal(0)), 2),
                "openPrice": num(first), "openTime": rows[0][0] if rows else market.market_time,
                "closeTime": sim.now_ms(), "askPrice": num(last), "askQty": "0", "bidPrice": num(last), "bidQty": "0"}
    if p.get("symbol"):
        return one(trading.known_symbol(sim, p))
    return [one(s) for s in sim.markets]


async def ticker_price(sim: BingXSimulator, p: Params) -> Any:
    _market(sim, p)
    return {"symbol": p["symbol"], "price": num(sim.mark_price(p["symbol"])), "time": sim.now_ms()}


ROUTES: dict[tuple[str, str], tuple[Handler, Auth]] = {
    ("GET", C.SERVER_TIME): (server_time, "public"),
    ("GET", "/openApi/swap/v1/server/time"): (server_time, "public"),
    ("GET", C.CONTRACTS): (contracts, "public"),
    ("GET", C.KLINES): (klines, "public"),
    ("GET", "/openApi/swap/v2/quote/klines"): (klines, "public"),
    ("GET", C.PREMIUM_INDEX): (premium_index, "public"),
    ("GET", C.FUNDING_RATE): (funding_rate, "public"),
    ("GET", "/openApi/swap/v1/ticker/price"): (ticker_price, "public"),
    ("GET", "/openApi/swap/v2/quote/price"): (ticker_price, "public"),
    ("GET", "/openApi/swap/v2/quote/ticker"): (ticker_24h, "public"),
    **trading.ROUTES,
    **account.ROUTES,
}


class Buckets:
    """A token bucket per endpoint path: BingX limits each endpoint independently (§4)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, path: str) -> bool:
        now = time.monotonic()
        tokens, last = self._state.get(path, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._state[path] = (tokens, now)
            return False
        self._state[path] = (tokens - 1, now)
        return True


def build_app(sim: BingXSimulator) -> web.Application:
    buckets = Buckets(sim.options.rate_limit_per_s, sim.options.rate_limit_burst)

    def respond(path: str, body: Any, status: int = 200) -> web.Response:
        """Every reply leaves here, in the era the dialect draws for ``path``."""
        return web.Response(body=sim.dialect.encode(body, path), status=status, content_type="application/json")

    async def failure(path: str, kind: str) -> web.Response:
        if kind == "timeout":  # never answered: the client gives up first
            await sim.closing.wait()
            return web.Response(status=503)
        if kind == "5xx":
            return web.Response(status=500, text="Internal Server Error")
        if kind == "busy":
            return respond(path, code(100500, "The current system is busy, please try again later",
                                      timestamp=sim.now_ms()))
        return rate_limited(path)

    def rate_limited(path: str) -> web.Response:
        status = 429 if sim.options.switches.rate_limit_signal == "http429" else 200
        return respond(path, code(100410, "rate limitation, please try again later", timestamp=sim.now_ms()), status)

    async def dispatch(request: web.Request) -> web.Response:
        raw_query = request.raw_path.partition("?")[2]
        body = (await request.text()) if request.can_read_body else ""
        path = request.path
        if path == "/__sim/fault" and request.method == "POST":
            return await fault_op(body)
        route = ROUTES.get((request.method, path))
        if route is None:
            return respond(path, code(100404, f"{request.method} {path} not found", timestamp=sim.now_ms()), 404)
        handler, auth = route
        fail = sim.faults.take_failure(path)
        if fail is not None and not fail[1]:
            return await failure(path, fail[0])
        if not sim.lockstep and not buckets.take(path):  # lockstep: the bot's pace is the market's
            return rate_limited(path)
        form = body if request.content_type == "application/x-www-form-urlencoded" else ""
        params = dict(parse_qsl(form, keep_blank_values=True))
        params.update(parse_qsl(raw_query, keep_blank_values=True))  # the query string wins on duplicates
        try:
            if auth != "public":
                check(sim.options, api_key=request.headers.get("X-BX-APIKEY"), params=params, query=raw_query,
                      body=form, key_only=auth == "key", now_ms=sim.sign_ms())
            result = await handler(sim, params)
            reply = (respond(path, result.body, result.status) if isinstance(result, Bare)
                     else respond(path, code(0, data=result)))
        except ApiError as exc:
            reply = respond(path, code(exc.code, exc.msg, data={}), exc.status)
        # the pushes an order caused are on the wire before its reply, as a fast exchange would have it
        await sim.streams.flush(REPLY_FLUSH_S)
        if fail is not None:  # after_effect: it happened, but the reply is lost
            return await failure(path, fail[0])
        return reply

    async def fault_op(body: str) -> web.Response:
        try:
            args = msgspec.json.decode(body or "{}")
            op = args.pop("op")
            if op == "advance":
                await sim.advance(int(args.get("candles", 1)))
            else:
                sim.faults.apply(op, args)
                await asyncio.sleep(0)
                await sim.streams.flush()
        except (KeyError, ValueError, TypeError, msgspec.DecodeError) as exc:
            return respond("/__sim/fault", {"code": 109400, "msg": f"bad fault request: {exc}"}, 400)
        return respond("/__sim/fault", {"code": 0, "msg": "", "data": {"marketTime": sim.market_time_ms}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
