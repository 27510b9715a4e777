"""Fuzzing (hypothesis) of every decoder that meets the outside world: websocket frames (market and user
streams), REST replies, configs, candle CSVs and recordings. >= 10,000 generated inputs each; nothing may
escape but the documented typed error; bad frames are counted and logged, never fatal to a stream."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import string
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatebot.core import recording
from gatebot.core.clock import LiveClock
from gatebot.exchanges.bingx import codec
from gatebot.exchanges.bingx.errors import BingXError
from gatebot.exchanges.bingx.market_stream import MarketStream
from gatebot.exchanges.bingx.rest import RestClient
from gatebot.exchanges.bingx.user_stream import OrderBook, translate

N = int(os.environ.get("GATEBOT_FUZZ_EXAMPLES", "10000"))
"""Per codec; CI runs the default. A smaller number only for a quick local look."""
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# --- building blocks: JSON values shaped like BingX's, with hostile leaves ----------------------------

_text = st.text(alphabet=string.printable + "éü€\x00", max_size=12)
_numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["0", "1.5", "-3", "1e400", "NaN", "inf", "", " ", "0x10", "1,5", "9" * 60]))
_leaf = st.one_of(st.none(), st.booleans(), _numbers, _text)
_json = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(_text, inner, max_size=4)), max_leaves=12)


def _obj(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with (a random subset of) the given fields, each a plausible or a hostile value."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, _leaf) for k, v in fields.items()})


_kline = _obj({"o": _numbers, "h": _numbers, "l": _numbers, "c": _numbers, "v": _numbers,
               "T": st.integers(-(2**63), 2**64)})
_market_push = _obj({"id": _text, "code": st.integers(-5, 5), "msg": _text,
                     "dataType": st.sampled_from(["BTC-USDT@kline_5m", "BTC-USDT@markPrice", "ETH-USDT@kline_1m", ""]),
                     "s": _text, "data": st.one_of(st.lists(_kline, max_size=3), _kline,
                                                   _obj({"e": _text, "E": _numbers, "s": _text, "p": _numbers}),
                                                   _json)})
_order = _obj({"s": st.just("BTC-USDT"), "c": _text, "i": st.integers(-5, 2**64),
               "S": st.sampled_from(["BUY", "SELL", "X"]),
               "o": st.sampled_from(["MARKET", "STOP_MARKET", "LIMIT", ""]), "q": _numbers, "p": _numbers,
               "ap": _numbers, "x": st.sampled_from(["NEW", "TRADE", "CANCELED", "EXPIRED", "CALCULATED", ""]),
               "X": st.sampled_from(["NEW", "FILLED", "PARTIALLY_FILLED", "CANCELED", "EXPIRED", "FAILED", ""]),
               "z": _numbers, "l": _numbers, "L": _numbers, "n": _numbers, "rp": _numbers, "sp": _numbers,
               "ps": st.sampled_from(["LONG", "SHORT", "BOTH", ""]), "ro": st.booleans(), "ti": _text,
               "T": _numbers, "tid": _text, "wt": _text})
_user_event = st.one_of(
    _obj({"e": st.sampled_from(["ORDER_TRADE_UPDATE", "TRADE_UPDATE"]), "E": _numbers, "o": _order}),
    _obj({"e": st.just("ACCOUNT_UPDATE"), "E": _numbers, "a": _obj({
        "m": _text, "B": st.lists(_obj({"a": st.sampled_from(["USDT", "VST", "BTC"]), "wb": _numbers, "cw": _numbers,
                                        "bc": _numbers}), max_size=2),
        "P": st.lists(_obj({"s": _text, "pa": _numbers, "ep": _numbers, "up": _numbers, "mt": _text,
                            "ps": st.sampled_from(["LONG", "SHORT", "BOTH", "X"])}), max_size=2)})}),
    _obj({"e": st.just("ACCOUNT_CONFIG_UPDATE"), "E": _numbers, "ac": _json}),
    _obj({"e": st.just("listenKeyExpired"), "E": _numbers, "listenKey": _text}),
    _json)


def _encode(obj: Any) -> str | None:
    try:
        return codec.encoder.encode(obj).decode()
    except (TypeError, OverflowError, ValueError):  # floats msgspec refuses, ints too wide
        return None


def _frames(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | str]:
    """What a websocket may deliver: gzip of a structured push, raw text, raw bytes, broken gzip."""
    structured = objects.map(lambda o: _encode(o) or "{}")
    return st.one_of(
        structured.map(codec.gzip_frame),
        structured,
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: codec.gzip_frame(b)),
        structured.map(lambda t: codec.gzip_frame(t)[: max(1, len(t) // 3)]),  # truncated gzip
        st.just(codec.gzip_frame("Ping")),
        st.binary(max_size=16).map(lambda b: gzip.compress(b"\xff\xfe" + b)),  # gzip of invalid UTF-8
    )


class _FakeWS:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)


async def _no_candles(symbol: str, interval: str, start: int, end: int) -> list[Any]:
    return []


# --- websocket frames ----------------------------------------------------------------------------


def test_market_frames_never_break_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    candles: list[Any] = []
    marks: list[Any] = []

    async def make() -> MarketStream:
        return MarketStream("ws://127.0.0.1:9", [("BTC-USDT", "5m")], _no_candles, LiveClock(),
                            on_candle=candles.append, on_mark=lambda s, p: marks.append(p), grace_s=None)

    stream = loop.run_until_complete(make())
    stream.start_after("BTC-USDT", "5m", 0)
    ws = _FakeWS()
    seen = [0]

    @FUZZ
    @given(_frames(_market_push))
    def feed(frame: bytes | str) -> None:
        seen[0] += 1
        loop.run_until_complete(stream.handle(ws, frame))  # type: ignore[arg-type]

    caplog.set_level(logging.WARNING, "gatebot")
    try:
        feed()
    finally:
        loop.close()
    assert seen[0] >= N
    assert stream.bad_frames > 0 and "market frame" in caplog.text, "bad frames are counted and logged"


@FUZZ
@given(_frames(_user_event))
def test_user_frames_decode_or_raise_only_decode_errors_and_translate_never_crashes(frame: bytes | str) -> None:
    try:
        text = codec.ungzip_frame(frame)
    except (OSError, EOFError, UnicodeDecodeError, ValueError):
        return  # what UserStream counts as a bad frame (see the next test)
    try:
        event = codec.user_event_decoder.decode(text)
    except msgspec.DecodeError:
        return
    translate(event, OrderBook(), hedge=False)
    translate(event, OrderBook(), hedge=True)


def test_user_stream_reader_counts_bad_frames_and_keeps_reading(caplog: pytest.LogCaptureFixture) -> None:
    from gatebot.exchanges.bingx.user_stream import UserStream

    events: list[Any] = []
    stream = UserStream("ws://127.0.0.1:9", None, LiveClock(), OrderBook(), hedge=False,  # type: ignore[arg-type]
                        on_event=events.append, on_reconnect=lambda: None)
    good = codec.gzip_frame(codec.encoder.encode({"e": "ACCOUNT_UPDATE", "E": 1, "a": {"m": "ORDER", "B": [
        {"a": "USDT", "wb": "10", "cw": "10", "bc": "0"}],
        "P": [{"s": "BTC-USDT", "pa": "0.1", "ep": "50", "ps": "BOTH"}]}}))
    bad = [b"\x1f\x8b\x08\x00garbage", b"\x00\x01\x02", gzip.compress(b"\xff\xfe\xfd"), "not json", "{\"e\": 1}"]

    class Frames(_FakeWS):
        def __aiter__(self) -> Any:
            async def gen() -> Any:
                for f in [*bad, good]:
                    yield f

            return gen()

    caplog.set_level(logging.INFO, "gatebot")
    asyncio.run(stream._read(Frames()))  # type: ignore[arg-type]
    assert len(events) == 1, "the good frame after the bad ones still arrives"
    assert stream.bad_frames == len(bad)
    assert "user frame" in caplog.text


# --- REST replies --------------------------------------------------------------------------------

_REPLY_TYPES: list[Any] = [codec.OrderReply, codec.OrderList, list[codec.Position], list[codec.Balance],
                           codec.FillHistory, list[codec.Kline], list[codec.Contract], codec.ServerTime,
                           codec.ListenKey, codec.LeverageGet]


@FUZZ
@given(st.one_of(
    _obj({"code": st.one_of(st.integers(-1, 2**40), st.sampled_from([0, 100410, 100500, 109400, 80016])),
          "msg": _text, "data": _json}).map(lambda o: (_encode(o) or "{}").encode()),
    st.binary(max_size=80),
    st.text(max_size=40).map(str.encode)),
    st.sampled_from(_REPLY_TYPES))
def test_rest_replies_decode_or_raise_a_bingx_error(body: bytes, kind: Any) -> None:
    with contextlib.suppress(BingXError):
        RestClient._decode(body, "/fuzz", kind)


# --- configs -------------------------------------------------------------------------------------

_VALID_CONFIG = {
    "mode": "paper", "state_dir": "state",
    "exchanges": {"paper": {"type": "paper", "options": {"balance": 1000.0}}},
    "instances": [{"name": "a", "exchange": "paper", "strategy": "sma_cross", "symbol": "BTC-USDT", "interval": "5m",
                   "leverage": 4, "params": {"fast": 3, "slow": 8}}],
}
_toml_leaf = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), _text,
                       st.sampled_from(["live", "paper", "replay", "bingx", "paper", "5m", "BTC-USDT", "api_key",
                                        "secret"]))
_toml_value = st.recursive(_toml_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(_text, inner, max_size=3)),
                           max_leaves=8)


def _mutate(draw: Any) -> dict[str, Any]:
    import copy

    cfg = copy.deepcopy(_VALID_CONFIG)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from([("mode",), ("state_dir",), ("exchanges", "paper", "type"),
                                     ("exchanges", "paper", "options", "balance"), ("instances", 0, "leverage"),
                                     ("instances", 0, "name"), ("instances", 0, "symbol"), ("instances", 0, "params"),
                                     ("instances", 0, "strategy"), ("instances", 0, "interval"),
                                     ("journal",), ("market",), ("plugins",), ("extra_key",),
                                     ("instances", 0, "protection"), ("exchanges", "paper", "options", "api_key")]))
        node: Any = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(_toml_value)
    return cfg


def _toml(v: Any) -> str:
    """A value as TOML (inline tables and arrays): enough for generated configs, no extra dependency."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml(x)}" for k, x in v.items()) + " }"


