"""Recovery as a plan: the journal's state against the exchange's facts (architecture.md, recovery tables).

Recovery runs at every start before any entry, after every stream reconnect and whenever the engine meets
something it did not expect. This module is its pure half: functions of (position record, intents,
exchange facts) that return a *plan*, the events to hand the state machine (as the live streams would have
delivered them), the triggers to fire, the commands to send and the halts to raise, in order. It does no
I/O and imports no engine: the shell (:mod:`gatebot.core.recovery_shell`) gathers the facts through the
adapter and the journal, asks the functions here, and executes their plans through the engine.

A round asks the exchange about every order of the current position by its deterministic client id
(:func:`questions`, :func:`answer`), sends again what was committed and never arrived
(:func:`resend_plan`), finishes the cancels under way (:func:`canceling_plan`), then resolves what the
events cannot tell with :data:`TABLE` (:func:`decide`, :func:`final_plan`): a position that vanished, a
stop that is missing, a quantity that differs, intents the exchange never received. Flat, it cancels the
journal's working orders and applies the foreign-position policy (:func:`flat_plan`, :func:`foreign_plan`);
on a fresh journal it refuses or adopts what the account holds (:func:`fresh_plan`).

Before any of that it checks who owns what it sees (one owner per account and symbol,
:func:`probe_plan`, :func:`owners_plan`): every working order of this instance was sent by this journal
(another epoch is another journal: a second process, or a journal set aside; this journal's epoch on an id
it never sent means it is behind the exchange), and none of another gatebot instance works on the symbol.
:data:`RESOLUTIONS` lists what each case resolves to (docs/architecture.md renders it; a test per row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from gatebot.core import ids
from gatebot.core.events import (
    ZERO,
    AnyCommand,
    AnyEvent,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    Side,
)
from gatebot.core.exchange import OrderState
from gatebot.core.position import EXITED, STATES, PositionRecord


class InstanceHalted(Exception):
    """The instance must not trade (a policy said halt, another owner trades its account and symbol, its
    journal is behind the exchange, or the exchange disagrees with the config)."""


class AdoptionRequired(InstanceHalted):
    """A fresh journal on an account that holds a position or orders of this instance: the user must say
    whether to adopt them (``gatebot run --adopt``). Exit status 2 at start."""


class ExchangeFacts(NamedTuple):
    """What the last step of a recovery round knows besides the position record: gathered by the shell
    (:mod:`gatebot.core.recovery_shell`) as the steps ask for them, then decided on by :func:`decide` alone."""

    entry_seen: bool = True
    """False when the exchange does not know the entry's client id."""
    shares_symbol: bool = False
    """The exchange's position is several instances' sum: its quantity only bounds this one's from above."""
    exchange_qty: Decimal | None = None
    """The exchange's position on the record's side; None until asked (``ask position``)."""
    stop_asked: bool = False
    stop_live_qty: Decimal | None = None
    """The quantity of the record's stop when it works on the exchange (None: not working or not found)."""
    missed_booked: bool = False
    """The fills of the position's orders that no push brought were asked for and booked."""


def _held_qty(r: PositionRecord, f: ExchangeFacts) -> Decimal:
    qty = f.exchange_qty if f.exchange_qty is not None else ZERO
    return min(qty, r.open_qty) if f.shares_symbol else qty


