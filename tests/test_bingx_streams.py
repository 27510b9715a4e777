"""BingX stream logic without sockets: closed-candle assembly and account events to core events."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatebot.core.events import (
    CandleClosed,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PositionSnapshot,
)
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.market_stream import CandleAssembler
from gatebot.exchanges.bingx.user_stream import OrderBook, translate

STEP = 300_000
T0 = 1_700_000_100_000 - 1_700_000_100_000 % STEP


def truth(i: int) -> CandleClosed:
    """The exchange's final candle i (what REST returns)."""
    return CandleClosed(ts=T0 + i * STEP, symbol="BTC-USDT", interval="5m", open_time=T0 + i * STEP, open=100.0 + i,
                        high=110.0 + i, low=90.0 + i, close=101.0 + i, volume=5.0)


def push(i: int, final: bool = True, T: int | None = None) -> codec.WsKline:
    c = truth(i)
    close = c.close if final else c.open
    return codec.WsKline(o=str(c.open), h=str(c.high if final else c.open), l=str(c.low if final else c.open),
                         c=str(close), v="5" if final else "1", T=T0 + i * STEP if T is None else T)


class Recorder:
    def __init__(self) -> None:
        self.emitted: list[CandleClosed] = []
        self.fetches: list[tuple[int, int]] = []

    async def fetch(self, symbol: str, interval: str, start: int, end: int) -> list[CandleClosed]:
        self.fetches.append((start, end))
        return [truth(i) for i in range((start - T0) // STEP, (end - T0) // STEP)]

    def assembler(self, last_closed: int | None = None, grace_ms: int | None = None) -> CandleAssembler:
        a = CandleAssembler("BTC-USDT", "5m", self.fetch, self.emitted.append, grace_ms=grace_ms)
        a.last_closed = last_closed
        return a


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_a_candle_closes_when_the_next_open_time_arrives_with_its_last_values() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP)
        await a.on_push(push(0, final=False))
        await a.on_push(push(0))
        assert rec.emitted == []
        await a.on_push(push(1, final=False))
        await a.on_push(push(1, final=False))
        await a.on_push(push(0))  # late push of a closed candle
        await a.on_push(push(2, final=False))

    run(go())
    assert rec.emitted == [truth(0), truth(1).__class__(**{**_fields(truth(1)), "high": 101.0, "low": 101.0,
                                                            "close": 101.0, "volume": 1.0})]
    assert rec.fetches == []


def _fields(c: CandleClosed) -> dict:
    return {f: getattr(c, f) for f in c.__struct_fields__}


def test_old_pushes_with_the_close_time_are_floored_to_the_open_time() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP)
        await a.on_push(push(0, T=T0 + STEP - 1))
        await a.on_push(push(1, T=T0 + 2 * STEP - 1))

    run(go())
    assert [c.open_time for c in rec.emitted] == [T0]


def test_a_jump_fills_the_gap_from_rest() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP)
        await a.on_push(push(0))
        await a.on_push(push(4, final=False))

    run(go())
    assert rec.emitted == [truth(0), truth(1), truth(2), truth(3)]
    assert rec.fetches == [(T0, T0 + 4 * STEP)]


def test_after_a_reconnect_the_forming_candle_comes_from_rest_not_from_partial_pushes() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP)
        await a.on_push(push(0, final=False))  # then the connection dropped mid-candle
        a.reconnected()
        await a.on_push(push(1, final=False))

    run(go())
    assert rec.emitted == [truth(0)]


def test_history_then_stream_has_no_gap_and_no_duplicate() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 + 2 * STEP)  # history ended at candle 2
        await a.on_push(push(2))  # the stream still shows candle 2: ignored
        await a.on_push(push(5, final=False))

    run(go())
    assert [c.open_time for c in rec.emitted] == [T0 + 3 * STEP, T0 + 4 * STEP]


def test_the_clock_closes_a_candle_from_rest_when_no_later_push_comes() -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP, grace_ms=5000)
        await a.on_push(push(0, final=False))
        await a.on_clock(T0 + STEP + 4999)
        assert rec.emitted == []
        await a.on_clock(T0 + STEP + 5000)
        await a.on_push(push(0))  # a late push for it changes nothing
        await a.on_push(push(1, final=False))
        await a.on_push(push(2, final=False))

    run(go())
    assert rec.emitted == [truth(0), truth(1).__class__(**{**_fields(truth(1)), "high": 101.0, "low": 101.0,
                                                            "close": 101.0, "volume": 1.0})]


