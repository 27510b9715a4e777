"""The market stream's reconnects (websockets' own iterator, every failed connect retried) and the public seams
a replay feeds it through (``handle``, ``connected_again``, a RestClient's injected limiter)."""

from __future__ import annotations

import asyncio
import itertools
import json
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidURI

from gatebot.core.clock import LiveClock, VirtualClock
from gatebot.core.events import CandleClosed
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.market_stream import MarketStream, _retry_connect, reconnect_delays
from gatebot.exchanges.bingx.rest import RateLimiter, RestClient, TransportError
from tests.helpers import until

STREAMS = [("BTC-USDT", "5m")]


async def _no_candles(symbol: str, interval: str, start: int, end: int) -> list[CandleClosed]:
    return []


def test_reconnect_delays_double_from_a_tenth_of_a_second_to_thirty_with_jitter() -> None:
    delays = list(itertools.islice(reconnect_delays(), 14))
    for i, delay in enumerate(delays):
        base = min(0.1 * 2**i, 30.0)
        assert 0.5 * base <= delay <= 1.5 * base, (i, delay)
    assert max(delays) <= 45.0


def test_every_failed_connect_is_retried_but_a_bad_url_is_given_up() -> None:
    assert _retry_connect(OSError("refused")) is None
    assert _retry_connect(TimeoutError()) is None
    bad = InvalidURI("http://x", "not a websocket URI")
    assert _retry_connect(bad) is bad


def test_a_gateway_that_refuses_the_handshake_with_429_is_retried_and_the_stream_resubscribes() -> None:
    """websockets' default gives up on an HTTP 429; the market stream must not: it retries (backing off),
    subscribes on the connection that opens, and counts as connected once every subscription is answered."""
    attempts: list[str] = []
    subscribed: list[str] = []

    def process_request(connection: ServerConnection, request: Any) -> Any:
        attempts.append(request.path)
        if len(attempts) == 1:
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "slow down\n")
        return None

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            sub = json.loads(message)
            subscribed.append(sub["dataType"])
            await ws.send(json.dumps({"id": sub["id"], "code": 0, "msg": ""}))

    async def go() -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=process_request, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            stream = MarketStream(f"ws://127.0.0.1:{port}/market", STREAMS, _no_candles, LiveClock(),
                                  on_candle=lambda c: None, grace_s=None)
            task = asyncio.create_task(stream.run())
            try:
                await until(stream.connected.is_set, "subscribed after the refused handshake", task=task)
                assert len(attempts) == 2 and stream.connections == 1
                assert subscribed == ["BTC-USDT@kline_5m"]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


class _Ws:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)


def test_a_replay_feeds_the_stream_through_its_public_seams() -> None:
    """``connected_again`` with the recorded subscription ids: their answers (fed by ``handle``) make the
    stream connected; a second connection reports the reconnect; ``Ping`` is answered."""
    reconnects: list[int] = []

    async def go() -> None:
        stream = MarketStream("replay:", STREAMS, _no_candles, VirtualClock(0), on_candle=lambda c: None,
                              grace_s=None, on_reconnect=lambda: reconnects.append(1))
        ws = _Ws()
        stream.connected_again({"r1": "BTC-USDT@kline_5m"})
        assert not stream.connected.is_set()
        await stream.handle(ws, codec.encoder.encode({"id": "r1", "code": 0, "msg": ""}).decode())
        assert stream.connected.is_set() and reconnects == []
        stream.connected_again({"r2": "BTC-USDT@kline_5m"})
        assert reconnects == [1] and stream.connections == 2
        await stream.handle(ws, codec.gzip_frame("Ping"))
        assert ws.sent == ["Pong"]

    asyncio.run(go())


def test_a_rest_client_paces_with_the_limiter_it_is_given() -> None:
    taken: list[str] = []

    class Counting:
        async def take(self, group: str) -> None:
            taken.append(group)

    clock = LiveClock()
    assert isinstance(RestClient("http://127.0.0.1:9", "k", "s", clock=clock).limiter, RateLimiter)
    rest = RestClient("http://127.0.0.1:9", "k", "s", clock=clock, limiter=Counting(), query_retries=0)

    async def go() -> None:
        try:
            with pytest.raises(TransportError):  # nothing listens on port 9
                await rest.start()  # the server time: a public request of the market group
        finally:
            await rest.close()

    asyncio.run(go())
    assert taken == ["market"]