@st.composite
def _configs(draw: Any) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60))
    cfg = _mutate(draw)
    return "\n".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in cfg.items()).encode()


def test_configs_load_or_raise_one_config_error(tmp_path: Path) -> None:
    from gatebot.core.config import ConfigError, load_config

    path = tmp_path / "fuzz.toml"
    ok = [0, 0]

    @FUZZ
    @given(_configs())
    def one(text: bytes) -> None:
        path.write_bytes(text)
        try:
            load_config(path)
            ok[0] += 1
        except ConfigError as exc:
            assert "\n" not in str(exc), "one line"
            ok[1] += 1

    one()
    assert sum(ok) >= N and ok[0] > 0 and ok[1] > 0


# --- candle CSVs ---------------------------------------------------------------------------------

_csv_cell = st.one_of(st.integers(-10, 2**62).map(str), st.floats(allow_nan=True).map(repr),
                      st.sampled_from(["", "x", "1e309", "nan", "-0", " 1"]))


@st.composite
def _csvs(draw: Any) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=120))
    header = "timestamp,open,high,low,close,volume" if kind > 1 else draw(st.text(max_size=30))
    rows = []
    t = draw(st.integers(0, 2**40))
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            o, h, lo, c = sorted(draw(st.lists(st.floats(1, 1e6), min_size=4, max_size=4)))
            rows.append(f"{t},{lo},{c},{o},{h},{draw(st.floats(0, 1e6))}")
            t += draw(st.integers(-1, 600_000))
        else:
            rows.append(",".join(draw(st.lists(_csv_cell, min_size=0, max_size=8))))
    return ("\n".join([header, *rows]) + draw(st.sampled_from(["", "\n", "\r\n"]))).encode()