_events = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(min_value=0, max_value=30), st.booleans()),
    st.tuples(st.just("reconnect"), st.just(0), st.just(False)),
    st.tuples(st.just("clock"), st.integers(min_value=0, max_value=30), st.just(False)),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(_events)
def test_any_push_sequence_yields_each_closed_candle_once_in_order_without_gaps(events: list) -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP, grace_ms=1000)
        for kind, i, final in events:
            if kind == "push":
                await a.on_push(push(i, final))
            elif kind == "reconnect":
                a.reconnected()
            else:
                await a.on_clock(T0 + (i + 1) * STEP + 1000)

    run(go())
    times = [c.open_time for c in rec.emitted]
    assert times == [T0 + k * STEP for k in range(len(times))]


# --- user events -------------------------------------------------------------------------------


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
    import msgspec

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


# --- listenKey upkeep ----------------------------------------------------------------------------


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


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 7), st.booleans(), st.booleans()),
    st.tuples(st.just("start_after"), st.integers(-1, 7), st.just(False), st.just(False)),
    st.tuples(st.just("reconnect"), st.just(0), st.just(False), st.just(False))), max_size=40))
def test_the_stream_reads_kline_frames_exactly_as_the_assembler_reads_pushes(
        ops: list[tuple[str, int, bool, bool]]) -> None:
    """MarketStream.take keeps the forming candle's pushes without calling CandleAssembler.push: the
    candles, fetches and state are the same as pushing every kline."""
    from gatebot.core.clock import VirtualClock
    from gatebot.exchanges.bingx.market_stream import MarketStream

    by_push, by_frame = Recorder(), Recorder()

    async def go() -> None:
        a = by_push.assembler(last_closed=T0 - STEP)
        stream = MarketStream("x", [("BTC-USDT", "5m")], by_frame.fetch, VirtualClock(0),
                              on_candle=by_frame.emitted.append, grace_s=None)
        stream.start_after("BTC-USDT", "5m", T0 - STEP)
        b = stream.assemblers["BTC-USDT@kline_5m"]
        for op, i, final, close_time in ops:
            if op == "start_after":
                a.last_closed = T0 + i * STEP
                stream.start_after("BTC-USDT", "5m", T0 + i * STEP)
            elif op == "reconnect":
                a.reconnected()
                b.reconnected()
            else:
                k = push(i, final, T=T0 + (i + 1) * STEP - 1 if close_time else None)
                await a.on_push(k)
                frame = codec.encoder.encode({"code": 0, "dataType": "BTC-USDT@kline_5m", "s": "BTC-USDT",
                                              "data": [k]}).decode()
                rest = stream.take(None, frame)
                if rest is not None:
                    await rest
            assert (a.last_closed, a.forming, a.stale) == (b.last_closed, b.forming, b.stale)

    run(go())
    assert by_frame.emitted == by_push.emitted and by_frame.fetches == by_push.fetches


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)


def test_kline_pushes_of_every_shape_close_the_same_candles_and_other_frames_close_none() -> None:
    """The one-decode path reads only a push of one kline (code 0, no id, a subscribed stream); a push of
    one kline object, of several klines, answers, errors, other streams and Ping take the general path
    and must come to the same candles."""
    from gatebot.core.clock import VirtualClock
    from gatebot.exchanges.bingx.market_stream import MarketStream

    klines = [push(i, final) for i in range(6) for final in (False, True)]

    def frame(data: object, **extra: object) -> str:
        return codec.encoder.encode({"code": 0, "dataType": "BTC-USDT@kline_5m", "s": "BTC-USDT", "data": data}
                                    | extra).decode()

    later = [push(9)]  # taken for a kline of ours, it would open a gap (a REST fetch) and close other candles
    noise = [frame(later, dataType="ETH-USDT@kline_5m"), frame(None, id="sub-1"), frame(later, code=100, msg="no"),
             "Ping", codec.gzip_frame("Ping")]
    shapes = {
        "one kline in a list": [frame([k]) for k in klines],
        "one kline object": [frame(k) for k in klines],
        "two klines in a list": [frame(klines[i:i + 2]) for i in range(0, len(klines), 2)],
        "with other frames between": [f for k in klines for f in (frame([k]), *noise)],
    }
    results = {}
    for name, frames in shapes.items():
        rec = Recorder()
        ws = _Socket()

        async def go(frames: list[str | bytes] = frames, rec: Recorder = rec, ws: _Socket = ws) -> None:
            stream = MarketStream("x", [("BTC-USDT", "5m")], rec.fetch, VirtualClock(0), on_candle=rec.emitted.append,
                                  grace_s=None)
            stream.start_after("BTC-USDT", "5m", T0 - STEP)
            for f in frames:
                rest = stream.take(ws, f)
                if rest is not None:
                    await rest

        run(go())
        results[name] = rec.emitted
        assert not rec.fetches, name
        assert ws.sent == (["Pong", "Pong"] * len(klines) if "between" in name else []), name
    assert results["one kline in a list"] == [truth(i) for i in range(5)]
    assert all(r == results["one kline in a list"] for r in results.values()), results


