"""Recorded BingX traffic fed back through the live decoder (MarketStream, CandleAssembler, UserStream,
translate) on a virtual clock.

- :func:`market_candles`: a market recording's kline frames as closed candles (for the paper exchange).
- :class:`ReplayBingXAdapter`: a whole recorded session. The adapter is the live one, except that REST
  replies come from the recording (matched by request: method, path, parameters without time and
  signature; in order per request) and the streams' frames are pushed by :class:`SessionDriver` at
  their recorded times. Every state-changing request the bot makes is compared with the one the live
  session made at that point; the first difference stops the replay with a :class:`Divergence`
  naming the command and the frame that led to it (a flight recorder).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import msgspec

from gatebot.core.clock import VirtualClock
from gatebot.core.events import CandleClosed
from gatebot.core.exchange import EventSink
from gatebot.core.recording import CONNECT, MARKET, REST, SEND, START, USER, Record, Recording, describe
from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
from gatebot.exchanges.bingx.market_stream import MarketStream
from gatebot.exchanges.bingx.rest import RestClient, TransportError, request_key
from gatebot.exchanges.bingx.user_stream import UserStream

log = logging.getLogger("gatebot.bingx.replay")
_subscriptions = msgspec.json.Decoder(dict[str, str])
_starts = msgspec.json.Decoder(list[tuple[str, str, int | None]])


class _NullWs:
    """Where a replayed frame's answer (a Pong) goes."""

    async def send(self, _: str | bytes) -> None:
        return None


NULL_WS = _NullWs()


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """The first command the replay did not issue as the live session did."""

    index: int
    """Position of the command among the session's state-changing requests (0 = first)."""
    live: str | None
    """What the live session sent there (None: nothing more)."""
    replay: str | None
    """What the replay sent there (None: nothing, where the live session sent ``live``)."""
    frame: str
    """The last recorded frame handled before the divergence: the one that caused it."""

    def text(self) -> str:
        return (f"replay diverged at command #{self.index}:\n  live sent:   {self.live or '(nothing)'}\n"
                f"  replay sent: {self.replay or '(nothing)'}\n  after frame: {self.frame}")


class ReplyStore:
    """Recorded REST replies by request, each answered once, in recorded order. ``preload``: every reply
    is available at once; otherwise a reply is released when the replay reaches it, and a request made
    earlier waits for it (as the live bot waited for the exchange)."""

    def __init__(self, records: Iterable[Record], *, preload: bool = False) -> None:
        self.ready: dict[str, deque[Record]] = defaultdict(deque)
        self.waiters: dict[str, deque[asyncio.Future[Record]]] = defaultdict(deque)
        self._unread = records if preload else None
        """Preloaded replies not read yet: read when the first is asked for (a market replay seldom needs one)."""

    def _preload(self) -> None:
        records, self._unread = self._unread, None
        for rec in records or ():
            if rec.ch == REST:
                self.ready[rec.what].append(rec)

    def release(self, rec: Record) -> None:
        waiting = self.waiters.get(rec.what)
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(rec)
                return
        self.ready[rec.what].append(rec)

    async def take(self, key: str) -> Record:
        if self._unread is not None:
            self._preload()
        queue = self.ready.get(key)
        if queue:
            return queue.popleft()
        fut: asyncio.Future[Record] = asyncio.get_running_loop().create_future()
        self.waiters[key].append(fut)
        return await fut

    def take_now(self, key: str) -> Record | None:
        if self._unread is not None:
            self._preload()
        queue = self.ready.get(key)
        return queue.popleft() if queue else None

    def pending(self) -> list[str]:
        return [k for k, q in self.waiters.items() for f in q if not f.done()]

    def cancel_all(self) -> None:
        """The recording ended: requests still waiting will never be answered."""
        for q in self.waiters.values():
            for fut in q:
                fut.cancel()
            q.clear()


class _Unlimited:
    """No request budget: the live session's requests were paced when it made them."""

    async def take(self, group: str) -> None:
        return None


class ReplayRestClient(RestClient):
    """The live REST client with the network replaced by the recording."""

    def __init__(self, store: ReplyStore, clock: Any, *, on_send: Callable[[str], bool] | None = None,
                 wait: bool = False) -> None:
        super().__init__("replay:", "", "", clock=clock, limiter=_Unlimited())
        self.store = store
        self.on_send = on_send
        """Called with each state-changing request; False: the replay diverged, the request never returns."""
        self.missing: list[str] = []
        self.wait = wait
        """True: wait for the replay to reach a reply not released yet; False: none -> TransportError."""
        self._diverged = False
        self.recorder = _SendCheck(self)

    async def start(self) -> None:
        await self.sync_time()

    async def close(self) -> None:
        return None

    async def _send(self, method: str, url: str, path: str) -> bytes:
        key = request_key(method, url, self.base_url)
        if self._diverged:
            await self.store.take("\0diverged")  # this command never gets an answer (canceled at the end)
        return await self._answer(method, path, key)

    async def _answer(self, method: str, path: str, key: str) -> bytes:
        rec = await self.store.take(key) if self.wait else self.store.take_now(key)
        if rec is None:
            self.missing.append(key)
            raise TransportError(f"{method} {path}: the recording has no (more) replies to {key}")
        if rec.code == -1:
            raise TransportError(f"{method} {path}: {rec.data!s} (recorded)")
        body = rec.data.encode() if isinstance(rec.data, str) else rec.data
        return self.check_status(method, path, rec.code, body)