def test_candle_csvs_load_or_raise_a_candle_file_error(tmp_path: Path) -> None:
    from gatebot.core.market import CandleFileError, load_csv

    path = tmp_path / "fuzz.csv"
    seen = [0]

    @FUZZ
    @given(_csvs())
    def one(data: bytes) -> None:
        seen[0] += 1
        path.write_bytes(data)
        with contextlib.suppress(CandleFileError):
            load_csv(path)

    one()
    assert seen[0] >= N


# --- recordings ----------------------------------------------------------------------------------


def test_recordings_read_or_raise_a_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.rec"
    base = tmp_path / "base.rec"
    with recording.Recorder(base, recording.Header(kind="market")) as rec:  # type: ignore[call-arg]
        for i in range(5):
            rec.record("market", "frame", codec.gzip_frame(f'{{"i": {i}}}'), t=i)
    good = base.read_bytes()
    seen = [0]

    @FUZZ
    @given(st.one_of(st.binary(max_size=200),
                     st.tuples(st.integers(0, len(good)), st.binary(max_size=8)).map(
                         lambda t: good[: t[0]] + t[1] + good[t[0] + len(t[1]):]),
                     st.integers(0, len(good)).map(lambda n: good[:n])))
    def one(data: bytes) -> None:
        seen[0] += 1
        path.write_bytes(data)
        with contextlib.suppress(recording.RecordingError):
            list(recording.Recording(path))

    one()
    assert seen[0] >= N


