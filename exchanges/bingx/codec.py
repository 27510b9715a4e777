"""How the adapter reads BingX's wire: msgspec Structs of REST payloads and websocket pushes (protocol page §3,
§5, §6), their decoders, and the exact readers of numbers and ids.

The adapter decodes what the exchange sends with them and encodes its subscriptions; the simulator writes
its replies as plain data (simulators/bingx/views.py) and takes only the encoder and gzip framing from
here. Field names are BingX's (short ones on the streams).

BingX does not keep to one JSON type per field (docs/bingx-wire.md lists what which capture shows), so
every decoder here is *lax* (msgspec ``strict=False``): a field typed ``int`` or ``bool`` takes the JSON
number/bool or its text (``"1809841379603398656"`` becomes that int exactly: msgspec parses the digits,
never through a float; ``"1.0"`` is 1; a fraction, a float that lost digits, a bool or padded text is
refused, so an id is never rounded), ``"true"``/``"false"`` are bools, ``code`` may be ``0`` or ``"0"``.
Decimal-valued fields (:data:`Num`) arrive as strings, JSON numbers or "" for "none": :func:`dec` reads
all three. Optional ids that may come as ``""``/``null``/``0`` (:data:`OptId`) are read by :func:`ident`.
Unknown fields are ignored everywhere. The one strict decoder is the market hot path's
(:data:`kline_push_decoder`): a frame it refuses falls back to the lax one, so strictness costs nothing
but speed is kept.
"""

from __future__ import annotations

import gzip
import zlib
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec

T = TypeVar("T")

Num = str | int | float
"""A decimal as BingX sends it: a string, a JSON number, or "" for none."""

OptId = int | str | None
"""An id that may be missing: a JSON number, a digit string, "" / "0" / 0 / null for none."""


