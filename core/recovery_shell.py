"""The imperative half of recovery: gather the facts through the adapter and the journal, ask the pure
planners of :mod:`gatebot.core.recovery`, execute their plans through the engine.

Typed against :class:`Host` (the part of the engine recovery uses), not the engine itself: the engine imports
this module, and nothing here imports the engine (an import-linter contract keeps it so). The order of the
exchange queries is part of the behaviour (a recorded session is replayed reply by reply): each fact is asked
for where the round needs it, and a plan is executed before the next fact is gathered.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from gatebot.core import recovery as r
from gatebot.core.clock import Clock
from gatebot.core.events import AnyCommand, AnyEvent, CancelOrder, Side
from gatebot.core.exchange import ExchangeAdapter, OrderState, OrderUnknown
from gatebot.core.journal import Journal
from gatebot.core.position import Position

log = logging.getLogger("gatebot.recovery")
_SIDES: tuple[Side, ...] = ("long", "short")


class Host(Protocol):
    """What recovery needs of the engine that runs it."""

    name: str
    symbol: str
    epoch: str
    siblings: frozenset[str]
    may_adopt: bool
    foreign_policy: str
    bar: int
    adapter: ExchangeAdapter
    journal: Journal
    clock: Clock
    pos: Position

    @property
    def shares_symbol(self) -> bool: ...
    def post(self, event: AnyEvent) -> None: ...
    async def drain(self) -> None: ...
    def fire(self, trigger: str, **data: Any) -> list[AnyCommand]: ...
    def settle(self) -> list[AnyCommand]: ...
    async def execute(self, commands: list[AnyCommand]) -> None: ...
    async def book_missed_fills(self) -> None: ...
    async def book_missed_funding(self) -> None: ...
    async def verify_settings(self) -> None: ...
    def not_ours(self, client_id: str) -> r.InstanceHalted: ...
    def note_unknown(self, client_id: str, detail: str) -> None: ...


async def recover(host: Host) -> int:
    """One round; returns how many intents (orders of ours) it asked the exchange about.

    Flat, the checks that may halt come first (nothing of ours is at risk); with a position, they
    come after it is guarded again, so that a halt never leaves it without its stop. Only the probe of
    the next ids comes first in any state: recovery itself would use them."""
    who = r.Owner(host.name, host.epoch, host.symbol, host.siblings)
    cid = r.next_entry_id(who, host.pos.rec)
    await execute(host, r.probe_plan(cid, await host.adapter.query_order(host.symbol, cid) is not None))
    await host.book_missed_funding()  # first: while the journal still holds the position it was charged on
    if host.pos.state != "flat":
        resolved = await _recover_position(host)
        await host.verify_settings()
        await _check_owners(host, who, await host.adapter.open_orders(host.symbol), allow_other_epochs=False)
        return resolved
    await host.verify_settings()
    orders = await host.adapter.open_orders(host.symbol)
    if host.journal.fresh():
        await _check_owners(host, who, orders, allow_other_epochs=True)
        held = await _held(host)
        await execute(host, r.fresh_plan(who, orders, held, journal=str(host.journal.path), may_adopt=host.may_adopt,
                                         bar=host.bar))
    else:
        await _check_owners(host, who, orders, allow_other_epochs=False)
        await execute(host, r.flat_plan(who, orders))
        await execute(host, r.foreign_plan(who, await _held(host), policy=host.foreign_policy, bar=host.bar))
    return len(r.ours(who, orders))


async def _check_owners(host: Host, who: r.Owner, orders: list[OrderState], *, allow_other_epochs: bool) -> None:
    """Halt on a working order of another owner (:func:`~gatebot.core.recovery.owners_plan`); the journal is
    asked which ids it sent, once per order."""
    known = frozenset(o.client_id for o in orders if host.journal.knows(o.client_id))
    await execute(host, r.owners_plan(who, orders, working=host.pos.rec.working, known=known,
                                      allow_other_epochs=allow_other_epochs))


async def _held(host: Host) -> list[r.Held]:
    """Each side the exchange holds (none on a shared symbol: not attributable)."""
    if host.shares_symbol:
        return []
    out = []
    for side in _SIDES:
        snap = await host.adapter.position(host.symbol, side)
        if snap.qty > 0:
            out.append(r.Held(side, snap.qty, snap.entry_price))
    return out


async def _recover_position(host: Host) -> int:
    """A round with a position: its orders asked about one by one (each answer's events posted before the next
    query, as the streams would have posted them), applied; resends; the cancels under way; then the last
    step's table, asking the facts its rows name until one answers. Returns the orders asked about."""
    adapter, journal, pos, symbol = host.adapter, host.journal, host.pos, host.symbol
    rec, entry_id = pos.rec, pos.entry_id
    asked = r.questions(rec, journal.intents(position=rec.seq))
    progress = r.Progress(entry_filled=rec.filled_qty > 0)  # a complete entry is not asked about again
    for q in asked:
        order = await adapter.query_order(symbol, q.client_id)
        unbooked = [] if order is None else [
            f for f in await adapter.order_fills(symbol, q.client_id) if not journal.is_booked(q.client_id, f.trade_id)]
        plan, progress = r.answer(q, rec, entry_id, progress, order, unbooked)
        await execute(host, plan)
    await host.drain()
    await execute(host, r.resend_plan(progress.resend, pos.rec))

    canceling = list(pos.rec.canceling)
    for cid in canceling:
        await execute(host, r.canceling_plan(cid, await adapter.query_order(symbol, cid)))
    await host.drain()

    facts = r.ExchangeFacts(entry_seen=progress.entry_seen, shares_symbol=host.shares_symbol)
    while True:
        d = r.decide(pos.state, pos.rec, facts)
        if d.then == r.ASK_POSITION:
            assert pos.rec.side is not None
            facts = facts._replace(exchange_qty=(await adapter.position(symbol, pos.rec.side)).qty)
        elif d.then == r.ASK_STOP:
            order = await adapter.query_order(symbol, pos.rec.stop_id)  # type: ignore[arg-type]
            facts = facts._replace(stop_asked=True,
                                   stop_live_qty=order.qty if order is not None and order.working else None)
        elif d.then == r.BOOK_MISSED:
            await host.book_missed_fills()
            facts = facts._replace(missed_booked=True)
        else:
            break
    await execute(host, r.final_plan(d, pos.rec))
    return len(asked) + len(canceling)


