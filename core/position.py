"""The position state machine: one declarative table, one shared ``transitions`` Machine.

A position's life is flat -> entering -> protected -> exiting -> exited_{sl,exit,manual} -> flat. A protected
position may also carry a take-profit (reduce-only, placed once its stop is confirmed): one that fills ends the
position as ``exited_exit`` (exit reason ``tp``) like a stop does, and the other orders are canceled.
The table below is the whole contract (docs/architecture.md mirrors it). Effects are synchronous and
free of I/O: they update the position's bookkeeping and append commands to ``outbox``; the engine
journals the transition and those commands *before* anything is sent.

Rows whose ``why`` is set are the unusual edges: races with the exchange, recovery findings and
failure handling. Any (state, trigger) pair not in the table raises :class:`InvalidTransition`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple

import msgspec
from transitions import EventData, Machine, MachineError

from gatebot.core import ids
from gatebot.core.events import (
    ZERO,
    CancelOrder,
    Command,
    OrderFilled,
    Side,
    StopSpec,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
)
from gatebot.core.instrument import Instrument

STATES = ("flat", "entering", "protected", "exiting", "exited_sl", "exited_exit", "exited_manual")
EXITED = ("exited_sl", "exited_exit", "exited_manual")



class Row(NamedTuple):
    source: str | tuple[str, ...]
    trigger: str
    dest: str
    effect: str
    when: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    why: str = ""


ANY = STATES
TABLE: tuple[Row, ...] = (
    Row("flat", "enter", "entering", "submit_entry"),
    Row("flat", "adopt", "entering", "adopt_position",
        why="recovery found a position the bot did not open: journal it and protect it"),
    Row("entering", "entry_rejected", "flat", "forget_entry"),
    Row("entering", "entry_lost", "flat", "forget_entry",
        why="recovery: the exchange never saw the entry and holds no position"),
    Row("entering", "entry_filled", "protected", "book_entry_fill", when=("protects_entry",),
        why="an attached stop went live before the entry's last fill: that fill completes a guarded position"),
    Row("entering", "entry_filled", "entering", "book_entry_fill", unless=("protects_entry",),
        why="a fill does not protect: the position waits here until its stop is confirmed"),
    Row("entering", "entry_completed", "protected", "protect_filled", when=("has_fill", "has_live_stop"),
        why="the exchange ended a partly filled entry whose attached stop is live: it guards what filled"),
    Row("entering", "entry_completed", "entering", "protect_filled", when=("has_fill",), unless=("has_live_stop",),
        why="the exchange ended a partly filled entry: protect the quantity that filled"),
    Row("entering", "entry_completed", "flat", "forget_entry", unless=("has_fill",),
        why="the exchange ended the entry with nothing filled: as good as rejected"),
    Row("entering", "stop_confirmed", "protected", "confirm_stop", when=("entry_complete", "confirms_our_stop")),
    Row("entering", "stop_confirmed", "entering", "confirm_stop", when=("confirms_our_stop",),
        unless=("entry_complete",),
        why="an attached stop went live before the last entry fill reached us"),
    Row("entering", "stop_rejected", "exiting", "close_unprotected",
        why="a position without a stop is closed at market, never left naked"),
    Row("entering", "protection_timeout", "exiting", "close_unconfirmed",
        why="the stop was not confirmed within protection_timeout: canceled (it may be live, its answer lost) "
            "and the position closed at market"),
    Row("entering", "stop_canceled", "entering", "resubmit_stop",
        why="someone removed the stop before it was confirmed: place a new one"),
    Row("entering", "stop_filled", "exited_sl", "book_exit_fill", when=("closes_position",),
        why="an attached stop fired before its confirmation reached us"),
    Row("entering", "position_gone", "exited_manual", "abandon",
        why="the position was closed outside the bot before it was protected"),
    Row("protected", "exit_signal", "exiting", "submit_close"),
    Row("protected", "manual_close", "exiting", "submit_close"),
    Row("protected", "stop_filled", "exited_sl", "book_exit_fill", when=("closes_position",)),
    Row("protected", "stop_filled", "protected", "book_exit_fill", unless=("closes_position",),
        why="a partial stop fill: the rest of the stop keeps guarding the rest"),
    Row("protected", "position_gone", "exited_manual", "abandon",
        why="closed outside the bot (by hand, ADL or liquidation)"),
    Row("protected", "stop_canceled", "protected", "resubmit_stop",
        why="someone else canceled our stop: a new one goes in at once"),
    Row("protected", "stop_confirmed", "protected", "confirm_stop", when=("confirms_our_stop",),
        why="a replacement stop is live: now the one it replaces is canceled (place first, cancel second)"),
    Row("protected", "stop_rejected", "protected", "drop_pending_stop", when=("has_live_stop",),
        why="a replacement stop was refused while the old one still guards"),
    Row("protected", "stop_rejected", "exiting", "close_unprotected", unless=("has_live_stop",),
        why="no stop is live and a new one was refused: close at market"),
    Row("protected", "move_stop", "protected", "place_moved_stop", unless=("stop_pending",),
        why="the stop moves (trailing, break-even, MoveStop): the new one first, the old canceled once it is live"),
    Row("protected", "stop_resize", "protected", "replace_stop",
        why="recovery found another quantity or price on the exchange: the stop follows the real position"),
    Row("exiting", "close_filled", "exiting", "book_exit_fill", unless=("closes_position",),
        why="a partial close fill: wait for the rest"),
    Row("exiting", "close_filled", "exited_manual", "book_exit_fill", when=("closes_position", "manual")),
    Row("exiting", "close_filled", "exited_exit", "book_exit_fill", when=("closes_position",), unless=("manual",)),
    Row("exiting", "stop_filled", "exited_sl", "book_exit_fill", when=("closes_position",),
        why="the stop won the race with our close: cancel the close if still open"),
    Row("exiting", "stop_filled", "exiting", "book_exit_fill", unless=("closes_position",),
        why="a partial stop fill while closing"),
    Row("exiting", "close_rejected", "protected", "forget_close", when=("has_live_stop",),
        why="the stop still guards; the exit is asked again on the next signal"),
    Row("exiting", "close_rejected", "exiting", "resubmit_close", unless=("has_live_stop",),
        why="unprotected: keep closing with a new attempt"),
    Row("exiting", "position_gone", "exited_manual", "abandon",
        why="closed outside the bot while our close was in flight"),
    Row("exiting", "stop_canceled", "exiting", "forget_stop",
        why="the close is in flight; a new stop would only race it"),
    Row("exiting", "stop_confirmed", "exiting", "confirm_stop", when=("confirms_our_stop",),
        why="a replacement stop went live after the exit began: it guards until the close fills"),
    Row("protected", "tp_confirmed", "protected", "confirm_tp", when=("is_our_tp",)),
    Row("exiting", "tp_confirmed", "exiting", "confirm_tp", when=("is_our_tp",),
        why="a take-profit went live after the exit began: the close's fill cancels it"),
    Row("protected", "tp_filled", "exited_exit", "book_exit_fill", when=("closes_position",),
        why="the take-profit closed the position: its stop is canceled"),
    Row("protected", "tp_filled", "protected", "book_exit_fill", unless=("closes_position",),
        why="a partial take-profit fill: the stop keeps guarding the rest"),
    Row("exiting", "tp_filled", "exited_exit", "book_exit_fill", when=("closes_position",),
        why="the take-profit won the race with our close: the close is canceled if still open"),
    Row("exiting", "tp_filled", "exiting", "book_exit_fill", unless=("closes_position",),
        why="a partial take-profit fill while closing"),
    Row(("protected", "exiting"), "tp_canceled", "=", "forget_tp",
        why="someone else canceled the take-profit: it stays gone (the stop guards; a take-profit is no safety order)"),
    Row(("protected", "exiting"), "tp_rejected", "=", "forget_tp",
        why="the exchange refused the take-profit (the price already past it): dropped, the stop guards"),
    Row(EXITED, "settled", "flat", "close_lifecycle"),
    Row(ANY, "order_gone", "=", "forget_order",
        why="bookkeeping: an order we canceled or no longer need is confirmed gone"),
)

TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(r.trigger for r in TABLE))


class InvalidTransition(Exception):
    """A trigger that the table does not allow in the current state. The engine journals it."""

    def __init__(self, state: str, trigger: str) -> None:
        super().__init__(f"trigger {trigger!r} is not allowed in state {state!r}")
        self.state = state
        self.trigger = trigger


class Protection(msgspec.Struct, frozen=True, kw_only=True):
    """What the machine needs to protect a position: the stop distance and the instrument."""

    instrument: Instrument
    price_sl_pct: Decimal
    price_tp_pct: Decimal | None = None
    """The take-profit's distance from the fill (a price share); None: no take-profit."""
    trailing_pct: Decimal | None = None
    """The stop trails each close by this share of the price (only ever closer to it); None: off."""
    break_even_at_pct: Decimal | None = None
    """A close this share of the price in profit moves the stop to the entry; None: off."""
    attached_stop: bool = False
    stop_tolerance_pct: Decimal = Decimal("0.0002")


