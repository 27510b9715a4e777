"""Signed REST over one kept-alive aiohttp session: envelope checks, typed errors, rate-limit budgets.

Every reply's ``code`` is checked (HTTP 200 can carry an error). A timeout, a dropped connection or a
5xx is reported as :class:`TransportError`: for a query it is retried a few times, like every reply
BingX marks retryable (busy, rate limits, timestamp); for an order submission the caller turns it into
``OrderUnknown`` and resolves it by querying the client id, never by sending again.

Timestamps are the exchange's clock: the server time measured at start, carried forward by the
monotonic clock, so a stepped wall clock (NTP, a user setting the time) does not get requests refused
for their timestamp; a refusal for timestamp (100421) re-measures it, and an order write refused so is
sent again once (refused unprocessed, it cannot have run). The request budgets count monotonic time too:
a wall clock stepped back does not block requests for the length of the step.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Protocol, TypeVar

import aiohttp
import msgspec

from gatebot.core.clock import Clock
from gatebot.core.exchange import ExchangeError
from gatebot.core.recording import REST, SEND
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.auth import signed_query
from gatebot.exchanges.bingx.constants import ENDPOINT_GROUP, LISTEN_KEY, RATE_LIMITS, RECV_WINDOW_MS, SERVER_TIME
from gatebot.exchanges.bingx.errors import BingXError, RateLimited, TimestampError, UnreadableReply, error_for

log = logging.getLogger("gatebot.bingx.rest")
T = TypeVar("T")
_UNSIGNED = ("timestamp=", "recvWindow=", "signature=")


def request_key(method: str, url: str, base_url: str) -> str:
    """A request as recordings name it: method, path and parameters, without time and signature."""
    path, _, query = url.removeprefix(base_url).partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith(_UNSIGNED)]
    return f"{method} {path}" + (f"?{'&'.join(kept)}" if kept else "")


class TransportError(ExchangeError):
    """No usable reply (timeout, connection lost, HTTP 5xx): the request may or may not have run."""

    retryable = True


class TokenBucket:
    """A client-side request budget for one endpoint group."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock.monotonic_ms()
        self.waits = 0
        """Requests that had to wait for the budget (the metrics' rate-limit waits)."""

    async def take(self) -> None:
        waited = False
        while True:
            now = self.clock.monotonic_ms()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) / 1000 * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            if not waited:
                waited = True
                self.waits += 1
            # at least the clock's 1 ms step: a shorter sleep may leave the ms reading (and the tokens) unchanged
            await self.clock.sleep(max((1 - self.tokens) / self.rate, 0.001))


class Limiter(Protocol):
    """Paces requests by endpoint group (``constants.ENDPOINT_GROUP``: market, order, query, account)."""

    async def take(self, group: str) -> None:
        """Return once a request of ``group`` may go out."""


class RateLimiter:
    """BingX's request budgets (``constants.RATE_LIMITS``, a group's rate raised by ``rate_limits``), one
    :class:`TokenBucket` per endpoint group, on the monotonic clock."""

    def __init__(self, clock: Clock, rate_limits: dict[str, float] | None = None) -> None:
        budgets = dict(RATE_LIMITS)
        for group, rate in (rate_limits or {}).items():
            budgets[group] = (rate, max(rate, budgets[group][1]))
        self.buckets = {group: TokenBucket(rate, burst, clock) for group, (rate, burst) in budgets.items()}

    async def take(self, group: str) -> None:
        await self.buckets[group].take()


