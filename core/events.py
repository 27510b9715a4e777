"""Events (past tense: what happened) and commands (imperative: what the bot asks for).

Everything that crosses a boundary (exchange adapter -> engine, engine -> exchange adapter, engine ->
journal) is one of these msgspec Structs. Prices and quantities that reach an exchange are
``Decimal``; candle prices are floats because strategies and features do arithmetic on them.
Timestamps are integers: milliseconds for exchange times (``open_time``, ``ts``), as BingX sends them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["long", "short"]
"""The side of a *position*. Order sides (BUY/SELL) are an exchange wire detail derived from it."""

ZERO = Decimal(0)


def opposite(side: Side) -> Side:
    return "short" if side == "long" else "long"


class Event(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Base of everything the engine consumes."""

    ts: int = 0  # exchange time in ms when known, else the clock's time at receipt


# --- market events -------------------------------------------------------------------------------


class CandleClosed(Event, frozen=True, kw_only=True):
    """A closed (final) candle. ``open_time`` is the candle's open time in ms, as on BingX."""

    symbol: str
    interval: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


# --- execution events (from the exchange, keyed by our client order id) -------------------------


class OrderAccepted(Event, frozen=True, kw_only=True):
    """The exchange holds the order as working (for a stop: the position is now guarded)."""

    client_id: str
    order_id: int = 0


class OrderRejected(Event, frozen=True, kw_only=True):
    client_id: str
    code: int = 0
    reason: str = ""


class OrderFilled(Event, frozen=True, kw_only=True):
    """One fill (partial or last) of an order.

    ``realized_pnl`` is the gross price PnL this fill realised (0 for fills that open or add);
    ``fee`` is what was paid (positive = paid). ``final`` is True when the order has no quantity left.
    ``trade_id`` makes booking idempotent: the journal books each (client_id, trade_id) once.
    """

    client_id: str
    order_id: int = 0
    trade_id: str
    qty: Decimal
    price: Decimal
    fee: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    cum_qty: Decimal
    final: bool = True


class FundingPaid(Event, frozen=True, kw_only=True):
    """One funding payment the exchange settled on a position at a funding time.

    ``paid`` follows the sign of ``OrderFilled.fee``: positive = the account paid, negative = it received
    (a positive ``rate`` makes longs pay shorts). ``funding_time`` is the funding time in ms (00:00, 08:00,
    16:00 UTC for an 8 h schedule), the journal's key with the symbol: a payment is booked once however
    often it is reported. ``side`` and ``qty`` are known to exchanges that report them per position
    (paper, simulator) and None / 0 where the exchange does not say (BingX's income history).
    """

    symbol: str
    funding_time: int
    paid: Decimal
    rate: Decimal = ZERO
    mark_price: Decimal = ZERO
    side: Side | None = None
    qty: Decimal = ZERO


class OrderCanceled(Event, frozen=True, kw_only=True):
    """The order is gone without (further) fills: canceled by us, by someone else, or already gone."""

    client_id: str
    order_id: int = 0
    filled_qty: Decimal = ZERO
    reason: str = ""


class OrderExpired(Event, frozen=True, kw_only=True):
    client_id: str
    order_id: int = 0
    filled_qty: Decimal = ZERO
    reason: str = ""


class PositionSnapshot(Event, frozen=True, kw_only=True):
    """The exchange's view of one position side. ``qty`` 0 means no position."""

    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal = ZERO


class SettingsChanged(Event, frozen=True, kw_only=True):
    """The exchange reports leverage or margin mode of ``symbol`` other than configured (changed by hand):
    the engine sets them back before its next entry."""

    symbol: str
    detail: str


# --- control events ------------------------------------------------------------------------------


class Timer(Event, frozen=True, kw_only=True):
    name: str


class ManualClose(Event, frozen=True, kw_only=True):
    """The operator asked the bot to close the position."""

    reason: str = "operator"


class StreamUp(Event, frozen=True, kw_only=True):
    """A stream came back, or lost a push it could not read: events may have been missed (reconcile)."""

    stream: str
    symbol: str | None = None
    """Only the instances trading this symbol may be concerned (None: every instance of the account)."""


AnyEvent = (
    CandleClosed
    | OrderAccepted
    | OrderRejected
    | OrderFilled
    | FundingPaid
    | OrderCanceled
    | OrderExpired
    | PositionSnapshot
    | SettingsChanged
    | Timer
    | ManualClose
    | StreamUp
)


# --- commands ------------------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    client_id: str
    symbol: str


class StopSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A protective stop attached to an entry: reduce-only STOP_MARKET triggered on the mark price."""

    client_id: str
    price: Decimal
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"


class SubmitEntry(Command, frozen=True, kw_only=True):
    """A MARKET order opening ``side``; ``stop`` is set when the exchange attaches the stop to it."""

    side: Side
    qty: Decimal
    stop: StopSpec | None = None


class SubmitStop(Command, frozen=True, kw_only=True):
    """A reduce-only STOP_MARKET protecting the ``side`` position (MARK_PRICE trigger)."""

    side: Side
    qty: Decimal
    stop_price: Decimal
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"


class SubmitTakeProfit(Command, frozen=True, kw_only=True):
    """A reduce-only TAKE_PROFIT_MARKET closing ``qty`` of the ``side`` position when the mark price reaches
    ``stop_price`` on the profit side. Never a safety order: the stop guards whatever becomes of it."""

    side: Side
    qty: Decimal
    stop_price: Decimal
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"


class SubmitClose(Command, frozen=True, kw_only=True):
    """A reduce-only MARKET order closing ``qty`` of the ``side`` position."""

    side: Side
    qty: Decimal


class CancelOrder(Command, frozen=True, kw_only=True):
    pass


AnyCommand = SubmitEntry | SubmitStop | SubmitTakeProfit | SubmitClose | CancelOrder
Submission = SubmitEntry | SubmitStop | SubmitTakeProfit | SubmitClose
"""The commands that place an order (an adapter's ``submit``)."""