class PositionRecord(msgspec.Struct, kw_only=True):
    """Everything that defines a position at one instant; journaled with every transition and
    restored from the journal's fold on start."""

    state: str = "flat"
    seq: int = 0
    symbol: str = ""
    side: Side | None = None
    entry_qty: Decimal = ZERO
    filled_qty: Decimal = ZERO
    entry_cost: Decimal = ZERO
    entry_complete: bool = False
    closed_qty: Decimal = ZERO
    stop_id: str | None = None
    stop_price: Decimal | None = None
    pending_stop_id: str | None = None
    pending_stop_price: Decimal | None = None
    stop_attempt: int = 0
    close_id: str | None = None
    close_attempt: int = 0
    tp_id: str | None = None
    """The take-profit of this position (at most one); ``tp_live`` once the exchange accepted it."""
    tp_price: Decimal | None = None
    tp_qty: Decimal = ZERO
    """What the take-profit still closes: never more than the position (replaced when the position shrinks)."""
    tp_live: bool = False
    tp_attempt: int = 0
    exit_reason: str = ""
    opened_at: int = 0
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    working: list[str] = msgspec.field(default_factory=list)
    canceling: list[str] = msgspec.field(default_factory=list)
    note: str = ""

    @property
    def open_qty(self) -> Decimal:
        return self.filled_qty - self.closed_qty

    @property
    def avg_entry(self) -> Decimal:
        return self.entry_cost / self.filled_qty if self.filled_qty else ZERO


