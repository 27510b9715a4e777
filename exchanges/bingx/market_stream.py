"""The market websocket: closed candles (each exactly once, in order) and mark prices.

BingX kline pushes carry no "closed" flag (protocol page §5.3). A candle is closed when a push with
a later open time arrives, or when the clock passes its end plus a grace (then its final values come
from the REST kline endpoint), whichever is first. After a reconnect the candles missed while away
are fetched from REST, so a strategy sees no gap and no duplicate. Frames are gzip; the server's
``Ping`` is answered with ``Pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
import zlib
from collections.abc import Awaitable, Callable, Generator
from math import isfinite
from typing import Any

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gatebot.core.clock import Clock
from gatebot.core.events import CandleClosed
from gatebot.core.intervals import interval_ms
from gatebot.core.recording import CONNECT, MARKET
from gatebot.exchanges.bingx import codec

log = logging.getLogger("gatebot.bingx.market")

Fetch = Callable[[str, str, int, int], Awaitable[list[CandleClosed]]]
"""(symbol, interval, start_ms, end_ms) -> closed candles with open_time in [start, end), ascending."""

_klines = msgspec.json.Decoder(list[codec.WsKline] | codec.WsKline, strict=False)
_mark = msgspec.json.Decoder(codec.MarkPriceData, strict=False)
_kline_push = codec.kline_push_decoder.decode


def reconnect_delays() -> Generator[float]:
    """Seconds before each new connect: 0.1 doubling to 30, each with jitter (never a reconnect storm)."""
    delay = 0.1
    while True:
        yield delay * (0.5 + random.random())
        delay = min(delay * 2, 30.0)


def _retry_connect(exc: Exception) -> Exception | None:
    """Every failed connect is retried (websockets' default gives up on an HTTP 429 or 401 from the gateway):
    a market stream is never given up. None: retry; the exception: give up (a bad URL)."""
    if isinstance(exc, ConnectionClosed | InvalidHandshake | OSError | TimeoutError):
        log.warning("market stream connect failed (%s); retrying", type(exc).__name__)
        return None
    return exc


def ws_candle(symbol: str, interval: str, open_time: int, k: codec.WsKline) -> CandleClosed:
    """The candle a kline push shows; ValueError when a value is not a finite number (checked here, once per
    candle, not on each push of the hot path)."""
    o, h, lo, c, v = float(k.o), float(k.h), float(k.l), float(k.c), float(k.v)
    if not isfinite(o + h + lo + c + v):
        raise ValueError(f"kline values not finite: {k}")
    return CandleClosed(ts=open_time, symbol=symbol, interval=interval, open_time=open_time, open=o, high=h, low=lo,
                        close=c, volume=v)


class CandleAssembler:
    """Kline pushes of one (symbol, interval) in, closed candles out: each once, in order, no gaps."""

    def __init__(self, symbol: str, interval: str, fetch: Fetch, emit: Callable[[CandleClosed], None], *,
                 grace_ms: int | None) -> None:
        self.symbol, self.interval = symbol, interval
        self.step = interval_ms(interval)
        self.fetch = fetch
        self.emit = emit
        self.grace_ms = grace_ms
        self._ft: int | None = None
        """The forming candle's open time."""
        self.forming_kline: codec.WsKline | None = None
        """The forming candle's last push (made a CandleClosed only when needed); MarketStream.take
        replaces it when a push has ``same_t``."""
        self.same_t = -1
        """``T`` of the push that opened the forming candle (-1: none): a push with this ``T`` is the
        forming candle again, after the last closed one, so only its values are kept (MarketStream.take
        does that without a call; every change of the forming or the last closed candle resets it)."""
        self._last: int | None = None
        self.stale = False
        """Pushes were missed (a reconnect): the forming candle's values are not to be trusted."""

    @property
    def last_closed(self) -> int | None:
        """Open time of the last candle emitted (or of the last history candle at start)."""
        return self._last

    @last_closed.setter
    def last_closed(self, open_time: int | None) -> None:
        self._last = open_time
        self.same_t = -1

    @property
    def forming(self) -> CandleClosed | None:
        """The candle forming now, as the last push shows it."""
        if self._ft is None or self.forming_kline is None:
            return None
        try:
            return ws_candle(self.symbol, self.interval, self._ft, self.forming_kline)
        except ValueError:
            return None  # its last push was unreadable: the next push (or REST) says what it was

    @forming.setter
    def forming(self, candle: None) -> None:
        self._ft = self.forming_kline = None
        self.same_t = -1

    def push(self, k: codec.WsKline) -> tuple[int, int] | None:
        """A kline push, handled at once (the common case, nothing to wait for), or the gap ``(start,
        end)`` whose candles must come from REST first: then :meth:`after_gap` finishes the push."""
        step = self.step
        t = k.T - k.T % step  # current pushes carry the open time, older ones the close time
        last = self._last
        ft = self._ft
        if t == ft and (last is None or t > last):  # the forming candle again: most pushes
            self.stale = False
            self.forming_kline = k
            return None
        if last is not None and t <= last:
            return None  # late or duplicated
        if ft is None:
            if last is not None and t > last + step:
                return last + step, t
        elif t < ft:
            return None
        elif t > ft:
            if self.stale or t > ft + step:
                return ft, t
            try:
                closed = ws_candle(self.symbol, self.interval, ft, self.forming_kline)  # type: ignore[arg-type]
            except ValueError as exc:
                log.warning("%s %s: %s; the candle is read from REST", self.symbol, self.interval, exc)
                return ft, t
            self._close(closed)
        self.stale = False
        self._ft, self.forming_kline, self.same_t = t, k, k.T
        return None

    async def after_gap(self, gap: tuple[int, int], k: codec.WsKline) -> None:
        """The rest of a push that found a gap: the missed candles from REST, then the push itself."""
        await self._fill(*gap)
        self.stale = False
        self._ft, self.forming_kline = k.T - k.T % self.step, k
        self.same_t = k.T if self._last is None or self._ft > self._last else -1

    async def on_push(self, k: codec.WsKline) -> None:
        gap = self.push(k)
        if gap is not None:
            await self.after_gap(gap, k)

    async def on_clock(self, now_ms: int) -> None:
        """The clock rule: a candle whose end (plus grace) has passed is closed from REST."""
        f = self.forming
        if f is None or self.grace_ms is None or now_ms < f.open_time + self.step + self.grace_ms:
            return
        await self._fill(f.open_time, f.open_time + self.step)
        if self.last_closed == f.open_time:
            self.forming = None

    def reconnected(self) -> None:
        self.stale = True

    async def _fill(self, start: int, end: int) -> None:
        candles = await self.fetch(self.symbol, self.interval, start, end)
        for c in candles:
            if (self.last_closed is None or c.open_time > self.last_closed) and c.open_time < end:
                if self.last_closed is not None and c.open_time != self.last_closed + self.step:
                    log.warning("%s %s: the exchange has no candles between %d and %d", self.symbol,
                                self.interval, self.last_closed, c.open_time)
                self._close(c)

    def _close(self, c: CandleClosed) -> None:
        self._last = c.open_time
        if self._ft is not None and c.open_time >= self._ft:
            self.same_t = -1
        self.emit(c)


class MarketStream:
    """One market connection for every (symbol, interval) of an account's instances."""

    def __init__(self, url: str, streams: list[tuple[str, str]], fetch: Fetch, clock: Clock, *,
                 on_candle: Callable[[CandleClosed], None], on_mark: Callable[[str, float], None] | None = None,
                 grace_s: float | None = 5.0, on_reconnect: Callable[[], None] | None = None,
                 recorder: Any = None) -> None:
        self.url = url
        self.recorder = recorder
        """A core.recording.Recorder that gets every raw frame (None: no recording, no cost)."""
        self.clock = clock
        self.on_mark = on_mark
        self.on_reconnect = on_reconnect
        grace = None if grace_s is None else int(grace_s * 1000)
        self.assemblers = {f"{s}@kline_{i}": CandleAssembler(s, i, fetch, on_candle, grace_ms=grace)
                           for s, i in streams}
        self.symbols = sorted({s for s, _ in streams})
        self.connected = asyncio.Event()
        """Set once every subscription is acknowledged; cleared when the connection is lost."""
        self.connections = 0
        self.bad_frames = 0
        self.frames_read = 0
        """Frames read off the socket and handled (an embedded lockstep simulator waits for them)."""
        """Frames that could not be read (broken gzip, not JSON, wrong shape): counted, logged, skipped."""
        self._pending: dict[str, str] = {}
        self.last_frame_ms = 0
        """When the last frame arrived (the clock's monotonic reading; 0: none yet)."""

    def start_after(self, symbol: str, interval: str, last_closed: int | None) -> None:
        """History ends at ``last_closed``: the stream continues from the next candle."""
        self.assemblers[f"{symbol}@kline_{interval}"].last_closed = last_closed

    async def run(self) -> None:
        """Connect, subscribe, read; on any loss reconnect with backoff and jitter. Runs until cancelled.

        websockets' own reconnecting iterator retries failed connects (with :func:`reconnect_delays`);
        after a session that opened and then dropped it reconnects at once, so the loop waits a first delay
        itself (never a reconnect storm against an exchange that accepts and closes)."""
        clock_task = asyncio.create_task(self.close_by_clock())
        connections = websockets.connect(self.url, compression=None, proxy=None, open_timeout=10, ping_interval=20,
                                         ping_timeout=20, close_timeout=2, max_size=2**22,
                                         process_exception=_retry_connect, reconnect_delays=reconnect_delays)
        try:
            async with contextlib.aclosing(aiter(connections)) as sessions:  # closed with the socket on cancel
                async for ws in sessions:
                    try:
                        await self._subscribe(ws)
                        async for frame in ws:
                            await self.handle(ws, frame)
                            self.frames_read += 1
                    except (ConnectionClosed, OSError, TimeoutError) as exc:
                        log.warning("market stream lost (%s); reconnecting", type(exc).__name__)
                    self.connected.clear()
                    for a in self.assemblers.values():
                        a.reconnected()
                    await asyncio.sleep(next(reconnect_delays()))
        finally:
            clock_task.cancel()

    def connected_again(self, subscriptions: dict[str, str]) -> None:
        """A (re)connection has sent ``subscriptions`` (request id -> topic; live from :meth:`_subscribe`, in
        a replay from the recorded connection): their answers are awaited, and after the first connection
        missed pushes are possible."""
        self._pending = dict(subscriptions)
        self.connections += 1
        if self.connections > 1:
            for a in self.assemblers.values():
                a.reconnected()
            if self.on_reconnect is not None:
                self.on_reconnect()

    async def _subscribe(self, ws: websockets.ClientConnection) -> None:
        topics = [*self.assemblers, *(f"{s}@markPrice" for s in self.symbols if self.on_mark is not None)]
        subscriptions = {str(uuid.uuid4()): topic for topic in topics}
        for request_id, topic in subscriptions.items():
            await ws.send(codec.encoder.encode(codec.Subscribe(id=request_id, reqType="sub",
                                                               dataType=topic)).decode())
        if self.recorder is not None:
            self.recorder.record(MARKET, CONNECT, codec.encoder.encode(subscriptions))
        self.connected_again(subscriptions)

    async def handle(self, ws: Any, frame: bytes | str) -> None:
        """One frame as received (live, or fed by a replay): :meth:`take`, then what it left to await."""
        rest = self.take(ws, frame)
        if rest is not None:
            await rest

    def take(self, ws: Any, frame: bytes | str) -> Awaitable[None] | None:
        """One frame as received (live and replay alike): everything that needs no waiting is done at
        once; what must still be awaited (the ``Pong``, candles missed in a gap fetched from REST) is
        returned. The common frame, one kline of a subscribed stream, is read in one decode whose type
        checks its shape (:class:`codec.KlinePush`); any other is read as a :class:`codec.MarketPush`
        (:meth:`_take_push`)."""
        if self.recorder is not None:
            self.recorder.record(MARKET, "", frame)
        self.last_frame_ms = self.clock.monotonic_ms()
        if frame.__class__ is str:
            text = frame
        else:
            try:
                text = codec.ungzip_frame(frame)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                self.bad_frames += 1
                log.warning("unreadable market frame ignored (%s): %.80r", type(exc).__name__, frame)
                return None
        try:
            push = _kline_push(text)
        except msgspec.DecodeError:
            if text == "Ping":
                return ws.send("Pong")
            return self._take_push(text)
        assembler = self.assemblers.get(push.dataType)
        if assembler is None:
            return self._take_push(text)  # not a stream of ours
        k = push.data[0]
        if assembler.same_t == k.T:
            assembler.forming_kline = k  # the forming candle again: most pushes
            assembler.stale = False  # (what push() does for it, without the call)
            return None
        gap = assembler.push(k)
        return None if gap is None else assembler.after_gap(gap, k)

    def _take_klines(self, assembler: CandleAssembler, klines: list[codec.WsKline]) -> Awaitable[None] | None:
        for i, k in enumerate(klines):
            gap = assembler.push(k)
            if gap is not None:
                return self._after_gap(assembler, gap, klines[i:])
        return None

    async def _after_gap(self, assembler: CandleAssembler, gap: tuple[int, int], klines: list[codec.WsKline]) -> None:
        await assembler.after_gap(gap, klines[0])
        for k in klines[1:]:
            await assembler.on_push(k)

    def _answer(self, push: codec.MarketPush) -> None:
        """A subscription's answer or an error push."""
        if push.id and push.id in self._pending:  # a subscription's answer
            topic = self._pending.pop(push.id)
            if push.code != 0:
                log.error("subscription to %s refused: %d %s", topic, push.code, push.msg)
            if not self._pending:
                self.connected.set()  # subscribed: from here on no push is missed unnoticed
            return
        log.warning("market stream error %d %s (%s)", push.code, push.msg, push.dataType)

    def _take_push(self, text: str) -> Awaitable[None] | None:
        """Any market push, ``data`` decoded by kind."""
        try:
            push = codec.market_push_decoder.decode(text)
        except msgspec.DecodeError:
            self.bad_frames += 1
            log.warning("unreadable market frame ignored: %.200s", text)
            return None
        if (push.id and push.id in self._pending) or push.code != 0:
            self._answer(push)
            return None
        assembler = self.assemblers.get(push.dataType)
        if assembler is not None:
            try:
                klines = _klines.decode(push.data)
            except msgspec.DecodeError:
                self.bad_frames += 1
                log.warning("unreadable kline push ignored: %.200s", text)
                return None
            return self._take_klines(assembler, klines if isinstance(klines, list) else [klines])
        if push.dataType.endswith("@markPrice") and self.on_mark is not None:
            try:
                mark = _mark.decode(push.data)
                price = float(mark.p)
            except (msgspec.DecodeError, ValueError):
                self.bad_frames += 1
                log.warning("unreadable mark price push ignored: %.200s", text)
                return None
            self.on_mark(mark.s, price)
        return None

    async def close_by_clock(self) -> None:
        """The clock rule (:meth:`CandleAssembler.on_clock`) every second, until cancelled; returns at once
        when no stream closes candles by the clock."""
        if all(a.grace_ms is None for a in self.assemblers.values()):
            return
        while True:
            await self.clock.sleep(1.0)
            for a in self.assemblers.values():
                try:
                    await a.on_clock(self.clock.now_ms())
                except Exception:  # a failed REST fetch is retried on the next tick
                    log.exception("closing %s %s by the clock failed", a.symbol, a.interval)
