"""BingX wire messages as msgspec Structs: REST payloads and websocket pushes (protocol page §3, §5, §6).

Both sides use them: the adapter decodes what the exchange sends, the simulator encodes what it
sends. Field names are BingX's (short ones on the streams). Decimal-valued fields arrive as strings,
sometimes as JSON numbers, sometimes as "" for "none": :func:`dec` reads all three. Order ids are
int64 JSON numbers and stay ints.
"""

from __future__ import annotations

import gzip
import zlib
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

Num = str | int | float
"""A decimal as BingX sends it: a string, a JSON number, or "" for none."""


def dec(value: Num | None) -> Decimal:
    """Exact Decimal of a wire number; "" and None are 0."""
    if value is None or value == "":
        return Decimal(0)
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def plain(value: Decimal) -> str:
    """A Decimal as a plain wire string (never an exponent)."""
    return format(value, "f")


class Envelope(msgspec.Struct, kw_only=True):
    """``{"code":0,"msg":"","data":...}``: HTTP 200 can carry an error, so ``code`` is always checked."""

    code: int
    msg: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


# --- REST payloads -------------------------------------------------------------------------------


class ServerTime(msgspec.Struct):
    serverTime: int


class Contract(msgspec.Struct, kw_only=True):
    symbol: str
    pricePrecision: int
    quantityPrecision: int
    tradeMinQuantity: Num = 0
    tradeMinUSDT: Num = 0
    maxLongLeverage: int = 125
    maxShortLeverage: int = 125
    status: int = 1
    apiStateOpen: str = "true"
    apiStateClose: str = "true"
    currency: str = "USDT"
    asset: str = ""
    feeRate: Num = 0
    takerFeeRate: Num = 0
    makerFeeRate: Num = 0


class Kline(msgspec.Struct, kw_only=True):
    open: Num
    close: Num
    high: Num
    low: Num
    volume: Num
    time: int
    """Open time (ms)."""


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


class Order(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An order as place / query / cancel / openOrders return it (fields vary by endpoint)."""

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
    clientOrderId: str = ""
    clientOrderID: str = ""
    workingType: str = ""
    reduceOnly: bool = False
    closePosition: str | bool = ""
    time: int = 0
    updateTime: int = 0
    profit: Num = ""
    commission: Num = ""
    triggerOrderId: int = 0
    """A stop that fired: the derived MARKET order that may carry its fill (UNCONFIRMED, protocol §6.4)."""

    @property
    def client_id(self) -> str:
        return self.clientOrderId or self.clientOrderID

    @property
    def qty(self) -> Decimal:
        return dec(self.origQty) or dec(self.quantity)


class OrderReply(msgspec.Struct):
    order: Order


class OrderList(msgspec.Struct):
    orders: list[Order]


class Position(msgspec.Struct, kw_only=True):
    symbol: str
    positionSide: Literal["LONG", "SHORT", "BOTH"]
    positionAmt: Num
    avgPrice: Num = "0"
    positionId: str = ""
    leverage: int = 0
    availableAmt: Num = ""
    unrealizedProfit: Num = ""
    realisedProfit: Num = ""
    onlyOnePosition: bool = False
    updateTime: int = 0


class Balance(msgspec.Struct, kw_only=True):
    asset: str
    balance: Num
    equity: Num = ""
    availableMargin: Num = ""
    usedMargin: Num = ""
    unrealizedProfit: Num = ""
    realisedProfit: Num = ""
    freezedMargin: Num = "0"


class Fill(msgspec.Struct, kw_only=True):
    """One row of ``fillHistory``. ``commission`` is negative when paid."""

    orderId: str | int
    tradeId: str | int
    symbol: str
    volume: Num = ""
    qty: Num = ""
    price: Num
    commission: Num = "0"
    realisedPNL: Num = "0"
    side: str = ""
    positionSide: str = ""
    filledTm: str = ""
    clientOrderID: str = ""


class FillHistory(msgspec.Struct):
    fill_history_orders: list[Fill] = []


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


class Ack(msgspec.Struct, kw_only=True):
    id: str = ""
    code: int = 0
    msg: str = ""
    dataType: str = ""
    data: None = None


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


class OrderUpdate(msgspec.Struct, kw_only=True, omit_defaults=True):
    s: str
    c: str = ""
    i: int
    S: Literal["BUY", "SELL"]
    o: str
    q: Num = "0"
    p: Num = "0"
    sp: Num = "0"
    ap: Num = "0"
    x: Literal["NEW", "TRADE", "CANCELED", "EXPIRED", "CALCULATED"]
    X: Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"]
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
    ti: int = 0


class OrderTradeUpdate(msgspec.Struct, tag_field="e", tag="ORDER_TRADE_UPDATE", kw_only=True):
    E: int
    T: int = 0
    o: OrderUpdate


class TradeUpdate(OrderTradeUpdate, tag="TRADE_UPDATE", kw_only=True):
    """The 2025 official demo's spelling of ORDER_TRADE_UPDATE: tolerated."""


class BalanceUpdate(msgspec.Struct, kw_only=True):
    a: str
    wb: Num
    cw: Num = ""
    bc: Num = "0"


class PositionUpdate(msgspec.Struct, kw_only=True):
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

user_event_decoder = msgspec.json.Decoder(UserEvent)
market_push_decoder = msgspec.json.Decoder(MarketPush)
kline_push_decoder = msgspec.json.Decoder(KlinePush)
encoder = msgspec.json.Encoder()


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


def envelope(data: Any, code: int = 0, msg: str = "") -> bytes:
    """A REST reply body (the simulator's side)."""
    return encoder.encode({"code": code, "msg": msg, "data": data})