_CONDITIONS: dict[str, Callable[[PositionRecord, ExchangeFacts], bool]] = {
    "missed_booked": lambda r, f: f.missed_booked,
    "working": lambda r, f: bool(r.working),
    "no_side": lambda r, f: r.side is None,
    "unasked": lambda r, f: f.exchange_qty is None,
    "unfilled": lambda r, f: r.filled_qty == 0,
    "entry_unseen": lambda r, f: not f.entry_seen,
    "no_position": lambda r, f: f.exchange_qty == 0,
    "no_stop": lambda r, f: r.stop_id is None and r.pending_stop_id is None,
    "qty_differs": lambda r, f: _held_qty(r, f) != r.open_qty,
    "stop_unasked": lambda r, f: r.stop_id is not None and not f.stop_asked,
    "stop_short": lambda r, f: f.stop_live_qty is not None and f.stop_live_qty < _held_qty(r, f),
    "close_lost": lambda r, f: bool(r.close_id) and r.close_id not in r.working and (f.exchange_qty or ZERO) > 0,
}
"""The named conditions of :data:`TABLE` (``not <name>`` negates one). ``qty_differs`` / ``stop_short``
compare with the quantity held on the exchange (on a shared symbol, at most the journal's)."""

ASK_POSITION, ASK_STOP, BOOK_MISSED, SETTLE, NOTHING = "ask position", "ask stop", "book missed fills", \
    "settle", "nothing"
ACTIONS = (ASK_POSITION, ASK_STOP, BOOK_MISSED, SETTLE, NOTHING)
"""Answers that are not triggers: a fact to gather (then decide again), the settle of an exited position, none."""


class Step(NamedTuple):
    states: tuple[str, ...]
    when: tuple[str, ...]
    then: str
    why: str = ""
    drain: bool = True
    """Whether the engine applies what the step produced before the round ends (the steps that end a round
    early do not)."""


_OPEN = ("entering", "protected", "exiting")
TABLE: tuple[Step, ...] = (
    Step(_OPEN, ("missed_booked",), "position_gone", "no position on the exchange and none of its fills missed"),
    Step(STATES, ("missed_booked",), NOTHING, "the missed fills booked ended the position (a stop or close filled "
         "unseen): not a close by hand"),
    Step(EXITED, ("not working",), SETTLE, "no order of the position left working", drain=False),
    Step(EXITED, (), NOTHING, "its orders' cancels end it (settled when the last is gone)", drain=False),
    Step(("flat",), (), NOTHING, drain=False),
    Step(STATES, ("no_side",), NOTHING, drain=False),
    Step(STATES, ("unasked",), ASK_POSITION),
    Step(("entering",), ("unfilled", "entry_unseen", "no_position"), "entry_lost",
         "the exchange never saw the entry and holds no position", drain=False),
    Step(("entering",), ("unfilled",), NOTHING, "the entry's own events decide", drain=False),
    Step(STATES, ("no_position",), BOOK_MISSED, "asked after the position: every fill that emptied it is on "
         "the exchange's books by now"),
    Step(("protected",), ("no_stop",), "stop_canceled", "stop missing: a new stop (next attempt id)"),
    Step(("protected",), ("qty_differs",), "stop_resize", "a stop for the real quantity first, the old one "
         "canceled after"),
    Step(("protected",), ("stop_unasked",), ASK_STOP),
    Step(("protected",), ("stop_short",), "stop_resize", "the stop was sized to a part of the entry seen before "
         "the rest of its fills"),
    Step(("exiting",), ("close_lost",), "close_rejected", "close lost, position open: a new close attempt (or "
         "back to protected when the stop guards)"),
    Step(STATES, (), NOTHING),
)
"""The last step of a recovery round, once the orders' events are applied: the journal's state against the
exchange's position (docs/architecture.md renders it; the first row that matches answers)."""


class Decision(NamedTuple):
    then: str
    data: dict[str, Any]
    drain: bool
    step: int


def _holds(cond: str, r: PositionRecord, f: ExchangeFacts) -> bool:
    if cond.startswith("not "):
        return not _CONDITIONS[cond[4:]](r, f)
    return _CONDITIONS[cond](r, f)


