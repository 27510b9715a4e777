"""One evaluation of a journal (and the candles it traded on), for ``replay``'s printout, ``report``, the JSON
and the PNG alike: every figure of each is computed here, once.

- Out of sample first. A strategy may declare its training window (the candles its models were fitted on,
  journal meta ``training_start_ms`` / ``training_end_ms``, open times); a trade decided on a candle inside
  it is in sample, every other trade (before or after it) is out of sample. Without a window the whole
  period is out of sample.
- Money is Decimal (net, fees, funding, slippage); returns compound trade by trade on the balance before
  each trade.
- Equity is marked to market at every candle close (the position valued at the close) when the candles are
  known, and only at entries and trade closes otherwise (said so); the drawdown is taken on that curve.
  An open position at the end is valued at the last mark and counted in the return.
- The 5-day statistic runs on non-overlapping windows after the warm-up, each trade counted in the window
  it closes in, and says how many independent windows there were (none for a run shorter than a window).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from decimal import Decimal
from itertools import accumulate
from typing import Any

import msgspec
import numpy as np

from gatebot.core.events import ZERO
from gatebot.core.journal import Journal
from gatebot.core.position import EXITED, PositionRecord, exit_kind

WINDOW_MS = 5 * 86_400_000
"""The seed's statistic: mean return per 5-day window."""
CENT = Decimal("0.01")

_record = msgspec.json.Decoder(PositionRecord)


class TradeRow(msgspec.Struct, kw_only=True):
    """One position as the evaluation needs it (closed, or open and valued at the last mark)."""

    position: int
    side: str
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    opened_at: int
    """The entry decision (the close time of the candle it was taken on), ms."""
    filled_at: int
    closed_at: int
    """The exit's time; for an open position the last mark's time."""
    exit_reason: str
    """sl, exit, max_hold, manual (how the position ended), or open."""
    realized_pnl: Decimal
    fees: Decimal
    entry_fees: Decimal
    funding: Decimal
    funding_payments: int = 0
    stop_price: Decimal | None = None
    exit_decided_at: int | None = None
    """When the strategy asked for the exit (a market close), ms."""
    slippage: Decimal = ZERO
    """Paid against the reference prices: the decision candle's close for market orders, the trigger for
    stops (positive = a cost; already inside ``realized_pnl``)."""
    ret: float = 0.0
    """Net over the balance before the trade: the compounding factor is 1 + ret."""
    sample: str = "out_of_sample"

    @property
    def open(self) -> bool:
        return self.exit_reason == "open"

    @property
    def net(self) -> Decimal:
        return self.realized_pnl - self.fees - self.funding

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1


class JournalFacts(msgspec.Struct, kw_only=True):
    """What the evaluation reads from one journal."""

    instance: str
    initial_balance: Decimal
    trades: list[TradeRow]
    open: PositionRecord | None
    funding_times: dict[int, list[tuple[int, Decimal]]]
    """Position -> (funding time ms, paid) of each payment charged on it."""
    first_ts: int | None
    last_ts: int | None
    interval_ms: int
    warmup_candles: int
    training: tuple[int, int] | None
    """(first, last) open time of the training candles, ms."""
    open_filled_at: int | None = None
    candles_csv: str | None = None
    """The candle file a replay traded on (journal meta ``candles_csv``), for the marks."""


