"""BingX market stream logic without sockets: closed-candle assembly from kline pushes, REST and the clock."""

from __future__ import annotations

import asyncio

import pytest

from gatebot.core.events import (
    CandleClosed,
)
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.market_stream import CandleAssembler

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