def decide(state: str, r: PositionRecord, facts: ExchangeFacts) -> Decision:
    """The first step of :data:`TABLE` that holds for ``state`` and ``r`` with ``facts``: a trigger with the
    arguments to fire it with, a fact to gather first, or one of :data:`ACTIONS`. Pure."""
    for i, step in enumerate(TABLE):
        if state in step.states and all(_holds(c, r, facts) for c in step.when):
            data: dict[str, Any] = {}
            if step.then == "position_gone":
                data = {"reason": "no position on the exchange"}
            elif step.then == "entry_lost":
                data = {"reason": "the exchange never saw the entry"}
            elif step.then == "stop_canceled":
                data = {"client_id": "", "reason": "stop missing"}
            elif step.then == "close_rejected":
                data = {"reason": "close lost"}
            elif step.then == "stop_resize":
                held = _held_qty(r, facts)
                data = {"qty": held, "detail": {"journal_qty": str(r.open_qty), "exchange_qty": str(held)}}
            return Decision(step.then, data, step.drain, i)
    raise AssertionError(f"no recovery step for {state}")  # the last row matches every state


def table_markdown() -> str:
    """The recovery decision table as docs/architecture.md shows it (a test keeps the two identical)."""
    lines = ["| journal state | when | then | why |", "|---|---|---|---|"]
    for s in TABLE:
        states = "any" if s.states == STATES else "exited_*" if s.states == EXITED else ", ".join(s.states)
        then = s.then if s.then in ACTIONS else f"`{s.then}`"
        lines.append(f"| {states} | {' and '.join(s.when)} | {then} | {s.why} |")
    return "\n".join(lines)




# --- the plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Post:
    """Hand the engine an event, as the streams would have delivered it (applied at the next drain)."""

    event: AnyEvent


@dataclass(frozen=True, slots=True)
class Send:
    """Send a command the journal already holds, under its own id (it never reached the exchange)."""

    command: AnyCommand


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel an order; ``journaled``: journal the cancel's intent first (no transition produced it)."""

    client_id: str
    journaled: bool = False


@dataclass(frozen=True, slots=True)
class Fire:
    """Fire a trigger (committed with the commands it produces), send them, then drain when ``drain``;
    ``only_in``: only when the position is in that state by then (else skipped, drain included)."""

    trigger: str
    data: Mapping[str, Any]
    drain: bool = False
    only_in: str | None = None


@dataclass(frozen=True, slots=True)
class Settle:
    """exited_* -> flat (the engine's settle: nothing of the position is left working)."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Let the engine apply what was posted (and fire what the events mean) before the next action."""


@dataclass(frozen=True, slots=True)
class Note:
    """A warning for the log (the shell prefixes the instance's name)."""

    message: str


@dataclass(frozen=True, slots=True)
class Halt:
    """The instance must not trade: raised as :class:`InstanceHalted` (:class:`AdoptionRequired` when
    ``adoption``), nothing after it done."""

    message: str
    adoption: bool = False


@dataclass(frozen=True, slots=True)
class NotOurs:
    """An order of this instance that this journal never sent: the engine's halt for it (its message names
    the journal, which only the engine knows)."""

    client_id: str


Action = Post | Send | Cancel | Fire | Settle | Drain | Note | Halt | NotOurs
Plan = tuple[Action, ...]
DRAIN = Drain()


class Owner(NamedTuple):
    """Who recovers: the instance, its journal's epoch, its symbol and the sibling instances of its config
    on the same account and symbol (hedge mode), whose orders are not another owner's."""

    name: str
    epoch: str
    symbol: str
    siblings: frozenset[str] = frozenset()


class Held(NamedTuple):
    """One side the exchange holds on the symbol."""

    side: Side
    qty: Decimal
    entry_price: Decimal


class Intent(Protocol):
    """What recovery reads of a journaled intent (the journal's IntentRow)."""

    @property
    def command(self) -> AnyCommand: ...
    @property
    def status(self) -> str: ...


def ours(who: Owner, orders: Sequence[OrderState]) -> list[OrderState]:
    """The working orders that carry this instance's name (of any epoch)."""
    return [o for o in orders if ids.instance_of(o.client_id) == who.name]


# --- who owns what ------------------------------------------------------------------------------------