# --- the simulator's pushes in each wire dialect --------------------------------------------------


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
    import msgspec

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


def test_a_push_whose_optional_id_is_not_an_id_is_refused_not_misread() -> None:
    good = '{"e":"ORDER_TRADE_UPDATE","E":1,"o":{"s":"BTC-USDT","i":"7","S":"BUY","o":"MARKET","x":"NEW","X":"NEW",' \
           '"ps":"BOTH","ti":%s}}'
    assert codec.user_event_decoder.decode(good % '""').o.trigger_id == 0
    assert codec.user_event_decoder.decode(good % '"1809841379603398657"').o.trigger_id == 1809841379603398657
    with pytest.raises(msgspec.ValidationError):
        codec.user_event_decoder.decode(good % '"12x"')


@pytest.mark.parametrize(("raw", "read"), [
    ('"1809841379603398656"', 1809841379603398656), ("1809841379603398656", 1809841379603398656),
    ('"18446744073709551615"', 2**64 - 1), ('"1.0"', 1), ("1.0", 1),
    ('"1.5"', None), ("1.5", None), ("1.8098413796033987e18", None), ('""', None), ("true", None), ('" 12"', None)])
def test_lax_decoding_reads_an_id_exactly_or_refuses_it(raw: str, read: int | None) -> None:
    """What msgspec's strict=False does to an id: digits (as a number or a string) exactly, a whole number in
    another spelling as that number, and anything not exactly an integer (a fraction, a float that lost digits,
    a bool, padding) refused: never a rounded id."""
    body = ('{"e":"ORDER_TRADE_UPDATE","E":1,"o":{"s":"BTC-USDT","i":' + raw
            + ',"S":"BUY","o":"MARKET","x":"NEW","X":"NEW","ps":"BOTH"}}')
    if read is None:
        with pytest.raises(msgspec.ValidationError):
            codec.user_event_decoder.decode(body)
    else:
        got = codec.user_event_decoder.decode(body).o.i
        assert got == read and type(got) is int


@pytest.mark.parametrize("bad", ["abc", "NaN", "inf", "1,5"])
def test_a_kline_push_whose_values_are_not_numbers_costs_its_candle_a_rest_read_not_the_stream(bad: str) -> None:
    rec = Recorder()

    async def go() -> None:
        a = rec.assembler(last_closed=T0 - STEP)
        await a.on_push(push(0))
        await a.on_push(codec.WsKline(o="100", h="110", l="90", c=bad, v="5", T=T0))  # candle 0's last push
        assert a.forming is None, "a forming candle that cannot be read is not shown"
        await a.on_push(push(1, final=False))  # closes candle 0: from REST, not from the bad push
        await a.on_push(push(2, final=False))

    run(go())
    assert rec.fetches == [(T0, T0 + STEP)]
    assert rec.emitted[0] == truth(0)
    assert [c.open_time for c in rec.emitted] == [T0, T0 + STEP], "every candle once, in order"


@pytest.mark.parametrize("value", ['"0x10"', '"NaN"', '"Infinity"', '"1,5"', '"abc"'])
def test_a_number_that_is_not_a_finite_number_makes_the_payload_unreadable(value: str) -> None:
    from gatebot.exchanges.bingx.errors import UnreadableReply
    from gatebot.exchanges.bingx.rest import RestClient

    push = ('{"e":"ORDER_TRADE_UPDATE","E":1,"o":{"s":"BTC-USDT","c":"a-1-e1","i":5,"S":"BUY","o":"MARKET",'
            '"x":"TRADE","X":"FILLED","ps":"LONG","z":' + value + '}}')
    with pytest.raises(msgspec.ValidationError):
        codec.user_event_decoder.decode(push)
    reply = ('{"code":0,"data":[{"symbol":"BTC-USDT","positionSide":"LONG","positionAmt":"1","avgPrice":'
             + value + '}]}')
    with pytest.raises(UnreadableReply):
        RestClient._decode(reply.encode(), "/p", list[codec.Position])
