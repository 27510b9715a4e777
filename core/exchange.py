"""The exchange port: the adapter protocol every exchange plugin implements, and the optional capabilities
the application probes an adapter for (small protocols, checked with ``isinstance``).

An adapter turns commands into exchange requests and exchange facts into core events. Execution
events (accepted, filled, canceled, ...) are delivered to the ``sink`` given to :meth:`start`, in the
order the exchange reported them; the engine never polls for them. Queries used by recovery return
the exchange's own view.

Error contract (principle 5, "ambiguity is not failure"):
- a definite refusal arrives as an ``OrderRejected`` event (never as an exception);
- a submission whose outcome is not known (timeout, 5xx, connection lost) raises :class:`OrderUnknown`;
  the caller resolves it by :meth:`query_order` with the same client id, never by resending blindly;
- a cancel of an order that is already gone is a success (an ``OrderCanceled`` event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from gatebot.core.events import (
    ZERO,
    AnyEvent,
    CancelOrder,
    CandleClosed,
    FundingPaid,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    Side,
    Submission,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
)
from gatebot.core.instrument import Instrument

OrderStatus = Literal["new", "partially_filled", "filled", "canceled", "rejected", "expired"]
Role = Literal["entry", "stop", "close", "take_profit"]
EventSink = Callable[[AnyEvent], None]


class ExchangeError(Exception):
    """The exchange or the adapter failed in a way that is not about one order."""


class CredentialsRefused(ExchangeError):
    """The exchange refused the API key, signature, permission or IP: nothing will work until the
    operator fixes it, so the run stops with one line (exit status 4) instead of retrying."""


class SettingsRefused(ExchangeError):
    """The account's leverage, margin mode or position mode differ from the config and cannot be set:
    the instance must not trade (it halts; waiting does not heal it)."""


class IdTaken(ExchangeError):
    """The exchange already holds another order under a client id this journal is about to use: the
    journal is behind the exchange (restored from an older backup). The instance halts."""


class OrderUnknown(ExchangeError):
    """A submission was sent but its outcome is unknown (timeout, 5xx): query it by client id."""

    def __init__(self, client_id: str, detail: str) -> None:
        super().__init__(f"order {client_id}: outcome unknown ({detail})")
        self.client_id = client_id


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    attached_stop: bool = False
    """The entry order can carry its stop (BingX ``stopLoss``): no unprotected gap at all."""
    hedge_mode: bool = False
    """Long and short positions of one symbol coexist (BingX ``dualSidePosition``)."""


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """The exchange's view of one of our orders (freqtrade keeps it beside the bot's own view)."""

    client_id: str
    order_id: int = 0
    symbol: str
    role: Role
    side: Side
    """The position side the order opens (entry) or reduces (stop, close)."""
    status: OrderStatus
    qty: Decimal
    filled_qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    stop_price: Decimal = ZERO
    reduce_only: bool = False

    @property
    def working(self) -> bool:
        return self.status in ("new", "partially_filled")


@runtime_checkable
class ExchangeAdapter(Protocol):
    name: str
    capabilities: Capabilities

    async def start(self, sink: EventSink) -> None:
        """Connect and begin delivering execution events for this account to ``sink``."""

    async def stop(self) -> None:
        """Disconnect. Working orders (the stops) stay on the exchange."""

    async def instrument(self, symbol: str) -> Instrument: ...

    async def configure(self, symbol: str, leverage: int, hedge: bool) -> list[str]:
        """Set leverage, margin and position mode where they differ, then read them back; return what had to
        be set back (empty when all was as configured); raise SettingsRefused when they cannot be set.
        Called at every reconcile, so it writes only what differs."""

    async def submit(self, command: Submission) -> None: ...

    async def cancel(self, command: CancelOrder) -> None: ...

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        """The order with this client id, or None when the exchange never saw it."""

    async def order_fills(self, symbol: str, client_id: str) -> list[OrderFilled]: ...

    async def open_orders(self, symbol: str) -> list[OrderState]: ...

    async def position(self, symbol: str, side: Side) -> PositionSnapshot: ...

    async def balance(self) -> Decimal:
        """Available margin balance in the quote asset."""


# --- a resent order: idempotent by client id ---------------------------------------------------------------

ROLE_OF: dict[type, Role] = {SubmitEntry: "entry", SubmitStop: "stop", SubmitTakeProfit: "take_profit",
                             SubmitClose: "close"}


def same_order(state: OrderState, command: Submission) -> bool:
    """Whether the order the exchange holds under the command's id is that command."""
    same = (state.symbol, state.role, state.side, state.qty) == (command.symbol, ROLE_OF[type(command)],
                                                                 command.side, command.qty)
    return same and (not isinstance(command, SubmitStop | SubmitTakeProfit) or state.stop_price == command.stop_price)


