"""Real BingX traffic, as public clients keep it (tests/captures/, docs/bingx-wire.md), read by the project's
own decoders: every capture must decode, to exact values (ids as ints, prices as Decimals). A capture that
does not decode fails here: the simulator was written from the same reading of the docs as the codec, so
only these replies can say the codec reads what BingX really sends."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gatebot.core.clock import LiveClock
from gatebot.core.events import OrderFilled, PositionSnapshot
from gatebot.exchanges.bingx import codec, constants, errors
from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
from gatebot.exchanges.bingx.market_stream import MarketStream
from gatebot.exchanges.bingx.rest import RestClient
from gatebot.exchanges.bingx.user_stream import OrderBook, translate
from tests.helpers import CAPTURES

FILES = sorted(CAPTURES.rglob("*.json"))
TYPES: dict[str, Any] = {
    "ServerTime": codec.ServerTime, "Contract[]": list[codec.Contract], "Kline[]": list[codec.Kline],
    "PositionMode": codec.PositionMode, "MarginType": codec.MarginType, "Raw": msgspec.Raw,
    "LeverageGet": codec.LeverageGet, "LeverageSet": codec.LeverageSet, "OrderReply": codec.OrderReply,
    "OrderList": codec.OrderList, "Position[]": list[codec.Position], "Balance[]": list[codec.Balance],
    "FillHistory": codec.FillHistory,
}
EVENTS = {"OrderFilled": OrderFilled, "PositionSnapshot": PositionSnapshot}
_ADAPTER = BingXAdapter(BingXOptions(), hedge_mode=False, clock=LiveClock())


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def resolve(obj: Any, path: str, client_id: str | None = None) -> Any:
    """``order.orderId``, ``[0].leverage``, ``orders[0].state.status`` (``state``: the adapter's OrderState)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            obj = obj[int(part[1:-1])]
        elif part == "state":
            obj = _ADAPTER._state(obj, client_id if client_id is not None else obj.client_id)
        elif isinstance(obj, dict):
            obj = obj[part]
        else:
            obj = getattr(obj, part)
    return obj


def check(decoded: Any, expect: dict[str, Any]) -> None:
    client_id = expect.get("as_client_id")
    for path, want in expect.get("fields", {}).items():
        got = resolve(decoded, path, client_id)
        assert got == want and type(got) is type(want), f"{path}: {got!r} ({type(got).__name__}), expected {want!r}"
    for path, want in expect.get("decimals", {}).items():
        got = resolve(decoded, path, client_id)
        assert codec.dec(got) == Decimal(want), f"{path}: {got!r} is not {want}"


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 60
    for path in FILES:
        doc = load(path)
        assert doc["source"] and doc["captured"] and doc["endpoint"] and isinstance(doc["body"], str), path.name


@pytest.mark.parametrize("path", [f for f in FILES if load(f)["kind"] == "rest"], ids=lambda p: p.stem)
def test_every_rest_capture_decodes_to_exact_values(path: Path) -> None:
    doc = load(path)
    expect = doc["expect"]
    _, _, url_path = doc["endpoint"].partition(" ")
    if expect["type"] == "ListenKey":  # bare: read the way RestClient.listen_key reads it
        decoded: Any = codec.decoder(codec.ListenKey).decode(doc["body"].encode())
    else:
        decoded = RestClient._decode(doc["body"].encode(), url_path, TYPES[expect["type"]])
    check(decoded, expect)


@pytest.mark.parametrize("path", [f for f in FILES if load(f)["kind"] == "error"], ids=lambda p: p.stem)
def test_every_error_capture_maps_to_its_typed_error(path: Path) -> None:
    doc = load(path)
    expect = doc["expect"]
    with pytest.raises(errors.BingXError) as caught:
        RestClient._decode(doc["body"].encode(), "/any", codec.OrderReply)
    exc = caught.value
    assert type(exc).__name__ == expect["error"], f"{exc!r}"
    assert exc.code == expect["code"]
    assert exc.wrapper == expect.get("wrapper")


@pytest.mark.parametrize("path", [f for f in FILES if load(f)["kind"] == "user"], ids=lambda p: p.stem)
def test_every_user_push_capture_decodes_and_translates(path: Path) -> None:
    doc = load(path)
    expect = doc["expect"]
    event = codec.user_event_decoder.decode(doc["body"])
    check(event, expect)
    translated = expect["translated"]
    book = OrderBook()
    for order_id, client_id in translated.get("known", {}).items():
        book.remember(int(order_id), client_id)
    out = translate(event, book, hedge=False)
    assert len(out) == len(translated["events"]), out
    for got, want in zip(out, translated["events"], strict=True):
        assert type(got) is EVENTS[want["type"]]
        for name, value in want.items():
            if name == "type":
                continue
            actual = getattr(got, name)
            if isinstance(actual, Decimal):
                assert actual == Decimal(value), f"{name}: {actual} != {value}"
            else:
                assert actual == value and type(actual) is type(value), f"{name}: {actual!r} != {value!r}"


class _WS:
    async def send(self, data: str) -> None:  # the Pong of a Ping
        pass


@pytest.mark.parametrize("path", [f for f in FILES if load(f)["kind"] == "market"], ids=lambda p: p.stem)
def test_every_market_capture_is_read_by_the_market_stream(path: Path) -> None:
    doc = load(path)
    expect = doc["expect"]
    if expect["type"] == "WsKline":  # one element of a kline push's data
        check(msgspec.json.decode(doc["body"], type=codec.WsKline, strict=False), expect)
        return
    marks: list[tuple[str, float]] = []

    async def no_candles(*_: Any) -> list[Any]:
        return []

    async def run() -> MarketStream:
        symbol, _, interval = expect["stream"].partition("@kline_")
        stream = MarketStream("ws://127.0.0.1:9", [(symbol, interval)], no_candles, LiveClock(),
                              on_candle=lambda c: None, on_mark=lambda s, p: marks.append((s, p)), grace_s=None)
        stream.start_after(symbol, interval, None)
        rest = stream.take(_WS(), codec.gzip_frame(doc["body"]))
        if rest is not None:
            await rest
        return stream

    stream = asyncio.run(run())
    assert stream.bad_frames == expect.get("bad_frames", 0)
    if "forming" in expect:
        forming = next(iter(stream.assemblers.values())).forming
        assert forming is not None
        want = expect["forming"]
        assert forming.open_time == want["open_time"]
        for name in ("open", "high", "low", "close", "volume"):
            assert getattr(forming, name) == float(want[name]), name
    if "mark" in expect:
        assert marks == [(expect["mark"][0], float(expect["mark"][1]))]


# What the adapter calls or reads, and the captures that show it; what no public capture shows is listed
# (docs/bingx-wire.md says the same): adding a capture for one of them moves it from the second set to the first.
ADAPTER_TRAFFIC = {
    f"GET {constants.SERVER_TIME}", f"GET {constants.CONTRACTS}", f"GET {constants.KLINES}",
    f"GET {constants.POSITION_MODE}", f"POST {constants.POSITION_MODE}", f"GET {constants.MARGIN_TYPE}",
    f"POST {constants.MARGIN_TYPE}", f"GET {constants.LEVERAGE}", f"POST {constants.LEVERAGE}",
    f"POST {constants.ORDER}", f"GET {constants.ORDER}", f"DELETE {constants.ORDER}", f"GET {constants.OPEN_ORDERS}",
    f"GET {constants.POSITIONS}", f"GET {constants.BALANCE}", f"GET {constants.FILL_HISTORY}",
    f"POST {constants.LISTEN_KEY}", "user stream ORDER_TRADE_UPDATE", "user stream ACCOUNT_UPDATE",
    "user stream listenKeyExpired", "market stream",
}
UNCAPTURED = {
    f"GET {constants.FILL_HISTORY}": "no public capture; allFillOrders replies (fill_orders) are read by the same type",
    "user stream listenKeyExpired": "no public BingX capture",
}


def test_every_reply_and_push_the_adapter_reads_has_a_capture_or_is_listed_as_uncaptured() -> None:
    captured = {load(f)["endpoint"] for f in FILES}
    assert ADAPTER_TRAFFIC - set(UNCAPTURED) <= captured, ADAPTER_TRAFFIC - set(UNCAPTURED) - captured
    assert not set(UNCAPTURED) & captured, "a capture arrived: take it off UNCAPTURED (and out of the docs' list)"


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
