"""Matching-core events -> BingX user-stream pushes (protocol page §6.3, §6.4).

ORDER_TRADE_UPDATE for every order change (NEW, TRADE, CANCELED, EXPIRED), its ``T`` never behind the
order's previous one (ccxt drops an update that goes back); ACCOUNT_UPDATE (``m=ORDER``) after every fill
with the wallet balance and the position it moved: in hedge mode the side (``LONG``/``SHORT``), in one-way
mode the net position (``ps=BOTH``, ``pa`` negative for a short; protocol §0); ACCOUNT_UPDATE
(``m=FUNDING_FEE``) for every funding payment: the balance (``bc`` = the change) and, for an isolated
position only, the position (§6.3). A triggered stop's fill is
reported per the ``stop_fill_event`` / ``drop_trigger_fill_events`` switches, because BingX's real
sequence is unconfirmed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gatebot.core.events import (
    ZERO,
    AnyEvent,
    FundingPaid,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    PositionSnapshot,
)
from gatebot.exchanges.paper.matching import Order
from gatebot.simulators.bingx.views import (
    WS_STATUS,
    Wire,
    num,
    unrealized,
    wire_cid,
    wire_position_side,
    wire_side,
)

if TYPE_CHECKING:
    from gatebot.simulators.bingx.server import BingXSimulator

CONDITIONAL = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
TERMINAL = ("FILLED", "CANCELED", "EXPIRED")


class EventMapper:
    """Keeps what the pushes need across events: the wallet as last reported, realised PnL per side."""

    def __init__(self, sim: BingXSimulator) -> None:
        self.sim = sim
        self.wallet = sim.core.account.balance
        self.realised: dict[tuple[str, str], Decimal] = {}
        self._quote: dict[str, Decimal] = {}
        self._last_change = ZERO
        self._last_t: dict[int, int] = {}
        """Wire order id -> the ``T`` of its last push, while the order lives."""

    def map(self, events: list[AnyEvent], now: int) -> list[dict[str, Any]]:
        pushes: list[dict[str, Any]] = []
        one_way = not self.sim.core.account.hedge_mode
        for ev in _net(events) if one_way else events:
            if isinstance(ev, OrderAccepted):
                order = self.sim.core.order(ev.client_id)
                if order is not None:
                    pushes.append(self._order_push(order, now, x="NEW", X="NEW", z="0", ap="0"))
            elif isinstance(ev, OrderFilled):
                pushes += self._fill(ev, now)
            elif isinstance(ev, OrderCanceled | OrderExpired):
                order = self.sim.core.order(ev.client_id)
                if order is None or ev.reason == "already gone":
                    continue
                kind = "CANCELED" if isinstance(ev, OrderCanceled) else "EXPIRED"
                self.sim.touch(order, now)
                pushes.append(self._order_push(order, now, x=kind, X=kind))
            elif isinstance(ev, PositionSnapshot):
                pushes.append(self._account_push(ev, now, one_way=one_way))
            elif isinstance(ev, FundingPaid):
                pushes.append(self._funding_push(ev, now))
        return pushes

    def _funding_push(self, ev: FundingPaid, now: int) -> dict[str, Any]:
        self.wallet -= ev.paid
        balance = {"a": "USDT", "wb": num(self.wallet), "cw": num(self.wallet), "bc": num(-ev.paid)}
        data: dict[str, Any] = {"m": "FUNDING_FEE", "B": [balance]}
        if self.sim.margin_type.get(ev.symbol, "CROSSED") != "CROSSED" and ev.side is not None:
            push = self._account_push(self.sim.core.snapshot(ev.symbol, ev.side, now), now,
                                      one_way=not self.sim.core.account.hedge_mode)
            data["P"] = push["a"]["P"]
        return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": data}

    def _fill(self, ev: OrderFilled, now: int) -> list[dict[str, Any]]:
        order = self.sim.core.order(ev.client_id)
        if order is None:
            return []
        self.sim.touch(order, now)
        self._last_change = ev.realized_pnl - ev.fee
        self.wallet += self._last_change
        key = (order.symbol, order.side)
        self.realised[key] = self.realised.get(key, ZERO) + ev.realized_pnl - ev.fee
        quote = self._quote.get(ev.client_id, ZERO) + ev.qty * ev.price
        if ev.final:
            self._quote.pop(ev.client_id, None)
        else:
            self._quote[ev.client_id] = quote
        trade = {"x": "TRADE", "X": "FILLED" if ev.final else "PARTIALLY_FILLED", "ap": num(quote / ev.cum_qty, 10),
                 "z": num(ev.cum_qty), "l": num(ev.qty), "L": num(ev.price), "n": num(-ev.fee),
                 "rp": num(ev.realized_pnl), "T": ev.ts or now, "td": int(ev.trade_id), "tv": num(ev.qty * ev.price),
                 "p": num(ev.price)}
        switches = self.sim.options.switches
        if order.type not in CONDITIONAL:
            return [self._order_push(order, now, **trade)]
        if switches.drop_trigger_fill_events:
            return []
        if switches.stop_fill_event == "same_id":
            return [self._order_push(order, now, **trade)]
        derived, fresh = self.sim.derived_id(order)
        pushes = []
        if fresh:
            pushes.append(self._order_push(order, now, x="NEW", X="NEW", i=derived, o="MARKET", c="", sp="0",
                                           ti=order.order_id, z="0", ap="0"))
        pushes.append(self._order_push(order, now, **trade, i=derived, o="MARKET", c="", sp="0",
                                       ti=order.order_id))
        return pushes

    def _order_push(self, order: Order, now: int, **fields: Any) -> dict[str, Any]:
        meta = self.sim.meta.get(order.order_id)
        o: dict[str, Any] = {
            "s": order.symbol, "c": wire_cid(order.client_id), "i": order.order_id, "S": wire_side(order),
            "o": order.type, "q": num(order.qty), "p": num(order.price), "sp": num(order.stop_price),
            "ap": num(order.avg_price),
            "x": "NEW", "X": WS_STATUS.get(order.status, "NEW"), "N": "USDT", "n": "0", "T": now,
            "wt": meta.working_type if meta else ("MARK_PRICE" if order.stop_price else ""),
            "ps": wire_position_side(self.sim, order), "rp": "0", "z": num(order.filled_qty),
            "sg": "false", "ti": 0, "ro": order.reduce_only and not self.sim.core.account.hedge_mode,
        }
        o.update(fields)
        oid: int = o["i"]
        o["T"] = t = max(o["T"], self._last_t.get(oid, 0))
        if o["X"] in TERMINAL:
            self._last_t.pop(oid, None)
        else:
            self._last_t[oid] = t
        o["i"], o["ti"] = Wire("id", oid), Wire("id", o["ti"])
        return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": t, "o": o}

    def _account_push(self, snap: PositionSnapshot, now: int, *, one_way: bool) -> dict[str, Any]:
        mt = "isolated" if self.sim.margin_type.get(snap.symbol, "CROSSED") != "CROSSED" else "cross"
        upnl = unrealized(self.sim, snap.symbol, snap.side, snap.qty, snap.entry_price)
        signed = -snap.qty if one_way and snap.side == "short" else snap.qty
        position = {"s": snap.symbol, "pa": num(signed), "ep": num(snap.entry_price), "up": num(upnl),
                    "mt": mt, "iw": "0", "ps": "BOTH" if one_way else snap.side.upper(),
                    "cr": num(self.realised.get((snap.symbol, snap.side), ZERO))}
        balance = {"a": "USDT", "wb": num(self.wallet), "cw": num(self.wallet), "bc": num(self._last_change)}
        return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {"m": "ORDER", "B": [balance], "P": [position]}}


def _net(events: list[AnyEvent]) -> list[AnyEvent]:
    """One-way mode shows one net position per symbol. An order that netted reports both sides (the side
    it opened, then the side it reduced): of such consecutive snapshots only the side still held, or one
    of them when flat, becomes a push."""
    out: list[AnyEvent] = []
    for ev in events:
        prev = out[-1] if out else None
        if isinstance(ev, PositionSnapshot) and isinstance(prev, PositionSnapshot) and prev.symbol == ev.symbol:
            if ev.qty > 0:
                out[-1] = ev
            continue
        out.append(ev)
    return out
