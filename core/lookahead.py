"""Look-ahead, checked exactly: does any decision or feature at a candle change when the candles after it do?

For a candle series and a way to build a fresh strategy, :func:`check` replaces every candle after a cut
point with seeded noise (:func:`perturbed`) at many cut points and compares, candle by candle up to the
cut, what the strategy decides (for a flat, a fresh long and an old short position) and every feature it
exposes (:class:`~gatebot.core.strategy.ExposesFeatures`) with what it says on the real series. Both
paths a strategy runs are checked: the replay's batch path (:meth:`Prepares.prepare` on the whole series,
then the candles) and the live rolling path (the candles one by one, a fresh instance each time, so state
shared between instances is caught too). The rolling path must also say what the batch path says on the
real series (the Prepares contract). Unlike a heuristic (freqtrade's lookahead analysis), nothing here is
a guess: a difference is a candle whose outputs depend on the future.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, ExposesFeatures, PositionView, Prepares, Strategy

VIEWS: tuple[PositionView, ...] = (
    PositionView(state="flat"),
    PositionView(state="protected", side="long", qty=1.0, avg_entry=0.0, bars_held=3),
    PositionView(state="protected", side="short", qty=1.0, avg_entry=0.0, bars_held=95),
)
"""The positions asked about at every candle (avg_entry is set to the series' first close)."""

PATH_TOLERANCE = 1e-9
"""Relative tolerance between the batch and the rolling path's features (the same function computed over a
window or the whole series may differ in the last bits); a path compared with itself must be exact."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One candle whose output changed: ``what`` names the decision or feature, ``cut`` the cut point."""

    path: str
    """'batch', 'rolling', or 'batch vs rolling' (the two paths disagree on the real series)."""
    index: int
    time_ms: int
    cut: int
    what: str
    before: Any
    after: Any


Trace = list[tuple[tuple[Decision, ...], dict[str, float]]]


def perturbed(rows: np.ndarray, cut: int, seed: int) -> np.ndarray:
    """``rows`` (n, 6: open time ms, o, h, l, c, v) with every candle after index ``cut`` replaced by a seeded
    random walk from near the cut's close (consistent OHLC, the same open times): a future unrelated to the real one."""
    out = rows.copy()
    n = len(rows) - cut - 1
    if n <= 0:
        return out
    rng = np.random.default_rng([seed, cut])
    start = rows[cut, 4] * math.exp(rng.normal(0.0, 0.01))  # a gap: even the next open is not the real one
    closes = start * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    opens = np.concatenate(([start], closes[:-1]))
    wick = np.abs(rng.normal(0.0, 0.005, (2, n)))
    out[cut + 1:, 1] = opens
    out[cut + 1:, 2] = np.maximum(opens, closes) * (1 + wick[0])
    out[cut + 1:, 3] = np.minimum(opens, closes) * (1 - wick[1])
    out[cut + 1:, 4] = closes
    out[cut + 1:, 5] = rng.lognormal(3.0, 1.0, n)
    return out


def cut_points(n: int, cuts: int) -> list[int]:
    """``cuts`` cut indices spread evenly over the series (each leaves at least one candle to replace)."""
    if n < 2:
        return []
    return sorted({int(x) for x in np.linspace(0, n - 2, min(cuts, n - 1))})


def candles(rows: np.ndarray, symbol: str, interval: str) -> Iterator[CandleClosed]:
    for t, o, h, lo, c, v in rows.tolist():
        yield CandleClosed(symbol=symbol, interval=interval, open_time=int(t), open=o, high=h, low=lo, close=c,
                           volume=v, ts=int(t))


def trace(make: Callable[[], Strategy], rows: np.ndarray, *, batch: bool, symbol: str = "BTC-USDT",
          interval: str = "5m") -> Trace:
    """Per candle: the decisions for :data:`VIEWS` and the exposed features, from a fresh strategy on one path."""
    strategy = make()
    if batch and isinstance(strategy, Prepares):
        strategy.prepare(rows)
    views = [msgspec.structs.replace(v, avg_entry=float(rows[0, 4])) if v.side else v for v in VIEWS]
    out: Trace = []
    for candle in candles(rows, symbol, interval):
        strategy.on_candle(candle)
        features = dict(strategy.features()) if isinstance(strategy, ExposesFeatures) else {}
        out.append((tuple(strategy.decide(v) for v in views), features))
    return out


def _differences(a: Trace, b: Trace, upto: int, tolerance: float) -> Iterator[tuple[int, str, Any, Any]]:
    """(index, what, a's, b's) of each output that differs up to index ``upto``, in candle order."""
    for i in range(min(upto + 1, len(a), len(b))):
        (da, fa), (db, fb) = a[i], b[i]
        for name in sorted(fa.keys() | fb.keys()):  # a feature first: it is the cause of a changed decision
            x, y = fa.get(name), fb.get(name)
            if not _same(x, y, tolerance):
                yield i, f"feature {name}", x, y
        for view, x, y in zip(VIEWS, da, db, strict=True):
            if x != y:
                side = f" {view.side}" if view.side else ""
                yield i, f"decision ({view.state}{side})", x, y


def _same(x: float | None, y: float | None, tolerance: float) -> bool:
    if x is None or y is None:
        return x is y
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y or abs(x - y) <= tolerance * max(abs(x), abs(y))


def check(make: Callable[[], Strategy], rows: np.ndarray, *, cuts: int = 24, seed: int = 0,
          symbol: str = "BTC-USDT", interval: str = "5m") -> list[Finding]:
    """Every look-ahead found, the earliest candle first (at most one finding per path and cut: the first)."""
    kw = {"symbol": symbol, "interval": interval}
    ref = {path: trace(make, rows, batch=path == "batch", **kw) for path in ("batch", "rolling")}
    found = [Finding(path="batch vs rolling", index=i, time_ms=int(rows[i, 0]), cut=len(rows) - 1, what=what,
                     before=x, after=y)
             for i, what, x, y in _first(_differences(ref["batch"], ref["rolling"], len(rows), PATH_TOLERANCE))]
    for cut in cut_points(len(rows), cuts):
        noisy = perturbed(rows, cut, seed)
        for path, reference in ref.items():
            got = trace(make, noisy, batch=path == "batch", **kw)
            found += [Finding(path=path, index=i, time_ms=int(rows[i, 0]), cut=cut, what=what, before=x, after=y)
                      for i, what, x, y in _first(_differences(reference, got, cut, 0.0))]
    return sorted(found, key=lambda f: (f.index, f.cut, f.path))


def _first(items: Iterator[Any]) -> list[Any]:
    return [x for x, _ in zip(items, range(1), strict=False)]