def known_order(state: OrderState | None, command: Submission) -> OrderState:
    """The order a submission's id already names (the exchange refused it as a duplicate): this command sent
    before (a resend after an unknown outcome, or a restart), or else IdTaken: another order under the id was
    placed by a journal that is ahead of this one, never a guess."""
    cid = command.client_id
    if state is None:
        raise OrderUnknown(cid, "the exchange calls the id a duplicate but cannot find it")
    if not same_order(state, command):
        raise IdTaken(f"the exchange already holds another order under {cid} ({state.symbol} {state.role} "
                      f"{state.side} {state.qty}, {state.status}; this one is {command.symbol} "
                      f"{ROLE_OF[type(command)]} {command.side} {command.qty})")
    return state


def known_order_events(state: OrderState, fills: list[OrderFilled], now_ms: int, *, acked: bool) -> list[AnyEvent]:
    """What a resend delivers instead of a refusal: accepted only while the order works (and was not reported
    accepted yet: ``acked``), its fills, and its end (a canceled stop is never taken for a live one). Every
    adapter answers a resend so; the journal books a fill once however often it is delivered."""
    cid = state.client_id
    events: list[AnyEvent] = []
    if state.working and not acked:
        events.append(OrderAccepted(ts=now_ms, client_id=cid, order_id=state.order_id))
    events += fills
    end = {"canceled": OrderCanceled, "expired": OrderExpired}.get(state.status)
    if end is not None:
        events.append(end(ts=now_ms, client_id=cid, order_id=state.order_id, filled_qty=state.filled_qty,
                          reason=f"{state.status} (found after a duplicate id)"))
    elif state.status == "rejected":
        events.append(OrderRejected(ts=now_ms, client_id=cid, reason="rejected (found after a duplicate id)"))
    return events


# --- optional capabilities: what an adapter may offer beyond the protocol ---------------------------------


@runtime_checkable
class MarketSource(Protocol):
    """Delivers the closed candles itself (a live market stream, a replayed recording); the runner then feeds
    the instances from it instead of from a candle file."""

    def start_market(self, streams: dict[tuple[str, str], int | None], on_candle: Any) -> Any: ...


@runtime_checkable
class CandleDriven(Protocol):
    """Matches its orders on each closed candle the runner hands it (the paper exchange)."""

    def on_candle(self, candle: CandleClosed) -> None: ...


@runtime_checkable
class MarketTimed(Protocol):
    """Knows the open time of the last candle it saw of a symbol (a restart resumes the market there)."""

    def market_time(self, symbol: str) -> int | None: ...


@runtime_checkable
class Finite(Protocol):
    """Its market may end (an embedded simulator's finite market): the event is set then; None when it never
    ends."""

    finished: asyncio.Event | None


@runtime_checkable
class Recordable(Protocol):
    """Tees every raw frame and REST reply into ``recorder`` (a core.recording.Recorder, set before start)."""

    recorder: Any


@runtime_checkable
class EntryVeto(Protocol):
    """May refuse new entries for a while (the user stream unreadable): the reason, or None."""

    def entries_blocked(self) -> str | None: ...


@runtime_checkable
class FundingHistory(Protocol):
    """Reports the funding payments of a symbol since a time (epoch ms)."""

    async def funding(self, symbol: str, since_ms: int = 0) -> list[FundingPaid]: ...


@runtime_checkable
class OrderCounter(Protocol):
    """Counts the exchange's orders under one client id (the invariant checks: never two)."""

    def order_count(self, client_id: str) -> int: ...