class Position:
    """The model the shared Machine drives. ``rec`` holds the data; the Machine owns ``state``."""

    state: str

    def __init__(self, instance: str, symbol: str, protection: Protection,
                 record: PositionRecord | None = None, epoch: str = ids.LEGACY) -> None:
        self.instance = instance
        self.epoch = epoch
        """The journal's epoch: part of every client id (core/ids.py)."""
        self.protection = protection
        self.rec = record if record is not None else PositionRecord(symbol=symbol)
        self.rec.symbol = symbol
        self.outbox: list[Command] = []
        self._applied = False
        MACHINE.add_model(self, initial=self.rec.state)

    def release(self) -> None:
        """Detach from the shared Machine (otherwise it keeps the model alive forever)."""
        MACHINE.remove_model(self)

    # --- firing ----------------------------------------------------------------------------

    def fire(self, trigger: str, **data: Any) -> list[Command]:
        """Apply ``trigger``; return the commands its effect produced (to be journaled, then sent)."""
        self.outbox = []
        self._applied = False
        state = self.state
        try:
            self.trigger(trigger, **data)  # type: ignore[attr-defined]
        except (MachineError, AttributeError) as exc:
            if isinstance(exc, AttributeError) and trigger in TRIGGERS:
                raise
            raise InvalidTransition(state, trigger) from None
        if not self._applied:
            # Rows for this pair exist but none of their guards held. A queued Machine returns True
            # regardless, so the model notes each applied transition itself.
            raise InvalidTransition(state, trigger)
        self.rec.state = self.state
        return self.outbox

    def allowed(self, trigger: str) -> bool:
        return any(r.trigger == trigger and self.state in _sources(r) for r in TABLE)

    def id_for(self, role: str, attempt: int) -> str:
        return ids.make(self.instance, self.epoch, self.rec.seq, role, attempt)

    @property
    def entry_id(self) -> str:
        return self.id_for("e", 1)

    def _mark_applied(self, ev: EventData) -> None:
        self._applied = True

    # --- conditions ------------------------------------------------------------------------

    def entry_complete(self, ev: EventData) -> bool:
        return self.rec.entry_complete

    def closes_position(self, ev: EventData) -> bool:
        """This exit fill leaves nothing open. Not the exchange's ``final`` flag: the final part of an
        order can arrive before the others (reordered pushes), and the lifecycle ends, with its PnL
        complete, only when the last part is booked."""
        fill: OrderFilled = ev.kwargs["fill"]
        return self.rec.closed_qty + fill.qty >= self.rec.filled_qty

    def has_fill(self, ev: EventData) -> bool:
        return self.rec.filled_qty > 0

    def confirms_our_stop(self, ev: EventData) -> bool:
        return ev.kwargs["client_id"] in (self.rec.pending_stop_id, self.rec.stop_id)

    def is_our_tp(self, ev: EventData) -> bool:
        return ev.kwargs["client_id"] == self.rec.tp_id

    def stop_pending(self, ev: EventData) -> bool:
        return self.rec.pending_stop_id is not None

    def has_live_stop(self, ev: EventData) -> bool:
        return self.rec.stop_id is not None

    def protects_entry(self, ev: EventData) -> bool:
        return self.rec.stop_id is not None and self._completes(ev.kwargs["fill"])

    def manual(self, ev: EventData) -> bool:
        return self.rec.exit_reason == "manual"

    # --- effects ---------------------------------------------------------------------------

    def _emit(self, cmd: Command) -> None:
        self.outbox.append(cmd)
        if not isinstance(cmd, CancelOrder) and cmd.client_id not in self.rec.working:
            self.rec.working.append(cmd.client_id)

    def _cancel(self, client_id: str | None) -> None:
        r = self.rec
        if client_id and client_id in r.working and client_id not in r.canceling:
            r.canceling.append(client_id)
            self.outbox.append(CancelOrder(client_id=client_id, symbol=r.symbol))

    def _stop_for(self, price: Decimal) -> Decimal:
        assert self.rec.side is not None
        return self.protection.instrument.stop_price(self.rec.side, price, self.protection.price_sl_pct)

    def _submit_stop(self, price: Decimal) -> None:
        r = self.rec
        assert r.side is not None
        r.stop_attempt += 1
        r.pending_stop_id = self.id_for("s", r.stop_attempt)
        r.pending_stop_price = price
        self._emit(SubmitStop(client_id=r.pending_stop_id, symbol=r.symbol, side=r.side,
                              qty=r.open_qty, stop_price=price))

    def _submit_tp(self, price: Decimal) -> None:
        r = self.rec
        assert r.side is not None
        r.tp_attempt += 1
        r.tp_id, r.tp_price, r.tp_qty, r.tp_live = self.id_for("t", r.tp_attempt), price, r.open_qty, False
        self._emit(SubmitTakeProfit(client_id=r.tp_id, symbol=r.symbol, side=r.side, qty=r.open_qty, stop_price=price))

    def _first_tp(self) -> None:
        """The take-profit goes in once, when the position is first protected (its stop confirmed): one canceled
        by someone else or refused is not placed again."""
        r = self.rec
        pct = self.protection.price_tp_pct
        if pct is None or self.state != "protected" or r.tp_attempt or r.open_qty <= 0:
            return
        assert r.side is not None
        self._submit_tp(self.protection.instrument.take_profit_price(r.side, r.avg_entry, pct))

    def _replace_tp(self) -> None:
        """The position changed size: the take-profit is canceled first, then placed for what is held (two at
        once could close more than the position; the stop guards meanwhile)."""
        r = self.rec
        if r.tp_id is None or r.tp_price is None or r.open_qty <= 0:
            return
        self._cancel(r.tp_id)
        self._submit_tp(r.tp_price)

    def submit_entry(self, ev: EventData) -> None:
        k = ev.kwargs
        seq = self.rec.seq + 1
        self.rec = r = PositionRecord(seq=seq, symbol=self.rec.symbol, side=k["side"],
                                      entry_qty=k["qty"], opened_at=k.get("bar", 0), note=k.get("note", ""))
        stop = None
        if self.protection.attached_stop:
            r.stop_attempt = 1
            r.pending_stop_id = self.id_for("s", 1)
            r.pending_stop_price = self._stop_for(k["ref_price"])
            stop = StopSpec(client_id=r.pending_stop_id, price=r.pending_stop_price)
            r.working.append(r.pending_stop_id)
        self._emit(SubmitEntry(client_id=self.entry_id, symbol=r.symbol, side=k["side"],
                               qty=k["qty"], stop=stop))

    def adopt_position(self, ev: EventData) -> None:
        """A position this journal did not open. ``orders``: working orders of another journal of this
        instance that come with it (``gatebot run --adopt``); ``stop`` (id, price), one of them, guards
        the position until this journal's own stop is confirmed and then is canceled like a replaced
        stop; the others are canceled at once."""
        k = ev.kwargs
        qty: Decimal = k["qty"]
        self.rec = r = PositionRecord(seq=self.rec.seq + 1, symbol=self.rec.symbol, side=k["side"],
                                      entry_qty=qty, filled_qty=qty, entry_cost=qty * k["entry_price"],
                                      entry_complete=True, opened_at=k.get("bar", 0), note="adopted")
        r.working.extend(k.get("orders", ()))
        if k.get("stop"):
            r.stop_id, r.stop_price = k["stop"]
        self._submit_stop(self._stop_for(r.avg_entry))
        for cid in list(r.working):
            if cid not in (r.stop_id, r.pending_stop_id):
                self._cancel(cid)

    def forget_entry(self, ev: EventData) -> None:
        self.rec = PositionRecord(seq=self.rec.seq, symbol=self.rec.symbol, note=ev.kwargs.get("reason", ""))

    def _book(self, fill: OrderFilled) -> None:
        r = self.rec
        r.fees += fill.fee
        r.realized_pnl += fill.realized_pnl

    def _completes(self, fill: OrderFilled) -> bool:
        """Whether booking this entry fill completes the entry. Only once every fill up to the final one
        is booked: a final fill may arrive before earlier partial fills (reordered events, or recovery
        booking the rest later). Protecting then would size the stop to the part seen so far and leave
        the rest of the position naked."""
        r = self.rec
        filled = r.filled_qty + fill.qty
        entry_qty = max(fill.cum_qty, filled) if fill.final and fill.cum_qty > 0 else r.entry_qty
        return (fill.final and filled >= fill.cum_qty) or (entry_qty > 0 and filled >= entry_qty)

    def book_entry_fill(self, ev: EventData) -> None:
        fill: OrderFilled = ev.kwargs["fill"]
        r = self.rec
        done = self._completes(fill)
        self._book(fill)
        r.filled_qty += fill.qty
        r.entry_cost += fill.qty * fill.price
        if fill.final and fill.cum_qty > 0:
            r.entry_qty = max(fill.cum_qty, r.filled_qty)  # the exchange's last word on how much the entry amounted to
        if done:
            self._entry_done()
        self._first_tp()

    def protect_filled(self, ev: EventData) -> None:
        self._entry_done()
        self._first_tp()

    def _entry_done(self) -> None:
        r = self.rec
        r.entry_complete = True
        if self.entry_id in r.working:
            r.working.remove(self.entry_id)
        if r.filled_qty <= 0:
            return
        wanted = self._stop_for(r.avg_entry)
        placed = r.pending_stop_price if r.pending_stop_id else r.stop_price
        if placed is None:
            self._submit_stop(wanted)
        elif self._off_the_fill(placed, wanted):
            old = r.pending_stop_id
            if old and r.stop_id is None:
                # The attached stop is the one live; the replacement cancels it once confirmed.
                r.stop_id, r.stop_price = old, placed
            self._submit_stop(wanted)

    def _off_the_fill(self, placed: Decimal, wanted: Decimal) -> bool:
        """An attached stop (priced from the last close) stays after the fill only if it risks no more
        than the stop from the actual fill and lies within the tolerance of it: a stop farther from the
        entry than configured is replaced, however little (the loss is never wider than configured)."""
        r = self.rec
        wider = placed < wanted if r.side == "long" else placed > wanted
        return wider or abs(placed - wanted) > r.avg_entry * self.protection.stop_tolerance_pct

    def confirm_stop(self, ev: EventData) -> None:
        r = self.rec
        cid = ev.kwargs["client_id"]
        if cid == r.pending_stop_id:
            old = r.stop_id
            r.stop_id, r.stop_price = cid, r.pending_stop_price
            r.pending_stop_id = r.pending_stop_price = None
            if old and old != cid:
                self._cancel(old)
        if self.state == "protected" and not r.opened_at:
            r.opened_at = ev.kwargs.get("bar", 0)
        self._first_tp()

    def confirm_tp(self, ev: EventData) -> None:
        self.rec.tp_live = True

    def forget_tp(self, ev: EventData) -> None:
        r = self.rec
        self._drop(r.tp_id)
        r.tp_id, r.tp_live = None, False
        r.note = ev.kwargs.get("reason", "")

    def resubmit_stop(self, ev: EventData) -> None:
        r = self.rec
        cid = ev.kwargs["client_id"]
        self._drop(cid)
        if cid == r.stop_id:
            r.stop_id = None
        if cid == r.pending_stop_id:
            r.pending_stop_id = None
        if r.pending_stop_id is None and r.stop_id is None and r.filled_qty > 0:
            self._submit_stop(r.stop_price or self._stop_for(r.avg_entry))

    def moved_stop(self, close: Decimal, asked: Decimal | None = None, *, widen: bool = False) -> Decimal | None:
        """Where the stop goes after a candle closed at ``close``, or None to leave it: ``asked`` (a strategy's
        MoveStop, rounded toward the price) replaces it, held to the configured stop's distance from the entry
        unless ``widen``; then the built-in rules (``trailing_pct``, ``break_even_at_pct``) may only bring it
        closer to the price. Only a protected position with one live stop and none on its way moves, and never
        to or past the price (the exchange would refuse it or fill it at once). Pure."""
        r, prot = self.rec, self.protection
        if asked is None and prot.trailing_pct is None and prot.break_even_at_pct is None:
            return None  # nothing asks for a move (every candle of most strategies)
        if self.state != "protected" or r.side is None or r.stop_price is None or r.pending_stop_id or r.open_qty <= 0:
            return None
        long, inst = r.side == "long", prot.instrument

        def closer(a: Decimal, b: Decimal) -> bool:
            return a > b if long else a < b

        target = r.stop_price
        if asked is not None:
            target = inst.round_price(asked, up=long)
            limit = self._stop_for(r.avg_entry)
            if not widen and closer(limit, target):
                target = limit
        candidates = []
        if prot.trailing_pct is not None:
            candidates.append(inst.stop_price(r.side, close, prot.trailing_pct))
        gain = (close - r.avg_entry if long else r.avg_entry - close) / r.avg_entry
        if prot.break_even_at_pct is not None and gain >= prot.break_even_at_pct:
            candidates.append(inst.round_price(r.avg_entry, up=long))
        for c in candidates:
            if closer(c, target):
                target = c
        if target == r.stop_price or not closer(close, target):
            return None
        return target

    def place_moved_stop(self, ev: EventData) -> None:
        self._submit_stop(ev.kwargs["price"])

    def replace_stop(self, ev: EventData) -> None:
        """Recovery: the exchange position is ``qty``; place a stop for it, then cancel the old one."""
        r = self.rec
        qty: Decimal = ev.kwargs["qty"]
        change = qty - r.open_qty
        if change < 0:
            r.closed_qty -= change  # closed outside the bot: its PnL is not ours to book
        else:
            r.entry_cost += r.avg_entry * change  # added outside the bot: at an unknown price
            r.filled_qty += change
        self._submit_stop(r.stop_price or self._stop_for(r.avg_entry))
        if r.tp_qty != r.open_qty:
            self._replace_tp()

    def drop_pending_stop(self, ev: EventData) -> None:
        r = self.rec
        self._drop(r.pending_stop_id)
        r.pending_stop_id = r.pending_stop_price = None
        r.note = ev.kwargs.get("reason", "")

    def close_unconfirmed(self, ev: EventData) -> None:
        """Unlike a refused stop, one not confirmed in time may be on the exchange (its answer lost, or a crash
        before it was handled): canceled, not forgotten, so that no stop outlives the position."""
        r = self.rec
        self._cancel(r.pending_stop_id)
        r.pending_stop_id = r.pending_stop_price = None
        r.note = ev.kwargs.get("reason", "")
        self._submit_close("unprotected")

    def close_unprotected(self, ev: EventData) -> None:
        r = self.rec
        self._drop(r.pending_stop_id)
        r.pending_stop_id = r.pending_stop_price = None
        r.note = ev.kwargs.get("reason", "")
        self._submit_close("unprotected")

    def _submit_close(self, reason: str) -> None:
        r = self.rec
        assert r.side is not None
        r.exit_reason = reason
        r.close_attempt += 1
        r.close_id = self.id_for("x", r.close_attempt)
        self._emit(SubmitClose(client_id=r.close_id, symbol=r.symbol, side=r.side, qty=r.open_qty))

    def submit_close(self, ev: EventData) -> None:
        """An exit: the close goes out and the take-profit is canceled; the stop guards until the close fills
        (a refused close leaves the position protected, and its take-profit placed again)."""
        reason = "manual" if ev.event.name == "manual_close" else ev.kwargs.get("reason", "signal")
        self._submit_close(reason)
        self._cancel(self.rec.tp_id)

    def resubmit_close(self, ev: EventData) -> None:
        self._drop(self.rec.close_id)
        self._submit_close(self.rec.exit_reason or "unprotected")

    def forget_close(self, ev: EventData) -> None:
        r = self.rec
        self._drop(r.close_id)
        r.close_id = None
        r.exit_reason = ""
        r.note = ev.kwargs.get("reason", "")
        if r.tp_attempt and r.tp_price is not None and (r.tp_id is None or r.tp_id in r.canceling):
            self._submit_tp(r.tp_price)  # the exit canceled it: back to protected, a new one in its place

    def forget_stop(self, ev: EventData) -> None:
        r = self.rec
        cid = ev.kwargs["client_id"]
        self._drop(cid)
        if cid == r.stop_id:
            r.stop_id = None

    def book_exit_fill(self, ev: EventData) -> None:
        fill: OrderFilled = ev.kwargs["fill"]
        r = self.rec
        self._book(fill)
        r.closed_qty += fill.qty
        r.exit_reason = {"stop_filled": "sl", "tp_filled": "tp"}.get(ev.event.name, r.exit_reason)
        was_stop = fill.client_id in (r.stop_id, r.pending_stop_id)
        if fill.client_id == r.tp_id:
            r.tp_qty -= fill.qty
        if fill.final:
            self._drop(fill.client_id)
            if was_stop:
                r.stop_id = r.pending_stop_id = None
        if r.open_qty <= 0:
            self._cancel_rest()
        elif fill.final and was_stop and self.state == "protected":
            # A stop smaller than the position filled in full: the rest is guarded by a new one at once.
            self._submit_stop(r.stop_price or self._stop_for(r.avg_entry))
        elif r.tp_id is not None and r.tp_qty > r.open_qty and self.state == "protected":
            self._replace_tp()  # the position shrank under its take-profit (a partial stop fill)

    def _cancel_rest(self) -> None:
        r = self.rec
        for cid in list(r.working):
            self._cancel(cid)

    def abandon(self, ev: EventData) -> None:
        r = self.rec
        r.exit_reason = "manual"
        r.note = ev.kwargs.get("reason", "position gone")
        if "realized_pnl" in ev.kwargs:
            r.realized_pnl += ev.kwargs["realized_pnl"]
            r.fees += ev.kwargs.get("fee", ZERO)
        r.closed_qty = r.filled_qty
        self._cancel_rest()

    def forget_order(self, ev: EventData) -> None:
        self._drop(ev.kwargs["client_id"])

    def _drop(self, client_id: str | None) -> None:
        r = self.rec
        if client_id in r.working:
            r.working.remove(client_id)
        if client_id in r.canceling:
            r.canceling.remove(client_id)
        if client_id == r.stop_id and self.state in EXITED:
            r.stop_id = None
        if client_id is not None and client_id == r.tp_id:
            r.tp_id, r.tp_live = None, False

    def close_lifecycle(self, ev: EventData) -> None:
        self.rec = PositionRecord(seq=self.rec.seq, symbol=self.rec.symbol)


