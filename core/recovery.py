"""Recovery: the journal's state against the exchange's facts (architecture.md, recovery table).

It runs at every start before any entry, after every stream reconnect and whenever the engine meets
something it did not expect. It asks the exchange about every order of the current position by its
deterministic client id, turns what it learns into the same events the live streams would have
delivered (fills not yet booked, stops that went live, orders that are gone), lets the engine apply
them through the state machine, then resolves what the events cannot tell: a position that vanished,
a stop that is missing, a quantity that differs, intents the exchange never received.

Before any of that it checks who owns what it sees (one owner per account and symbol): the leverage and
margin mode are as configured (set back when changed by hand), every working order of this instance was
sent by this journal (another epoch is another journal: a second process, or a journal set aside; this
journal's epoch on an id it never sent means it is behind the exchange), and none of another gatebot
instance works on the symbol. A fresh journal on an account that holds a position or orders of this
instance starts only with ``gatebot run --adopt``, and then adopts them (journaled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from gatebot.core import ids
from gatebot.core.events import (
    ZERO,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    Side,
)
from gatebot.core.exchange import OrderState, OrderUnknown
from gatebot.core.position import EXITED, STATES, PositionRecord

if TYPE_CHECKING:
    from gatebot.core.engine import Engine

log = logging.getLogger("gatebot.recovery")
_SIDES: tuple[Side, ...] = ("long", "short")


class InstanceHalted(Exception):
    """The instance must not trade (a policy said halt, another owner trades its account and symbol, its
    journal is behind the exchange, or the exchange disagrees with the config)."""


class AdoptionRequired(InstanceHalted):
    """A fresh journal on an account that holds a position or orders of this instance: the user must say
    whether to adopt them (``gatebot run --adopt``). Exit status 2 at start."""


class ExchangeFacts(NamedTuple):
    """What the last step of a recovery round knows besides the position record: gathered by the shell
    (:func:`_recover_position`) as the steps ask for them, then decided on by :func:`decide` alone."""

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


async def recover(engine: Engine) -> int:
    """One round of the table; returns how many intents (orders of ours) it asked the exchange about.

    Flat, the checks that may halt come first (nothing of ours is at risk); with a position, they
    come after it is guarded again, so that a halt never leaves it without its stop. Only the probe of
    the next ids comes first in any state: recovery itself would use them."""
    await _probe_next_ids(engine)
    await engine.book_missed_funding()  # first: while the journal still holds the position it was charged on
    if engine.pos.state != "flat":
        resolved = await _recover_position(engine)
        await engine.verify_settings()
        _check_owners(engine, await engine.adapter.open_orders(engine.symbol), allow_other_epochs=False)
        return resolved
    await engine.verify_settings()
    orders = await engine.adapter.open_orders(engine.symbol)
    if engine.journal.fresh():
        return await _recover_fresh(engine, orders)
    _check_owners(engine, orders, allow_other_epochs=False)
    return await _recover_flat(engine, orders)


def _check_owners(engine: Engine, orders: list[OrderState], *, allow_other_epochs: bool) -> None:
    """Every working order on the symbol is this journal's, a sibling instance's, or no gatebot's (placed
    by hand: left alone); anything else halts (Engine.not_ours, or another instance's order)."""
    r = engine.pos.rec
    for order in orders:
        p = ids.parse(order.client_id)
        if p is None or p.instance in engine.siblings:
            continue
        if p.instance != engine.name:
            raise InstanceHalted(
                f"{engine.name}: order {order.client_id} of another gatebot instance ({p.instance}) works on "
                f"{engine.symbol} on this account: is a second gatebot process trading this account and symbol? "
                "Halting (one owner per account and symbol)")
        if p.epoch != engine.epoch and allow_other_epochs:
            continue
        if order.client_id in r.working or engine.journal.knows(order.client_id):
            continue
        raise engine.not_ours(order.client_id)


async def _probe_next_ids(engine: Engine) -> None:
    """The entry id this journal will use next must be new to the exchange: one the exchange knows means the
    journal is behind it (restored from an older backup, even when every later order is done), and using
    it would take that order's fills, or its refusal as a duplicate, for this journal's (found by a fault
    driver). One query: a stop or close id the exchange knows is caught where it is sent (IdTaken)."""
    cid = ids.make(engine.name, engine.epoch, engine.pos.rec.seq + 1, "e", 1)
    if await engine.adapter.query_order(engine.symbol, cid) is not None:
        raise engine.not_ours(cid)


async def _held(engine: Engine) -> list[tuple[Side, Decimal, Decimal]]:
    """(side, qty, entry price) of each side the exchange holds (none on a shared symbol: not attributable)."""
    if engine.shares_symbol:
        return []
    out = []
    for side in _SIDES:
        snap = await engine.adapter.position(engine.symbol, side)
        if snap.qty > 0:
            out.append((side, snap.qty, snap.entry_price))
    return out


async def _recover_fresh(engine: Engine, orders: list[OrderState]) -> int:
    """A journal that never journaled anything, on an account that may hold a position or orders of this
    instance (another journal's: the user set the old one aside). Never silently: without --adopt it is
    refused; with it, the position is adopted and protected by a stop of this journal (the old stop
    guards until the new one is confirmed, then is canceled), other old orders are canceled, all journaled."""
    _check_owners(engine, orders, allow_other_epochs=True)
    old = [o for o in orders if ids.instance_of(o.client_id) == engine.name]
    held = await _held(engine)
    if not old and not held:
        return 0
    what = ", ".join([*(f"a {side} position of {qty}" for side, qty, _ in held),
                      *(f"order {o.client_id}" for o in old)])
    if not engine.may_adopt:
        raise AdoptionRequired(
            f"{engine.name}: the journal {engine.journal.path} is new, but the account holds {what} on "
            f"{engine.symbol} (another journal's?): start with `gatebot run --adopt` to adopt them into this "
            "journal, or close them on the exchange first")
    if len(held) > 1:
        raise InstanceHalted(f"{engine.name}: cannot adopt both a long and a short position on {engine.symbol}")
    log.warning("%s: adopting %s (--adopt)", engine.name, what)
    if held:
        side, qty, price = held[0]
        guard = next(((o.client_id, o.stop_price) for o in old if o.role == "stop" and o.side == side), None)
        await engine.execute(engine.fire("adopt", side=side, qty=qty, entry_price=price, bar=engine.bar,
                                         orders=[o.client_id for o in old], stop=guard,
                                         detail={"policy": "--adopt", "orders": [o.client_id for o in old]}))
        await engine.drain()
        return len(old)
    for order in old:
        await _cancel_journaled(engine, order.client_id, "adopted (--adopt) on a flat account")
    return len(old)


async def _cancel_journaled(engine: Engine, client_id: str, why: str) -> None:
    cmd = CancelOrder(client_id=client_id, symbol=engine.symbol)
    with engine.journal.transaction():
        engine.journal.add_intent(engine.clock.now_ms(), engine.pos.rec.seq, cmd)
    log.warning("%s: %s is working on the exchange: canceling it (%s)", engine.name, client_id, why)
    await _cancel(engine, cmd)


async def _recover_flat(engine: Engine, orders: list[OrderState]) -> int:
    """flat: cancel this journal's working orders; a position we did not open follows the policy."""
    resolved = 0
    for order in orders:
        if ids.instance_of(order.client_id) == engine.name:  # this journal's (_check_owners halted on others)
            await _cancel_journaled(engine, order.client_id, "flat")
            resolved += 1
    for side, qty, price in await _held(engine):
        policy = engine.foreign_policy
        log.warning("%s: found a %s position of %s that the bot did not open (policy %s)",
                    engine.name, side, qty, policy)
        if policy == "halt":
            raise InstanceHalted(f"{engine.name}: a {side} position of {qty} {engine.symbol} exists that this "
                                 "journal did not open (on_foreign_position = 'halt'; another bot's, or one "
                                 "opened by hand?)")
        await engine.execute(engine.fire("adopt", side=side, qty=qty, entry_price=price,
                                         bar=engine.bar, detail={"policy": policy}))
        await engine.drain()
        if policy == "flatten" and engine.pos.state == "protected":
            await engine.execute(engine.fire("exit_signal", reason="flatten"))
            await engine.drain()
        break
    return resolved


async def _recover_position(engine: Engine) -> int:
    adapter, journal, pos = engine.adapter, engine.journal, engine.pos
    r = pos.rec
    symbol = engine.symbol
    intents = journal.intents(position=r.seq)
    entry_seen = True
    entry_filled = r.filled_qty > 0  # known from the journal: a complete entry is not asked about again
    resend = []
    resolved = 0
    orders: list[tuple[str, object, str]] = []
    for cid, intent in intents.items():
        # An order being canceled is asked about like the others: it may have filled before the cancel
        # reached it (found by the chaos suite: a replaced stop fired while the bot was down).
        command = None if isinstance(intent.command, CancelOrder) else intent.command  # an id only canceled
        orders.append((cid, command, intent.status))
        stop = getattr(command, "stop", None)
        if stop is not None and stop.client_id not in intents:  # a stop that travelled with the entry
            orders.append((stop.client_id, None, "attached"))
    for cid, command, status in orders:
        relevant = cid in r.working or cid == r.close_id or status in ("pending", "unknown")
        if not relevant:
            continue
        resolved += 1
        order = await adapter.query_order(symbol, cid)
        if order is None:
            if cid == pos.entry_id:
                entry_seen = False
            elif command is None:
                if entry_filled and cid in r.working and cid not in r.canceling:
                    # The entry filled but its attached stop is not on the exchange: a stop canceled
                    # before confirmation, which the table answers with a new (separate) stop.
                    engine.post(OrderCanceled(client_id=cid, reason="attached stop missing (found by recovery)"))
            elif cid in r.working and cid not in r.canceling:
                resend.append(command)
            continue
        if cid == pos.entry_id:
            entry_filled = entry_filled or order.filled_qty > 0
        for fill in await adapter.order_fills(symbol, cid):
            if not journal.is_booked(cid, fill.trade_id):
                engine.post(fill)
        if order.status == "rejected":
            engine.post(OrderRejected(client_id=cid, reason="rejected (found by recovery)"))
        elif order.status == "canceled":
            engine.post(OrderCanceled(client_id=cid, filled_qty=order.filled_qty, reason="found by recovery"))
        elif order.status == "expired":
            engine.post(OrderExpired(client_id=cid, filled_qty=order.filled_qty, reason="found by recovery"))
        elif order.working and cid == r.pending_stop_id:
            engine.post(OrderAccepted(client_id=cid, order_id=order.order_id))
    await engine.drain()
    for cmd in resend:
        if cmd.client_id in pos.rec.working:
            log.warning("%s: %s was committed but never reached the exchange: sending it again",
                        engine.name, cmd.client_id)
            await engine.execute([cmd])
    await engine.drain()

    r = pos.rec
    for cid in list(r.canceling):
        resolved += 1
        order = await adapter.query_order(symbol, cid)
        if order is not None and order.working:
            await _cancel(engine, CancelOrder(client_id=cid, symbol=symbol))
        else:
            engine.post(OrderCanceled(client_id=cid, reason="already gone (found by recovery)"))
    await engine.drain()

    facts = ExchangeFacts(entry_seen=entry_seen, shares_symbol=engine.shares_symbol)
    while True:
        d = decide(pos.state, pos.rec, facts)
        if d.then == ASK_POSITION:
            assert pos.rec.side is not None
            facts = facts._replace(exchange_qty=(await adapter.position(symbol, pos.rec.side)).qty)
        elif d.then == ASK_STOP:
            order = await adapter.query_order(symbol, pos.rec.stop_id)  # type: ignore[arg-type]
            facts = facts._replace(stop_asked=True,
                                   stop_live_qty=order.qty if order is not None and order.working else None)
        elif d.then == BOOK_MISSED:
            await engine.book_missed_fills()
            facts = facts._replace(missed_booked=True)
        else:
            break
    if d.then == SETTLE:
        await engine.execute(engine.settle())
    elif d.then != NOTHING:
        if d.then == "stop_resize":
            log.warning("%s: exchange position %s differs from the journal's %s: resizing the stop",
                        engine.name, d.data["qty"], pos.rec.open_qty)
        await engine.execute(engine.fire(d.then, **d.data))
    if d.drain:
        await engine.drain()
    return resolved


async def _cancel(engine: Engine, cmd: CancelOrder) -> None:
    """A cancel whose outcome recovery cannot learn now (a lost or busy reply, retried already) does not
    abort recovery: the id is marked unknown and asked about again by the reconcile that follows."""
    try:
        await engine.adapter.cancel(cmd)
    except OrderUnknown as exc:
        log.warning("%s: %s; asking again", engine.name, exc)
        engine.note_unknown(cmd.client_id, str(exc))
