"""Recovery: the journal's state against the exchange's facts (architecture.md, recovery table).

It runs at every start before any entry, after every stream reconnect and whenever the engine meets
something it did not expect. It asks the exchange about every order of the current position by its
deterministic client id, turns what it learns into the same events the live streams would have
delivered (fills not yet booked, stops that went live, orders that are gone), lets the engine apply
them through the state machine, then resolves what the events cannot tell: a position that vanished,
a stop that is missing, a quantity that differs, intents the exchange never received.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING

from core.events import (
    ZERO,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    Side,
)
from core.position import EXITED

if TYPE_CHECKING:
    from core.engine import Engine

log = logging.getLogger("gatebot.recovery")
_SIDES: tuple[Side, ...] = ("long", "short")


async def recover(engine: Engine) -> int:
    """One round of the table; returns how many intents (orders of ours) it asked the exchange about."""
    if engine.pos.state == "flat":
        return await _recover_flat(engine)
    return await _recover_position(engine)


async def _recover_flat(engine: Engine) -> int:
    """flat: cancel working orders with our prefix; a position we did not open follows the policy."""
    adapter, journal = engine.adapter, engine.journal
    resolved = 0
    for order in await adapter.open_orders(engine.symbol):
        if order.client_id.startswith(engine.prefix):
            cmd = CancelOrder(client_id=order.client_id, symbol=engine.symbol)
            with journal.transaction():
                journal.add_intent(engine.clock.now_ms(), engine.pos.rec.seq, cmd)
            log.warning("%s: flat but %s is working on the exchange: canceling it", engine.name, order.client_id)
            await adapter.cancel(cmd)
            resolved += 1
    if engine.shares_symbol:
        return resolved
    for side in _SIDES:
        snap = await adapter.position(engine.symbol, side)
        if snap.qty <= 0:
            continue
        policy = engine.foreign_policy
        log.warning("%s: found a %s position of %s that the bot did not open (policy %s)",
                    engine.name, side, snap.qty, policy)
        if policy == "halt":
            from core.engine import InstanceHalted

            raise InstanceHalted(f"{engine.name}: a {side} position of {snap.qty} {engine.symbol} exists "
                                 "that the bot did not open (on_foreign_position = 'halt')")
        await engine.execute(engine.fire("adopt", side=side, qty=snap.qty, entry_price=snap.entry_price,
                                         bar=engine.bar, detail={"policy": policy}))
        await engine.drain()
        if policy == "flatten" and engine.pos.state == "protected":
            await engine.execute(engine.fire("exit_signal", reason="flatten"))
            await engine.drain()
        return resolved
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
            await adapter.cancel(CancelOrder(client_id=cid, symbol=symbol))
        else:
            engine.post(OrderCanceled(client_id=cid, reason="already gone (found by recovery)"))
    await engine.drain()

    state, r = pos.state, pos.rec
    if state in EXITED:
        if not r.working:
            await engine.execute(engine.settle())
        return resolved
    if state == "flat" or r.side is None:
        return resolved
    snap = await adapter.position(symbol, r.side)
    if state == "entering" and r.filled_qty == 0:
        if not entry_seen and snap.qty == 0:
            await engine.execute(engine.fire("entry_lost", reason="the exchange never saw the entry"))
        return resolved
    if snap.qty == 0:
        # Asked after the position: every fill that emptied it is on the exchange's books by now.
        await engine.book_missed_fills()
        if pos.state in ("entering", "protected", "exiting"):
            await engine.execute(engine.fire("position_gone", reason="no position on the exchange"))
        await engine.drain()
        return resolved
    # On a shared symbol (hedge mode, several instances) the exchange's quantity is their sum: it only
    # bounds this instance's share from above.
    held = min(snap.qty, r.open_qty) if engine.shares_symbol else snap.qty
    if state == "protected":
        if r.stop_id is None and r.pending_stop_id is None:
            await engine.execute(engine.fire("stop_canceled", client_id="", reason="stop missing"))
        elif held != r.open_qty or await _stop_too_small(engine, r.stop_id, held):
            log.warning("%s: exchange position %s differs from the journal's %s: resizing the stop",
                        engine.name, held, r.open_qty)
            await engine.execute(engine.fire("stop_resize", qty=held,
                                             detail={"journal_qty": str(r.open_qty), "exchange_qty": str(held)}))
    elif state == "exiting" and r.close_id and r.close_id not in r.working and snap.qty > ZERO:
        await engine.execute(engine.fire("close_rejected", reason="close lost"))
    await engine.drain()
    return resolved


async def _stop_too_small(engine: Engine, stop_id: str | None, qty: Decimal) -> bool:
    """A live stop that covers less than the position (sized to a part of the entry seen before the
    rest of its fills): the stop is replaced by one for the whole position."""
    if stop_id is None:
        return False
    order = await engine.adapter.query_order(engine.symbol, stop_id)
    return order is not None and order.working and order.qty < qty
