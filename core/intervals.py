"""Candle intervals as BingX names them, in milliseconds."""

from __future__ import annotations

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")


def interval_ms(interval: str) -> int:
    """``"5m"`` -> 300000. Raises ValueError naming the interval when it is not a BingX interval."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {', '.join(INTERVALS)}")
    return int(interval[:-1]) * _UNIT_MS[interval[-1]]
