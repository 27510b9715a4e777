"""The invariants I1-I5 of docs/architecture.md, checked against an exchange's ground truth.

Used by the crash tests, the chaos suite and the CLI. Only the adapter protocol is used, so the same
check runs against the paper exchange, the BingX simulator or (read-only) a real account.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from core.events import ZERO, SubmitEntry
from core.journal import Journal
from exchanges.base import ExchangeAdapter


class Violation(msgspec.Struct, frozen=True):
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


async def check(journal: Journal, adapter: ExchangeAdapter, *, instance: str, symbol: str,
                in_protection_window: bool = False) -> list[Violation]:
    """Every violation of I1-I5 for one instance; an empty list when all hold."""
    out: list[Violation] = []
    prefix = f"{instance}-"
    rec = journal.fold()
    state = rec.state if rec else "flat"
    ours = [o for o in await adapter.open_orders(symbol) if o.client_id.startswith(prefix)]
    positions = {side: await adapter.position(symbol, side) for side in ("long", "short")}
    held = {side: p.qty for side, p in positions.items() if p.qty > 0}

    # I1: outside `entering`, an exchange position has exactly one live stop at the configured price.
    for side, qty in held.items():
        stops = [o for o in ours if o.role == "stop" and o.side == side]
        if state == "entering" and in_protection_window:
            continue
        if len(stops) != 1:
            out.append(Violation("I1", f"{side} position of {qty} has {len(stops)} live stops (state {state})"))
        elif rec is not None and rec.stop_price is not None and stops[0].stop_price != rec.stop_price:
            out.append(Violation("I1", f"stop at {stops[0].stop_price}, journal says {rec.stop_price}"))

    # I2: each entry intent yields at most one exchange order; no exchange order of ours is unknown.
    intents = journal.intents()
    for cid, intent in intents.items():
        if isinstance(intent.command, SubmitEntry):
            order = await adapter.query_order(symbol, cid)
            count = getattr(adapter, "order_count", None)
            if count is not None and count(cid) > 1:
                out.append(Violation("I2", f"entry {cid} produced {count(cid)} orders"))
            del order
    for order in ours:
        if order.client_id not in intents:
            out.append(Violation("I2", f"working order {order.client_id} has no intent in the journal"))

    # I3: in `flat`, no working order of the instance.
    if state == "flat" and ours:
        out.append(Violation("I3", f"flat but working: {[o.client_id for o in ours]}"))

    # I4: journal = exchange (side, quantity, working orders).
    if rec is not None and rec.side is not None and state not in ("flat", "entering"):
        exchange_qty = held.get(rec.side, ZERO)
        if state != "exited_sl" and not state.startswith("exited") and exchange_qty != rec.open_qty:
            out.append(Violation("I4", f"journal {rec.side} {rec.open_qty}, exchange {exchange_qty}"))
    journal_qty = rec.open_qty if rec is not None and rec.side is not None else ZERO
    for side, qty in held.items():
        if rec is None or rec.side != side or (state == "flat" and qty > 0):
            if not (state == "entering" and in_protection_window):
                out.append(Violation("I4", f"exchange holds {side} {qty}, journal {state} {journal_qty}"))
    if rec is not None:
        live = {o.client_id for o in ours}
        expected = set(rec.working)
        if live - expected:
            out.append(Violation("I4", f"exchange has working {sorted(live - expected)} the journal does not"))

    # I5: every fill booked exactly once: the journal's realised PnL equals the exchange's.
    pnl, fees = journal.realized()
    ex_pnl = ex_fees = ZERO
    for cid in intents:
        for fill in await adapter.order_fills(symbol, cid):
            ex_pnl += fill.realized_pnl
            ex_fees += fill.fee
    if (pnl, fees) != (ex_pnl, ex_fees):
        out.append(Violation("I5", f"journal pnl {pnl} fees {fees}, exchange pnl {ex_pnl} fees {ex_fees}"))
    return out


def net(pnl_fees: tuple[Decimal, Decimal]) -> Decimal:
    return pnl_fees[0] - pnl_fees[1]
