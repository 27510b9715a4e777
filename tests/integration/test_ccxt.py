"""An independent client, ccxt 4.5.90 (``bingx`` REST and ``ccxt.pro.bingx`` websockets), does against the
simulator what a user does on BingX, in every wire dialect.

ccxt signs, encodes, parses and maps errors its own way (everything in the query string, ``clientOrderID``,
``stopLoss`` as a JSON string, ``X-SOURCE-KEY``), so this proves the simulator speaks BingX as a third party
understands it, not only as our adapter does. The simulator runs on its own event loop in a thread (ccxt's
sync client blocks); ccxt.pro runs on the test's own loop. Waits are bounded and wait on what ccxt reports.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from gatebot.core.intervals import interval_ms
from gatebot.exchanges.paper.funding import FundingOptions
from gatebot.simulators.bingx import BingXSimulator, SimOptions

ccxt = pytest.importorskip("ccxt", reason="ccxt is a test-only dependency (pip install ccxt==4.5.90)")
ccxtpro = pytest.importorskip("ccxt.pro")

T = TypeVar("T")
SYMBOL = "BTC/USDT:USDT"
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
D = Decimal
RATE = D("0.0001")
"""The simulated funding rate, every 8 h."""
IDLE_S = 0.25


class Venue:
    """The simulator and the loop it runs on, callable from the test's thread or the test's own loop."""

    def __init__(self, sim: BingXSimulator, loop: asyncio.AbstractEventLoop) -> None:
        self.sim, self.loop = sim, loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def price(self) -> Decimal:
        return self.sim.mark_price("BTC-USDT")


@pytest.fixture(params=["numeric", "string", "mixed"])
def venue(request: pytest.FixtureRequest) -> Iterator[Venue]:
    loop = asyncio.new_event_loop()
    sim = BingXSimulator(SimOptions(history_bars=400, wire=request.param, funding=FundingOptions(rate=RATE)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    v = Venue(sim, loop)
    v.run(sim.start())
    try:
        yield v
    finally:
        v.run(sim.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def configure(ex: Any, sim: BingXSimulator) -> Any:
    ex.set_sandbox_mode(True)  # the demo host serves swap only: ccxt loads swap markets alone
    ws = ex.urls["api"].get("ws")
    ex.urls["api"] = {section: f"{sim.rest_url}/openApi" for section in ex.urls["api"] if section != "ws"}
    if ws is not None:
        ex.urls["api"]["ws"] = {"linear": sim.ws_url}
    return ex


def options(sim: BingXSimulator) -> dict[str, Any]:
    return {"apiKey": sim.options.api_key, "secret": sim.options.secret, "timeout": 5000, "enableRateLimit": False,
            "options": {"defaultType": "swap"}}


def client(sim: BingXSimulator) -> Any:
    return configure(ccxt.bingx(options(sim)), sim)


def dec(x: Any) -> Decimal:
    return D(str(x))


# --- market data --------------------------------------------------------------------------------


def test_markets_ticker_klines_in_every_interval_and_funding(venue: Venue) -> None:
    ex = client(venue.sim)
    market = ex.load_markets()[SYMBOL]
    assert market["id"] == "BTC-USDT" and market["swap"] and market["linear"]
    assert market["precision"]["price"] == 0.1 and market["precision"]["amount"] == 0.0001
    venue.run(venue.sim.advance(2))
    last = venue.price()

    ticker = ex.fetch_ticker(SYMBOL)
    assert dec(ticker["last"]) == last and dec(ticker["bid"]) == dec(ticker["ask"]) == last
    assert ticker["low"] <= ticker["last"] <= ticker["high"] and ticker["baseVolume"] > 0
    assert dec(ticker["change"]) == last - dec(ticker["open"])

    base = ex.fetch_ohlcv(SYMBOL, "5m", limit=1440)
    for tf in TIMEFRAMES:
        candles = ex.fetch_ohlcv(SYMBOL, tf, limit=50)
        step = interval_ms(tf)
        assert 0 < len(candles) <= 50, tf
        assert all(b[0] - a[0] == step for a, b in itertools.pairwise(candles)), tf
        assert all(c[0] % step == 0 for c in candles), tf
        assert dec(candles[-1][4]) == last, tf  # every interval ends on the price now
        assert all(c[3] <= min(c[1], c[4]) and c[2] >= max(c[1], c[4]) for c in candles), tf
        covered = [b for b in base if b[0] + 300_000 > candles[0][0]]
        assert max(c[2] for c in candles) == max(b[2] for b in covered), tf  # the same extremes in all
        assert min(c[3] for c in candles) == min(b[3] for b in covered), tf
    since = base[-10][0]
    window = ex.fetch_ohlcv(SYMBOL, "15m", since=since, limit=2)
    assert len(window) == 2 and window[0][0] >= since - 900_000
    minutes = ex.fetch_ohlcv(SYMBOL, "1m", since=base[-3][0] + 120_000, limit=4)
    assert [c[0] for c in minutes] == [base[-3][0] + k * 60_000 for k in (2, 3, 4, 5)]
    assert minutes[-1][1] == base[-2][1]  # the next 5m candle's first minute opens at its open

    rate = ex.fetch_funding_rate(SYMBOL)
    assert rate["fundingRate"] == 0.0001 and rate["nextFundingTimestamp"] % (8 * 3600_000) == 0
    assert rate["nextFundingTimestamp"] > venue.sim.market_time_ms
    history = ex.fetch_funding_rate_history(SYMBOL)
    assert history and all(h["fundingRate"] == 0.0001 and h["timestamp"] % (8 * 3600_000) == 0 for h in history)
    assert [h["timestamp"] for h in history] == sorted({h["timestamp"] for h in history})
    assert history[-1]["timestamp"] <= venue.sim.market_time_ms < history[-1]["timestamp"] + 8 * 3600_000

    with pytest.raises(ccxt.BadSymbol):  # the server's refusal, not ccxt's own market check
        ex.swapV2PublicGetQuotePremiumIndex({"symbol": "NOPE-USDT"})
    with pytest.raises(ccxt.BadRequest):
        ex.swapV3PublicGetQuoteKlines({"symbol": "BTC-USDT", "interval": "7m"})


# --- account settings ---------------------------------------------------------------------------


def test_balance_fees_leverage_margin_and_position_mode(venue: Venue) -> None:
    ex = client(venue.sim)
    ex.load_markets()
    balance = ex.fetch_balance()
    assert balance["USDT"]["total"] == 10_000 and balance["USDT"]["free"] == 10_000

    fee = ex.fetch_trading_fee(SYMBOL)
    assert fee["taker"] == fee["maker"] == 0.0005

    ex.set_leverage(7, SYMBOL, params={"side": "BOTH"})
    lev = ex.fetch_leverage(SYMBOL)
    assert lev["longLeverage"] == 7 and lev["shortLeverage"] == 7

    ex.set_margin_mode("isolated", SYMBOL)
    assert ex.fetch_margin_mode(SYMBOL)["marginMode"] == "isolated"
    ex.set_margin_mode("cross", SYMBOL)
    assert ex.fetch_margin_mode(SYMBOL)["marginMode"] == "cross"

    assert ex.fetch_position_mode(SYMBOL)["hedged"] is False
    ex.set_position_mode(True)
    assert ex.fetch_position_mode(SYMBOL)["hedged"] is True
    ex.set_leverage(3, SYMBOL, params={"side": "LONG"})
    assert ex.fetch_leverage(SYMBOL)["longLeverage"] == 3
    ex.create_order(SYMBOL, "market", "buy", 0.01, params={"hedged": True})  # opens the long side
    ex.create_order(SYMBOL, "market", "sell", 0.004, params={"hedged": True})  # opens the short side
    held = {p["side"]: p["contracts"] for p in ex.fetch_positions([SYMBOL]) if p["contracts"]}
    assert held == {"long": 0.01, "short": 0.004}
    ex.create_order(SYMBOL, "market", "sell", 0.01, params={"hedged": True, "reduceOnly": True})  # closes the long
    assert {p["side"] for p in ex.fetch_positions([SYMBOL]) if p["contracts"]} == {"short"}
    with pytest.raises(ccxt.BadRequest):  # 109400: the mode cannot change while a position is open
        ex.set_position_mode(False)
    assert len(ex.close_all_positions()) == 1
    ex.set_position_mode(False)
    assert ex.fetch_position_mode(SYMBOL)["hedged"] is False


# --- trading ------------------------------------------------------------------------------------


def test_orders_of_every_type_queries_trades_cancels_and_closing(venue: Venue) -> None:
    ex = client(venue.sim)
    ex.load_markets()
    price = venue.price()

    entry = ex.create_order(SYMBOL, "market", "buy", 0.01, params={
        "clientOrderId": "ccxt-entry-1", "stopLoss": {"triggerPrice": float(price * D("0.97"))}})
    assert entry["id"] and entry["clientOrderId"] == "ccxt-entry-1"
    assert entry["stopLossPrice"] == pytest.approx(float(price * D("0.97")), abs=0.1)
    position = next(p for p in ex.fetch_positions([SYMBOL]) if p["contracts"])
    assert position["side"] == "long" and position["contracts"] == 0.01 and dec(position["entryPrice"]) == price

    stop = ex.create_order(SYMBOL, "market", "sell", 0.005, params={
        "stopLossPrice": float(price * D("0.95")), "clientOrderId": "ccxt-sl-2"})
    take = ex.create_order(SYMBOL, "market", "sell", 0.005, params={
        "takeProfitPrice": float(price * D("1.05")), "clientOrderId": "ccxt-tp-1"})
    limit = ex.create_order(SYMBOL, "limit", "buy", 0.002, float(price * D("0.9")),
                            params={"clientOrderId": "ccxt-limit-1"})
    trigger = ex.create_order(SYMBOL, "market", "buy", 0.002, params={
        "triggerPrice": float(price * D("1.1")), "clientOrderId": "ccxt-trigger-1"})
    assert (stop["type"], stop["stopLossPrice"] is not None) == ("market", True)
    assert (take["type"], take["takeProfitPrice"] is not None) == ("market", True)
    assert limit["type"] == "limit" and dec(limit["price"]) == (price * D("0.9")).quantize(D("0.1"))
    assert trigger["type"] == "market" and trigger["triggerPrice"] == pytest.approx(float(price * D("1.1")), abs=0.1)

    opened = {o["clientOrderId"]: o for o in ex.fetch_open_orders(SYMBOL)}
    assert set(opened) == {"ccxt-entry-1-sl", "ccxt-sl-2", "ccxt-tp-1", "ccxt-limit-1", "ccxt-trigger-1"}
    assert {o["info"]["type"] for o in opened.values()} == {"STOP_MARKET", "TAKE_PROFIT_MARKET", "LIMIT",
                                                             "TRIGGER_MARKET"}
    assert all(o["status"] == "open" for o in opened.values())

    by_id = ex.fetch_order(entry["id"], SYMBOL)
    assert by_id["status"] == "closed" and by_id["filled"] == 0.01 and by_id["clientOrderId"] == "ccxt-entry-1"
    by_cid = ex.parse_order(ex.swapV2PrivateGetTradeOrder({"symbol": "BTC-USDT", "clientOrderId": "ccxt-limit-1"})
                            ["data"]["order"])
    assert by_cid["id"] == limit["id"] and by_cid["status"] == "open"

    edited = ex.edit_order(limit["id"], SYMBOL, "limit", "buy", 0.003, float(price * D("0.8")),
                           params={"clientOrderId": "ccxt-limit-2"})
    assert edited["id"] != limit["id"] and edited["clientOrderId"] == "ccxt-limit-2" and edited["amount"] == 0.003
    assert ex.fetch_order(limit["id"], SYMBOL)["status"] == "canceled"

    canceled = ex.cancel_order(None, SYMBOL, params={"clientOrderId": "ccxt-tp-1"})
    assert canceled["id"] == take["id"] and canceled["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(take["id"], SYMBOL)
    both = ex.cancel_orders([stop["id"], trigger["id"]], SYMBOL)
    assert {o["id"] for o in both} == {stop["id"], trigger["id"]}
    rest = ex.cancel_all_orders(SYMBOL)
    assert {o["clientOrderId"] for o in rest} == {"ccxt-entry-1-sl", "ccxt-limit-2"}
    assert ex.fetch_open_orders(SYMBOL) == []

    batch = ex.create_orders([
        {"symbol": SYMBOL, "type": "market", "side": "buy", "amount": 0.004, "params": {"clientOrderId": "ccxt-b-1"}},
        {"symbol": SYMBOL, "type": "limit", "side": "buy", "amount": 0.001, "price": float(price * D("0.85")),
         "params": {"clientOrderId": "ccxt-b-2"}},
    ])
    assert [o["clientOrderId"] for o in batch] == ["ccxt-b-1", "ccxt-b-2"]
    assert ex.fetch_order(batch[0]["id"], SYMBOL)["status"] == "closed"
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(SYMBOL)] == ["ccxt-b-2"]

    closed = ex.fetch_closed_orders(SYMBOL)
    assert {o["clientOrderId"] for o in closed} >= {"ccxt-entry-1", "ccxt-b-1"}
    assert {o["clientOrderId"] for o in ex.fetch_canceled_orders(SYMBOL)} >= {"ccxt-tp-1", "ccxt-limit-1"}

    trades = ex.fetch_my_trades(SYMBOL)
    assert {t["order"] for t in trades} == {entry["id"], batch[0]["id"]}
    assert sum(dec(t["amount"]) for t in trades) == D("0.014")
    fill = venue.sim.core.account.fills[0]
    wall = datetime.fromisoformat(trades[0]["info"]["filledTime"])
    assert round(wall.timestamp() * 1000) == fill.ts  # UTC+8 with its offset: the fill's time
    assert trades[0]["timestamp"] == fill.ts // 1000 * 1000 + 8 * 3600_000  # filledTm: UTC+8 wall with a "Z"

    closes = ex.close_all_positions()
    assert len(closes) == 1 and closes[0]["id"]
    assert [p for p in ex.fetch_positions([SYMBOL]) if p["contracts"]] == []
    flow = ex.swapV2PrivateGetUserIncome({"symbol": "BTC-USDT"})["data"]
    fees = [D(r["income"]) for r in flow if r["incomeType"] == "TRADING_FEE"]
    assert len(fees) == 3 and sum(fees) == -sum(f.fee for f in venue.sim.core.account.fills)
    assert ex.fetch_funding_history(SYMBOL) == []  # no funding time passed
    balance = ex.fetch_balance()
    wallet = venue.sim.core.account.balance
    row = balance["info"]["data"][0]
    assert D(row["balance"]) == wallet.quantize(D("0.0001")) and D(row["freezedMargin"]) > 0  # "ccxt-b-2" rests
    assert abs(dec(balance["USDT"]["free"]) + dec(balance["USDT"]["used"]) + D(row["freezedMargin"]) - wallet) < D(
        "0.0003")


def test_resting_orders_fill_on_the_price_path(venue: Venue) -> None:
    """A LIMIT and a TRIGGER_MARKET placed near the price fill as the market moves through them."""
    ex = client(venue.sim)
    ex.load_markets()
    price = venue.price()
    buy = ex.create_order(SYMBOL, "limit", "buy", 0.01, float(price - 30), params={"clientOrderId": "dip"})
    sell = ex.create_order(SYMBOL, "market", "sell", 0.01, params={"triggerPrice": float(price - 60),
                                                                   "clientOrderId": "breakdown"})
    held = ex.fetch_balance()
    assert D(held["info"]["data"][0]["freezedMargin"]) > 0 and held["USDT"]["free"] < 10_000  # both hold margin
    for _ in range(200):
        if {ex.fetch_order(o["id"], SYMBOL)["status"] for o in (buy, sell)} == {"closed"}:
            break
        venue.run(venue.sim.advance(1))
    filled_buy, filled_sell = ex.fetch_order(buy["id"], SYMBOL), ex.fetch_order(sell["id"], SYMBOL)
    assert filled_buy["status"] == filled_sell["status"] == "closed"
    assert dec(filled_buy["average"]) <= price - 30  # a limit fills at its price or better
    assert dec(filled_sell["average"]) <= price - 60  # a sell trigger at its price or worse (a gap)
    assert [p for p in ex.fetch_positions([SYMBOL]) if p["contracts"]] == []  # the sell netted the long
    assert {t["order"] for t in ex.fetch_my_trades(SYMBOL)} == {buy["id"], sell["id"]}


def test_funding_paid_by_a_position_held_across_a_funding_time(venue: Venue) -> None:
    ex = client(venue.sim)
    ex.load_markets()
    ex.create_order(SYMBOL, "market", "buy", 0.02, params={"clientOrderId": "carry"})
    start = venue.sim.market_time_ms
    while venue.sim.market_time_ms // (8 * 3600_000) == start // (8 * 3600_000):
        venue.run(venue.sim.advance(1))
    [paid] = venue.sim.core.account.funding
    [payment] = ex.fetch_funding_history(SYMBOL)
    assert payment["timestamp"] == paid.funding_time and dec(payment["amount"]) == -paid.paid < 0
    assert paid.paid == (D("0.02") * paid.mark_price * RATE).quantize(D("0.00000001"), "ROUND_CEILING")
    assert ex.fetch_funding_rate_history(SYMBOL)[-1]["timestamp"] == paid.funding_time


def test_refusals_map_to_ccxt_error_classes(venue: Venue) -> None:
    ex = client(venue.sim)
    ex.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYMBOL, "market", "buy", 50)
    with pytest.raises(ccxt.InvalidOrder):  # 101205: nothing to close
        ex.create_order(SYMBOL, "market", "sell", 0.01, params={"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder):  # 101400: below the minimum notional
        ex.create_order(SYMBOL, "limit", "buy", 0.0001, 1000.0)
    ex.create_order(SYMBOL, "limit", "buy", 0.001, float(venue.price() * D("0.9")), params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.DuplicateOrderId):
        ex.create_order(SYMBOL, "limit", "buy", 0.001, float(venue.price() * D("0.9")), params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("1900000000000999999", SYMBOL)
    with pytest.raises(ccxt.BadSymbol):
        ex.swapV2PrivatePostTradeOrder({"symbol": "NOPE-USDT", "side": "BUY", "positionSide": "BOTH",
                                        "type": "MARKET", "quantity": 1})
    with pytest.raises(ccxt.BadRequest):
        ex.create_order(SYMBOL, "market", "buy", 0.01, params={"positionSide": "LONG"})  # one-way account


def test_batch_cancel_replace_and_time_in_force_edges(venue: Venue) -> None:
    """What ccxt's unified methods do not reach, through its implicit API (signed as ccxt signs)."""
    ex = client(venue.sim)
    ex.load_markets()
    low = float(venue.price() * D("0.9"))
    one = {"symbol": "BTC-USDT", "type": "LIMIT", "side": "BUY", "positionSide": "BOTH", "quantity": 0.001,
           "price": low}
    reply = ex.swapV2PrivatePostTradeBatchOrders({"batchOrders": ex.json([
        {**one, "clientOrderId": "edge-1"}, {**one, "quantity": 500, "clientOrderId": "edge-2"}])})["data"]
    assert [o["clientOrderId"] for o in reply["orders"]] == ["edge-1"]
    assert [int(e["code"]) for e in reply["errors"]] == [101204]  # the refused one, beside the placed one
    with pytest.raises(ccxt.InsufficientFunds):  # every one refused: the first refusal is the reply
        ex.swapV2PrivatePostTradeBatchOrders({"batchOrders": ex.json([{**one, "quantity": 500}])})
    with pytest.raises(ccxt.BadRequest):
        ex.swapV2PrivatePostTradeBatchOrders({"batchOrders": ex.json([one] * 6)})

    with pytest.raises(ccxt.ExchangeError, match="101215"):  # PostOnly would take
        ex.create_order(SYMBOL, "limit", "buy", 0.001, float(venue.price() * D("1.01")), params={"postOnly": True})
    ioc = ex.create_order(SYMBOL, "limit", "buy", 0.001, low, params={"timeInForce": "IOC", "clientOrderId": "ioc"})
    assert ex.fetch_order(ioc["id"], SYMBOL)["status"] == "canceled"  # nothing filled at once: canceled

    edge = ex.fetch_open_orders(SYMBOL)[0]
    kept = ex.swapV1PrivatePostTradeCancelReplace({
        "symbol": "BTC-USDT", "cancelOrderId": "1900000000000999999", "cancelReplaceMode": "STOP_ON_FAILURE",
        "type": "LIMIT", "side": "BUY", "positionSide": "BOTH", "quantity": 0.002, "price": low})["data"]
    assert (kept["cancelResult"], kept["replaceResult"]) == ("false", "false") and kept["cancelMsg"]
    placed = ex.swapV1PrivatePostTradeCancelReplace({
        "symbol": "BTC-USDT", "cancelOrderId": "1900000000000999999", "cancelReplaceMode": "ALLOW_FAILURE",
        "type": "LIMIT", "side": "BUY", "positionSide": "BOTH", "quantity": 0.002, "price": low})["data"]
    assert (placed["cancelResult"], placed["replaceResult"]) == ("false", "true")
    assert {o["id"] for o in ex.fetch_open_orders(SYMBOL)} == {edge["id"], str(placed["newOrderResponse"]["orderId"])}

    gone = ex.swapV2PrivateDeleteTradeBatchOrders({"symbol": "BTC-USDT",
                                                   "orderIdList": [edge["id"], "1900000000000999999"]})["data"]
    assert [str(o["orderId"]) for o in gone["success"]] == [edge["id"]]
    assert [(str(f["orderId"]), f["errorCode"]) for f in gone["failed"]] == [("1900000000000999999", 109421)]
    assert len(ex.swapV2PublicGetQuoteTicker()["data"]) == 1  # every symbol without one