def next_entry_id(who: Owner, r: PositionRecord) -> str:
    """The entry id this journal will use next: it must be new to the exchange (:func:`probe_plan`)."""
    return ids.make(who.name, who.epoch, r.seq + 1, "e", 1)


def probe_plan(client_id: str, known: bool) -> Plan:
    """The next entry id known to the exchange means the journal is behind it (restored from an older backup,
    even when every later order is done), and using it would take that order's fills, or its refusal as a
    duplicate, for this journal's. One query: a stop or close id the exchange knows is caught where it is
    sent (IdTaken)."""
    return (NotOurs(client_id),) if known else ()


def owners_plan(who: Owner, orders: Sequence[OrderState], *, working: Sequence[str], known: frozenset[str],
                allow_other_epochs: bool) -> Plan:
    """Every working order on the symbol is this journal's (``working`` now, or ``known`` to the journal), a
    sibling instance's, or no gatebot's (placed by hand: left alone); anything else halts. A fresh journal
    (``allow_other_epochs``) lets its instance's orders of other epochs through to :func:`fresh_plan`."""
    for order in orders:
        p = ids.parse(order.client_id)
        if p is None or p.instance in who.siblings:
            continue
        if p.instance != who.name:
            return (Halt(
                f"{who.name}: order {order.client_id} of another gatebot instance ({p.instance}) works on "
                f"{who.symbol} on this account: is a second gatebot process trading this account and symbol? "
                "Halting (one owner per account and symbol)"),)
        if p.epoch != who.epoch and allow_other_epochs:
            continue
        if order.client_id in working or order.client_id in known:
            continue
        return (NotOurs(order.client_id),)
    return ()


# --- flat and fresh -----------------------------------------------------------------------------------


def fresh_plan(who: Owner, orders: Sequence[OrderState], held: Sequence[Held], *, journal: str, may_adopt: bool,
               bar: int) -> Plan:
    """A journal that never journaled anything, on an account that may hold a position or orders of this
    instance (another journal's: the user set the old one aside). Never silently: without --adopt it is
    refused; with it, the position is adopted and protected by a stop of this journal (the old stop guards
    until the new one is confirmed, then is canceled), other old orders are canceled, all journaled."""
    old = ours(who, orders)
    if not old and not held:
        return ()
    what = ", ".join([*(f"a {h.side} position of {h.qty}" for h in held), *(f"order {o.client_id}" for o in old)])
    if not may_adopt:
        return (Halt(
            f"{who.name}: the journal {journal} is new, but the account holds {what} on {who.symbol} (another "
            "journal's?): start with `gatebot run --adopt` to adopt them into this journal, or close them on the "
            "exchange first", adoption=True),)
    if len(held) > 1:
        return (Halt(f"{who.name}: cannot adopt both a long and a short position on {who.symbol}"),)
    plan: list[Action] = [Note(f"adopting {what} (--adopt)")]
    if held:
        side, qty, price = held[0]
        guard = next(((o.client_id, o.stop_price) for o in old if o.role == "stop" and o.side == side), None)
        cids = [o.client_id for o in old]
        plan.append(Fire("adopt", {"side": side, "qty": qty, "entry_price": price, "bar": bar, "orders": cids,
                                   "stop": guard, "detail": {"policy": "--adopt", "orders": cids}}, drain=True))
        return tuple(plan)
    for order in old:
        plan += _journaled_cancel(order.client_id, "adopted (--adopt) on a flat account")
    return tuple(plan)


def _journaled_cancel(client_id: str, why: str) -> Plan:
    return (Note(f"{client_id} is working on the exchange: canceling it ({why})"), Cancel(client_id, journaled=True))


def flat_plan(who: Owner, orders: Sequence[OrderState]) -> Plan:
    """flat: cancel this journal's working orders (journaled intents; :func:`owners_plan` halted on others)."""
    return tuple(a for o in ours(who, orders) for a in _journaled_cancel(o.client_id, "flat"))