def ident(value: OptId) -> int:
    """An optional id as an exact int (0: none). A string that is not digits is not an id: ValueError."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    if value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"not an id: {value[:40]!r}")


def dec(value: Num | None) -> Decimal:
    """Exact Decimal of a wire number; "" and None are 0. Text that is not a finite number: ValueError."""
    if value is None or value == "":
        return Decimal(0)
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError):
        raise ValueError(f"not a number: {str(value)[:40]!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite number: {str(value)[:40]!r}")
    return number


class Checked(msgspec.Struct):
    """A payload whose decimals (:data:`Num` fields) are checked while decoding: a field that is not a finite
    number makes the whole payload unreadable (a ValidationError), so no later ``dec()`` meets one. Not used
    on the market hot path (:class:`WsKline`: ``ws_candle`` checks what it converts)."""

    _nums: ClassVar[dict[type, tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        names = Checked._nums.get(type(self))
        if names is None:
            names = Checked._nums[type(self)] = tuple(
                f.name for f in msgspec.structs.fields(type(self)) if f.type == Num)
        for name in names:
            dec(getattr(self, name))


class Envelope(msgspec.Struct, kw_only=True):
    """``{"code":0,"msg":"","data":...}``: HTTP 200 can carry an error, so ``code`` is always checked."""

    code: int
    msg: str | None = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


# --- REST payloads -------------------------------------------------------------------------------


class ServerTime(msgspec.Struct):
    serverTime: int


class Contract(Checked, kw_only=True):
    """A row of ``quote/contracts``. Precisions and states arrive as numbers or strings
    (``"quantityPrecision":"4"``), ``apiStateOpen`` as ``"true"`` or ``true``."""

    symbol: str
    pricePrecision: int
    quantityPrecision: int
    tradeMinQuantity: Num = 0
    tradeMinUSDT: Num = 0
    maxLongLeverage: int = 125
    maxShortLeverage: int = 125
    status: int = 1
    apiStateOpen: str | bool = "true"
    apiStateClose: str | bool = "true"
    currency: str = "USDT"
    asset: str = ""
    feeRate: Num = 0
    takerFeeRate: Num = 0
    makerFeeRate: Num = 0

    @property
    def api_open(self) -> bool:
        return str(self.apiStateOpen).lower() == "true"


class Kline(Checked, kw_only=True):
    open: Num
    close: Num
    high: Num
    low: Num
    volume: Num
    time: int
    """Open time (ms)."""


class FundingRate(Checked, kw_only=True):
    """A row of ``quote/fundingRate`` (the funding-rate history): the rate settled at ``fundingTime`` (ms)."""

    symbol: str = ""
    fundingRate: Num
    fundingTime: int


class PositionMode(msgspec.Struct):
    dualSidePosition: str | bool


class LeverageSet(msgspec.Struct, kw_only=True):
    leverage: int
    symbol: str


class LeverageGet(msgspec.Struct, kw_only=True):
    longLeverage: int
    shortLeverage: int
    maxLongLeverage: int = 125
    maxShortLeverage: int = 125


class MarginType(msgspec.Struct):
    marginType: str


class Order(Checked, kw_only=True, omit_defaults=True):
    """An order as place / query / cancel / openOrders return it (fields vary by endpoint and era: ids and
    times as numbers or digit strings, ``stopLoss`` / ``takeProfit`` as JSON text or an object)."""

    symbol: str
    orderId: int
    side: Literal["BUY", "SELL"]
    positionSide: Literal["LONG", "SHORT", "BOTH"]
    type: str
    origQty: Num = ""
    quantity: Num = ""
    price: Num = ""
    executedQty: Num = ""
    avgPrice: Num = ""
    stopPrice: Num = ""
    status: str = ""
    clientOrderId: str | None = ""
    clientOrderID: str | None = ""
    workingType: str = ""
    reduceOnly: bool = False
    closePosition: str | bool = ""
    time: int = 0
    updateTime: int = 0
    profit: Num = ""
    commission: Num = ""
    triggerOrderId: OptId = 0
    """A stop that fired: the derived MARKET order that may carry its fill (UNCONFIRMED, protocol §6.4)."""
    stopLoss: str | dict[str, Any] | None = None
    takeProfit: str | dict[str, Any] | None = None
    """The attached stop / take-profit: JSON text in some replies, an object in others (:func:`attached`)."""

    @property
    def client_id(self) -> str:
        return self.clientOrderId or self.clientOrderID or ""

    @property
    def attached_stop(self) -> dict[str, Any]:
        return attached(self.stopLoss)

    @property
    def attached_take_profit(self) -> dict[str, Any]:
        return attached(self.takeProfit)

    def __post_init__(self) -> None:
        super().__post_init__()
        ident(self.triggerOrderId)  # a non-id is refused while decoding (a ValidationError), not met later

    @property
    def trigger_id(self) -> int:
        return ident(self.triggerOrderId)

    @property
    def qty(self) -> Decimal:
        return dec(self.origQty) or dec(self.quantity)


class OrderReply(msgspec.Struct):
    """``data`` of place / query / cancel: ``{"order": {...}}``, or the order itself in the newest place
    replies; :func:`read` takes both."""

    order: Order


def attached(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """An order's ``stopLoss`` / ``takeProfit`` as a dict ({} for none or unreadable JSON text)."""
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        got = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return {}
    return got if isinstance(got, dict) else {}


class OrderList(msgspec.Struct):
    orders: list[Order]


class Position(Checked, kw_only=True):
    symbol: str
    positionSide: Literal["LONG", "SHORT", "BOTH"]
    positionAmt: Num
    avgPrice: Num = "0"
    positionId: str | int = ""
    leverage: Num = 0
    liquidationPrice: Num = ""
    availableAmt: Num = ""
    unrealizedProfit: Num = ""
    realisedProfit: Num = ""
    onlyOnePosition: bool = False
    updateTime: int = 0


class Balance(Checked, kw_only=True):
    asset: str
    balance: Num
    equity: Num = ""
    availableMargin: Num = ""
    usedMargin: Num = ""
    unrealizedProfit: Num = ""
    realisedProfit: Num = ""
    freezedMargin: Num = "0"