class _SendCheck:
    """Stands where the live client's recorder is: sees each state-changing request as it is made."""

    def __init__(self, client: ReplayRestClient) -> None:
        self.client = client

    def record(self, ch: str, what: str, data: Any, code: int = 0, t: int | None = None) -> None:
        if ch == SEND and self.client.on_send is not None and not self.client.on_send(what):
            self.client._diverged = True


# --- market recordings -> candles ----------------------------------------------------------------


async def market_candles(recording: Recording, streams: list[tuple[str, str]], clock: VirtualClock,
                         on_frame: Callable[[int], None] | None = None) -> AsyncIterator[CandleClosed]:
    """The closed candles of ``streams`` that the recording's kline frames make, through the live
    MarketStream decoder and CandleAssembler (gaps after a reconnect filled from recorded REST replies).

    Frames are read a block of the file at a time and the candles they close handed on after it, each
    with the clock at the time of the frame that closed it: reading a frame does not look at the clock
    and no other task runs in between, so reading ahead changes nothing but the speed (one tight loop
    over the frames, then the consumer's)."""
    adapter = BingXAdapter(BingXOptions(), hedge_mode=False, clock=clock)
    adapter.rest = ReplayRestClient(ReplyStore(recording, preload=True), clock)
    ready: list[tuple[int, CandleClosed]] = []
    t = clock.now_ms()

    def closed(candle: CandleClosed) -> None:
        ready.append((t, candle))

    market = MarketStream("replay:", streams, adapter.klines, clock, on_candle=closed, grace_s=None)
    take = market.take  # the live decoder, frame by frame; what it returns to await (a REST fill) is rare
    frames = 0
    for block in recording.blocks():  # a block at a time, never the whole file as objects
        frames += len(block)
        for rec in block:
            if rec.what or rec.ch != MARKET:
                frames -= 1  # a marker or a REST reply, not a frame
                if rec.ch == MARKET:
                    _marker(market, rec, streams)
                continue
            if rec.t > t:
                t = rec.t
            rest = take(NULL_WS, rec.data)
            if rest is not None:  # missed candles from REST, on this frame's clock
                for candle in _due(ready, clock):
                    yield candle
                clock.advance_to(t)
                await rest
        for candle in _due(ready, clock):
            yield candle
    clock.advance_to(t)
    if on_frame is not None:
        on_frame(frames)


def _marker(market: MarketStream, rec: Record, streams: list[tuple[str, str]]) -> None:
    """A market recording's connection marker, or where its streams started (after the history the live
    stream had loaded)."""
    if rec.what == CONNECT:
        market.connected_again(_subscriptions.decode(rec.data))
    elif rec.what == START:
        for symbol, interval, last in _starts.decode(rec.data):
            if (symbol, interval) in streams:
                market.start_after(symbol, interval, last)


def _due(ready: list[tuple[int, CandleClosed]], clock: VirtualClock) -> Iterator[CandleClosed]:
    """The candles read ahead, each once the clock is at the frame that closed it."""
    for at, candle in ready:
        clock.advance_to(at)
        yield candle
    ready.clear()


def market_frames(recording: Recording) -> int:
    return sum(1 for r in recording if r.ch == MARKET and r.what not in (CONNECT, START))


# --- whole sessions ------------------------------------------------------------------------------