class RestClient:
    def __init__(self, base_url: str, api_key: str, secret: str, *, clock: Clock, timeout_s: float = 10.0,
                 recv_window_ms: int = RECV_WINDOW_MS, query_retries: int = 3,
                 rate_limits: dict[str, float] | None = None, limiter: Limiter | None = None,
                 recorder: Any = None) -> None:
        """``limiter`` paces the requests (default: a :class:`RateLimiter` of BingX's budgets with
        ``rate_limits``); a replay, whose requests the live session already paced, passes one that never waits."""
        self.base_url = base_url.rstrip("/")
        self.recorder = recorder
        """A core.recording.Recorder that gets every reply and every state-changing request (None: none)."""
        self._key = api_key
        self._secret = secret
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.recv_window_ms = recv_window_ms
        self.query_retries = query_retries
        self.offset_ms = 0
        """Server time minus the local monotonic reading (ms), measured by :meth:`sync_time`."""
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        """Requests sent whose reply is not read yet (an embedded lockstep simulator waits for them)."""
        self.limiter = limiter if limiter is not None else RateLimiter(clock, rate_limits)
        self.errors: dict[str, int] = {}
        """Failed requests by BingX code (``transport``: no usable reply; ``unreadable``: a reply not understood)."""

    def __repr__(self) -> str:  # never the secret
        return f"RestClient({self.base_url!r})"

    async def start(self) -> None:
        """Open the session and measure the server clock; a start that fails closes the session again (left
        open, aiohttp says "Unclosed client session" after the error at exit)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=False,  # no key: public only
                                                  headers={"X-BX-APIKEY": self._key} if self._key else {})
        try:
            await self.sync_time()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sync_time(self) -> None:
        """Measure the server clock against the monotonic clock (BingX refuses requests outside a 5 s
        window): :meth:`server_ms` is then the exchange's time whatever the wall clock does."""
        before = self.clock.monotonic_ms()
        data = await self.public(SERVER_TIME, {}, codec.ServerTime)
        after = self.clock.monotonic_ms()
        self.offset_ms = data.serverTime - (before + after) // 2

    def server_ms(self) -> int:
        """The exchange's clock now, as measured (the timestamp of signed requests)."""
        return self.clock.monotonic_ms() + self.offset_ms

    # --- requests ----------------------------------------------------------------------------

    async def public(self, path: str, params: dict[str, Any], type: type[T]) -> T:
        return await self._retrying("GET", path, params, type, signed=False)

    async def query(self, path: str, params: dict[str, Any], type: type[T]) -> T:
        """A signed GET (idempotent: transport errors and rate limits are retried)."""
        return await self._retrying("GET", path, params, type, signed=True)

    async def write(self, method: str, path: str, params: dict[str, Any], type: type[T]) -> T:
        """A signed state-changing request: sent once; a transport error propagates as such. Refused for
        its timestamp, it was not processed: the clock is re-measured and it is sent once more."""
        try:
            return await self._request(method, path, params, type, signed=True)
        except TimestampError as exc:
            log.warning("%s %s refused for its timestamp (%s); re-measuring the exchange clock", method, path, exc)
            await self.sync_time()
            return await self._request(method, path, params, type, signed=True)

    async def _retrying(self, method: str, path: str, params: dict[str, Any], type: type[T], *, signed: bool) -> T:
        """An idempotent request, sent again after a backoff on any reply that says "try again" (a lost
        reply, a 5xx, and every BingX code marked retryable: busy, rate limit, timestamp)."""
        delay = 0.2
        for attempt in range(self.query_retries + 1):
            try:
                return await self._request(method, path, params, type, signed=signed)
            except (TransportError, BingXError) as exc:
                if attempt == self.query_retries or not getattr(exc, "retryable", True):
                    raise
                if isinstance(exc, TimestampError):
                    await self.sync_time()
                said = str(exc) if path in str(exc) else f"{method} {path}: {exc}"  # the path once
                log.warning("%s; retrying in %.1f s", said, delay)
                await self.clock.sleep(delay * (1 + random.random() / 2))
                delay *= 2
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, params: dict[str, Any], type: type[T], *, signed: bool) -> T:
        await self.limiter.take(ENDPOINT_GROUP.get(path, "query"))
        if signed:
            params = {**params, "timestamp": self.server_ms(), "recvWindow": self.recv_window_ms}
            query = signed_query(params, self._secret)
        else:
            query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        if method != "GET" and self.recorder is not None:
            self.recorder.record(SEND, request_key(method, url, self.base_url), b"")
        try:
            return self._decode(await self._send(method, url, path), path, type)
        except (BingXError, TransportError) as exc:
            code = "unreadable" if isinstance(exc, UnreadableReply) else \
                str(exc.code) if isinstance(exc, BingXError) else "transport"
            self.errors[code] = self.errors.get(code, 0) + 1
            raise

    async def _send(self, method: str, url: str, path: str) -> bytes:
        assert self._session is not None, "RestClient.start() first"
        self.in_flight += 1
        try:
            async with self._session.request(method, url) as resp:
                body = await resp.read()
                if self.recorder is not None:
                    self.recorder.record(REST, request_key(method, url, self.base_url), body, resp.status)
                return self.check_status(method, path, resp.status, body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            if self.recorder is not None:
                self.recorder.record(REST, request_key(method, url, self.base_url), f"{type(exc).__name__}", -1)
            raise TransportError(f"{method} {path}: {type(exc).__name__} {exc}".strip()) from exc
        finally:
            self.in_flight -= 1

    @staticmethod
    def check_status(method: str, path: str, status: int, body: bytes) -> bytes:
        """The reply body, or the error its HTTP status means (also used by replays)."""
        if status == 429 or status == 418:
            raise RateLimited(100410, f"HTTP {status}", path=path)
        if status >= 500:
            raise TransportError(f"{method} {path}: HTTP {status}")
        if status >= 400 and not body.startswith(b"{"):
            raise BingXError(status, f"HTTP {status}", path=path)
        return body

    @staticmethod
    def _decode(body: bytes, path: str, type: type[T]) -> T:
        """The reply's ``data`` as ``type`` (lax: codec.py), the typed error its ``code`` means, or
        :class:`UnreadableReply` for anything else (which, for a write, is an unknown outcome)."""
        try:
            env = codec.envelope_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise UnreadableReply(f"unreadable reply: {body[:200]!r}", path=path) from exc
        if env.code != 0:
            raise error_for(env.code, env.msg or "", path=path)
        try:
            return codec.read(env.data, type)
        except msgspec.DecodeError as exc:
            raise UnreadableReply(f"unexpected reply shape: {exc}", path=path) from exc

    # --- listenKey (bare replies, key header only) ---------------------------------------------

    async def listen_key(self) -> str:
        await self.limiter.take("account")
        body = await self._send("POST", f"{self.base_url}{LISTEN_KEY}", LISTEN_KEY)
        try:  # bare ({"listenKey": ...}) in every capture; an envelope around it is read too
            return codec.decoder(codec.ListenKey).decode(body).listenKey
        except msgspec.DecodeError:
            pass
        try:
            env = codec.envelope_decoder.decode(body)
        except msgspec.DecodeError:  # the body may hold a key: never shown
            raise UnreadableReply(f"unreadable listenKey reply ({len(body)} bytes)", path=LISTEN_KEY) from None
        if env.code != 0:
            raise error_for(env.code, env.msg or "", path=LISTEN_KEY)
        try:
            return codec.read(env.data, codec.ListenKey).listenKey
        except msgspec.DecodeError:
            raise UnreadableReply("listenKey reply without a key", path=LISTEN_KEY) from None

    async def extend_listen_key(self, key: str) -> bool:
        """True when extended; False when the key no longer exists (create a new one)."""
        await self.limiter.take("account")
        assert self._session is not None
        try:
            async with self._session.put(f"{self.base_url}{LISTEN_KEY}?listenKey={key}") as resp:
                await resp.read()
                if resp.status == 404:
                    return False
                if resp.status >= 500:
                    raise TransportError(f"PUT {LISTEN_KEY}: HTTP {resp.status}")
                return True
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransportError(f"PUT {LISTEN_KEY}: {type(exc).__name__}") from exc
