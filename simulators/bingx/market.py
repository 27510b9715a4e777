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

import itertools
import math
from collections.abc import Callable, Iterator
from itertools import islice
from typing import NamedTuple

from gatebot.core.events import CandleClosed
from gatebot.core.intervals import interval_ms
from gatebot.core.market import array_candles, generate, load_csv

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

    @property
    def point_time(self) -> int:
        """The market time of the path point last played (points are a quarter candle apart)."""
        return self.market_time + (self.stage * self.step // 4 if self.current is not None else 0)

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


    def path_points(self, row: Row) -> list[float]:
        """The path of ``row`` as played: all four points of a closed candle, those so far of the forming one."""
        if self.current is not None and row[0] == self.current[0]:
            return path(self.current)[: self.stage + 1]
        return path(row)

    def klines_in(self, interval: str, start: int | None, end: int | None, limit: int,
                  places: int = 8) -> list[Row]:
        """``klines`` in any interval: coarser ones aggregate the candles, finer ones cut each candle along its
        path (open -> nearer extreme -> farther extreme -> close, a third of the candle each), so every
        interval shows the same prices. Open times are aligned to the interval (UTC; weeks start on Monday)."""
        target = interval_ms(interval)
        if target == self.step:
            return self.klines(start, end, limit)
        first = (start if start is not None else
                 (end if end is not None else self.market_time) - (limit + 1) * target)
        base = self.klines(align(align(first, target), self.step) if first > 0 else None, end, 2**31)
        rows = resample(base, self.step, target, self.path_points, places)
        chosen = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end)]
        return chosen[:limit] if start is not None and end is None else chosen[-limit:]

    def changed_klines(self, interval: str, places: int = 8) -> list[Row]:
        """The candles of ``interval`` the last tick changed, as a kline push carries them: the forming one,
        and for an interval finer than the simulated one every part of the path segment just played."""
        target = interval_ms(interval)
        if target == self.step:
            forming = self.forming()
            return [forming] if forming is not None else self.closed[-1:]
        if target > self.step or self.current is None:
            return self.klines_in(interval, None, None, 1, places)
        segment_start_ms = max(self.stage - 1, 0) * self.step // 3
        start = self.current[0] + segment_start_ms // target * target
        return self.klines_in(interval, start, None, self.step // target + 1, places)


WEEK_OFFSET_MS = 4 * 86_400_000
"""1970-01-01 was a Thursday: weekly candles open on Mondays, four days later."""


def align(t: int, step_ms: int) -> int:
    offset = WEEK_OFFSET_MS if step_ms == 7 * 86_400_000 else 0
    return (t - offset) // step_ms * step_ms + offset


def resample(rows: list[Row], base_ms: int, target_ms: int, points_of: Callable[[Row], list[float]],
             places: int) -> list[Row]:
    """Candles of ``base_ms`` as candles of ``target_ms``: each cut into parts of the greatest common step
    along its path, then the parts grouped by aligned open time."""
    part_ms = math.gcd(base_ms, target_ms)
    parts = [p for r in rows for p in cut(r, points_of(r), base_ms // part_ms, part_ms, places)]
    if part_ms == target_ms:
        return parts
    out: list[Row] = []
    for p in parts:
        t = align(p[0], target_ms)
        if out and out[-1][0] == t:
            _, o, h, lo, _, v = out[-1]
            out[-1] = (t, o, max(h, p[2]), min(lo, p[3]), p[4], round(v + p[5], 4))
        else:
            out.append((t, *p[1:]))
    return out


def cut(row: Row, points: list[float], n: int, part_ms: int, places: int) -> list[Row]:
    """``row`` as ``n`` candles of ``part_ms`` along its path ``points`` (one point per third of the candle,
    linear between them); only the played part of a forming candle."""
    if n == 1:
        return [row]
    played = (len(points) - 1) / 3
    edges = [min(k / n, played) for k in range(n + 1) if k == 0 or (k - 1) / n < played]
    out = []
    for k, (f0, f1) in enumerate(itertools.pairwise(edges)):
        a, b = _at(points, f0), _at(points, f1)
        prices = [a, b, *(p for i, p in enumerate(points) if f0 < i / 3 < f1)]
        out.append((row[0] + k * part_ms, round(a, places), round(max(prices), places),
                    round(min(prices), places), round(b, places), 0.0))
    if not out:  # the forming candle at its open
        out = [(row[0], points[0], points[0], points[0], points[0], 0.0)]
    volume = round(row[5] / len(out), 4)
    return [(*r[:5], volume) for r in out]


def _at(points: list[float], f: float) -> float:
    """The path price at fraction ``f`` of the candle."""
    if len(points) == 1:
        return points[0]
    seg = min(int(f * 3), len(points) - 2)
    return points[seg] + (points[seg + 1] - points[seg]) * (f * 3 - seg)


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