def read_journal(journal: Journal) -> JournalFacts:
    """The trades, the open position and the strategy's declarations of one journal (read only)."""
    meta = journal.meta()
    entries: dict[int, int] = {}
    fills: dict[int, int] = {}
    entry_fees: dict[int, Decimal] = {}
    exit_asked: dict[int, int] = {}
    trades: list[TradeRow] = []
    funding: dict[int, list[tuple[int, Decimal]]] = {}
    for pos, t, paid in journal.funding_payments():
        funding.setdefault(pos, []).append((t, paid))
    for pos, ts, src, trigger, dst, raw in journal.conn.execute(
            "SELECT position, ts, src, trigger, dst, record FROM transitions ORDER BY seq"):
        if trigger == "enter" or trigger == "adopt":
            entries[pos] = ts
        elif trigger in ("exit_signal", "manual_close"):
            exit_asked.setdefault(pos, ts)
        if dst in EXITED and src not in EXITED:
            r = _record.decode(raw)
            qty = r.filled_qty
            entry = r.avg_entry
            sign = 1 if r.side == "long" else -1
            exit_price = entry + sign * r.realized_pnl / qty if qty else entry
            trades.append(TradeRow(
                position=r.seq, side=r.side or "", qty=qty, entry_price=entry, exit_price=exit_price,
                opened_at=entries.get(pos, ts), filled_at=fills.get(pos, ts), closed_at=ts,
                exit_reason=exit_kind(dst, r), realized_pnl=r.realized_pnl, fees=r.fees,
                entry_fees=entry_fees.get(pos, r.fees), funding=sum((p for _, p in funding.get(pos, [])), ZERO),
                funding_payments=len(funding.get(pos, [])),
                stop_price=r.stop_price, exit_decided_at=exit_asked.get(pos)))
        elif trigger in ("entry_filled", "entry_completed", "adopt") and pos not in fills and dst not in EXITED:
            fills[pos] = ts
        if dst in ("protected", "entering") and src in ("entering", "flat"):
            entry_fees[pos] = _record.decode(raw).fees
    folded = journal.fold()
    is_open = folded is not None and folded.state not in ("flat", *EXITED) and folded.open_qty > 0
    if is_open:
        assert folded is not None
        folded = msgspec.structs.replace(folded, opened_at=entries.get(folded.seq, folded.opened_at))
        fills.setdefault(folded.seq, folded.opened_at)
    first, last = journal.conn.execute("SELECT MIN(ts), MAX(ts) FROM transitions").fetchone()
    training = None
    if meta.get("training_start_ms") and meta.get("training_end_ms"):
        training = (int(meta["training_start_ms"]), int(meta["training_end_ms"]))
    elif meta.get("model.training_start_ms") and meta.get("model.training_end_ms"):
        training = (int(meta["model.training_start_ms"]), int(meta["model.training_end_ms"]))
    facts = JournalFacts(
        instance=meta.get("instance", journal.path.stem), initial_balance=Decimal(meta.get("initial_balance", "0")),
        trades=trades, open=folded if is_open else None, funding_times=funding, first_ts=first, last_ts=last,
        interval_ms=int(meta.get("interval_ms", 300_000)), warmup_candles=int(meta.get("warmup_candles", 0)),
        training=training, open_filled_at=fills.get(folded.seq) if is_open and folded is not None else None,
        candles_csv=meta.get("candles_csv") or None)
    return facts


# --- the pure part: facts (+ candles) -> figures --------------------------------------------------------


def _money(x: Decimal) -> str:
    return str(x.quantize(CENT))


def _sample_of(opened_at: int, training: tuple[int, int] | None, interval_ms: int) -> str:
    if training is None:
        return "out_of_sample"
    decided_on = opened_at - interval_ms  # the open time of the candle the decision was taken on
    return "in_sample" if training[0] <= decided_on <= training[1] else "out_of_sample"


def _close_at(closes: dict[int, float], ts: int | None) -> float | None:
    return closes.get(ts) if ts is not None else None


def _slippage(t: TradeRow, closes: dict[int, float]) -> Decimal:
    """What the fills paid beyond their reference prices (positive = a cost)."""
    out = ZERO
    ref = _close_at(closes, t.opened_at)
    if ref is not None:
        out += t.sign * (t.entry_price - Decimal(repr(ref))) * t.qty
    if t.exit_reason == "sl" and t.stop_price is not None:
        out += t.sign * (t.stop_price - t.exit_price) * t.qty
    elif not t.open:
        ref = _close_at(closes, t.exit_decided_at)
        if ref is not None:
            out += t.sign * (Decimal(repr(ref)) - t.exit_price) * t.qty
    return out


def open_trade(facts: JournalFacts, closes: dict[int, float], last_mark_t: int | None) -> TradeRow | None:
    """The position still open at the end as a trade valued at the last mark (at its entry price without one),
    its fees and funding so far counted; None when the journal ended flat."""
    if facts.open is None:
        return None
    r = facts.open
    mark = closes.get(last_mark_t) if last_mark_t is not None else None
    price = Decimal(repr(mark)) if mark is not None else r.avg_entry
    sign = 1 if r.side == "long" else -1
    unreal = sign * (price - r.avg_entry) * r.open_qty
    funding = sum((p for _, p in facts.funding_times.get(r.seq, [])), ZERO)
    filled = facts.open_filled_at or r.opened_at
    return TradeRow(
        position=r.seq, side=r.side or "", qty=r.open_qty, entry_price=r.avg_entry, exit_price=price,
        opened_at=r.opened_at, filled_at=filled, closed_at=last_mark_t or r.opened_at, exit_reason="open",
        realized_pnl=r.realized_pnl + unreal, fees=r.fees, entry_fees=r.fees, funding=funding,
        funding_payments=len(facts.funding_times.get(r.seq, [])),
        stop_price=r.stop_price)