class Fill(Checked, kw_only=True):
    """One row of ``fillHistory`` (or of ``allFillOrders``, whose rows have no ``tradeId``: :attr:`key`).
    ``commission`` is negative when paid."""

    orderId: int
    tradeId: str | int = ""
    symbol: str
    volume: Num = ""
    qty: Num = ""
    price: Num
    commission: Num = "0"
    realisedPNL: Num = "0"
    side: str = ""
    positionSide: str = ""
    filledTm: str | int = ""
    clientOrderID: str | None = ""

    @property
    def key(self) -> str:
        """The fill's identity: its trade id, or (a row without one) its order, time, price and quantity."""
        if self.tradeId != "":
            return str(self.tradeId)
        return f"{self.orderId}@{self.filledTm}:{self.price}x{self.qty or self.volume}"


class FillHistory(msgspec.Struct):
    """``fillHistory`` lists ``fill_history_orders`` (no public capture); ``allFillOrders`` lists
    ``fill_orders`` (captured): either is read."""

    fill_history_orders: list[Fill] = []
    fill_orders: list[Fill] = []

    @property
    def rows(self) -> list[Fill]:
        return self.fill_history_orders or self.fill_orders


class Income(msgspec.Struct, kw_only=True):
    """One row of the fund flow (``/openApi/swap/v2/user/income``). ``income`` is signed as the balance moved
    (a funding payment the account made is negative); ``time`` is when it was settled (ms)."""

    symbol: str = ""
    incomeType: str
    income: Num
    asset: str = "USDT"
    time: int | str
    tranId: str | int = ""


class ListenKey(msgspec.Struct):
    listenKey: str


# --- websocket pushes ----------------------------------------------------------------------------


class WsKline(msgspec.Struct, kw_only=True, gc=False):
    o: Num
    h: Num
    l: Num  # noqa: E741 - BingX's field name
    c: Num
    v: Num
    T: int
    """Open time in current pushes (older pushes sent the close time: floor it to the interval)."""


class Subscribe(msgspec.Struct, kw_only=True):
    id: str
    reqType: Literal["sub", "unsub"]
    dataType: str


class MarketPush(msgspec.Struct, kw_only=True):
    """Any market push: ``dataType`` says which; ``data`` is decoded by kind (kline: a list or one object)."""

    dataType: str = ""
    code: int = 0
    id: str = ""
    msg: str = ""
    s: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


class KlinePush(msgspec.Struct, kw_only=True, gc=False):
    """The common market frame read in one decode: one kline of a subscribed stream, code 0, no request
    id (the fields of :class:`MarketPush`). Anything else (several klines, an answer, an error, a mark
    price) does not fit and is read as a MarketPush, so the hot path checks nothing the decoder did."""

    dataType: str
    code: Literal[0] = 0
    id: Literal[""] = ""
    msg: str = ""
    s: str = ""
    data: Annotated[list[WsKline], msgspec.Meta(min_length=1, max_length=1)]


class MarkPriceData(msgspec.Struct, kw_only=True):
    e: str = "markPriceUpdate"
    E: int
    s: str
    p: Num


class OrderUpdate(Checked, kw_only=True, omit_defaults=True):
    """``o`` of ORDER_TRADE_UPDATE. ``i`` arrives as a number or a digit string; ``x`` / ``X`` values not
    listed in the protocol page are kept as text (the translation ignores them, nothing is dropped)."""

    s: str
    c: str | None = ""
    i: int
    S: Literal["BUY", "SELL"]
    o: str
    q: Num = "0"
    p: Num = "0"
    sp: Num = "0"
    ap: Num = "0"
    x: str
    X: str
    N: str = "USDT"
    n: Num = "0"
    T: int = 0
    wt: str = ""
    ps: Literal["LONG", "SHORT", "BOTH"]
    rp: Num = "0"
    z: Num = "0"
    l: Num = ""  # noqa: E741 - BingX's field name
    L: Num = ""
    ro: bool = False
    td: int | str = 0
    tv: Num = ""
    ti: OptId = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        ident(self.ti)  # a non-id is refused while decoding (a ValidationError), not met later

    @property
    def trigger_id(self) -> int:
        return ident(self.ti)


