"""The websocket side (protocol page §5, §6): market stream and user stream on one port.

``/swap-market``: subscribe/unsubscribe with acks, kline and mark-price pushes. ``/swap-market?listenKey=K``:
the account's pushes for a live key. Every server frame is gzip; the server sends ``Ping`` every few
seconds and drops a connection after 3 unanswered ones. Each connection has one writer task fed by a
queue, so pushes and pings never interleave badly and ``flush()`` can wait for delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gatebot.core.intervals import INTERVALS
from gatebot.exchanges.bingx.codec import encoder, gzip_frame

if TYPE_CHECKING:
    from gatebot.simulators.bingx.server import BingXSimulator

Kind = Literal["market", "user"]
KLINE_TOPICS = frozenset(f"kline_{interval}" for interval in INTERVALS)
PING = gzip_frame("Ping")
MAX_MISSED_PONGS = 3


class Conn:
    def __init__(self, ws: ServerConnection, kind: Kind, listen_key: str = "",
                 held: deque[tuple[Conn, bytes]] | None = None) -> None:
        self.ws = ws
        self.held = held
        """Lockstep: where frames wait until the driver releases them (``StreamServer.release``)."""
        self.kind = kind
        self.listen_key = listen_key
        self.subs: set[str] = set()
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.missed = 0
        self.expired = False
        self.silent = False
        """Fault: pushes are lost, ``Ping`` goes on (a stream gone quiet on a live socket)."""
        self.frozen = False
        """Fault: nothing goes out, nothing read is acted on, the socket stays open (TCP half-open)."""

    def send(self, frame: bytes) -> None:
        if self.frozen or (self.silent and frame is not PING):
            return
        if self.held is not None:
            self.held.append((self, frame))
        else:
            self.outbox.put_nowait(frame)


class ListenKeys:
    """listenKey lifecycle (§6.1): 60 min from creation or the last PUT; expiry pushes listenKeyExpired."""

    def __init__(self, streams: StreamServer) -> None:
        self.streams = streams
        self.expiry: dict[str, float] = {}

    def _ttl(self) -> float:
        return self.streams.sim.options.listen_key_ttl_s

    def create(self) -> str:
        if self.streams.sim.options.switches.listen_key_repost == "same":
            for key, until in self.expiry.items():
                if until > time.time():
                    self.expiry[key] = time.time() + self._ttl()
                    return key
        key = secrets.token_hex(32)
        self.expiry[key] = time.time() + self._ttl()
        return key

    def valid(self, key: str) -> bool:
        return self.expiry.get(key, 0.0) > time.time()

    def extend(self, key: str) -> bool:
        if not self.valid(key):
            return False
        self.expiry[key] = time.time() + self._ttl()
        return True

    def delete(self, key: str) -> bool:
        return self.expiry.pop(key, None) is not None

    def expire(self, key: str) -> None:
        self.expiry.pop(key, None)
        push = gzip_frame(encoder.encode({"e": "listenKeyExpired", "E": int(time.time() * 1000), "listenKey": key}))
        for c in list(self.streams.conns):
            if c.kind == "user" and c.listen_key == key and not c.expired:
                c.send(push)
                c.expired = True

    def expire_all(self) -> None:
        for key in list(self.expiry):
            self.expire(key)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for key in [k for k, until in self.expiry.items() if until <= now]:
                self.expire(key)


class StreamServer:
    def __init__(self, sim: BingXSimulator) -> None:
        self.sim = sim
        self.conns: set[Conn] = set()
        self.keys = ListenKeys(self)
        self.stalled_until = 0.0
        self.held: deque[tuple[Conn, bytes]] | None = deque() if sim.lockstep else None
        """Lockstep: every frame, in the order made, until released."""
        self.released = 0
        """Lockstep: frames released to the sockets so far (the driver compares it with the frames the bot read)."""
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, port: int) -> int:
        self._server = await serve(self._handler, "127.0.0.1", port, compression=None, ping_interval=None,
                                   max_size=2**20)
        self._spawn(self.keys.watch())
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- publishing ----------------------------------------------------------------------------

    def release(self) -> int:
        """Lockstep: hand the held frames of the oldest one's connection, up to a frame of another, to that
        socket (one socket keeps its order; two would race). Returns how many (0: none held)."""
        held = self.held
        if not held:
            return 0
        conn = held[0][0]
        n = 0
        while held and held[0][0] is conn:
            frame = held.popleft()[1]
            if conn in self.conns:
                conn.outbox.put_nowait(frame)
                n += 1
        self.released += n
        return n or self.release()

    def publish_market(self, topic: str, obj: dict[str, Any]) -> None:
        subscribers = [c for c in self.conns if c.kind == "market" and topic in c.subs]
        if subscribers:
            data = gzip_frame(encoder.encode(obj))
            for c in subscribers:
                c.send(data)

    def publish_user(self, pushes: list[dict[str, Any]]) -> None:
        """Queue pushes to every user socket with a live key; a disconnected stream simply misses them."""
        targets = [c for c in self.conns if c.kind == "user" and not c.expired and self.keys.valid(c.listen_key)]
        if not targets or not pushes:
            return
        encoded: dict[int, bytes] = {}  # a duplicated push (a fault) goes out byte for byte the same
        frames = [encoded.get(id(p)) or encoded.setdefault(id(p), gzip_frame(self.sim.dialect.encode(p, "user")))
                  for p in pushes]
        for c in targets:
            for f in frames:
                c.send(f)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued frame was handed to its socket, at most ``timeout`` (default
        ``push_timeout_s``): a client that stopped reading must not freeze the exchange. Stalled streams
        are not waited for."""
        if self.stalled():
            return
        waits = [c.outbox.join() for c in list(self.conns)]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout or self.sim.options.push_timeout_s)

    # --- faults --------------------------------------------------------------------------------

    def drop(self, kind: Kind) -> None:
        for c in list(self.conns):
            if c.kind == kind:
                self._spawn(c.ws.close(1012, "service restart"))

    def silence(self, kind: Kind) -> None:
        """The open connections of ``kind`` lose every push from now on; pings go on. A new connection
        is healthy (the fault is the connection's, as on a real server)."""
        for c in self.conns:
            if c.kind == kind:
                c.silent = True

    def freeze(self, kind: Kind) -> None:
        """The open connections of ``kind`` go half-open: no frame, no ping, no reaction, no close."""
        for c in self.conns:
            if c.kind == kind:
                c.frozen = True

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, asyncio.get_running_loop().time() + seconds)

    def stalled(self) -> bool:
        return asyncio.get_running_loop().time() < self.stalled_until

    # --- connections ---------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        if url.path != "/swap-market":
            await ws.close(1008, "unknown path")
            return
        key = parse_qs(url.query).get("listenKey", [""])[0]
        if key and not self.keys.valid(key):
            await ws.close(1008, "listenKey does not exist")
            return
        conn = Conn(ws, "user" if key else "market", key, self.held)
        self.conns.add(conn)
        tasks = [self._spawn(self._writer(conn))]
        if not self.sim.lockstep:  # lockstep: the bot's pace, not the wall clock's, so no timed frames
            tasks.append(self._spawn(self._pinger(conn)))
        if conn.kind == "user":
            for push in self.sim.config_pushes():
                conn.send(gzip_frame(encoder.encode(push)))
            if not self.sim.lockstep:
                tasks.append(self._spawn(self._config_pusher(conn)))
        try:
            async for message in ws:
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self.conns.discard(conn)
            for t in tasks:
                t.cancel()
            while not conn.outbox.empty():  # nobody will send these: release flush()
                conn.outbox.get_nowait()
                conn.outbox.task_done()

    def _on_message(self, conn: Conn, message: str | bytes) -> None:
        if conn.frozen:
            return
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        if text.strip() == "Pong":
            conn.missed = 0
            return
        try:
            req = msgspec.json.decode(text)
        except msgspec.DecodeError:
            conn.send(gzip_frame(encoder.encode({"code": 100400, "msg": "invalid message", "timestamp":
                                                 int(time.time() * 1000)})))
            return
        if not isinstance(req, dict) or conn.kind != "market":
            conn.send(gzip_frame(encoder.encode({"code": 80014, "msg": "invalid request",
                                                 "id": str(req.get("id", "")) if isinstance(req, dict) else ""})))
            return
        rid, op, topic = str(req.get("id", "")), req.get("reqType"), str(req.get("dataType", ""))
        if op not in ("sub", "unsub") or not self._known_topic(topic):
            conn.send(gzip_frame(encoder.encode({"id": rid, "code": 80015, "msg": f"dataType not supported: {topic}",
                                                 "dataType": topic, "data": None})))
            return
        if op == "sub":
            conn.subs.add(topic)
        else:
            conn.subs.discard(topic)
        conn.send(gzip_frame(encoder.encode({"id": rid, "code": 0, "msg": "", "dataType": "", "data": None})))

    def _known_topic(self, topic: str) -> bool:
        symbol, _, kind = topic.partition("@")
        return symbol in self.sim.markets and (kind == "markPrice" or kind in KLINE_TOPICS)

    def kline_intervals(self, symbol: str) -> set[str]:
        """The simulated interval and every other one a market socket subscribed to for ``symbol``."""
        prefix = f"{symbol}@kline_"
        subscribed = {t[len(prefix):] for c in self.conns if c.kind == "market" for t in c.subs if t.startswith(prefix)}
        return subscribed | {self.sim.options.interval}

    async def _writer(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await conn.outbox.get()
            try:
                wait = self.stalled_until - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await conn.ws.send(data)
            except ConnectionClosed:
                pass
            finally:
                conn.outbox.task_done()

    async def _pinger(self, conn: Conn) -> None:
        while True:
            await asyncio.sleep(self.sim.options.ping_interval_s)
            if self.stalled() or conn.frozen:
                continue
            if conn.missed >= MAX_MISSED_PONGS:
                await conn.ws.close(1008, "pong timeout")
                return
            conn.missed += 1
            conn.send(PING)

    async def _config_pusher(self, conn: Conn) -> None:
        interval = self.sim.options.config_push_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            if not conn.expired and not self.stalled():
                for push in self.sim.config_pushes():
                    conn.send(gzip_frame(encoder.encode(push)))