def evaluate(facts: JournalFacts, candles: np.ndarray | None = None) -> dict[str, Any]:
    """Every figure of one instance, as JSON-able data (money as strings rounded to the cent).

    ``candles``: the (n, 6) rows it traded on (open time ms, o, h, l, c, v); None marks equity only at
    entries and trade closes."""
    step = facts.interval_ms
    closes: dict[int, float] = {}
    if candles is not None and len(candles):
        closes = {int(t) + step: float(c) for t, c in zip(candles[:, 0].tolist(), candles[:, 4].tolist(), strict=True)}
    trades = [msgspec.structs.replace(t) for t in facts.trades]
    last_mark_t = max(closes) if closes else facts.last_ts
    held = open_trade(facts, closes, last_mark_t)
    if held is not None:
        trades.append(held)
    balance = facts.initial_balance
    for t in trades:
        t.slippage = _slippage(t, closes)
        t.sample = _sample_of(t.opened_at, facts.training, step)
        t.ret = float(t.net / balance) if balance > 0 else 0.0
        balance += t.net
    final = balance
    times, equity = _equity(facts, trades, closes)
    start = min(closes) - step if closes else (facts.first_ts or 0)
    end = max(closes) if closes else (facts.last_ts or 0)
    warmup_end = start + facts.warmup_candles * step
    parts = _parts(trades, times, equity, facts.training, step, start, end, warmup_end)
    peak_dd = _max_drawdown(equity)
    return {
        "instance": facts.instance,
        "initial_balance": _money(facts.initial_balance),
        "initial_balance_valid": facts.initial_balance > 0,
        "final_equity": _money(final),
        "marks": "candle closes" if closes else "entries and trade closes",
        "period": {"start_ms": start, "end_ms": end, "warmup_end_ms": warmup_end},
        "training": None if facts.training is None else {"start_ms": facts.training[0], "end_ms": facts.training[1]},
        "parts": parts,
        "whole": _part_figures("whole period", "whole", trades, times, equity, [(start, end)], warmup_end,
                               peak_dd),
        "open_position": None if facts.open is None else _trade_row(trades[-1]),
        "equity_curve": {"t": times, "equity": equity, "drawdown_pct": _drawdown_series(equity)},
        "trades_table": [_trade_row(t) for t in trades],
    }


def _equity(facts: JournalFacts, trades: list[TradeRow], closes: dict[int, float]) -> tuple[list[int], list[float]]:
    """Equity over time: at every candle close when the candles are known (the held position valued at that
    close, less its entry fees and the funding paid so far), else at each entry and close."""
    initial = float(facts.initial_balance)
    if not trades and not closes:
        return ([], []) if facts.first_ts is None else ([facts.first_ts], [initial])
    closed_t = [t.closed_at for t in trades if not t.open]
    closed_cum = list(accumulate(float(t.net) for t in trades if not t.open))
    if not closes:
        times = [facts.first_ts if facts.first_ts is not None else trades[0].filled_at]
        values = [initial]
        for t, cum in zip((t for t in trades if not t.open), closed_cum, strict=True):
            times += [t.filled_at, t.closed_at]
            values += [values[-1], initial + cum]
        if trades and trades[-1].open:
            times.append(trades[-1].closed_at)
            values.append(values[-1] + float(trades[-1].net))
        return times, values
    times = sorted(closes)
    t_arr = np.array(times, dtype=np.int64)
    close = np.array([closes[c] for c in times])
    k = np.searchsorted(np.array(closed_t, dtype=np.int64), t_arr, side="right")
    values = initial + np.concatenate([[0.0], np.array(closed_cum)])[k]
    for t in trades:  # one position at a time: each held span valued at its closes
        i0 = int(np.searchsorted(t_arr, t.filled_at, side="left"))
        i1 = len(times) if t.open else int(np.searchsorted(t_arr, t.closed_at, side="left"))
        if i1 <= i0:
            continue
        values[i0:i1] += t.sign * float(t.qty) * (close[i0:i1] - float(t.entry_price)) - float(t.entry_fees)
        for ft, paid in facts.funding_times.get(t.position, []):
            j = max(i0, int(np.searchsorted(t_arr, ft, side="left")))
            values[j:i1] -= float(paid)
    return times, values.tolist()


