"""The simulated market: candles from a CSV or a seeded generator, played along their price path.

Each live candle is played as four ticks: open -> nearer extreme -> farther extreme -> close (the
path the matching core assumes). Each tick is one kline push (the candle so far) and one mark-price
push, and one sub-candle for the matching core, so stops trigger on the segment that crosses them and
fill at the stop price (or at the open when the candle gaps through). The mark price is the path price.

Candle open times are aligned to the interval; the history ends just before the first live candle,
whose open time is "now" floored to the interval. CSV candles are re-timed onto that clock (the CSV
supplies prices, the simulator supplies times), so every source gives the same kind of timeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import NamedTuple

from core.events import CandleClosed
from core.intervals import interval_ms
from core.market import array_candles, generate, load_csv

Row = tuple[int, float, float, float, float, float]
"""(open time ms, open, high, low, close, volume)."""


class Tick(NamedTuple):
    """One point of a candle's path, as pushed: the candle so far and the price now."""

    symbol: str
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    price: float
    segment: CandleClosed
    """The path segment that led to this tick, as a candle for ``MatchingCore.on_candle``."""


def path(c: Row) -> list[float]:
    """open -> nearer extreme -> farther extreme -> close (ties go low first, as in the matching core)."""
    _, o, h, lo, cl, _ = c
    return [o, lo, h, cl] if abs(o - lo) <= abs(h - o) else [o, h, lo, cl]


class SymbolMarket:
    """One symbol's candles: the closed ones (history and played) and the one forming."""

    def __init__(self, symbol: str, interval: str, history: list[Row], live: Iterator[Row]) -> None:
        self.symbol = symbol
        self.interval = interval
        self.step = interval_ms(interval)
        self.closed: list[Row] = history
        self._live = live
        self.current: Row | None = next(live, None)
        self.stage = 0
        """Index of the path point last played in ``current`` (0 = its open)."""

    @property
    def price(self) -> float:
        if self.current is None:
            return self.closed[-1][4]
        return path(self.current)[self.stage]

    def forming(self) -> Row | None:
        """The forming candle as it stands (high/low/close/volume so far)."""
        if self.current is None:
            return None
        pts = path(self.current)[: self.stage + 1]
        t, o, _, _, _, v = self.current
        return (t, o, max(pts), min(pts), pts[-1], round(v * self.stage / 3, 4))

    def tick(self, prev: float) -> Tick:
        t, o, h, lo, c, v = self.forming()  # type: ignore[misc]
        p = c
        seg_open = o if self.stage == 0 else prev  # the opening tick: a gap fills at the open
        segment = CandleClosed(symbol=self.symbol, interval=self.interval, open_time=t, open=seg_open,
                               high=max(seg_open, p), low=min(seg_open, p), close=p, volume=0.0, ts=t)
        return Tick(self.symbol, t, o, h, lo, c, v, p, segment)

    def first_tick(self) -> Tick | None:
        return None if self.current is None else self.tick(self.price)

    def advance(self) -> Tick | None:
        """Play the next path point; after a close, the next candle's open. None when the market has ended."""
        if self.current is None:
            return None
        prev = self.price
        if self.stage < 3:
            self.stage += 1
            return self.tick(prev)
        self.closed.append(self.current)
        self.current = next(self._live, None)
        self.stage = 0
        return None if self.current is None else self.tick(prev)

    @property
    def market_time(self) -> int:
        return self.current[0] if self.current is not None else self.closed[-1][0] + self.step

    def klines(self, start: int | None, end: int | None, limit: int) -> list[Row]:
        """Candles with ``start <= open time <= end`` incl. the forming one, ascending, at most ``limit``
        (the newest ones unless only ``start`` is given)."""
        rows = self.closed
        forming = self.forming()
        lo_i = 0 if start is None else _bisect(rows, start)
        hi_i = len(rows) if end is None else _bisect(rows, end + 1)
        chosen = rows[lo_i:hi_i]
        if forming is not None and (start is None or forming[0] >= start) and (end is None or forming[0] <= end):
            chosen = [*chosen, forming]
        return chosen[:limit] if start is not None and end is None else chosen[-limit:]


def _bisect(rows: list[Row], t: int) -> int:
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid][0] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def build_market(symbol: str, *, interval: str, first_live_ms: int, history_bars: int, bars: int,
                 source: str, csv: str | None, seed: int, start_price: float, volatility: float) -> SymbolMarket:
    """A symbol's market whose first live candle opens at ``first_live_ms``."""
    step = interval_ms(interval)
    start = first_live_ms - history_bars * step
    if source == "csv":
        if not csv:
            raise ValueError("source = 'csv' needs a csv path")
        candles: Iterator[CandleClosed] = array_candles(load_csv(csv), symbol, interval)
    else:
        candles = generate(seed=seed, symbol=symbol, interval=interval, bars=history_bars + bars, start_ms=start,
                           start_price=start_price, volatility=volatility)
    rows = ((start + i * step, c.open, c.high, c.low, c.close, c.volume)
            for i, c in enumerate(islice(candles, history_bars + bars)))
    history = list(islice(rows, history_bars))
    return SymbolMarket(symbol, interval, history, rows)
