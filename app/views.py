"""What the operator sees of an instance, derived from its journal alone (docs/api.md's shapes).

One place for the views that the bot's API (app/api.py, which adds what only the live process knows: the
mark price, unrealized PnL, candles) and a read-only server or ``gatebot status`` on a stopped bot share.
Decimals are plain fixed-point strings (:func:`plain`), times integer epoch milliseconds named ``*_ms``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec

from gatebot.core import ids
from gatebot.core.events import ZERO, AnyCommand, SubmitStop, SubmitTakeProfit
from gatebot.core.journal import Journal
from gatebot.core.position import EXITED, PositionRecord

_command = msgspec.json.Decoder(AnyCommand)
_record = msgspec.json.Decoder(PositionRecord)
KIND_OF_ROLE = {"e": "entry", "x": "exit", "s": "stop"}
"""A fill's marker kind (the API's ``entry|exit|stop``: a take-profit's fill is an exit)."""
ORDER_KIND_OF_ROLE = {**KIND_OF_ROLE, "t": "take_profit"}
"""A working order's kind."""


def plain(value: Decimal) -> str:
    """A Decimal as a view shows it: fixed-point, exact, never with an exponent (``str`` gives "1.0000E+5" or
    "0E-8" for values the arithmetic or a journal row carries so; a dashboard or a script reading the API would
    have to parse that)."""
    return format(value, "f")


