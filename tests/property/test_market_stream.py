"""Properties (hypothesis) of the BingX market stream: any push sequence closes each candle once, in order,
without gaps, and the stream reads kline frames exactly as the assembler reads pushes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gatebot.exchanges.bingx import codec
from tests.unit.exchanges.bingx.test_market_stream import STEP, T0, Recorder, push, run

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
