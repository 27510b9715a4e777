"""Results read back from journals alone: trades, return, drawdown, exits by reason, fees, funding.

Everything here is derived from what the engine committed, so a report of a crashed and recovered
session is as true as one of a clean run.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from gatebot.core.events import ZERO
from gatebot.core.journal import Journal, JournalError
from gatebot.core.position import EXITED, PositionRecord

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
                         exit_reason=dst.removeprefix("exited_"), realized_pnl=r.realized_pnl, fees=r.fees,
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
    return (f"{s.instance}: {s.trades} trades, win rate {s.win_rate:.1%}, net {s.net_pnl:+.2f} USDT "
            f"({s.return_pct:+.2f}% of {s.initial_balance:.2f}), max drawdown {s.max_drawdown_pct:.2f}%, "
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


# --- evaluation: compounding, 5-day windows, out of sample --------------------------

WINDOW_CANDLES = 1440
"""The original's statistic: 5-day windows of 5m candles ..."""
WINDOW_STEP = 72
"""... stepped by 6 hours."""
WINDOW_START_BALANCE = 10_000.0


class EvalTrade(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    side: str
    opened_at: int
    """Journal time of the entry decision (the close time of the candle it was taken on), ms."""
    closed_at: int
    exit_reason: str
    net: float
    fees: float
    ret: float
    """Net result over the balance before the trade: the compounding factor is 1 + ret."""
    info: dict[str, Any] = msgspec.field(default_factory=dict)


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    trades: int
    wins: int
    compound_return_pct: float
    max_drawdown_pct: float
    avg_win_pct: float
    avg_loss_pct: float
    fees: float
    exits: dict[str, int]
    window_mean_return_pct: float
    window_mean_win_rate: float
    windows: int
    windows_nonoverlap_mean_return_pct: float
    windows_nonoverlap_mean_win_rate: float
    windows_nonoverlap: int

    @property
    def win_rate(self) -> float:
        return self.wins / self.trades if self.trades else 0.0


def eval_trades(journal: Journal) -> list[EvalTrade]:
    """The journal's closed trades with their entry time, decision info and return on the balance."""
    _json = msgspec.json.Decoder(dict)
    entries = {pos: (ts, _json.decode(detail) if detail else {}) for pos, ts, detail in journal.conn.execute(
        "SELECT position, ts, detail FROM transitions WHERE trigger = 'enter' ORDER BY seq")}
    balance = float(Decimal(journal.meta().get("initial_balance", "0")))
    out = []
    for t in trades(journal):
        opened, info = entries.get(t.position, (t.closed_at, {}))
        net = float(t.net)
        out.append(EvalTrade(position=t.position, side=t.side, opened_at=opened, closed_at=t.closed_at,
                             exit_reason=t.exit_reason, net=net, fees=float(t.fees),
                             ret=net / balance if balance > 0 else 0.0, info=info))
        balance += net
    return out


def _compound(rets: list[float]) -> tuple[float, float]:
    """(total return, max drawdown) of compounding ``rets`` on the trade-close equity curve."""
    equity = peak = 1.0
    max_dd = 0.0
    for r in rets:
        equity *= 1.0 + r
        peak = max(peak, equity)
        max_dd = max(max_dd, (peak - equity) / peak)
    return equity - 1.0, max_dd


def window_stats(ts: list[EvalTrade], start_ms: int, end_ms: int, interval_ms: int,
                 length: int = WINDOW_CANDLES, step: int = WINDOW_STEP) -> tuple[float, float, int]:
    """Mean return and mean win rate over windows of ``length`` candles stepped by ``step``, each
    starting flat at 10,000 USDT: the trades entered and closed inside a window, compounded from
    their returns on the balance (sizing is a share of the balance, so this rescales them). Windows
    without trades count as 0% return and are left out of the mean win rate. Returns (mean return,
    mean win rate, windows)."""
    span = length * interval_ms
    rets, rates = [], []
    w = start_ms
    while w + span <= end_ms:
        inside = [t for t in ts if w <= t.opened_at and t.closed_at <= w + span]
        equity = WINDOW_START_BALANCE
        for t in inside:
            equity *= 1.0 + t.ret
        rets.append(equity / WINDOW_START_BALANCE - 1.0)
        if inside:
            rates.append(sum(1 for t in inside if t.net > 0) / len(inside))
        w += step * interval_ms
    if not rets:
        return 0.0, 0.0, 0
    return sum(rets) / len(rets), (sum(rates) / len(rates) if rates else 0.0), len(rets)


def evaluate(ts: list[EvalTrade], *, start_ms: int, end_ms: int, interval_ms: int, label: str = "") -> Evaluation:
    """Metrics of the trades entered in [start_ms, end_ms], compounded from the start of the span."""
    sel = [t for t in ts if start_ms <= t.opened_at <= end_ms]
    total, dd = _compound([t.ret for t in sel])
    wins = [t.ret for t in sel if t.net > 0]
    losses = [t.ret for t in sel if t.net <= 0]
    mean_r, mean_w, n_w = window_stats(sel, start_ms, end_ms, interval_ms)
    mean_rn, mean_wn, n_wn = window_stats(sel, start_ms, end_ms, interval_ms, step=WINDOW_CANDLES)
    return Evaluation(
        label=label, trades=len(sel), wins=len(wins), compound_return_pct=total * 100, max_drawdown_pct=dd * 100,
        avg_win_pct=(sum(wins) / len(wins) * 100) if wins else 0.0,
        avg_loss_pct=(sum(losses) / len(losses) * 100) if losses else 0.0,
        fees=sum(t.fees for t in sel), exits=dict(Counter(t.exit_reason for t in sel)),
        window_mean_return_pct=mean_r * 100, window_mean_win_rate=mean_w, windows=n_w,
        windows_nonoverlap_mean_return_pct=mean_rn * 100, windows_nonoverlap_mean_win_rate=mean_wn,
        windows_nonoverlap=n_wn)


def split_by_training(ts: list[EvalTrade], training_end_ms: int, interval_ms: int, *, start_ms: int,
                      end_ms: int) -> dict[str, Evaluation]:
    """In-sample and out-of-sample evaluations. ``training_end_ms`` is the open time of the last
    candle the models were trained on (model card ``training_period.end_ms``); a trade is out of
    sample when it was entered after that candle closed."""
    oos_from = training_end_ms + interval_ms + 1  # journal times are candle close times
    out = {}
    if start_ms < oos_from:
        out["in_sample"] = evaluate(ts, start_ms=start_ms, end_ms=min(end_ms, oos_from - 1), interval_ms=interval_ms,
                                    label="in sample (the models were trained on these candles)")
    if end_ms >= oos_from:
        out["out_of_sample"] = evaluate(ts, start_ms=max(start_ms, oos_from), end_ms=end_ms, interval_ms=interval_ms,
                                        label="out of sample")
    return out


def format_evaluation(e: Evaluation) -> str:
    exits = ", ".join(f"{k} {v}" for k, v in sorted(e.exits.items())) or "none"
    return "\n".join([
        f"  {e.label}: {e.trades} trades, win rate {e.win_rate:.1%}, compounded return {e.compound_return_pct:+.2f}%, "
        f"max drawdown {e.max_drawdown_pct:.2f}% (at trade closes)",
        f"    average win {e.avg_win_pct:+.2f}%, average loss {e.avg_loss_pct:+.2f}% of the balance; "
        f"fees {e.fees:.2f} USDT; exits: {exits}",
        f"    5-day windows from 10,000 USDT stepped by 6 h (the original's statistic): mean return "
        f"{e.window_mean_return_pct:+.2f}%, mean win rate {e.window_mean_win_rate:.1%} over {e.windows} windows",
        f"    non-overlapping 5-day windows: mean return {e.windows_nonoverlap_mean_return_pct:+.2f}%, "
        f"mean win rate {e.windows_nonoverlap_mean_win_rate:.1%} over {e.windows_nonoverlap} windows",
    ])


def evaluation_text(state_dir: str | Path, strategy_meta: dict[str, Any] | None = None) -> str:
    """The evaluation of every journal in ``state_dir`` as text (the CLI prints it).

    ``strategy_meta`` may give ``interval_ms`` (default 5 minutes), ``start_ms`` / ``end_ms`` (the
    replayed candles' first open time and last close time; default: the journal's first and last
    transition) and ``training_period`` (a model card's, with ``end_ms``) or ``model_card`` (the
    card as a dict, or the path of its JSON file). With a training period, the in-sample and
    out-of-sample parts are reported separately."""
    meta = dict(strategy_meta or {})
    card = meta.get("model_card")
    if isinstance(card, str | Path):
        card = msgspec.json.decode(Path(card).read_bytes())
    training = meta.get("training_period") or (card or {}).get("training_period")
    interval = int(meta.get("interval_ms", 300_000))
    lines = []
    for path in sorted(Path(state_dir).glob("*.sqlite")):
        journal = Journal(path, readonly=True)
        try:
            ts = eval_trades(journal)
            first, last = journal.conn.execute("SELECT MIN(ts), MAX(ts) FROM transitions").fetchone()
            name = journal.meta().get("instance", path.stem)
        finally:
            journal.close()
        start = int(meta.get("start_ms", first or 0))
        end = int(meta.get("end_ms", last or 0))
        lines.append(f"evaluation of {name} (fees as charged by the exchange, on notional; stops filled intrabar with "
                     "the account's stop slippage; funding as settled):")
        if training and "end_ms" in training:
            lines.append(f"  the models were trained on candles {training.get('start', '?')} .. "
                         f"{training.get('end', '?')} (open times); only later entries are out of sample")
            parts = split_by_training(ts, int(training["end_ms"]), interval, start_ms=start, end_ms=end)
            if "out_of_sample" not in parts:
                lines.append("  no out-of-sample candles in this replay")
            lines.extend(format_evaluation(e) for e in parts.values())
        else:
            lines.append(format_evaluation(evaluate(ts, start_ms=start, end_ms=end, interval_ms=interval,
                                                    label="whole period")))
    return "\n".join(lines)


# --- the full report: equity curve, drawdown, protection gaps -----------------------


def equity_curve(journal: Journal) -> tuple[list[int], list[float], list[float]]:
    """(times, equity, drawdown %) at the start and after each closed trade: the plotted series. A journal
    without transitions has none (empty lists): a point at time 0 would stretch the chart's time axis to 1970."""
    initial = Decimal(journal.meta().get("initial_balance", "0"))
    first = journal.conn.execute("SELECT MIN(ts) FROM transitions").fetchone()[0]
    if first is None:
        return [], [], []
    times, equity, dd = [int(first)], [float(initial)], [0.0]
    value = peak = initial
    for t in trades(journal):
        value += t.net
        peak = max(peak, value)
        times.append(t.closed_at)
        equity.append(float(value))
        dd.append(float((peak - value) / peak * 100) if peak > 0 else 0.0)
    return times, equity, dd


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


def report_data(journal: Journal, *, interval_ms: int = 300_000) -> dict[str, Any]:
    """Everything ``gatebot report`` shows for one journal, as plain JSON-able data."""
    s = summarize(journal)
    ts = trades(journal)
    times, equity, dd = equity_curve(journal)
    gaps = protection_gaps(journal)
    pnl, fees = journal.realized()
    ev = eval_trades(journal)
    first, last = journal.conn.execute("SELECT MIN(ts), MAX(ts) FROM transitions").fetchone()
    evaluation = evaluate(ev, start_ms=first or 0, end_ms=last or 0, interval_ms=interval_ms, label="whole period")
    return {
        "instance": s.instance, "state": s.state, "initial_balance": str(s.initial_balance),
        "trades": s.trades, "wins": s.wins, "win_rate": s.win_rate, "net_pnl": str(s.net_pnl),
        "fees": str(s.fees), "return_pct": s.return_pct, "max_drawdown_pct": s.max_drawdown_pct,
        "exits": s.exits, "realized_pnl_from_fills": str(pnl), "fees_from_fills": str(fees),
        "funding": str(s.funding), "funding_booked": str(journal.funding_total()),
        "funding_payments": journal.funding_count(),
        "protection_gap_ms": {"count": len(gaps), "max": max(gaps, default=0), "median": _pct(gaps, 0.5),
                              "p95": _pct(gaps, 0.95), "mean": (sum(gaps) / len(gaps)) if gaps else 0.0},
        "evaluation": msgspec.to_builtins(evaluation),
        "equity_curve": {"t": times, "equity": equity, "drawdown_pct": dd},
        "trades_table": [{"position": t.position, "side": t.side, "qty": str(t.qty),
                          "entry_price": str(t.entry_price), "exit": t.exit_reason,
                          "realized_pnl": str(t.realized_pnl), "fees": str(t.fees), "funding": str(t.funding),
                          "net": str(t.net),
                          "closed_at": t.closed_at} for t in ts],
    }


def format_report(data: dict[str, Any], *, max_rows: int = 20) -> str:
    lines = [f"== {data['instance']} ({data['state']}) ==",
             f"{data['trades']} trades, win rate {data['win_rate']:.1%}, net {Decimal(data['net_pnl']):+.2f} USDT "
             f"({data['return_pct']:+.2f}% of {Decimal(data['initial_balance']):.2f}), max drawdown "
             f"{data['max_drawdown_pct']:.2f}%, fees {Decimal(data['fees']):.2f}",
             f"funding: {Decimal(data['funding']):+.4f} USDT paid by the closed trades (in net); "
             f"{data['funding_payments']} payments booked, {Decimal(data['funding_booked']):+.4f} USDT in all "
             "(positive = paid)",
             "exits by reason: " + (", ".join(f"{k} {v}" for k, v in sorted(data["exits"].items())) or "none")]
    g = data["protection_gap_ms"]
    lines.append(f"protection gap (entry fill -> stop confirmed): {g['count']} positions, median {g['median']} ms, "
                 f"p95 {g['p95']} ms, max {g['max']} ms")
    e = data["evaluation"]
    lines.append(f"5-day windows: mean return {e['window_mean_return_pct']:+.2f}%, mean win rate "
                 f"{e['window_mean_win_rate']:.1%} over {e['windows']} windows")
    rows = data["trades_table"]
    if rows:
        lines.append(f"{'pos':>5} {'side':<5} {'qty':>10} {'entry':>12} {'exit':<7} {'funding':>10} {'net':>12}")
        shown = rows if len(rows) <= max_rows else rows[-max_rows:]
        if len(rows) > max_rows:
            lines.append(f"  ... {len(rows) - max_rows} earlier trades in the JSON")
        for r in shown:
            lines.append(f"{r['position']:>5} {r['side']:<5} {r['qty']:>10} {Decimal(r['entry_price']):>12.2f} "
                         f"{r['exit']:<7} {Decimal(r['funding']):>+10.4f} {Decimal(r['net']):>+12.4f}")
    return "\n".join(lines)
