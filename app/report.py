"""Results read back from journals alone: trades, return, drawdown, exits by reason, fees, funding.

Everything here is derived from what the engine committed, so a report of a crashed and recovered
session is as true as one of a clean run.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gatebot.app.evaluation import JournalFacts, evaluate, format_evaluation, read_journal
from gatebot.core.events import ZERO
from gatebot.core.journal import Journal, JournalError
from gatebot.core.market import read_candles
from gatebot.core.position import EXITED, PositionRecord, exit_kind

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
    funding: Decimal = ZERO
    """Funding paid while the position was held (positive = paid; 0 when it held across no funding time)."""

    @property
    def net(self) -> Decimal:
        return self.realized_pnl - self.fees - self.funding


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    initial_balance: Decimal
    trades: int
    wins: int
    net_pnl: Decimal
    fees: Decimal
    return_pct: float
    funding: Decimal
    """Funding paid by the closed trades (in ``net_pnl``)."""
    max_drawdown_pct: float
    exits: dict[str, int]
    state: str

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0


def trades(journal: Journal) -> list[Trade]:
    """One trade per position that reached an exited_* state (the transition that entered it)."""
    out = []
    funding = journal.funding_by_position()
    for _seq, ts, dst, record in journal.conn.execute(
            "SELECT seq, ts, dst, record FROM transitions WHERE dst IN (?, ?, ?) AND src NOT IN (?, ?, ?) "
            "ORDER BY seq", EXITED + EXITED):
        r = _record.decode(record)
        out.append(Trade(position=r.seq, side=r.side or "", qty=r.filled_qty, entry_price=r.avg_entry,
                         exit_reason=exit_kind(dst, r), realized_pnl=r.realized_pnl, fees=r.fees,
                         closed_at=ts, funding=funding.get(r.seq, ZERO)))
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
        funding=sum((t.funding for t in ts), ZERO),
        return_pct=float(net / initial * 100) if initial else 0.0, max_drawdown_pct=max_dd * 100,
        exits=dict(Counter(t.exit_reason for t in ts)), state=folded.state if folded else "flat")


def format_summary(s: Summary) -> str:
    exits = ", ".join(f"{k} {v}" for k, v in sorted(s.exits.items())) or "none"
    of = (f"{s.return_pct:+.2f}% of {s.initial_balance:.2f}" if s.initial_balance > 0
          else f"return n/a: the initial balance {s.initial_balance:.2f} is not positive")
    return (f"{s.instance}: {s.trades} trades, win rate {s.win_rate:.1%}, net {s.net_pnl:+.2f} USDT "
            f"({of}), max drawdown at trade closes {s.max_drawdown_pct:.2f}%, "
            f"fees {s.fees:.2f}, funding {s.funding:.2f}, exits: {exits}; now {s.state}")


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


# --- the full report: equity curve, drawdown, protection gaps -----------------------


def protection_gaps(journal: Journal) -> list[int]:
    """Per position, ms from its first entry fill to the stop confirmed on the exchange (0 when an
    attached stop was live before the fill was known)."""
    fills: dict[int, int] = {}
    gaps: dict[int, int] = {}
    for pos, ts, trigger in journal.conn.execute(
            "SELECT position, ts, trigger FROM transitions WHERE trigger IN ('entry_filled', 'stop_confirmed', "
            "'entry_completed') ORDER BY seq"):
        if trigger == "stop_confirmed":
            if pos not in gaps:
                gaps[pos] = max(0, ts - fills.get(pos, ts))
        else:
            fills.setdefault(pos, ts)
    return [gaps[p] for p in sorted(gaps)]


def _pct(values: list[int], q: float) -> int:
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def journal_candles(facts: JournalFacts, candles: Path | None = None) -> np.ndarray | None:
    """The candles to mark equity at: the file given, else the one the replay recorded in the journal's meta
    (when it is still there); None for a journal of a live or paper session (marks at trades only)."""
    path = candles or (Path(facts.candles_csv) if facts.candles_csv else None)
    if path is None or not path.is_file():
        return None
    return read_candles(path).rows  # as the replay read it: a row repeating the one before it dropped


def report_data(journal: Journal, *, candles: Path | None = None) -> dict[str, Any]:
    """Everything ``gatebot report`` shows for one journal, as plain JSON-able data: the evaluation
    (app/evaluation.py, the same figures as the replay's printout) and what only the report shows."""
    s = summarize(journal)
    facts = read_journal(journal)
    rows = journal_candles(facts, candles)
    ev = evaluate(facts, rows)
    step = facts.interval_ms
    price = {"t": [], "close": []} if rows is None else {"t": [int(t) + step for t in rows[:, 0].tolist()],
                                                          "close": rows[:, 4].tolist()}
    gaps = protection_gaps(journal)
    pnl, fees = journal.realized()
    return {
        "baseline": _baseline(journal.path.parent / "baseline.json", s.instance, ev),
        "instance": s.instance, "state": s.state, "exits": s.exits, "candle_file": _candle_file(journal.meta()),
        "realized_pnl_from_fills": str(pnl), "fees_from_fills": str(fees),
        "funding_booked": str(journal.funding_total()), "funding_payments": journal.funding_count(),
        "protection_gap_ms": {"count": len(gaps), "max": max(gaps, default=0), "median": _pct(gaps, 0.5),
                              "p95": _pct(gaps, 0.95), "mean": (sum(gaps) / len(gaps)) if gaps else 0.0},
        "evaluation": ev,
        "price": price,
    }


def candle_file_line(c: dict[str, Any]) -> str:
    """The candle file's quality in one line: gaps (and the longest), missing candles, repeated rows dropped."""
    longest = ""
    if c["longest_after_ms"] is not None:
        at = datetime.fromtimestamp(c["longest_after_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        longest = f", the longest {c['longest']} after {at}"
    return (f"candle file {c['path']} ({c['interval']}): {c['candles']} candles, {c['gaps']} gap(s) "
            f"({c['missing']} missing candle(s){longest}), {c['duplicates']} duplicate row(s) dropped")


_CANDLE_FILE_KEYS = frozenset({"path", "interval", "candles", "gaps", "missing", "longest", "longest_after_ms",
                               "duplicates"})


def _candle_file(meta: dict[str, str]) -> dict[str, Any] | None:
    """The replayed candle file's counts the runner put in the journal meta (``candle_file``); None for a run
    without a candle file (or a meta value not of that shape: nothing is made up)."""
    try:
        c = msgspec.json.decode(meta.get("candle_file", "null"))
    except msgspec.DecodeError:
        return None
    return c if isinstance(c, dict) and c.keys() >= _CANDLE_FILE_KEYS else None


def _baseline(path: Path, instance: str, ev: dict[str, Any]) -> dict[str, Any] | None:
    """The random-entry baseline (``gatebot evaluate``) beside the journal, when it is of this very run (its
    strategy figure is this journal's): a file of an earlier run is not shown as this one's."""
    try:
        b = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if not isinstance(b, dict) or b.get("instance") != instance:
        return None
    mine = ev["parts"][0]["compound_return_pct"]
    if abs(float(b.get("strategy_return_pct", float("nan"))) - mine) > 1e-9:
        return {"stale": True}
    return b


def format_report(data: dict[str, Any], *, max_rows: int = 20) -> str:
    """The evaluation first (out of sample first), then what only the report shows, then the trades."""
    lines = [f"== {data['instance']} ({data['state']}) ==", format_evaluation(data["evaluation"]),
             f"funding: {data['funding_payments']} payments booked, {Decimal(data['funding_booked']):+.4f} USDT in "
             "all (positive = paid)",
             "exits by reason: " + (", ".join(f"{k} {v}" for k, v in sorted(data["exits"].items())) or "none")]
    if data.get("candle_file") is not None:
        lines.append(candle_file_line(data["candle_file"]))
    b = data.get("baseline")
    if b is not None and b.get("stale"):
        lines.append("random-entry baseline: baseline.json is of another run (gatebot evaluate again)")
    elif b is not None:
        n = len(b["random_returns_pct"])
        lines.append(f"random-entry baseline ({n} runs, {b['part']}): strategy {b['strategy_return_pct']:+.2f}%, "
                     f"percentile {b['percentile']:.1f}, p-value {b['p_value']:.3f} ({b['method']})")
    g = data["protection_gap_ms"]
    lines.append(f"protection gap (entry fill -> stop confirmed): {g['count']} positions, median {g['median']} ms, "
                 f"p95 {g['p95']} ms, max {g['max']} ms")
    rows = data["evaluation"]["trades_table"]
    if rows:
        lines.append(f"{'pos':>5} {'side':<5} {'opened (UTC)':<16} {'closed (UTC)':<16} {'hold':>6} {'entry':>10} "
                     f"{'exit':>10} {'how':<8} {'fees':>8} {'funding':>8} {'net':>10} sample")
        shown = rows if len(rows) <= max_rows else rows[-max_rows:]
        if len(rows) > max_rows:
            lines.append(f"  ... {len(rows) - max_rows} earlier trades in the JSON")
        for r in shown:
            lines.append(f"{r['position']:>5} {r['side']:<5} {_utc(r['filled_at']):<16} {_utc(r['closed_at']):<16} "
                         f"{r['duration_ms'] / 60_000:>5.0f}m {Decimal(r['entry_price']):>10.2f} "
                         f"{Decimal(r['exit_price']):>10.2f} {r['exit']:<8} {Decimal(r['fees']):>8.2f} "
                         f"{Decimal(r['funding']):>+8.2f} {Decimal(r['net']):>+10.2f} "
                         f"{'in' if r['sample'] == 'in_sample' else 'out'}")
    return "\n".join(lines)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def evaluation_text(state_dir: str | Path, candles: Path | None = None, *, only: str | None = None) -> str:
    """The evaluation of every readable journal in ``state_dir`` (the replay prints it), or of instance ``only``."""
    out = []
    for path in sorted(Path(state_dir).glob("*.sqlite" if only is None else f"{only}.sqlite")):
        try:
            journal = Journal(path, readonly=True)
            try:
                facts = read_journal(journal)
            finally:
                journal.close()
        except JournalError as exc:  # named in the line; the other journals are still evaluated
            out.append(f"error: {exc}")
            continue
        out.append(format_evaluation(evaluate(facts, journal_candles(facts, candles))))
    return "\n".join(out)