def _sources(row: Row) -> tuple[str, ...]:
    return (row.source,) if isinstance(row.source, str) else row.source


def _build_machine() -> Machine:
    transitions = [
        {
            "trigger": r.trigger,
            "source": list(_sources(r)),
            "dest": r.dest,
            "conditions": list(r.when),
            "unless": list(r.unless),
            "after": r.effect,
        }
        for r in TABLE
    ]
    return Machine(model=None, states=list(STATES), transitions=transitions, initial="flat",
                   auto_transitions=False, send_event=True, queued=True, ignore_invalid_triggers=False,
                   before_state_change="_mark_applied")


MACHINE = _build_machine()
"""The one Machine every position shares (``add_model``): cheap per position, one table."""


def table_markdown() -> str:
    """The state table as docs/architecture.md shows it (a test keeps the two identical)."""
    lines = ["| from | trigger | to | when | effect | why |", "|---|---|---|---|---|---|"]
    for r in TABLE:
        src = "any" if r.source == ANY else "exited_*" if r.source == EXITED else ", ".join(_sources(r))
        cond = " and ".join([*r.when, *(f"not {u}" for u in r.unless)])
        dest = "(same)" if r.dest == "=" else r.dest
        lines.append(f"| {src} | `{r.trigger}` | {dest} | {cond} | {r.effect} | {r.why} |")
    return "\n".join(lines)


def exit_kind(state: str, record: PositionRecord) -> str:
    """How a position ended, as reports count it: ``sl``, ``exit``, ``manual``, or ``tp`` for an ``exited_exit``
    that its take-profit closed."""
    return "tp" if state == "exited_exit" and record.exit_reason == "tp" else state.removeprefix("exited_")