def _drawdown_series(equity: list[float]) -> list[float]:
    if not equity:
        return []
    v = np.array(equity)
    peak = np.maximum.accumulate(v)
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak > 0, (peak - v) / safe * 100, 0.0).tolist()


def _max_drawdown(equity: list[float]) -> float:
    return max(_drawdown_series(equity), default=0.0)


def _parts(trades: list[TradeRow], times: list[int], equity: list[float], training: tuple[int, int] | None,
           step: int, start: int, end: int, warmup_end: int) -> list[dict[str, Any]]:
    """Out of sample first, then in sample; spans in decision time (candle close times)."""
    if training is None:
        return [_part("out of sample (the strategy declares no training window)", "out_of_sample", trades, times,
                      equity, [(start, end)], warmup_end)]
    lo, hi = training[0] + step, training[1] + step
    oos = [(s, e) for s, e in ((start, min(end, lo - 1)), (max(start, hi + 1), end)) if e > s]
    ins = [(max(start, lo), min(end, hi))] if min(end, hi) > max(start, lo) else []
    out = [_part("out of sample", "out_of_sample", trades, times, equity, oos, warmup_end)]
    if ins:
        out.append(_part("IN SAMPLE (the models were trained on these candles: not evidence)", "in_sample", trades,
                         times, equity, ins, warmup_end))
    return out


def _part(label: str, kind: str, trades: list[TradeRow], times: list[int], equity: list[float],
          spans: list[tuple[int, int]], warmup_end: int) -> dict[str, Any]:
    sel = [t for t in trades if t.sample == kind]
    dd = 0.0
    for s, e in spans:
        i, j = bisect_right(times, s - 1), bisect_right(times, e)
        dd = max(dd, _max_drawdown(equity[i:j]))
    return _part_figures(label, kind, sel, times, equity, spans, warmup_end, dd)


def _part_figures(label: str, kind: str, sel: list[TradeRow], times: list[int], equity: list[float],
                  spans: list[tuple[int, int]], warmup_end: int, max_dd: float) -> dict[str, Any]:
    closed = [t for t in sel if not t.open]
    wins = [t for t in closed if t.net > 0]
    losses = [t for t in closed if t.net <= 0]
    factor = 1.0
    for t in sel:
        factor *= 1.0 + t.ret
    held = [t.closed_at - t.filled_at for t in closed]
    return {
        "label": label, "kind": kind, "spans": [list(s) for s in spans],
        "trades": len(closed), "open_positions": len(sel) - len(closed), "wins": len(wins),
        "win_rate": len(wins) / len(closed) if closed else 0.0,
        "compound_return_pct": (factor - 1.0) * 100, "max_drawdown_pct": max_dd,
        "net": _money(sum((t.net for t in sel), ZERO)),
        "avg_win_pct": sum(t.ret for t in wins) / len(wins) * 100 if wins else 0.0,
        "avg_loss_pct": sum(t.ret for t in losses) / len(losses) * 100 if losses else 0.0,
        "avg_hold_ms": sum(held) // len(held) if held else 0,
        "fees": _money(sum((t.fees for t in sel), ZERO)),
        "funding": _money(sum((t.funding for t in sel), ZERO)),
        "funding_payments": sum(t.funding_payments for t in sel),
        "slippage": _money(sum((t.slippage for t in sel), ZERO)),
        "exits": dict(sorted(Counter(t.exit_reason for t in closed).items())),
        "windows": _windows(closed, spans, warmup_end),
    }


def _windows(closed: list[TradeRow], spans: list[tuple[int, int]], warmup_end: int) -> dict[str, Any]:
    """Non-overlapping 5-day windows inside the spans, after the warm-up; a trade counts in the window it
    closes in; each window compounds its trades' returns."""
    rets: list[float] = []
    longest = 0
    for s, e in spans:
        w = max(s, warmup_end)
        longest = max(longest, e - w)
        while w + WINDOW_MS <= e:
            factor = 1.0
            for t in closed:
                if w <= t.closed_at < w + WINDOW_MS:
                    factor *= 1.0 + t.ret
            rets.append(factor - 1.0)
            w += WINDOW_MS
    return {"count": len(rets), "mean_return_pct": sum(rets) / len(rets) * 100 if rets else None,
            "returns_pct": [r * 100 for r in rets], "longest_span_days": max(0, longest) / 86_400_000}