def foreign_plan(who: Owner, held: Sequence[Held], *, policy: str, bar: int) -> Plan:
    """flat, once its orders are canceled: a position this journal did not open follows ``on_foreign_position``
    (halt; adopt: journal it and protect it; flatten: adopt it, then close it once protected)."""
    if not held:
        return ()
    side, qty, price = held[0]
    note = Note(f"found a {side} position of {qty} that the bot did not open (policy {policy})")
    if policy == "halt":
        return (note, Halt(f"{who.name}: a {side} position of {qty} {who.symbol} exists that this journal did not "
                           "open (on_foreign_position = 'halt'; another bot's, or one opened by hand?)"))
    adopt = Fire("adopt", {"side": side, "qty": qty, "entry_price": price, "bar": bar, "detail": {"policy": policy}},
                 drain=True)
    if policy == "flatten":
        return (note, adopt, Fire("exit_signal", {"reason": "flatten"}, drain=True, only_in="protected"))
    return (note, adopt)


# --- a position: its orders asked about ----------------------------------------------------------------


class Question(NamedTuple):
    """An order of the position to ask the exchange about by its client id."""

    client_id: str
    command: AnyCommand | None
    """What placed it; None for an id only ever canceled or a stop that travelled with its entry."""
    status: str
    """Its journaled status (``attached`` for a stop that travelled with its entry)."""


def questions(r: PositionRecord, intents: Mapping[str, Intent]) -> list[Question]:
    """The orders of the position whose fate matters: working, its close, or sent without a definite answer.
    An order being canceled is asked about like the others: it may have filled before the cancel reached it
    (a replaced stop that fired while the bot was down)."""
    out = []
    for cid, intent in intents.items():
        command = None if isinstance(intent.command, CancelOrder) else intent.command
        out.append(Question(cid, command, intent.status))
        stop = getattr(command, "stop", None)
        if stop is not None and stop.client_id not in intents:
            out.append(Question(stop.client_id, None, "attached"))
    return [q for q in out if q.client_id in r.working or q.client_id == r.close_id
            or q.status in ("pending", "unknown")]


class Progress(NamedTuple):
    """What the answers so far say, carried from one answer to the next (:func:`answer`)."""

    entry_seen: bool = True
    """False once the exchange said it does not know the entry's id."""
    entry_filled: bool = False
    """The entry has fills (journaled, or the exchange's answer says so)."""
    resend: tuple[AnyCommand, ...] = ()
    """Commands committed and never received: sent again once the answers are applied (:func:`resend_plan`)."""


_ENDS: dict[str, Callable[[OrderState], AnyEvent]] = {
    "rejected": lambda o: OrderRejected(client_id=o.client_id, reason="rejected (found by recovery)"),
    "canceled": lambda o: OrderCanceled(client_id=o.client_id, filled_qty=o.filled_qty, reason="found by recovery"),
    "expired": lambda o: OrderExpired(client_id=o.client_id, filled_qty=o.filled_qty, reason="found by recovery"),
}
"""The event an order's end on the exchange means."""


def answer(q: Question, r: PositionRecord, entry_id: str, progress: Progress, order: OrderState | None,
           unbooked: Sequence[OrderFilled] = ()) -> tuple[Plan, Progress]:
    """What the exchange's answer about one order means: its fills not booked yet (``unbooked``, asked only of
    an order the exchange knows), its end or a stop gone live, as events; an id the exchange does not know is
    the entry unseen, an attached stop missing (the table answers with a new stop) or a command to resend."""
    cid = q.client_id
    if order is None:
        if cid == entry_id:
            return (), progress._replace(entry_seen=False)
        live = cid in r.working and cid not in r.canceling
        if q.command is None:
            if progress.entry_filled and live:
                return (Post(OrderCanceled(client_id=cid, reason="attached stop missing (found by recovery)")),), \
                    progress
            return (), progress
        if live:
            return (), progress._replace(resend=(*progress.resend, q.command))
        return (), progress
    if cid == entry_id and order.filled_qty > 0:
        progress = progress._replace(entry_filled=True)
    plan: list[Action] = [Post(fill) for fill in unbooked]
    end = _ENDS.get(order.status)
    if end is not None:
        plan.append(Post(end(order)))
    elif order.working and (cid == r.pending_stop_id or (cid == r.tp_id and not r.tp_live)):
        plan.append(Post(OrderAccepted(client_id=cid, order_id=order.order_id)))
    return tuple(plan), progress


