"""BingX user stream logic without sockets: account pushes to core events, the listenKey upkeep, unreadable
pushes, and the simulator's pushes meaning the same in every wire dialect."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import pytest

from gatebot.core.events import (
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PositionSnapshot,
)
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.user_stream import OrderBook, translate


def order(x: str, X: str, *, c: str = "kt-1-e1", i: int = 2**60 + 7, z: str = "0", n: str = "0", rp: str = "0",
          ap: str = "0", td: int = 0, ti: int = 0, l: str = "", L: str = "") -> codec.OrderTradeUpdate:  # noqa: E741
    return codec.OrderTradeUpdate(E=1, T=1, o=codec.OrderUpdate(s="BTC-USDT", c=c, i=i, S="BUY", o="MARKET", q="0.5",
                                                                x=x, X=X, ps="LONG", z=z, n=n, rp=rp, ap=ap, td=td,
                                                                ti=ti, T=5, l=l, L=L))


def test_order_updates_become_core_events_with_fees_as_paid() -> None:
    book = OrderBook()
    assert translate(order("NEW", "NEW"), book, hedge=True) == [
        OrderAccepted(ts=5, client_id="kt-1-e1", order_id=2**60 + 7)]
    assert translate(order("NEW", "NEW"), book, hedge=True) == [], "a duplicated NEW is dropped"
    (fill,) = translate(order("TRADE", "PARTIALLY_FILLED", z="0.2", n="-0.01", ap="100", td=11), book, hedge=True)
    assert isinstance(fill, OrderFilled)
    assert (fill.qty, fill.fee, fill.cum_qty, fill.final, fill.trade_id) == (Decimal("0.2"), Decimal("0.01"),
                                                                             Decimal("0.2"), False, "11")
    (fill,) = translate(order("TRADE", "FILLED", z="0.5", n="-0.015", ap="101", td=12, l="0.3", L="102"), book,
                        hedge=True)
    assert (fill.qty, fill.price, fill.final) == (Decimal("0.3"), Decimal("102"), True)
    assert translate(order("CANCELED", "CANCELED", c="kt-1-s1", z="0"), book, hedge=True) == [
        OrderCanceled(ts=5, client_id="kt-1-s1", order_id=2**60 + 7, reason="canceled")]
    (expired,) = translate(order("EXPIRED", "EXPIRED", c="kt-1-s2"), book, hedge=True)
    assert isinstance(expired, OrderExpired)


def test_a_triggered_stop_on_a_derived_order_is_mapped_back_to_the_stop() -> None:
    book = OrderBook()
    book.remember(555, "kt-3-s1")
    (fill,) = translate(order("TRADE", "FILLED", c="", i=777, ti=555, z="0.5", ap="99", td=9), book, hedge=False)
    assert isinstance(fill, OrderFilled) and fill.client_id == "kt-3-s1" and fill.order_id == 777


def test_orders_that_are_not_ours_produce_nothing() -> None:
    assert translate(order("TRADE", "FILLED", c="", i=999, z="1"), OrderBook(), hedge=False) == []


def test_account_updates_become_position_snapshots_and_their_balances_nothing() -> None:
    def update(ps: str, pa: str) -> codec.AccountUpdate:
        return codec.AccountUpdate(E=9, a=codec.AccountData(m="ORDER", B=[codec.BalanceUpdate(a="USDT", wb="100.5",
                                                                                              cw="90")],
                                                            P=[codec.PositionUpdate(s="BTC-USDT", pa=pa, ep="50",
                                                                                    ps=ps)]))

    out = translate(update("SHORT", "0.3"), OrderBook(), hedge=True)
    assert out == [PositionSnapshot(ts=9, symbol="BTC-USDT", side="short", qty=Decimal("0.3"),
                                    entry_price=Decimal(50))]
    one_way = translate(update("BOTH", "-0.3"), OrderBook(), hedge=False)
    assert [(p.side, p.qty) for p in one_way if isinstance(p, PositionSnapshot)] == [("short", Decimal("0.3"))]
    flat = translate(update("BOTH", "0"), OrderBook(), hedge=False)
    assert [(p.side, p.qty) for p in flat if isinstance(p, PositionSnapshot)] == [("long", 0), ("short", 0)]


def test_a_funding_fee_push_asks_for_the_payments_and_the_income_rows_become_funding_paid() -> None:
    """A cross position's FUNDING_FEE push carries the balance only (no symbol): the stream reports its time
    and the adapter reads the payments from the income history, the funding time floored to the hour."""

    from gatebot.core.clock import LiveClock
    from gatebot.core.events import FundingPaid
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from gatebot.exchanges.bingx.user_stream import UserStream

    pushed: list[int] = []
    stream = UserStream("ws://127.0.0.1:9", None, LiveClock(), OrderBook(), hedge=False,  # type: ignore[arg-type]
                        on_event=lambda e: None, on_reconnect=lambda: None, on_funding=pushed.append)
    frame = b'{"e":"ACCOUNT_UPDATE","E":1702713615100,"T":1702713615000,"a":{"m":"FUNDING_FEE",' \
            b'"B":[{"a":"USDT","wb":"117.8","cw":"95.2","bc":"-0.0292"}]}}'
    assert asyncio.run(stream.handle(None, codec.gzip_frame(frame))) is True
    order = b'{"e":"ACCOUNT_UPDATE","E":5,"a":{"m":"ORDER","B":[{"a":"USDT","wb":"1","cw":"1","bc":"0"}]}}'
    asyncio.run(stream.handle(None, codec.gzip_frame(order)))
    assert pushed == [1702713615000], "only a funding push, with its time"

    asked: list[dict] = []

    class Rest:
        async def query(self, path: str, params: dict, type: object) -> object:
            asked.append(params)
            rows = [{"symbol": "LDO-USDT", "incomeType": "FUNDING_FEE", "income": "-0.0292", "asset": "USDT",
                     "info": "Funding Fee", "time": 1702713615000, "tranId": "170_3_20", "tradeId": "170_3_20"},
                    {"symbol": "BTC-USDT", "incomeType": "FUNDING_FEE", "income": 0.5, "time": "1702742400000"},
                    {"symbol": "BTC-USDT", "incomeType": "FUNDING_FEE", "income": "1", "time": 1602742400000}]
            return msgspec.convert(rows, type)

    adapter = BingXAdapter(BingXOptions(), hedge_mode=False, clock=LiveClock())
    adapter.rest = Rest()  # type: ignore[assignment]
    got = asyncio.run(adapter.funding(None, 1702710000000))
    assert asked == [{"incomeType": "FUNDING_FEE", "startTime": 1702710000000, "limit": 1000}]
    assert got == [FundingPaid(ts=1702713615000, symbol="LDO-USDT", funding_time=1702713600000, paid=Decimal("0.0292")),
                   FundingPaid(ts=1702742400000, symbol="BTC-USDT", funding_time=1702742400000, paid=Decimal("-0.5"))]


def test_the_listen_key_is_extended_every_30_minutes_and_replaced_when_unknown() -> None:
    """The renewal schedule in wall-clock time (freezegun), with a clock whose sleep moves frozen time."""
    from freezegun import freeze_time

    from gatebot.core.clock import LiveClock
    from gatebot.exchanges.bingx.user_stream import UserStream

    class FrozenClock(LiveClock):
        def __init__(self, frozen: object) -> None:
            self.frozen = frozen

        async def sleep(self, seconds: float) -> None:
            self.frozen.tick(seconds)  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    class Rest:
        def __init__(self, clock: LiveClock) -> None:
            self.clock = clock
            self.extended: list[tuple[int, str]] = []

        async def extend_listen_key(self, key: str) -> bool:
            self.extended.append((self.clock.now_ms(), key))
            return len(self.extended) < 3  # the third renewal finds the key gone (404)

    async def go(clock: FrozenClock) -> tuple[Rest, UserStream, int]:
        rest = Rest(clock)
        stream = UserStream("ws://127.0.0.1:9", rest, clock, OrderBook(), hedge=False,  # type: ignore[arg-type]
                            on_event=lambda e: None, on_reconnect=lambda: None)
        stream.key = "k1"
        start = clock.now_ms()
        task = asyncio.create_task(stream._renew_forever())
        while len(rest.extended) < 3:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        return rest, stream, start

    with freeze_time("2026-11-26 00:00:00", real_asyncio=True) as frozen:
        rest, stream, start = asyncio.run(go(FrozenClock(frozen)))
    assert [(t - start) // 60_000 for t, _ in rest.extended] == [30, 60, 90]
    assert [k for _, k in rest.extended] == ["k1", "k1", "k1"]
    assert stream.key is None and stream._expired.is_set(), "an unknown key is dropped and the socket recycled"


def _simulated_pushes(wire: str) -> tuple[list[bytes], list[object]]:
    """A one-way long with an attached stop, stopped out, then a short: the simulator's user pushes as
    frames in ``wire``, and what ``translate`` makes of them."""
    from gatebot.simulators.bingx import BingXSimulator, SimOptions
    from gatebot.simulators.bingx.trading import place_order

    async def go() -> tuple[list[bytes], list[object]]:
        sim = BingXSimulator(SimOptions(history_bars=5, wire=wire))  # type: ignore[arg-type]
        pushes: list[dict[str, object]] = []
        sim.streams.publish_user = pushes.extend  # type: ignore[method-assign]
        price = sim.mark_price("BTC-USDT")
        stop = codec.encoder.encode({"type": "STOP_MARKET", "stopPrice": price - 100}).decode()
        order = {"symbol": "BTC-USDT", "type": "MARKET", "positionSide": "BOTH", "side": "BUY", "quantity": "0.01",
                 "clientOrderId": "kt-1-e1", "stopLoss": stop}
        await place_order(sim, order)
        sim.faults.fire_stops_now("BTC-USDT")
        await place_order(sim, {**order, "side": "SELL", "quantity": "0.02", "clientOrderId": "kt-2-e1",
                                "stopLoss": ""})
        frames = [sim.dialect.encode(p, "user") for p in pushes]
        book = OrderBook()
        events = [e for f in frames for e in translate(codec.user_event_decoder.decode(f), book, hedge=False)]
        return frames, events

    return asyncio.run(go())


def test_the_simulators_pushes_mean_the_same_in_every_wire_dialect() -> None:
    """Protocol §0: ``o.i`` as a number or a string, one-way positions as ``BOTH`` with a signed ``pa``:
    the frames differ by dialect, the core events the adapter reads from them do not (but for times)."""

    seen = {wire: _simulated_pushes(wire) for wire in ("numeric", "string", "mixed")}
    forms = {wire: {type(msgspec.json.decode(f)["o"]["i"]) for f in frames if b"ORDER_TRADE_UPDATE" in f}
             for wire, (frames, _) in seen.items()}
    assert forms == {"numeric": {int}, "string": {str}, "mixed": {int, str}}
    timeless = {wire: [msgspec.structs.replace(e, ts=0) for e in events]  # type: ignore[type-var]
                for wire, (_, events) in seen.items()}
    assert timeless["numeric"] == timeless["string"] == timeless["mixed"]
    events = timeless["numeric"]
    assert [(e.side, e.qty) for e in events if isinstance(e, PositionSnapshot)] == [
        ("long", Decimal("0.01")), ("long", 0), ("short", 0), ("short", Decimal("0.02"))]
    fills = [e for e in events if isinstance(e, OrderFilled)]
    assert [(f.client_id, f.qty) for f in fills] == [("kt-1-e1", Decimal("0.01")), ("kt-1-e1-sl", Decimal("0.01")),
                                                     ("kt-2-e1", Decimal("0.02"))]
    assert all(f.order_id > 2**53 for f in fills)


def test_an_unreadable_user_push_is_counted_logged_once_redacted_and_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    """Each unreadable push asks for a reconcile (with its symbol when it names one); its raw frame is logged the
    first time its kind fails, with the listenKey redacted; after the limit, new entries stop on the account."""
    import logging

    from gatebot.core.clock import LiveClock
    from gatebot.exchanges.bingx.user_stream import UserStream

    reported: list[str | None] = []
    events: list[object] = []
    stream = UserStream("ws://127.0.0.1:9", None, LiveClock(), OrderBook(), hedge=False,  # type: ignore[arg-type]
                        on_event=events.append, on_reconnect=lambda: None, on_unreadable=reported.append,
                        unreadable_limit=3)
    stream.key = "Lk0123456789abcdef"
    bad_fill = ('{"e":"ORDER_TRADE_UPDATE","E":1,"listenKey":"Lk0123456789abcdef","o":{"s":"BTC-USDT","c":"x",'
                '"i":"12ab","S":"BUY","o":"MARKET","x":"TRADE","X":"FILLED","ps":"LONG"}}')
    notice = '{"code":80014,"msg":"invalid params","id":"","dataType":"","data":null}'
    caplog.set_level(logging.DEBUG, "gatebot")

    async def go() -> None:
        for frame in (bad_fill, notice, bad_fill, b"\x1f\x8b\x08\x00broken", codec.gzip_frame("?listenKey=Lk0123")):
            assert await stream.handle(None, frame)

    asyncio.run(go())
    assert reported == ["BTC-USDT", "BTC-USDT", None, None], "the notice (no event in it) asks for nothing"
    assert stream.bad_frames == 5 and stream.unreadable == 4
    assert events == []
    assert "Lk0123" not in caplog.text
    raw_logged = [r for r in caplog.records if "Raw frame" in r.getMessage()]
    assert [r.getMessage().count('"i":"12ab"') for r in raw_logged] == [1, 0, 0], \
        "the fill's raw frame is logged once (then only counted); the gzip and text kinds once each"
    assert stream.entries_blocked is not None and "no new entries" in stream.entries_blocked
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage(), "one clear line, once"
