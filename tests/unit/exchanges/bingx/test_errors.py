"""BingX error replies mapped to typed errors (codes from ccxt's exception table and the captures), and what the
adapter does with each outcome of a state-changing request: a refusal is an ``OrderRejected``, anything it cannot
be sure of is ``OrderUnknown`` (resolved by querying the client id), a setting it cannot be sure of is read back."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from gatebot.core.clock import LiveClock
from gatebot.core.events import CancelOrder, OrderAccepted, OrderRejected, SubmitEntry
from gatebot.core.exchange import ExchangeError, OrderUnknown, SettingsRefused
from gatebot.exchanges.bingx import codec, constants
from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
from gatebot.exchanges.bingx.errors import (
    AuthError,
    BingXError,
    Busy,
    InvalidRequest,
    OrderNotFound,
    RateLimited,
    Refused,
    TimestampError,
    UnreadableReply,
    error_for,
    unwrap,
)
from gatebot.exchanges.bingx.rest import RestClient, TransportError

MAPPINGS = [
    # (code, msg, error class, code it reports, wrapper)
    (109425, "NOPE-USDT not exist, please verify it ...", InvalidRequest, 109425, None),  # unknown symbol
    (100421, "This pair is currently restricted from API trading", Refused, 100421, None),
    (100421, "Null timestamp or timestamp mismatch", TimestampError, 100421, None),
    (80012, '{"Code":101253,"Msg":"margin is not enough"}', Refused, 101253, 80012),
    (80012, "margin is not enough", Refused, 80012, None),
    (80012, "The current system is busy, please try again later", Busy, 80012, None),
    (101204, "", Refused, 101204, None),
    (101204, '{"Code":101253,"Msg":"Insufficient margin"}', Refused, 101253, 101204),
    (100414, "Code: 100414, Msg: risk control check fail,code(1)", Refused, 100414, None),
    (109421, "order not exist", OrderNotFound, 109421, None),
    (80016, "order does not exist", OrderNotFound, 80016, None),
    (109414, "order not exist", OrderNotFound, 109414, None),
    (80018, "order is already filled, The order doesn't exist", OrderNotFound, 80018, None),
    (100410, "The current system is busy, please try again later", RateLimited, 100410, None),
    (100500, "The current system is busy, please try again later", Busy, 100500, None),
    (100413, "Incorrect apiKey, please check your valid api key", AuthError, 100413, None),
    (80014, "Invalid parameters", InvalidRequest, 80014, None),
    (80012, '{"Code":999999,"Msg":"something new"}', Busy, 80012, None),  # wrapped code unknown: the outer decides
    (424242, "a code nobody documented", BingXError, 424242, None),
]


@pytest.mark.parametrize(("code", "msg", "kind", "reported", "wrapper"), MAPPINGS,
                         ids=[f"{m[0]}-{m[2].__name__}-{i}" for i, m in enumerate(MAPPINGS)])
def test_each_error_code_maps_to_its_typed_error(code: int, msg: str, kind: type[BingXError], reported: int,
                                                 wrapper: int | None) -> None:
    exc = error_for(code, msg)
    assert type(exc) is kind
    assert (exc.code, exc.wrapper) == (reported, wrapper)
    assert "\n" not in str(exc)


def test_the_envelope_code_may_be_a_string_and_an_error_reply_may_wrap_another() -> None:
    body = b'{"code":"80012","msg":"{\\"Code\\":101253,\\"Msg\\":\\"margin is not enough\\"}"}'
    with pytest.raises(Refused) as caught:
        RestClient._decode(body, constants.ORDER, codec.OrderReply)
    assert (caught.value.code, caught.value.wrapper, caught.value.msg) == (101253, 80012, "margin is not enough")


@pytest.mark.parametrize("msg", ["", "{", '{"Code":"x"}', '{"Code":true,"Msg":"y"}', "[1]", "Code: abc, Msg: d"])
def test_a_message_that_wraps_nothing_is_kept_as_it_is(msg: str) -> None:
    assert unwrap(msg) is None
    assert error_for(101204, msg).msg == msg


@pytest.mark.parametrize("body", [b"<html>502</html>", b'{"code":0,"data":{"order":{"orderId":"1.5e3"}}}',
                                  b'{"msg":"no code"}', b'{"code":null}', b""])
def test_an_unreadable_reply_is_an_unreadable_reply(body: bytes) -> None:
    with pytest.raises(UnreadableReply):
        RestClient._decode(body, constants.ORDER, codec.OrderReply)


class StubRest:
    """What RestClient.write / query answer, by (method, path): a reply or an error to raise."""

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def _next(self, method: str, path: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, path, params))
        queue = self.answers[(method, path)]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def write(self, method: str, path: str, params: dict[str, Any], type: Any) -> Any:
        return self._next(method, path, params)

    async def query(self, path: str, params: dict[str, Any], type: Any) -> Any:
        return self._next("GET", path, params)


def adapter_with(rest: StubRest) -> tuple[BingXAdapter, list[Any]]:
    adapter = BingXAdapter(BingXOptions(), hedge_mode=False, clock=LiveClock())
    adapter.rest = rest  # type: ignore[assignment]
    events: list[Any] = []
    adapter._sink = events.append
    return adapter, events


ENTRY = SubmitEntry(client_id="i-1-e1", symbol="BTC-USDT", side="long", qty=Decimal("0.01"))


@pytest.mark.parametrize("error", [UnreadableReply("unexpected reply shape"), BingXError(424242, "new code"),
                                   Busy(100500, "busy"), TimestampError(100421, "timestamp mismatch"),
                                   TransportError("timeout")], ids=lambda e: type(e).__name__)
def test_a_submission_without_a_sure_outcome_is_an_unknown_order(error: Exception) -> None:
    adapter, events = adapter_with(StubRest({("POST", constants.ORDER): [error]}))
    with pytest.raises(OrderUnknown) as caught:
        asyncio.run(adapter.submit(ENTRY))
    assert caught.value.client_id == "i-1-e1"
    assert events == []


def test_a_refusal_is_a_rejection_and_a_bare_placed_order_an_acceptance() -> None:
    adapter, events = adapter_with(StubRest({("POST", constants.ORDER): [
        error_for(80012, '{"Code":101253,"Msg":"margin is not enough"}')]}))
    asyncio.run(adapter.submit(ENTRY))
    assert [(type(e), e.code) for e in events] == [(OrderRejected, 101253)]
    body = (b'{"code":"0","data":{"orderId":"2075327764731486208","symbol":"BTC-USDT","side":"BUY",'
            b'"positionSide":"BOTH","type":"MARKET"}}')
    bare = RestClient._decode(body, constants.ORDER, codec.OrderReply)
    adapter, events = adapter_with(StubRest({("POST", constants.ORDER): [bare]}))
    asyncio.run(adapter.submit(ENTRY))
    assert [(type(e), e.order_id) for e in events] == [(OrderAccepted, 2075327764731486208)]


@pytest.mark.parametrize("error", [UnreadableReply("unexpected reply shape"), Refused(101209, "cannot cancel"),
                                   TransportError("timeout")], ids=lambda e: type(e).__name__)
def test_a_cancel_without_a_sure_outcome_is_an_unknown_order(error: Exception) -> None:
    adapter, events = adapter_with(StubRest({("DELETE", constants.ORDER): [error]}))
    with pytest.raises(OrderUnknown):
        asyncio.run(adapter.cancel(CancelOrder(client_id="i-1-s1", symbol="BTC-USDT")))
    assert events == []


def _settings(mode: str, margin: str, leverage: int, write_error: Exception) -> StubRest:
    return StubRest({
        ("GET", constants.POSITION_MODE): [codec.PositionMode(dualSidePosition="true"),
                                           codec.PositionMode(dualSidePosition=mode)],
        ("POST", constants.POSITION_MODE): [write_error],
        ("GET", constants.MARGIN_TYPE): [codec.MarginType(marginType="ISOLATED"), codec.MarginType(marginType=margin)],
        ("POST", constants.MARGIN_TYPE): [write_error],
        ("POST", constants.LEVERAGE): [write_error],
        ("GET", constants.LEVERAGE): [codec.LeverageGet(longLeverage=7, shortLeverage=7),  # set only if it differs
                                      codec.LeverageGet(longLeverage=leverage, shortLeverage=leverage)],
    })


def test_a_setting_whose_reply_is_unreadable_is_settled_by_reading_it_back() -> None:
    rest = _settings("false", "CROSSED", 4, UnreadableReply("unexpected reply shape"))
    adapter, _ = adapter_with(rest)
    asyncio.run(adapter.configure("BTC-USDT", 4, False))  # every write "failed", every read-back says it was done
    assert [c[:2] for c in rest.calls if c[0] == "POST"] == [("POST", constants.POSITION_MODE),
                                                              ("POST", constants.MARGIN_TYPE),
                                                              ("POST", constants.LEVERAGE)]


@pytest.mark.parametrize(("mode", "margin", "leverage", "says"), [
    ("true", "CROSSED", 4, "position mode"), ("false", "ISOLATED", 4, "margin type"),
    ("false", "CROSSED", 5, "leverage")])
def test_a_setting_that_did_not_take_is_refused_whatever_the_write_said(mode: str, margin: str, leverage: int,
                                                                         says: str) -> None:
    adapter, _ = adapter_with(_settings(mode, margin, leverage, TransportError("timeout")))
    with pytest.raises(ExchangeError, match=says):
        asyncio.run(adapter.configure("BTC-USDT", 4, False))


def test_a_refused_setting_is_raised_at_once() -> None:
    adapter, _ = adapter_with(_settings("false", "CROSSED", 4, Refused(101400, "not allowed")))
    with pytest.raises(SettingsRefused, match="not allowed"):  # the instance halts: waiting will not heal it
        asyncio.run(adapter.configure("BTC-USDT", 4, False))


def test_codes_bingx_uses_for_two_things_are_told_apart_by_their_message() -> None:
    assert isinstance(error_for(100421, "Null timestamp or timestamp mismatch"), TimestampError)
    restricted = error_for(100421, "This pair is restricted from API trading")
    assert isinstance(restricted, Refused) and not restricted.retryable
    assert isinstance(error_for(80012, "System busy, please try again later"), Busy)
    assert isinstance(error_for(80012, "The margin is not enough"), Refused)