def resend_plan(resend: Sequence[AnyCommand], r: PositionRecord) -> Plan:
    """The commands never received, sent again under their own ids while the answers applied still leave them
    working; then their outcomes applied."""
    plan: list[Action] = []
    for cmd in resend:
        if cmd.client_id in r.working:
            plan += [Note(f"{cmd.client_id} was committed but never reached the exchange: sending it again"),
                     Send(cmd)]
    return (*plan, DRAIN)


def canceling_plan(client_id: str, order: OrderState | None) -> Plan:
    """A cancel under way: sent again while the order still works, else the order is gone."""
    if order is not None and order.working:
        return (Cancel(client_id),)
    return (Post(OrderCanceled(client_id=client_id, reason="already gone (found by recovery)")),)


def final_plan(d: Decision, r: PositionRecord) -> Plan:
    """The plan of the last step's decision (:func:`decide`, once it asks for no more facts)."""
    assert d.then not in (ASK_POSITION, ASK_STOP, BOOK_MISSED), d.then
    plan: list[Action] = []
    if d.then == SETTLE:
        plan.append(Settle())
    elif d.then != NOTHING:
        if d.then == "stop_resize":
            plan.append(Note(f"exchange position {d.data['qty']} differs from the journal's {r.open_qty}: "
                             "resizing the stop"))
        plan.append(Fire(d.then, d.data))
    if d.drain:
        plan.append(DRAIN)
    return tuple(plan)


# --- the table of resolutions ------------------------------------------------------------------------


class Resolution(NamedTuple):
    """One case recovery resolves: what the journal says, what the exchange says, what follows, and the
    planners that decide it (a test per row feeds them the case's facts and checks the plan)."""

    case: str
    journal: str
    exchange: str
    resolution: str
    by: tuple[str, ...]


