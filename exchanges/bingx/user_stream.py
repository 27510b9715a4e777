"""The user-data websocket: a listenKey kept alive, account events turned into core events.

The key lives 60 minutes; it is extended every 30 and recreated when the exchange says it expired
(a ``listenKeyExpired`` push or a 404 on renewal). BingX does not replay events missed while
disconnected, so every reconnect is reported (``on_reconnect``) and the engine reconciles over REST.

A push that cannot be read (broken gzip, not JSON, an event of a shape the codec refuses) may have been a
fill or a stop that fired: it is counted, logged (its raw frame, the listenKey redacted; in full the first
time each kind fails, then only counted), and reported (``on_unreadable``, with the symbol when the frame
names one) so the instances it may concern reconcile over REST. After ``unreadable_limit`` of them the
stream says :attr:`UserStream.entries_blocked`: the adapter takes no new entries on this account (exits
and stops still go out) until the operator has looked (a restart).

The stream's health is judged by the data that flows, not by pings: BingX pushes ACCOUNT_CONFIG_UPDATE
on connect and every 5 s, so ``silence_s`` without any frame but ``Ping`` (a stream gone quiet while
its pings go on, a half-open socket where nothing arrives at all) means reconnect and reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gatebot.core.clock import Clock
from gatebot.core.events import (
    AnyEvent,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PositionSnapshot,
)
from gatebot.core.recording import CONNECT, USER
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.codec import dec
from gatebot.exchanges.bingx.constants import LISTEN_KEY_RENEW_S
from gatebot.exchanges.bingx.rest import RestClient, TransportError

log = logging.getLogger("gatebot.bingx.user")
ZERO = Decimal(0)
UNREADABLE_LIMIT = 5
"""Unreadable pushes after which no new entries are taken on the account (until a restart)."""
_LISTEN_KEY = re.compile(r'("listenKey"\s*:\s*")[^"]*(")|(listenKey=)[^&\s"]+')
_SYMBOL = re.compile(r'"s"\s*:\s*"([A-Z0-9]{1,20}-[A-Z0-9]{1,10})"')
_EVENT = re.compile(r'"e"\s*:\s*"([A-Za-z_]{1,40})"')
_RAW_LOG_CHARS = 4000


def redact(text: str, key: str | None = None) -> str:
    """A frame fit for a log: every listenKey (and the current key wherever it appears) replaced."""
    text = _LISTEN_KEY.sub(lambda m: f"{m[1]}***{m[2]}" if m[1] else f"{m[3]}***", text)
    return text.replace(key, "***") if key else text


class OrderBook:
    """What the adapter knows of its own orders: order id -> client id (for events whose client id is
    empty, e.g. a triggered stop reported on a derived order), and which acks were already delivered."""

    def __init__(self) -> None:
        self.client_of: dict[int, str] = {}
        self.acked: set[str] = set()
        self.cum: dict[str, Decimal] = {}

    def remember(self, order_id: int, client_id: str) -> None:
        if order_id and client_id:
            self.client_of[order_id] = client_id


def translate(event: codec.UserEvent, book: OrderBook, *, hedge: bool) -> list[AnyEvent]:
    """One BingX account event as core events (none for what the engine does not need)."""
    if isinstance(event, codec.OrderTradeUpdate):
        return _order_events(event, book)
    if isinstance(event, codec.AccountUpdate):
        out: list[AnyEvent] = []  # its balances are not needed: the engine sizes from a REST balance
        for p in event.a.P:
            amount = dec(p.pa)
            if p.ps == "BOTH":  # one-way: the sign (if any) says the side; zero closes both
                sides = ["long", "short"] if amount == 0 else ["short" if amount < 0 else "long"]
            else:
                sides = ["long" if p.ps == "LONG" else "short"]
            for side in sides:
                out.append(PositionSnapshot(ts=event.E, symbol=p.s, side=side, qty=abs(amount),  # type: ignore[arg-type]
                                            entry_price=dec(p.ep)))
        return out
    return []


def _order_events(event: codec.OrderTradeUpdate, book: OrderBook) -> list[AnyEvent]:
    o = event.o
    cid = o.c or book.client_of.get(o.i) or book.client_of.get(o.trigger_id, "")
    if not cid:
        return []  # not an order of ours (someone closing by hand): the position snapshot tells the rest
    book.remember(o.i, cid)
    ts = o.T or event.E
    if o.x == "NEW":
        if cid in book.acked:
            return []  # already confirmed by the REST reply
        book.acked.add(cid)
        return [OrderAccepted(ts=ts, client_id=cid, order_id=o.i)]
    if o.x in ("TRADE", "CALCULATED"):
        cum = dec(o.z)
        last_qty = dec(o.l) if o.l != "" else cum - book.cum.get(cid, ZERO)
        book.cum[cid] = cum
        price = dec(o.L) if o.L not in ("", "0") else dec(o.ap)
        return [OrderFilled(ts=ts, client_id=cid, order_id=o.i, trade_id=str(o.td), qty=last_qty, price=price,
                            fee=-dec(o.n), realized_pnl=dec(o.rp), cum_qty=cum, final=o.X == "FILLED")]
    if o.x == "CANCELED":
        return [OrderCanceled(ts=ts, client_id=cid, order_id=o.i, filled_qty=dec(o.z), reason="canceled")]
    if o.x == "EXPIRED":
        return [OrderExpired(ts=ts, client_id=cid, order_id=o.i, filled_qty=dec(o.z), reason="expired")]
    return []


class UserStream:
    def __init__(self, ws_url: str, rest: RestClient, clock: Clock, book: OrderBook, *, hedge: bool,
                 on_event: Callable[[AnyEvent], None], on_reconnect: Callable[[], None],
                 on_unreadable: Callable[[str | None], None] | None = None, unreadable_limit: int = UNREADABLE_LIMIT,
                 renew_s: float = LISTEN_KEY_RENEW_S, recorder: Any = None,
                 on_funding: Callable[[int], None] | None = None, silence_s: float = 0.0) -> None:
        self.ws_url = ws_url
        self.recorder = recorder
        """A core.recording.Recorder that gets every raw frame (None: no recording, no cost)."""
        self.rest = rest
        self.clock = clock
        self.book = book
        self.hedge = hedge
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.on_funding = on_funding
        """Called with the push time of an ACCOUNT_UPDATE ``m=FUNDING_FEE``: a cross position's push names no
        symbol (§6.3), so the adapter reads the payments from the income history."""
        self.on_config: Callable[[codec.ConfigData], None] | None = None
        """Gets every ACCOUNT_CONFIG_UPDATE (leverage, margin mode of a symbol) when set."""
        self.renew_s = renew_s
        self.silence_s = silence_s
        """Reconnect after this long without a frame other than ``Ping`` (0: never)."""
        self.last_data_ms = 0
        """When the last frame other than ``Ping`` arrived (the clock's monotonic reading)."""
        self.silences = 0
        """Connections given up for silence."""
        self.key: str | None = None
        self.key_ms = 0
        """When the listenKey was made or last extended (the clock's monotonic reading)."""
        self.connected = asyncio.Event()
        self.connections = 0
        self.on_unreadable = on_unreadable
        self.unreadable_limit = unreadable_limit
        self.bad_frames = 0
        """Frames that could not be read (broken gzip, not JSON, unknown shape): counted, logged, skipped."""
        self.frames_read = 0
        """Frames read off the socket and handled (an embedded lockstep simulator waits for them)."""
        self.unreadable = 0
        """Of those, the ones that may have been events (all but a server's answer without ``"e"``)."""
        self.entries_blocked: str | None = None
        """Why no new entries may be taken on this account (None: they may)."""
        self._logged_kinds: set[str] = set()
        self._expired = asyncio.Event()

    async def run(self) -> None:
        renewer = asyncio.create_task(self._renew_forever())
        delay = 0.1
        try:
            while True:
                try:
                    if self.key is None:
                        self.key = await self.rest.listen_key()
                        self.key_ms = self.clock.monotonic_ms()
                    self._expired.clear()
                    async with websockets.connect(f"{self.ws_url}?listenKey={self.key}", compression=None,
                                                  proxy=None, open_timeout=10, ping_interval=20, ping_timeout=20,
                                                  close_timeout=2) as ws:
                        if self.recorder is not None:
                            self.recorder.record(USER, CONNECT, b"")
                        self.connected_again()
                        self.connected.set()
                        delay = 0.1
                        self.last_data_ms = self.clock.monotonic_ms()
                        reader = asyncio.create_task(self._read(ws))
                        expired = asyncio.create_task(self._expired.wait())
                        tasks = {reader, expired}
                        if self.silence_s > 0:
                            tasks.add(asyncio.create_task(self._watch()))
                        try:
                            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for task in tasks:
                                task.cancel()
                            await asyncio.gather(*tasks, return_exceptions=True)
                        if reader in done and not reader.cancelled() and reader.exception() is not None:
                            raise reader.exception()  # type: ignore[misc]
                except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, TransportError) as exc:
                    log.warning("user stream lost (%s); reconnecting", type(exc).__name__)
                self.connected.clear()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)
        finally:
            renewer.cancel()

    def connected_again(self) -> None:
        self.connections += 1
        if self.connections > 1:
            self.on_reconnect()  # events may have been missed: reconcile over REST

    async def _watch(self) -> None:
        """Return (the connection is given up) once no data came for ``silence_s``."""
        silence_ms = round(self.silence_s * 1000)
        while True:
            await self.clock.sleep(min(1.0, self.silence_s / 4))
            quiet_ms = self.clock.monotonic_ms() - self.last_data_ms
            if quiet_ms > silence_ms:
                self.silences += 1
                log.warning("user stream silent for %.1f s (pings alone do not count); reconnecting",
                            quiet_ms / 1000)
                return

    async def _read(self, ws: websockets.ClientConnection) -> None:
        async for frame in ws:
            handled = await self.handle(ws, frame)
            self.frames_read += 1
            if not handled:
                return

    async def handle(self, ws: Any, frame: bytes | str) -> bool:
        """One frame as received (live or from a recording); False when the listenKey expired."""
        if self.recorder is not None:
            self.recorder.record(USER, "", frame)
        try:
            text = codec.ungzip_frame(frame)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            self._unreadable(repr(frame[:_RAW_LOG_CHARS]), f"damaged frame ({type(exc).__name__})", "gzip")
            return True
        if text == "Ping":
            await ws.send("Pong")
            return True
        self.last_data_ms = self.clock.monotonic_ms()
        try:
            event = codec.user_event_decoder.decode(text)
        except msgspec.DecodeError as exc:
            if text.lstrip().startswith("{") and not _EVENT.search(text) and '"code"' in text:
                self.bad_frames += 1  # a server's answer or notice (no event in it): nothing was missed
                log.warning("user stream notice: %.300s", redact(text, self.key))
                return True
            kind = _EVENT.search(text)
            self._unreadable(text, str(exc), kind[1] if kind else "not an event")
            return True
        if isinstance(event, codec.ListenKeyExpired):
            log.warning("listenKey expired: creating a new one")
            self.key = None
            self._expired.set()
            return False
        if isinstance(event, codec.AccountConfigUpdate) and self.on_config is not None:
            self.on_config(event.ac)
        try:
            core_events = translate(event, self.book, hedge=self.hedge)
        except (ValueError, ArithmeticError) as exc:  # the codec checks numbers: this is a last line of defence
            self._unreadable(text, f"{type(exc).__name__}: {exc}", event.__class__.__name__)
            return True
        for core_event in core_events:
            self.on_event(core_event)
        if isinstance(event, codec.AccountUpdate) and event.a.m == "FUNDING_FEE" and self.on_funding is not None:
            self.on_funding(event.T or event.E)
        return True

    def _unreadable(self, raw: str, why: str, kind: str) -> None:
        """A push that may have been an event and could not be read: counted, logged, reported."""
        self.bad_frames += 1
        self.unreadable += 1
        symbol = _SYMBOL.search(raw)
        if kind not in self._logged_kinds:
            self._logged_kinds.add(kind)
            log.warning("unreadable user frame #%d (%s: %s); reconciling over REST. Raw frame: %s", self.unreadable,
                        kind, why, redact(raw[:_RAW_LOG_CHARS], self.key))
        else:
            log.debug("unreadable user frame #%d (%s: %s)", self.unreadable, kind, why)
        if self.unreadable >= self.unreadable_limit and self.entries_blocked is None:
            self.entries_blocked = (f"{self.unreadable} user-stream pushes could not be read: no new entries on this "
                                    f"account until a restart (exits and stops still work; the first raw frame of "
                                    f"each kind is in the log)")
            log.error("%s", self.entries_blocked)
        if self.on_unreadable is not None:
            self.on_unreadable(symbol[1] if symbol else None)

    async def _renew_forever(self) -> None:
        """Extend the key every ``renew_s``; a key the exchange no longer knows is replaced."""
        while True:
            await self.clock.sleep(self.renew_s)
            await self.renew_once()

    async def renew_once(self) -> None:
        key = self.key
        if key is None:
            return
        try:
            alive = await self.rest.extend_listen_key(key)
        except TransportError as exc:
            log.warning("listenKey renewal failed (%s); trying again at the next renewal", exc)
            return
        if alive:
            self.key_ms = self.clock.monotonic_ms()
        else:
            log.warning("listenKey unknown to the exchange: creating a new one")
            self.key = None
            self._expired.set()