def _trade_row(t: TradeRow) -> dict[str, Any]:
    return {"position": t.position, "side": t.side, "qty": str(t.qty), "opened_at": t.opened_at,
            "filled_at": t.filled_at, "closed_at": t.closed_at, "duration_ms": t.closed_at - t.filled_at,
            "entry_price": str(t.entry_price), "exit_price": str(t.exit_price.quantize(Decimal("0.0001"))),
            "stop_price": None if t.stop_price is None else str(t.stop_price), "exit": t.exit_reason,
            "sample": t.sample, "realized_pnl": _money(t.realized_pnl), "fees": _money(t.fees),
            "funding": _money(t.funding), "slippage": _money(t.slippage), "net": _money(t.net), "ret": t.ret}


# --- text -----------------------------------------------------------------------------------------------


def _days(ms: int) -> str:
    return f"{ms / 86_400_000:.1f} days"


def format_part(p: dict[str, Any], initial_valid: bool = True, marked: bool = True) -> list[str]:
    exits = ", ".join(f"{k} {v}" for k, v in p["exits"].items()) or "none"
    ret = f"compounded return {p['compound_return_pct']:+.2f}%" if initial_valid else "return n/a"
    valued = "valued at the last mark" if marked else "valued at its entry price: no candles to mark it"
    opened = f" (+{p['open_positions']} open, {valued})" if p["open_positions"] else ""
    dd = "marked to market" if marked else "at entries and trade closes only"
    w = p["windows"]
    if w["count"]:
        windows = (f"mean return per 5-day window {w['mean_return_pct']:+.2f}% over {w['count']} non-overlapping "
                   f"(independent) window{'s' if w['count'] != 1 else ''}, after the warm-up, each trade in the "
                   "window it closes in")
    else:
        span = _days(int(w["longest_span_days"] * 86_400_000))
        windows = f"5-day windows: none (the period after the warm-up is {span}, shorter than one window)"
    return [f"  {p['label']}: {p['trades']} trades{opened}, net {Decimal(p['net']):+.2f} USDT, {ret}, "
            f"max drawdown {p['max_drawdown_pct']:.2f}% ({dd})",
            f"    win rate {p['win_rate']:.1%}, average win {p['avg_win_pct']:+.2f}%, average loss "
            f"{p['avg_loss_pct']:+.2f}% of the balance, average hold {p['avg_hold_ms'] / 60_000:.0f} min; "
            f"exits: {exits}",
            f"    fees {Decimal(p['fees']):.2f} USDT (inside net)",
            f"    funding {Decimal(p['funding']):+.2f} USDT over {p['funding_payments']} payments (positive = paid; "
            + ("inside net)" if p["funding_payments"] else "none booked: this account charged no funding)"),
            f"    slippage {Decimal(p['slippage']):+.2f} USDT (fills against the decision candle's close, stops "
            "against their trigger; inside net)",
            f"    {windows}"]


def format_evaluation(ev: dict[str, Any]) -> str:
    """Out of sample first; in sample after, labelled; the whole period last."""
    lines = [f"evaluation of {ev['instance']} (equity marked at {ev['marks']}; fees as charged on notional, "
             "stops filled with the account's stop slippage, funding as booked):"]
    if not ev["initial_balance_valid"]:
        lines.append(f"  the journal's initial balance ({ev['initial_balance']}) is not positive: returns are n/a")
    if ev["training"] is not None:
        from datetime import UTC, datetime

        fmt = [datetime.fromtimestamp(ev["training"][k] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
               for k in ("start_ms", "end_ms")]
        lines.append(f"  training window (declared by the strategy): candles {fmt[0]} .. {fmt[1]} UTC")
    marked = ev["marks"] == "candle closes"
    for p in ev["parts"]:
        lines += format_part(p, ev["initial_balance_valid"], marked)
    if ev["training"] is not None:
        lines += format_part(ev["whole"], ev["initial_balance_valid"], marked)[:1]
    o = ev["open_position"]
    if o is not None:
        at = "at the last mark" if marked else "at its entry price (no candles to mark it; fees counted)"
        lines.append(f"  open position {o['position']}: {o['side']} {o['qty']} @ {Decimal(o['entry_price']):.2f}, "
                     f"valued {at} {Decimal(o['exit_price']):.2f}: {Decimal(o['net']):+.2f} USDT")
    return "\n".join(lines)