def _s(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


def position(rec: PositionRecord, mark: Decimal | None = None) -> dict[str, Any] | None:
    """The open position of ``rec`` (None when nothing is open); with ``mark``, its unrealized PnL."""
    if rec.side is None or rec.open_qty <= 0:
        return None
    qty = rec.open_qty
    pnl = None
    if mark is not None:
        pnl = (mark - rec.avg_entry) * qty * (1 if rec.side == "long" else -1)
    stop = None if rec.stop_id is None else {"price": _s(rec.stop_price), "client_id": rec.stop_id}
    return {"side": rec.side, "qty": plain(qty), "entry_price": plain(rec.avg_entry), "opened_ms": rec.opened_at,
            "mark_price": _s(mark), "unrealized_pnl": _s(pnl), "stop": stop}


def transitions(journal: Journal, limit: int = 50) -> list[dict[str, Any]]:
    """The latest transitions, oldest first."""
    rows = journal.conn.execute("SELECT ts, src, dst, trigger, detail FROM transitions ORDER BY seq DESC LIMIT ?",
                                (limit,)).fetchall()
    return [{"time_ms": ts, "from": src, "to": dst, "trigger": trigger, "detail": json.loads(detail or "{}")}
            for ts, src, dst, trigger, detail in reversed(rows)]


class JournalViews:
    """The views of one journal, kept up to date incrementally: each call reads only the rows appended since
    the last (fills, funding, closed trades), so that a dashboard polling the journal of weeks costs the bot's
    loop the new rows, not the whole history, every second. One per journal connection (the API keeps one per
    instance; a one-shot reader makes one and drops it)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._fill_seq = 0
        self._pnl = self._fees = ZERO
        self._markers: list[dict[str, Any]] = []
        self._funding_seq = 0
        self._funding = ZERO
        self._exit_seq = 0
        self._curve: list[dict[str, Any]] = []
        self._value = self._peak = ZERO

    def _read_fills(self) -> None:
        rows = self.journal.conn.execute(
            "SELECT f.seq, f.ts, f.client_id, f.qty, f.price, f.fee, f.realized_pnl, json_extract(f.fill, '$.ts'), "
            "(SELECT json_extract(i.command, '$.side') FROM intents i WHERE i.client_id = f.client_id "
            "AND i.status = 'pending' ORDER BY i.seq LIMIT 1) FROM fills f WHERE f.seq > ? ORDER BY f.seq",
            (self._fill_seq,)).fetchall()
        for seq, ts, cid, qty, price, fee, pnl, fill_ts, side in rows:
            self._fill_seq = seq
            self._pnl += Decimal(pnl)
            self._fees += Decimal(fee)
            p = ids.parse(cid)
            if side is None and p is not None:  # an attached stop: its entry carried it
                side = self._side_of(ids.make(p.instance, p.epoch, p.seq, "e", 1))
            kind = KIND_OF_ROLE.get(p.role, "exit") if p is not None else "exit"
            self._markers.append({"time_ms": fill_ts or ts, "kind": kind, "side": side, "price": plain(Decimal(price)),
                                  "qty": plain(Decimal(qty))})

    def _side_of(self, client_id: str) -> str | None:
        row = self.journal.conn.execute(
            "SELECT json_extract(command, '$.side') FROM intents WHERE client_id = ? AND status = 'pending' "
            "ORDER BY seq LIMIT 1",
            (client_id,)).fetchone()
        return None if row is None else row[0]

    def realized(self) -> tuple[Decimal, Decimal]:
        """(gross realized PnL, fees) of every fill booked."""
        self._read_fills()
        return self._pnl, self._fees

    def funding(self) -> Decimal:
        """Funding paid over every payment booked (positive = paid)."""
        if self.journal._has_funding():
            for seq, paid in self.journal.conn.execute("SELECT seq, paid FROM funding WHERE seq > ? ORDER BY seq",
                                                       (self._funding_seq,)).fetchall():
                self._funding_seq = seq
                self._funding += Decimal(paid)
        return self._funding

    def instance(self, *, rec: PositionRecord | None = None, trading_state: str | None = None,
                 mark: Decimal | None = None) -> dict[str, Any]:
        """The contract's Instance; ``rec``, ``trading_state`` and ``mark`` from a live engine when there is one.
        The balance is the instance's own: its initial balance plus what its fills and funding booked."""
        journal = self.journal
        meta = journal.meta()
        if rec is None:
            rec = journal.fold() or PositionRecord()
        pnl, fees = self.realized()
        funding = self.funding()
        initial = Decimal(meta.get("initial_balance", "0"))
        return {"name": meta.get("instance", journal.path.stem), "strategy": meta.get("strategy", ""),
                "exchange": meta.get("exchange", ""), "symbol": meta.get("symbol", rec.symbol),
                "position_state": rec.state, "trading_state": trading_state or journal.trading_state(),
                "position": position(rec, mark), "balance": plain(initial + pnl - fees - funding),
                "realized_pnl": plain(pnl), "fees": plain(fees), "funding": plain(funding)}

    def working_orders(self, rec: PositionRecord) -> list[dict[str, Any]]:
        """The orders of the current position still working, as the journal sent them."""
        if not rec.working:
            return []
        marks = ",".join("?" * len(rec.working))
        commands: dict[str, Any] = {}
        for cid, cmd in self.journal.conn.execute(  # the order's own command, not a later cancel of its id
                f"SELECT client_id, command FROM intents WHERE status = 'pending' AND client_id IN ({marks}) "
                "ORDER BY seq", rec.working):
            commands.setdefault(cid, _command.decode(cmd))
        out = []
        for cid in rec.working:
            cmd = commands.get(cid)
            p = ids.parse(cid)
            price = (cmd.stop_price if isinstance(cmd, SubmitStop | SubmitTakeProfit)
                     else rec.stop_price if p and p.role == "s" else None)
            out.append({"client_id": cid, "kind": ORDER_KIND_OF_ROLE.get(p.role, "?") if p else "?",
                        "side": getattr(cmd, "side", rec.side), "qty": _s(getattr(cmd, "qty", None)),
                        "price": _s(price)})
        return out

    def trades(self) -> list[dict[str, Any]]:
        """Every fill as a chart marker: entry, exit or stop, at the exchange's time of the fill when it gave one
        (the market's, which the candles are on), else when the journal booked it."""
        self._read_fills()
        return list(self._markers)

    def equity(self) -> list[dict[str, Any]]:
        """Equity at the first transition and after each closed trade (net of fees and funding, as the report
        counts it), with the drawdown from its peak as a share."""
        conn = self.journal.conn
        if not self._curve:
            first = conn.execute("SELECT MIN(ts) FROM transitions").fetchone()[0]
            if first is None:
                return []
            self._value = self._peak = Decimal(self.journal.meta().get("initial_balance", "0"))
            self._curve.append({"time_ms": int(first), "equity": plain(self._value), "drawdown": "0"})
        rows = conn.execute(
            "SELECT seq, ts, record FROM transitions WHERE seq > ? AND dst IN (?, ?, ?) AND src NOT IN (?, ?, ?) "
            "ORDER BY seq", (self._exit_seq, *EXITED, *EXITED)).fetchall()
        funding = self.journal.funding_by_position() if rows else {}
        for seq, ts, record in rows:
            self._exit_seq = seq
            r = _record.decode(record)
            self._value += r.realized_pnl - r.fees - funding.get(r.seq, ZERO)
            self._peak = max(self._peak, self._value)
            dd = (self._peak - self._value) / self._peak if self._peak > 0 else ZERO
            self._curve.append({"time_ms": ts, "equity": plain(self._value),
                                "drawdown": plain(dd.quantize(Decimal("1e-6")))})
        return list(self._curve)


def instance(journal: Journal) -> dict[str, Any]:
    """One journal's Instance, read once (a stopped bot)."""
    return JournalViews(journal).instance()