class SessionDriver:
    """Pushes a session recording's frames, in order, at their recorded times; checks commands."""

    def __init__(self, recording: Recording, clock: VirtualClock) -> None:
        self.recording = recording
        self.records = recording.records()
        self.clock = clock
        self.store = ReplyStore(self.records)
        self.live_sends = [(i, r) for i, r in enumerate(self.records) if r.ch == SEND]
        self._send_pos = {idx: k for k, (idx, _) in enumerate(self.live_sends)}
        self.sent: list[str] = []
        self.divergence: Divergence | None = None
        self._last: tuple[int, Record] | None = None
        self.frames = 0
        self.finished = asyncio.Event()
        self.on_divergence: Callable[[], None] | None = None
        self.market: MarketStream | None = None
        self.user: UserStream | None = None
        self._task: asyncio.Task[None] | None = None
        self._queues: dict[str, asyncio.Queue[Record]] = {MARKET: asyncio.Queue(), USER: asyncio.Queue()}

    @property
    def last_frame(self) -> str:
        """The last frame handed to a stream (described only when asked: on a divergence)."""
        return describe(self._last[1], self._last[0]) if self._last else "(none: before the first frame)"

    def on_send(self, key: str) -> bool:
        """A state-changing request of the replayed bot: the same as live at this point?"""
        k = len(self.sent)
        self.sent.append(key)
        live = self.live_sends[k][1].what if k < len(self.live_sends) else None
        if live != key:
            self._diverged(Divergence(index=k, live=live, replay=key, frame=self.last_frame))
            return False
        return True

    def _diverged(self, d: Divergence) -> None:
        if self.divergence is None:
            self.divergence = d
            log.warning("%s", d.text())
            self.finished.set()
            if self.on_divergence is not None:
                self.on_divergence()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="replay-driver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _consume(self, ch: str) -> None:
        """One stream's reader: its frames one after the other (a frame that waits for REST holds the
        next ones back, as the live reader does)."""
        queue = self._queues[ch]
        while True:
            rec = await queue.get()
            if ch == MARKET:
                assert self.market is not None
                if rec.what == CONNECT:
                    self.market.connected_again(_subscriptions.decode(rec.data))
                else:
                    await self.market.handle(NULL_WS, rec.data)
            elif self.user is not None:
                if rec.what == CONNECT:
                    self.user.connected_again()
                else:
                    await self.user.handle(NULL_WS, rec.data)

    async def run(self) -> None:
        readers = [asyncio.create_task(self._consume(ch), name=f"replay-{ch}") for ch in (MARKET, USER)]
        try:
            await quiesce()
            for i, rec in enumerate(self.records):
                if self.divergence is not None:
                    return
                if rec.ch == SEND:
                    k = self._send_pos[i]
                    if len(self.sent) <= k:
                        self._diverged(Divergence(index=k, live=rec.what, replay=None, frame=self.last_frame))
                        return
                    continue
                if rec.t > self.clock.now_ms():
                    self.clock.advance_to(rec.t)
                    await quiesce()
                if rec.ch == REST:
                    self.store.release(rec)
                    await quiesce()
                    continue
                if rec.ch == MARKET and self.market is None:
                    log.warning("market frame before the market stream started: %s", describe(rec, i))
                    continue
                self._queues[rec.ch].put_nowait(rec)  # each stream reads its frames in order, as live
                if rec.what != CONNECT:
                    self._last = (i, rec)
                    self.frames += 1
                await quiesce()
            if self.divergence is None and len(self.sent) > len(self.live_sends):
                k = len(self.live_sends)
                self._diverged(Divergence(index=k, live=None, replay=self.sent[k], frame=self.last_frame))
        finally:
            self.store.cancel_all()
            for task in readers:
                task.cancel()
            self.finished.set()


async def quiesce(limit: int = 100_000) -> None:
    """Let every other task run until none is ready (they all wait for the next frame, the clock or
    a recorded reply). asyncio without I/O is deterministic, so this is too."""
    loop = asyncio.get_running_loop()
    quiet = 0
    for _ in range(limit):
        await asyncio.sleep(0)
        if loop._ready:  # type: ignore[attr-defined]
            quiet = 0
        else:
            quiet += 1
            if quiet >= 3:
                return


class ReplayBingXAdapter(BingXAdapter):
    """The BingX adapter with the exchange replaced by a session recording."""

    def __init__(self, options: BingXOptions, driver: SessionDriver, *, hedge_mode: bool, account: str) -> None:
        super().__init__(msgspec.structs.replace(options, simulator=None), hedge_mode=hedge_mode, clock=driver.clock,
                         account=account)
        self.driver = driver
        self.finished = driver.finished

    async def start(self, sink: EventSink, *, market_only: bool = False) -> None:
        self._sink = sink
        self.rest = ReplayRestClient(self.driver.store, self.clock, on_send=self.driver.on_send, wait=True)
        self.driver.start()
        await self.rest.start()
        self.user = UserStream("replay:", self.rest, self.clock, self.book, hedge=self.hedge, on_event=sink,
                               on_reconnect=self._stream_came_back, on_unreadable=self._push_unreadable,
                               unreadable_limit=self.options.unreadable_push_limit)
        self.user.on_config = self._on_config
        self.user.key = await self.rest.listen_key()
        self.driver.user = self.user

    def start_market(self, streams: dict[tuple[str, str], int | None], on_candle: Any) -> MarketStream:
        by_clock = self.options.close_candles_by_clock
        grace = self.options.kline_grace_s if by_clock else None
        self.market = MarketStream("replay:", list(streams), self.klines, self.clock, on_candle=on_candle,
                                   grace_s=grace)
        for (symbol, interval), last in streams.items():
            self.market.start_after(symbol, interval, last)
        if grace is not None:
            self._tasks.append(asyncio.create_task(self.market.close_by_clock(), name="replay-clock-rule"))
        self.driver.market = self.market
        return self.market

    async def stop(self) -> None:
        await self.driver.stop()
        await super().stop()
