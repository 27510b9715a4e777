"""What the operator sees of an instance, derived from its journal alone (API_CONTRACT.md's shapes).

One place for the views that the bot's API (app/api.py, which adds what only the live process knows: the
mark price, unrealized PnL, candles) and a read-only server or ``gatebot status`` on a stopped bot share.
Decimals are strings, times integer epoch milliseconds named ``*_ms``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from gatebot.app.report import trades as closed_trades
from gatebot.core import ids
from gatebot.core.events import ZERO, OrderFilled, SubmitStop
from gatebot.core.journal import Journal
from gatebot.core.position import PositionRecord

_fill = msgspec.json.Decoder(OrderFilled)
KIND_OF_ROLE = {"e": "entry", "x": "exit", "s": "stop"}


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def balance(journal: Journal) -> Decimal:
    """The instance's balance from its journal: the initial balance plus what its fills and funding booked."""
    initial = Decimal(journal.meta().get("initial_balance", "0"))
    pnl, fees = journal.realized()
    return initial + pnl - fees - journal.funding_total()


def position(rec: PositionRecord, mark: Decimal | None = None) -> dict[str, Any] | None:
    """The open position of ``rec`` (None when nothing is open); with ``mark``, its unrealized PnL."""
    if rec.side is None or rec.open_qty <= 0:
        return None
    qty = rec.open_qty
    pnl = None
    if mark is not None:
        pnl = (mark - rec.avg_entry) * qty * (1 if rec.side == "long" else -1)
    stop = None if rec.stop_id is None else {"price": _s(rec.stop_price), "client_id": rec.stop_id}
    return {"side": rec.side, "qty": str(qty), "entry_price": str(rec.avg_entry), "opened_ms": rec.opened_at,
            "mark_price": _s(mark), "unrealized_pnl": _s(pnl), "stop": stop}


def instance(journal: Journal, *, rec: PositionRecord | None = None, trading_state: str | None = None,
             mark: Decimal | None = None) -> dict[str, Any]:
    """The contract's Instance; ``rec``, ``trading_state`` and ``mark`` from a live engine when there is one."""
    meta = journal.meta()
    if rec is None:
        rec = journal.fold() or PositionRecord()
    pnl, fees = journal.realized()
    return {"name": meta.get("instance", journal.path.stem), "strategy": meta.get("strategy", ""),
            "exchange": meta.get("exchange", ""), "symbol": meta.get("symbol", rec.symbol),
            "position_state": rec.state, "trading_state": trading_state or journal.trading_state(),
            "position": position(rec, mark), "balance": str(balance(journal)), "realized_pnl": str(pnl),
            "fees": str(fees), "funding": str(journal.funding_total())}


def working_orders(journal: Journal, rec: PositionRecord) -> list[dict[str, Any]]:
    """The orders of the current position still working, as the journal sent them."""
    intents = journal.intents(rec.seq) if rec.working else {}
    out = []
    for cid in rec.working:
        row = intents.get(cid)
        cmd = row.command if row is not None else None
        p = ids.parse(cid)
        price = cmd.stop_price if isinstance(cmd, SubmitStop) else rec.stop_price if p and p.role == "s" else None
        out.append({"client_id": cid, "kind": KIND_OF_ROLE.get(p.role, "?") if p else "?",
                    "side": getattr(cmd, "side", rec.side), "qty": _s(getattr(cmd, "qty", None)),
                    "price": _s(price)})
    return out


def transitions(journal: Journal, limit: int = 50) -> list[dict[str, Any]]:
    """The latest transitions, oldest first."""
    rows = journal.conn.execute("SELECT ts, src, dst, trigger, detail FROM transitions ORDER BY seq DESC LIMIT ?",
                                (limit,)).fetchall()
    return [{"time_ms": ts, "from": src, "to": dst, "trigger": trigger, "detail": json.loads(detail or "{}")}
            for ts, src, dst, trigger, detail in reversed(rows)]


def trades(journal: Journal) -> list[dict[str, Any]]:
    """Every fill as a chart marker: entry, exit or stop, at the exchange's time of the fill when it gave one
    (the market's, which the candles are on), else when the journal booked it."""
    sides = {cid: getattr(row.command, "side", None) for cid, row in journal.intents().items()}
    out = []
    for ts, cid, qty, price, raw in journal.conn.execute(
            "SELECT ts, client_id, qty, price, fill FROM fills ORDER BY seq"):
        p = ids.parse(cid)
        fill_ts = _fill.decode(raw).ts if raw else 0
        side = sides.get(cid)
        if side is None and p is not None:  # an attached stop: its entry carried it
            side = sides.get(ids.make(p.instance, p.epoch, p.seq, "e", 1))
        out.append({"time_ms": fill_ts or ts, "kind": KIND_OF_ROLE.get(p.role, "exit") if p else "exit",
                    "side": side, "price": price, "qty": qty})
    return out


def equity(journal: Journal) -> list[dict[str, Any]]:
    """Equity at the first transition and after each closed trade, with the drawdown from its peak (a share)."""
    first = journal.conn.execute("SELECT MIN(ts) FROM transitions").fetchone()[0]
    if first is None:
        return []
    value = peak = Decimal(journal.meta().get("initial_balance", "0"))
    out = [{"time_ms": int(first), "equity": str(value), "drawdown": "0"}]
    for t in closed_trades(journal):
        value += t.net
        peak = max(peak, value)
        dd = (peak - value) / peak if peak > 0 else ZERO
        out.append({"time_ms": t.closed_at, "equity": str(value), "drawdown": str(dd.quantize(Decimal("1e-6")))})
    return out
