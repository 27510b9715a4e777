"""Results read back from journals alone: trades, return, drawdown, exits by reason, fees.

Everything here is derived from what the engine committed, so a report of a crashed and recovered
session is as true as one of a clean run.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec

from core.events import ZERO
from core.journal import Journal, JournalError
from core.position import EXITED, PositionRecord

_record = msgspec.json.Decoder(PositionRecord)


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_reason: str
    """How the position ended: sl (exchange stop), exit (exit signal), manual (outside the bot)."""
    realized_pnl: Decimal
    fees: Decimal
    closed_at: int

    @property
    def net(self) -> Decimal:
        return self.realized_pnl - self.fees


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    initial_balance: Decimal
    trades: int
    wins: int
    net_pnl: Decimal
    fees: Decimal
    return_pct: float
    max_drawdown_pct: float
    exits: dict[str, int]
    state: str

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0


def trades(journal: Journal) -> list[Trade]:
    """One trade per position that reached an exited_* state (the transition that entered it)."""
    out = []
    for _seq, ts, dst, record in journal.conn.execute(
            "SELECT seq, ts, dst, record FROM transitions WHERE dst IN (?, ?, ?) AND src NOT IN (?, ?, ?) "
            "ORDER BY seq", EXITED + EXITED):
        r = _record.decode(record)
        out.append(Trade(position=r.seq, side=r.side or "", qty=r.filled_qty, entry_price=r.avg_entry,
                         exit_reason=dst.removeprefix("exited_"), realized_pnl=r.realized_pnl, fees=r.fees,
                         closed_at=ts))
    return out


def summarize(journal: Journal) -> Summary:
    meta = journal.meta()
    initial = Decimal(meta.get("initial_balance", "0"))
    ts = trades(journal)
    equity = peak = initial
    max_dd = 0.0
    for t in ts:
        equity += t.net
        peak = max(peak, equity)
        if peak > 0:
            max_dd = max(max_dd, float((peak - equity) / peak))
    net = sum((t.net for t in ts), ZERO)
    folded = journal.fold()
    return Summary(
        instance=meta.get("instance", journal.path.stem), initial_balance=initial, trades=len(ts),
        wins=sum(1 for t in ts if t.net > 0), net_pnl=net, fees=sum((t.fees for t in ts), ZERO),
        return_pct=float(net / initial * 100) if initial else 0.0, max_drawdown_pct=max_dd * 100,
        exits=dict(Counter(t.exit_reason for t in ts)), state=folded.state if folded else "flat")


def format_summary(s: Summary) -> str:
    exits = ", ".join(f"{k} {v}" for k, v in sorted(s.exits.items())) or "none"
    return (f"{s.instance}: {s.trades} trades, win rate {s.win_rate:.1%}, net {s.net_pnl:+.2f} USDT "
            f"({s.return_pct:+.2f}% of {s.initial_balance:.2f}), max drawdown {s.max_drawdown_pct:.2f}%, "
            f"fees {s.fees:.2f}, exits: {exits}; now {s.state}")


def report_dir(state_dir: str | Path, errors: list[str] | None = None) -> list[Summary]:
    """A summary per readable journal in ``state_dir``; a damaged one is skipped and its error (which
    names the file) appended to ``errors`` when given, else raised."""
    out = []
    for path in sorted(Path(state_dir).glob("*.sqlite")):
        try:
            journal = Journal(path, readonly=True)
            try:
                out.append(summarize(journal))
            finally:
                journal.close()
        except JournalError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return out