async def execute(host: Host, plan: r.Plan) -> None:
    """Do what a plan says, in order, through the engine."""
    for action in plan:
        match action:
            case r.Post(event):
                host.post(event)
            case r.Send(command):
                await host.execute([command])
            case r.Cancel(client_id, journaled):
                cmd = CancelOrder(client_id=client_id, symbol=host.symbol)
                if journaled:
                    with host.journal.transaction():
                        host.journal.add_intent(host.clock.now_ms(), host.pos.rec.seq, cmd)
                await _cancel(host, cmd)
            case r.Fire(trigger, data, drain, only_in):
                if only_in is not None and host.pos.state != only_in:
                    continue
                await host.execute(host.fire(trigger, **data))
                if drain:
                    await host.drain()
            case r.Settle():
                await host.execute(host.settle())
            case r.Drain():
                await host.drain()
            case r.Note(message):
                log.warning("%s: %s", host.name, message)
            case r.Halt(message, adoption):
                raise (r.AdoptionRequired if adoption else r.InstanceHalted)(message)
            case r.NotOurs(client_id):
                raise host.not_ours(client_id)


async def _cancel(host: Host, cmd: CancelOrder) -> None:
    """A cancel whose outcome recovery cannot learn now (a lost or busy reply, retried already) does not
    abort recovery: the id is marked unknown and asked about again by the reconcile that follows."""
    try:
        await host.adapter.cancel(cmd)
    except OrderUnknown as exc:
        log.warning("%s: %s; asking again", host.name, exc)
        host.note_unknown(cmd.client_id, str(exc))