# --- both dialects: what BingX sends in one era or the other reads to the same exact values ---------------

PROPERTY = settings(max_examples=max(200, N // 5), deadline=None, suppress_health_check=list(HealthCheck),
                    database=None)
_ids = st.integers(1, 2**63 - 1)
_times = st.integers(0, 2**45)
_money = st.tuples(st.integers(0, 10**12), st.integers(0, 8)).map(lambda t: Decimal(t[0]).scaleb(-t[1]))
"""Decimals of at most 15 significant digits: a JSON number that short reads back exactly (codec.dec)."""


def _json(value: Any) -> str:
    """JSON text in which a Decimal is a JSON number written plainly (how BingX writes numbers)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def _dialect(draw: Any, value: Any) -> Any:
    """One value as BingX may send it: a JSON number or the same number as a string."""
    if draw(st.booleans()):
        return value
    return format(value, "f") if isinstance(value, Decimal) else str(value)


@PROPERTY
@given(st.data(), _ids, _times, _money, _money, st.sampled_from(["NEW", "PENDING", "FILLED", "CANCELED"]),
       st.one_of(st.none(), _money), st.one_of(st.just(0), _ids), st.booleans(), st.booleans(),
       st.sampled_from(["LONG", "SHORT", "BOTH"]))
def test_order_replies_read_the_same_in_either_dialect(data: Any, order_id: int, time: int, price: Decimal,
                                                      qty: Decimal, status: str, stop: Decimal | None,
                                                      trigger: int, wrapped: bool, stop_as_text: bool,
                                                      position_side: str) -> None:
    d = lambda v: data.draw(_dialect(v))  # noqa: E731 - one draw per field: every mix of the two dialects
    order: dict[str, Any] = {"symbol": "BTC-USDT", "orderId": d(order_id), "side": "BUY", "positionSide": position_side,
                             "type": "MARKET", "origQty": d(qty), "price": d(price), "status": status,
                             "time": d(time), "updateTime": d(time + 1), "clientOrderId": "i-1-e1",
                             "triggerOrderId": d(trigger), "leverage": "5X", "someNewField": {"x": [1, "2"]}}
    if stop is not None:
        sl = {"type": "STOP_MARKET", "stopPrice": d(stop), "workingType": "MARK_PRICE"}
        order["stopLoss"] = _json(sl) if stop_as_text else sl
    else:
        order["stopLoss"] = data.draw(st.sampled_from(["", None]))
    body = _json({"code": d(0), "msg": "", "data": {"order": order} if wrapped else order})
    got = RestClient._decode(body.encode(), "/openApi/swap/v2/trade/order", codec.OrderReply).order
    assert got.orderId == order_id and type(got.orderId) is int
    assert (got.time, got.updateTime, got.trigger_id) == (time, time + 1, trigger)
    assert codec.dec(got.price) == price and got.qty == qty and got.status == status
    assert got.client_id == "i-1-e1" and got.positionSide == position_side
    if stop is not None:
        assert codec.dec(got.attached_stop["stopPrice"]) == stop
    else:
        assert got.attached_stop == {}


@PROPERTY
@given(st.data(), _ids, _times, _money, _money, _money, st.sampled_from(["LONG", "SHORT", "BOTH"]), st.booleans())
def test_fill_pushes_read_the_same_in_either_dialect(data: Any, order_id: int, time: int, qty: Decimal,
                                                    price: Decimal, fee: Decimal, ps: str, last_fields: bool) -> None:
    d = lambda v: data.draw(_dialect(v))  # noqa: E731
    o: dict[str, Any] = {"s": "BTC-USDT", "c": "", "i": d(order_id), "S": "SELL", "o": "MARKET", "q": d(qty),
                         "p": d(price), "ap": d(price), "x": "TRADE", "X": "FILLED", "N": "USDT", "n": d(-fee),
                         "T": d(time), "wt": "MARK_PRICE", "ps": ps, "rp": d(Decimal(0)), "z": d(qty)}
    if last_fields:
        o |= {"l": d(qty), "L": d(price)}
    push = codec.gzip_frame(_json({"e": "ORDER_TRADE_UPDATE", "E": d(time), "T": d(time), "o": o}))
    event = codec.user_event_decoder.decode(codec.ungzip_frame(push))
    book = OrderBook()
    book.remember(order_id, "i-1-x1")
    (fill,) = translate(event, book, hedge=ps != "BOTH")
    assert fill.order_id == order_id and type(fill.order_id) is int
    assert (fill.client_id, fill.qty, fill.price, fill.fee, fill.final) == ("i-1-x1", qty, price, fee, True)
    assert fill.ts == time


@PROPERTY
@given(st.data(), st.integers(0, 8), st.integers(0, 8), _money, st.integers(1, 150), _money, _money)
def test_contracts_and_positions_read_the_same_in_either_dialect(data: Any, price_precision: int,
                                                                qty_precision: int, min_qty: Decimal, leverage: int,
                                                                amount: Decimal, liquidation: Decimal) -> None:
    d = lambda v: data.draw(_dialect(v))  # noqa: E731
    contract = {"symbol": "BTC-USDT", "pricePrecision": d(price_precision), "quantityPrecision": d(qty_precision),
                "tradeMinQuantity": d(min_qty), "maxLongLeverage": d(leverage), "maxShortLeverage": d(leverage),
                "status": d(1), "apiStateOpen": data.draw(st.sampled_from(["true", True]))}
    (c,) = RestClient._decode(_json({"code": d(0), "data": [contract]}).encode(), "/c", list[codec.Contract])
    assert (c.pricePrecision, c.quantityPrecision, c.maxLongLeverage, c.status, c.api_open) == (
        price_precision, qty_precision, leverage, 1, True)
    assert codec.dec(c.tradeMinQuantity) == min_qty
    position = {"symbol": "BTC-USDT", "positionSide": "BOTH", "positionAmt": d(-amount), "avgPrice": d(amount),
                "positionId": d(12345), "leverage": d(leverage), "liquidationPrice": d(liquidation),
                "onlyOnePosition": data.draw(st.sampled_from([True, "true"]))}
    (p,) = RestClient._decode(_json({"code": d(0), "data": [position]}).encode(), "/p", list[codec.Position])
    assert codec.dec(p.positionAmt) == -amount and codec.dec(p.leverage) == leverage
    assert codec.dec(p.liquidationPrice) == liquidation and p.onlyOnePosition is True