# --- websockets (ccxt.pro) ----------------------------------------------------------------------


async def until(watch: Callable[[], Awaitable[T]], done: Callable[[T], bool], poke: Callable[[], Awaitable[Any]],
                timeout_s: float = 10.0, first: asyncio.Future[T] | None = None) -> T:
    """Watch (from the ``first`` watch already under way, if any) until ``done``; ``poke`` makes the venue
    produce another update whenever a watch waited ``IDLE_S`` for nothing (a watcher only sees updates after
    it subscribed). Bounded by ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = first or asyncio.ensure_future(watch())
    try:
        while True:
            finished, _ = await asyncio.wait({pending}, timeout=min(IDLE_S, max(0.0, deadline - loop.time())))
            if finished:
                result = pending.result()
                if done(result):
                    return result
                pending = asyncio.ensure_future(watch())
            elif loop.time() >= deadline:
                raise TimeoutError("the stream never showed what was waited for")
            else:
                await poke()
    finally:
        pending.cancel()


async def connected(sim: BingXSimulator, timeout_s: float = 10.0) -> None:
    """Until a user-stream socket is connected to the simulator (bounded)."""
    async with asyncio.timeout(timeout_s):
        while not any(c.kind == "user" for c in list(sim.streams.conns)):
            await asyncio.sleep(0.02)


def test_ccxt_pro_streams_ohlcv_orders_positions_balance(venue: Venue) -> None:
    async def scenario() -> None:
        ex = configure(ccxtpro.bingx(options(venue.sim)), venue.sim)
        try:
            await ex.load_markets()

            async def advance() -> None:
                await venue.arun(venue.sim.advance(1))

            candles = await until(lambda: ex.watch_ohlcv(SYMBOL, "5m"),
                                  lambda c: bool(c) and c[-1][0] == venue.sim.market_time_ms, advance)
            assert dec(candles[-1][4]) == venue.price()
            def minutes() -> list[list[Any]]:  # ccxt's cache: a watch returns only the candles new since the last
                return list(ex.ohlcvs.get(SYMBOL, {}).get("1m", []))

            await until(lambda: ex.watch_ohlcv(SYMBOL, "1m"),  # a finer interval than the simulated one
                        lambda _: len(minutes()) > 2 and minutes()[-1][0] == venue.sim.market_time_ms, advance)
            minute = minutes()
            assert all(b[0] - a[0] == 60_000 for a, b in itertools.pairwise(minute)), [m[0] for m in minute]
            assert dec(minute[-1][4]) == venue.price()

            seq = itertools.count()

            async def trade() -> None:
                side = "buy" if next(seq) % 2 == 0 else "sell"
                await ex.create_order(SYMBOL, "market", side, 0.001, params={"clientOrderId": f"poke-{next(seq)}"})

            # watchBalance first: ccxt only fetches its balance snapshot for the first private watch of a socket
            balance_watch = asyncio.ensure_future(ex.watch_balance())
            await connected(venue.sim)
            orders_watch = asyncio.ensure_future(ex.watch_orders(SYMBOL))
            positions_watch = asyncio.ensure_future(ex.watch_positions([SYMBOL]))
            await ex.create_order(SYMBOL, "market", "buy", 0.01, params={"clientOrderId": "pro-1"})
            orders = await until(lambda: ex.watch_orders(SYMBOL),
                                 lambda os: any(o["clientOrderId"] == "pro-1" and o["status"] == "closed"
                                                for o in os), trade, first=orders_watch)
            mine = next(o for o in orders if o["clientOrderId"] == "pro-1" and o["status"] == "closed")
            assert mine["filled"] == 0.01 and mine["side"] == "buy" and mine["symbol"] == SYMBOL
            positions = await until(lambda: ex.watch_positions([SYMBOL]),
                                    lambda ps: any(p["contracts"] and p["side"] == "long" for p in ps), trade,
                                    first=positions_watch)
            assert next(p for p in positions if p["contracts"])["symbol"] == SYMBOL
            balance = await until(ex.watch_balance, lambda b: b.get("USDT", {}).get("free") is not None, trade,
                                  first=balance_watch)
            assert 0 < balance["USDT"]["free"] < 10_000  # the pushed wallet, after fees
        finally:
            await ex.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
