"""Funding: what a perpetual-futures position pays (or receives) at every funding time.

An exchange settles funding per symbol at fixed times (BingX: every 8 h, at 00:00, 08:00 and 16:00 UTC; some
symbols every 4, 2 or 1 h), on the mark price: ``paid = qty * mark * rate`` for a long and the opposite for a
short (a positive rate makes longs pay shorts). The paper exchange and the BingX simulator take the rate from
their options: a constant, or a CSV of ``time,rate`` rows (BingX's funding-rate history, e.g. ccxt's
``fetch_funding_rate_history``, saved as ``fundingTime,fundingRate`` reads too). A CSV rate holds from its
time until the next row; before the first row the constant applies.
"""

from __future__ import annotations

import bisect
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import msgspec

from gatebot.core.events import ZERO, FundingPaid, Side

HOUR_MS = 3_600_000
PAID_PLACES = Decimal("0.00000001")
"""Payments are settled to 8 decimals, rounded against the account (a payment up, a receipt down)."""
_HEADERS = {("time", "rate"), ("fundingtime", "fundingrate")}


class FundingError(ValueError):
    """A funding CSV that cannot be used; the message names the file, the line and the problem."""


class FundingOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[exchanges.<name>.options.funding]`` of a paper account (and ``funding`` of the simulator's options)."""

    rate: Decimal = ZERO
    """Funding rate per funding time (0.0001 = 0.01 %, BingX's usual base rate); 0 = no funding."""
    csv: str | None = None
    """A ``time,rate`` CSV (time in epoch ms, UTC): the rate from each row's time on; relative to the config."""
    interval_h: Literal[1, 2, 4, 8] = 8
    """Hours between funding times, counted from 00:00 UTC."""

    def __post_init__(self) -> None:
        if not -Decimal("0.05") <= self.rate <= Decimal("0.05"):
            raise ValueError(f"funding rate must be within -0.05..0.05, got {self.rate}")


def load_rates(path: str | Path) -> tuple[list[int], list[Decimal]]:
    """``time,rate`` rows (epoch ms, strictly increasing) as two parallel lists; errors name file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FundingError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines or tuple(h.strip().lower() for h in lines[0].split(",")) not in _HEADERS:
        raise FundingError(f"{path}: line 1: expected header time,rate (or fundingTime,fundingRate)")
    times: list[int] = []
    rates: list[Decimal] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError(f"expected 2 columns, got {len(parts)}")
            t, r = int(parts[0]), Decimal(parts[1])
            if not r.is_finite() or abs(r) > Decimal("0.05"):
                raise ValueError(f"rate {parts[1]} is not within -0.05..0.05")
        except (ValueError, InvalidOperation) as exc:
            raise FundingError(f"{path}: line {n}: {exc if isinstance(exc, ValueError) else 'not a number'}: "
                               f"{line!r}") from None
        if times and t <= times[-1]:
            raise FundingError(f"{path}: line {n}: times are not strictly increasing")
        times.append(t)
        rates.append(r)
    if not times:
        raise FundingError(f"{path}: no rates")
    return times, rates


class FundingSchedule:
    """When funding is due and at what rate; pure (no clock: callers say which times have passed)."""

    def __init__(self, options: FundingOptions) -> None:
        self.rate = options.rate
        self.step_ms = options.interval_h * HOUR_MS
        self._times, self._rates = load_rates(options.csv) if options.csv else ([], [])

    @property
    def active(self) -> bool:
        return bool(self.rate or any(self._rates))

    def rate_at(self, t_ms: int) -> Decimal:
        i = bisect.bisect_right(self._times, t_ms)
        return self._rates[i - 1] if i else self.rate

    def times(self, after_ms: int, until_ms: int) -> list[int]:
        """Funding times ``t`` with ``after_ms < t <= until_ms``."""
        first = after_ms // self.step_ms * self.step_ms + self.step_ms
        return list(range(first, until_ms + 1, self.step_ms))

    def last_time(self, t_ms: int) -> int:
        """The latest funding time at or before ``t_ms``."""
        return t_ms // self.step_ms * self.step_ms


def payment(symbol: str, side: Side, qty: Decimal, mark: Decimal, rate: Decimal, funding_time: int) -> FundingPaid:
    """One position's payment: longs pay ``qty * mark * rate``, shorts receive it (the reverse for a negative
    rate), settled to 8 decimals against the account."""
    amount = qty * mark * rate * (1 if side == "long" else -1)
    paid = amount.quantize(PAID_PLACES, rounding=ROUND_CEILING)  # up: more paid, or less received
    return FundingPaid(ts=funding_time, symbol=symbol, funding_time=funding_time, paid=paid, rate=rate,
                       mark_price=mark, side=side, qty=qty)