class OrderTradeUpdate(msgspec.Struct, tag_field="e", tag="ORDER_TRADE_UPDATE", kw_only=True):
    E: int
    T: int = 0
    o: OrderUpdate


class TradeUpdate(OrderTradeUpdate, tag="TRADE_UPDATE", kw_only=True):
    """The 2025 official demo's spelling of ORDER_TRADE_UPDATE: tolerated."""


class BalanceUpdate(Checked, kw_only=True):
    a: str
    wb: Num
    cw: Num = ""
    bc: Num = "0"


class PositionUpdate(Checked, kw_only=True):
    s: str
    pa: Num
    ep: Num = "0"
    up: Num = "0"
    mt: str = "cross"
    iw: Num = "0"
    ps: Literal["LONG", "SHORT", "BOTH"]
    cr: Num = "0"


class AccountData(msgspec.Struct, kw_only=True):
    m: str
    B: list[BalanceUpdate] = []
    P: list[PositionUpdate] = []


class AccountUpdate(msgspec.Struct, tag_field="e", tag="ACCOUNT_UPDATE", kw_only=True):
    E: int
    T: int = 0
    a: AccountData


class ConfigData(msgspec.Struct, kw_only=True):
    s: str
    l: int  # noqa: E741 - BingX's field name
    S: int
    mt: str = "cross"


class AccountConfigUpdate(msgspec.Struct, tag_field="e", tag="ACCOUNT_CONFIG_UPDATE", kw_only=True):
    E: int
    ac: ConfigData


class ListenKeyExpired(msgspec.Struct, tag_field="e", tag="listenKeyExpired", kw_only=True):
    E: int
    listenKey: str = ""


UserEvent = OrderTradeUpdate | TradeUpdate | AccountUpdate | AccountConfigUpdate | ListenKeyExpired

user_event_decoder = msgspec.json.Decoder(UserEvent, strict=False)
market_push_decoder = msgspec.json.Decoder(MarketPush, strict=False)
kline_push_decoder = msgspec.json.Decoder(KlinePush)
"""Strict on purpose (the hot path): a frame it refuses is read again by the lax decoders."""
envelope_decoder = msgspec.json.Decoder(Envelope, strict=False)
encoder = msgspec.json.Encoder()

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder(type: Any) -> msgspec.json.Decoder[Any]:
    """The lax decoder of a payload type (made once per type)."""
    found = _decoders.get(type)
    if found is None:
        found = _decoders[type] = msgspec.json.Decoder(type, strict=False)
    return found


def read(data: bytes, type: type[T]) -> T:
    """A reply's ``data`` as ``type``; an :class:`OrderReply` also from a bare order (no ``order`` key).
    Raises msgspec.DecodeError (ValidationError included) when it is neither."""
    if type is OrderReply:
        try:
            return decoder(OrderReply).decode(data)  # type: ignore[no-any-return]
        except msgspec.ValidationError as wrapped:
            try:
                return OrderReply(order=decoder(Order).decode(data))  # type: ignore[return-value]
            except msgspec.ValidationError as bare:
                raise (bare if "`order`" in str(wrapped) else wrapped) from None  # the one that says what is wrong
    return decoder(type).decode(data)  # type: ignore[no-any-return]


def gzip_frame(payload: bytes | str) -> bytes:
    """Server -> client frames are gzip streams (``Ping`` included). ``mtime=0``: deterministic bytes."""
    data = payload.encode() if isinstance(payload, str) else payload
    return gzip.compress(data, mtime=0)


def ungzip_frame(frame: bytes | str) -> str:
    """A server frame as text. ``zlib`` with gzip framing (wbits 31) does what ``gzip.decompress`` does
    in a third of the time (library notes §4); a damaged frame raises ``ValueError``."""
    if isinstance(frame, str):
        return frame
    try:
        return zlib.decompress(frame, 31).decode()
    except zlib.error as exc:
        raise ValueError(f"damaged gzip frame: {exc}") from None