RESOLUTIONS: tuple[Resolution, ...] = (
    Resolution("behind", "any", "the entry id the journal will use next is known (one query at every round)",
               "the journal is behind the exchange (restored from an older backup): halt, nothing touched",
               ("probe_plan",)),
    Resolution("never-sent", "any", "a working order of this instance the journal never sent, of its epoch",
               "the same: halt (never a guess, never its fills booked)", ("owners_plan",)),
    Resolution("other-epoch", "any (not fresh)", "a working order of this instance from another epoch",
               "another journal (a second process, or one set aside): halt naming the order (with a position, "
               "after it is guarded again)", ("owners_plan",)),
    Resolution("other-instance", "any", "a working order of another gatebot instance on the symbol (not a sibling "
               "of this config)", "another owner: halt with one line naming the order", ("owners_plan",)),
    Resolution("fresh-refused", "fresh (nothing journaled)", "a position on the symbol or working orders of this "
               "instance (any epoch)", "refused, exit 2 (`AdoptionRequired`)", ("fresh_plan",)),
    Resolution("fresh-adopt", "fresh, `run --adopt`", "a position, old orders of this instance",
               "`adopt` with the old orders, the old stop guarding until this journal's is confirmed, then canceled",
               ("fresh_plan",)),
    Resolution("fresh-adopt-flat", "fresh, `run --adopt`", "old orders of this instance, no position",
               "the old orders canceled (journaled intents)", ("fresh_plan",)),
    Resolution("fresh-two-sides", "fresh, `run --adopt`", "a long and a short position", "halt: one position "
               "per instance", ("fresh_plan",)),
    Resolution("flat", "flat", "no position, no working orders", "nothing: flat", ("flat_plan", "foreign_plan")),
    Resolution("flat-orders", "flat", "working orders of this journal", "cancel them (journaled intents) → flat",
               ("flat_plan",)),
    Resolution("foreign-halt", "flat", "a position we did not open, `on_foreign_position = halt` (the default)",
               "the instance stops with a message", ("foreign_plan",)),
    Resolution("foreign-adopt", "flat", "a position we did not open, policy `adopt`", "`adopt`: journal it, "
               "protect it", ("foreign_plan",)),
    Resolution("foreign-flatten", "flat", "a position we did not open, policy `flatten`", "`adopt`, then "
               "`exit_signal` once protected", ("foreign_plan",)),
    Resolution("entry-lost", "entering", "entry id unknown, no position", "`entry_lost` → flat",
               ("answer", "decide")),
    Resolution("stop-live", "entering", "entry filled, stop live", "fills booked, `stop_confirmed` → protected",
               ("answer",)),
    Resolution("stop-resent", "entering", "entry filled, stop never received", "the committed stop intent is sent "
               "again with the same id", ("answer", "resend_plan")),
    Resolution("attached-stop-missing", "entering", "entry filled (journaled), attached stop not on the exchange",
               "`stop_canceled` → a separate stop (next attempt id)", ("answer",)),
    Resolution("tp-live", "protected", "a take-profit journaled, not yet confirmed, working", "`tp_confirmed`",
               ("answer",)),
    Resolution("tp-resent", "protected", "a take-profit journaled, never received", "the committed take-profit "
               "intent is sent again with the same id", ("answer", "resend_plan")),
    Resolution("tp-filled", "protected / exiting", "no position, take-profit filled", "fills booked → exited_exit "
               "(reason `tp`), the stop canceled", ("answer",)),
    Resolution("order-ended", "any", "an order asked about was rejected, canceled or expired", "its event, "
               "routed by the routing table", ("answer",)),
    Resolution("stop-filled", "entering / protected", "no position, stop filled", "fills booked → exited_sl",
               ("answer",)),
    Resolution("position-gone", "entering / protected / exiting", "no position, none of our orders filled",
               "`position_gone` → exited_manual, orders canceled (their missed fills asked for first)",
               ("decide",)),
    Resolution("stop-missing", "protected", "position, stop missing or canceled", "`stop_canceled` → a new stop "
               "(next attempt id)", ("decide",)),
    Resolution("qty-differs", "protected", "quantity differs from journal", "`stop_resize`: a stop for the real "
               "quantity first, the old one canceled after", ("decide", "final_plan")),
    Resolution("close-filled", "exiting", "close filled", "fills booked → exited_exit / exited_manual, stop "
               "canceled", ("answer",)),
    Resolution("close-lost", "exiting", "close lost, position open", "`close_rejected` → a new close attempt (or "
               "back to protected when the stop guards)", ("decide",)),
    Resolution("cancel-resent", "any", "an order being canceled still works", "the cancel sent again",
               ("canceling_plan",)),
    Resolution("cancel-done", "exited_*", "an order being canceled is gone", "its `OrderCanceled`: the last one "
               "gone → settled → flat", ("canceling_plan",)),
    Resolution("settle", "exited_*", "no order of the position left working", "settled → flat",
               ("decide", "final_plan")),
)
"""What recovery resolves each case to (docs/architecture.md renders it: :func:`resolutions_markdown`)."""


def resolutions_markdown() -> str:
    """The resolutions as docs/architecture.md shows them (a test keeps the two identical)."""
    lines = ["| journal says | exchange says | resolution | planned by |", "|---|---|---|---|"]
    for row in RESOLUTIONS:
        by = ", ".join(f"`{f}`" for f in row.by)
        lines.append(f"| {row.journal} | {row.exchange} | {row.resolution} | {by} |")
    return "\n".join(lines)
