"""The invariants I1-I7 of docs/architecture.md, checked against an exchange's ground truth.

Used by the crash tests and the chaos suite. Only the adapter protocol is used (plus the optional
``order_count`` of exchanges that can count submissions per client id, and the optional ``funding``
history), so the same check runs against the paper exchange, the BingX simulator or, read-only, a real
account.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from gatebot.core import ids
from gatebot.core.events import ZERO, Side, SubmitEntry
from gatebot.core.exchange import ExchangeAdapter
from gatebot.core.journal import Journal
from gatebot.core.position import PositionRecord

_SIDES: tuple[Side, ...] = ("long", "short")


class Violation(msgspec.Struct, frozen=True):
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


async def check(journal: Journal, adapter: ExchangeAdapter, *, instance: str, symbol: str,
                in_protection_window: bool = False, shared_symbol: bool = False) -> list[Violation]:
    """Every violation of I1-I7 for one instance at rest (after recovery); an empty list when all hold.

    ``in_protection_window``: the instance may be inside ``protection_timeout`` of a fill, when a
    position without its stop yet is allowed (I1) and the journal may trail the exchange (I4).
    ``shared_symbol``: several instances trade ``symbol`` on this account (hedge mode): the exchange's
    funding is their sum, so I5 compares fills only.
    """
    out: list[Violation] = []
    rec = journal.fold() or PositionRecord()
    state = rec.state
    intents = journal.intents()
    ours_ids = set(journal.client_ids())  # every client id the journal sent, attached stops included
    epoch = journal.epoch
    ours, others = [], []  # this journal's orders; orders of this instance from another journal
    for o in await adapter.open_orders(symbol):
        p = ids.parse(o.client_id)
        if p is None or p.instance != instance:
            continue
        (ours if p.epoch == epoch or o.client_id in ours_ids or o.client_id in rec.working else others).append(o)
    held: dict[Side, Decimal] = {}
    for side in _SIDES:
        snap = await adapter.position(symbol, side)
        if snap.qty > 0:
            held[side] = snap.qty
    grace = state == "entering" and in_protection_window

    # I1 no naked position
    for side, qty in held.items():
        stops = [o for o in ours if o.role == "stop" and o.side == side]
        if grace:
            continue
        if len(stops) != 1:
            out.append(Violation("I1", f"{side} position of {qty} has {len(stops)} live stops (state {state})"))
        elif stops[0].stop_price != rec.stop_price:
            out.append(Violation("I1", f"stop at {stops[0].stop_price}, the journal's is {rec.stop_price}"))
        elif stops[0].qty < qty:
            out.append(Violation("I1", f"stop covers {stops[0].qty} of a {qty} position"))

    # I7 at most one take-profit per position, never closing more than it holds (none when flat: I3)
    for side in _SIDES:
        tps = [o for o in ours if o.role == "take_profit" and o.side == side]
        if len(tps) > 1:
            out.append(Violation("I7", f"{side} position has {len(tps)} take-profits: "
                                       f"{sorted(o.client_id for o in tps)}"))
        for o in tps:
            if o.qty - o.filled_qty > held.get(side, ZERO) and not grace:
                out.append(Violation("I7", f"take-profit {o.client_id} closes {o.qty - o.filled_qty} of a "
                                           f"{held.get(side, ZERO)} {side} position"))

    # I2 no duplicate entry (and no order of ours the journal never intended)
    count = getattr(adapter, "order_count", None)
    for cid, intent in intents.items():
        if isinstance(intent.command, SubmitEntry) and count is not None and count(cid) > 1:
            out.append(Violation("I2", f"entry {cid} produced {count(cid)} exchange orders"))
    for order in ours:
        if order.client_id not in ours_ids:
            out.append(Violation("I2", f"working order {order.client_id} has no intent in the journal"))

    # I3 no orphan order
    if state == "flat" and ours:
        out.append(Violation("I3", f"flat but working: {sorted(o.client_id for o in ours)}"))

    # I4 journal = exchange: side, quantity, working orders
    expected: dict[Side, Decimal] = {rec.side: rec.open_qty} if rec.side and rec.open_qty > 0 else {}
    if held != expected and not grace:
        out.append(Violation("I4", f"exchange holds {held or 'nothing'}, "
                                     f"the journal ({state}) {expected or 'nothing'}"))
    live = {o.client_id for o in ours}
    if live != set(rec.working) and not grace:
        out.append(Violation("I4", f"exchange works {sorted(live)}, the journal {sorted(rec.working)}"))

    # I6 one owner: no order of this instance from another journal (another epoch) works on the symbol
    for o in others:
        out.append(Violation("I6", f"working order {o.client_id} of this instance belongs to another journal "
                                   f"(epoch {ids.parse(o.client_id).epoch or 'legacy'}, this one's is "  # type: ignore[union-attr]
                                   f"{epoch or 'legacy'})"))

    # I5 every fill and every funding payment booked exactly once
    pnl, fees = journal.realized()
    ex_pnl = ex_fees = ZERO
    for cid in sorted(ours_ids):
        for fill in await adapter.order_fills(symbol, cid):
            ex_pnl += fill.realized_pnl
            ex_fees += fill.fee
    if (pnl, fees) != (ex_pnl, ex_fees):
        out.append(Violation("I5", f"journal pnl {pnl} fees {fees}, exchange pnl {ex_pnl} fees {ex_fees}"))
    history = getattr(adapter, "funding", None)
    since = journal.first_opened_at()
    if history is not None and since is not None and not shared_symbol:
        # every payment on the symbol since the instance's first position is its own (one instance per symbol)
        funding = journal.funding_total()
        ex_funding = sum((f.paid for f in await history(symbol, since)), ZERO)
        if funding != ex_funding:
            out.append(Violation("I5", f"journal funding {funding}, exchange funding {ex_funding}"))
    return out


def shared_claims(claims: dict[str, tuple[str, Side, Decimal]], held: dict[tuple[str, Side], Decimal]
                  ) -> list[tuple[list[str], Violation]]:
    """I6 across journals: ``claims`` (journal -> symbol, side, open quantity) of the journals on one account
    against what the account ``held`` per (symbol, side). Two journals that claim one position between
    them for more than the account holds (each thinking it owns it) is a violation, whatever each says
    alone: their stops and fills are the other's too."""
    by_position: dict[tuple[str, Side], list[str]] = {}
    for name, (symbol, side, qty) in sorted(claims.items()):
        if qty > 0:
            by_position.setdefault((symbol, side), []).append(name)
    out = []
    for (symbol, side), names in by_position.items():
        total = sum((claims[n][2] for n in names), ZERO)
        if len(names) > 1 and total > held.get((symbol, side), ZERO):
            out.append((names, Violation("I6", f"journals {', '.join(names)} claim one {side} {symbol} position: "
                                               f"{' + '.join(str(claims[n][2]) for n in names)} of the "
                                               f"{held.get((symbol, side), ZERO)} the account holds")))
    return out
