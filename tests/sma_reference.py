"""A plain loop over the sma_cross rules, written without any gatebot machinery.

It is the independent reference the engine's replay is checked against: same signals, same sizing,
same exchange stop on the candle path, same fees, in about fifty lines.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

TICK = Decimal("0.1")
STEP = Decimal("0.0001")
FEE = Decimal("0.0005")


def _d(x: float) -> Decimal:
    return Decimal(repr(x))


def plain_sma_trades(rows: np.ndarray, *, fast: int, slow: int, fraction: float, leverage: int,
                     leveraged_sl_pct: float, balance: Decimal) -> list[tuple]:
    """(side, qty, entry_price, exit_reason, realized_pnl, fees) for every closed trade."""
    sl = _d(leveraged_sl_pct) / leverage
    closes: list[float] = []
    prev_diff = None
    pos = None  # dict(side, qty, entry, stop, fees)
    trades = []

    def close(price: Decimal, reason: str) -> None:
        nonlocal pos, balance
        assert pos is not None
        fee = pos["qty"] * price * FEE
        pnl = (price - pos["entry"]) * pos["qty"] if pos["side"] == "long" else (pos["entry"] - price) * pos["qty"]
        fees = pos["fees"] + fee
        balance += pnl - fees
        trades.append((pos["side"], pos["qty"], pos["entry"], reason, pnl, fees))
        pos = None

    def enter(side: str, price: Decimal) -> None:
        nonlocal pos
        qty = (balance * _d(fraction) * leverage / price / STEP).to_integral_value(ROUND_FLOOR) * STEP
        if qty < STEP or qty * price < 2:
            return
        if side == "long":
            stop = (price * (1 - sl) / TICK).to_integral_value(ROUND_CEILING) * TICK
        else:
            stop = (price * (1 + sl) / TICK).to_integral_value(ROUND_FLOOR) * TICK
        pos = {"side": side, "qty": qty, "entry": price, "stop": stop, "fees": qty * price * FEE}

    for _t, o, h, lo, c, _v in rows.tolist():
        if pos is not None:  # the exchange stop on the candle path; a gap through it fills at the open
            s = pos["stop"]
            if pos["side"] == "long" and lo <= s:
                close(min(_d(o), s), "sl")
            elif pos["side"] == "short" and h >= s:
                close(max(_d(o), s), "sl")
        closes.append(c)
        cross = 0
        if len(closes) >= slow:
            diff = sum(closes[-fast:]) / fast - sum(closes[-slow:]) / slow
            if prev_diff is not None:
                cross = 1 if prev_diff <= 0 < diff else -1 if prev_diff >= 0 > diff else 0
            prev_diff = diff
        if not cross or len(closes) < slow + 1:
            continue
        if pos is not None and (pos["side"] == "long") == (cross < 0):
            close(_d(c), "exit")
        if pos is None:
            enter("long" if cross > 0 else "short", _d(c))
    return trades
