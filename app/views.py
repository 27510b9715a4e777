"""The operator's read model: what the API and the dashboard show of an instance, as the plain JSON payloads of
/work's API contract (decimals as strings, times as integer epoch ms named ``*_ms``), read from its journal.

A running bot adds what only it knows (the mark price, its candles, the trading state it holds in memory) by
passing them in; ``gatebot dashboard STATE_DIR`` passes none, so a position shows no mark and no unrealized
PnL there, and the candle series is empty (journals hold no candles). One module for both, so the page reads
the same shapes from the bot and from the journals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from gatebot.app.report import trades
from gatebot.core import ids
from gatebot.core.events import ZERO
from gatebot.core.journal import Journal
from gatebot.core.position import PositionRecord

_record = msgspec.json.Decoder(PositionRecord)

TRADE_KINDS = {"entry": "entry", "close": "exit", "stop": "stop", "take_profit": "exit"}
"""A fill's kind on the chart by the role in its client id (a stop that filled is an exit by the stop)."""


def _s(value: Decimal | None) -> str | None:
    """A decimal as a plain string: no exponent (an average entry of 20000 / 0.2 is 1.0000E+5 to Decimal), no
    trailing zeros of a division."""
    return None if value is None else format(value.normalize(), "f")


def unrealized(side: str, qty: Decimal, entry: Decimal, mark: Decimal) -> Decimal:
    """Gross price PnL of ``qty`` held at ``entry`` were it closed at ``mark`` (no fees)."""
    return (mark - entry) * qty if side == "long" else (entry - mark) * qty


def position_view(rec: PositionRecord | None, mark: Decimal | None = None) -> dict[str, Any] | None:
    """The open position of ``rec`` (None when nothing is held), its stop as the exchange holds it."""
    if rec is None or rec.side is None or rec.open_qty <= 0:
        return None
    entry = rec.avg_entry
    return {
        "side": rec.side, "qty": _s(rec.open_qty), "entry_price": _s(entry), "opened_ms": rec.opened_at,
        "mark_price": _s(mark),
        "unrealized_pnl": None if mark is None else _s(unrealized(rec.side, rec.open_qty, entry, mark)),
        "stop": None if rec.stop_id is None else {"price": _s(rec.stop_price), "client_id": rec.stop_id},
    }


def trading_state(journal: Journal) -> str:
    """active | reducing | halted, as the journal last recorded it (an instance the bot halted is halted)."""
    meta = journal.meta()
    state = meta.get("trading_state")
    if state in ("active", "reducing", "halted"):
        return state
    return "halted" if "halted" in meta else "active"


def instance_view(journal: Journal, *, exchange: str = "", symbol: str = "", mark: Decimal | None = None,
                  state: str | None = None) -> dict[str, Any]:
    """One Instance of ``GET /api/instances``; ``state`` is the running bot's trading state (else the journal's)."""
    meta = journal.meta()
    rec = journal.fold()
    pnl, fees = journal.realized()
    funding = journal.funding_total()
    initial = Decimal(meta.get("initial_balance", "0"))
    return {
        "name": meta.get("instance", journal.path.stem), "strategy": meta.get("strategy", ""),
        "exchange": exchange or meta.get("exchange", ""), "symbol": symbol or (rec.symbol if rec else ""),
        "position_state": rec.state if rec else "flat", "trading_state": state or trading_state(journal),
        "position": position_view(rec, mark),
        "balance": _s(initial + pnl - fees - funding), "realized_pnl": _s(pnl), "fees": _s(fees),
        "funding": _s(funding),
    }


def working_orders(journal: Journal) -> list[dict[str, Any]]:
    """The orders of the current position that the journal knows to be working (its stop, a close)."""
    rec = journal.fold()
    if rec is None:
        return []
    out = []
    for cid, row in journal.intents(rec.seq).items():
        if cid not in rec.working and cid != rec.stop_id:
            continue
        cmd = row.command
        parsed = ids.parse(cid)
        out.append({"client_id": cid, "kind": ids.ROLES.get(parsed.role, "") if parsed else "",
                    "side": getattr(cmd, "side", None), "qty": _s(getattr(cmd, "qty", None)),
                    "price": _s(getattr(cmd, "stop_price", None))})
    return out


def trade_marks(journal: Journal) -> list[dict[str, Any]]:
    """Every fill, as a chart marker: entries in the position's side, exits and stops against it."""
    sides: dict[int, str] = {}
    for pos, record in journal.conn.execute("SELECT position, record FROM transitions ORDER BY seq"):
        side = _record.decode(record).side
        if side:
            sides[pos] = side
    out = []
    for ts, pos, cid, qty, price in journal.conn.execute(
            "SELECT ts, position, client_id, qty, price FROM fills ORDER BY seq"):
        parsed = ids.parse(cid)
        kind = TRADE_KINDS.get(ids.ROLES.get(parsed.role, "") if parsed else "", "exit")
        side = sides.get(pos, "")
        if kind != "entry" and side:
            side = "short" if side == "long" else "long"
        out.append({"time_ms": ts, "kind": kind, "side": side, "price": price, "qty": qty})
    return out


def equity(journal: Journal) -> list[dict[str, Any]]:
    """Equity (initial balance plus each closed trade's net) and drawdown from its peak (%, a string)."""
    first = journal.conn.execute("SELECT MIN(ts) FROM transitions").fetchone()[0]
    if first is None:
        return []
    value = peak = Decimal(journal.meta().get("initial_balance", "0"))
    out = [{"time_ms": int(first), "equity": _s(value), "drawdown": "0"}]
    for t in trades(journal):
        value += t.net
        peak = max(peak, value)
        dd = (peak - value) / peak * 100 if peak > 0 else ZERO
        out.append({"time_ms": t.closed_at, "equity": _s(value), "drawdown": _s(round(dd, 4))})
    return out


def transitions(journal: Journal, limit: int = 100) -> list[dict[str, Any]]:
    """The last ``limit`` transitions, oldest first."""
    rows = journal.conn.execute(
        "SELECT ts, src, dst, trigger, detail FROM transitions ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    return [{"time_ms": ts, "from": src, "to": dst, "trigger": trigger,
             "detail": msgspec.json.decode(detail) if detail else {}} for ts, src, dst, trigger, detail in rows[::-1]]
