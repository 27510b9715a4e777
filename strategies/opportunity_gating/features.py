"""Causal OHLCV features for the opportunity-gating models, computed with numpy.

One code path: :func:`compute` turns an (n, 5) ``open, high, low, close, volume`` array into an
(n, len(FEATURES)) float64 array. Training and whole-series replay call it on the full series; the
live strategy calls it on a rolling window of the last :data:`WINDOW` candles (:class:`FeatureWindow`)
asking for the last row only (``last=1``: the same operations on the same candles, minus the rows
nobody asked for). Every feature has a finite lookback of at most ``WINDOW`` candles (EMAs are
finite-impulse: truncated, renormalised weights), and every rolling statistic is computed per row
from a strided view of exactly its own candles, so the last row of a window equals the whole-series
row for the same candle (tests check both this and causality).

Row ``t`` depends only on candles ``<= t``. Rows whose lookback is incomplete are NaN.
No raw price level is a feature: everything is a return, a ratio to price, or a bounded oscillator.
"""

from __future__ import annotations

import hashlib

import numpy as np

FEATURES: tuple[str, ...] = (
    "ret_1", "ret_3", "ret_12", "rsi_14", "macd", "macd_signal", "macd_hist", "bb_pctb", "bb_width",
    "atr_14", "vol_20", "vol_ratio_100", "dist_ma20", "dist_ma50", "volume_ratio_20", "vp_corr_20",
    "body", "upper_shadow", "lower_shadow", "range", "up_streak", "down_streak", "dist_high_20",
    "dist_low_20", "dist_resistance", "dist_support",
)
"""Entry-model inputs, in model column order."""

EXIT_FEATURES: tuple[str, ...] = (*FEATURES, "side", "bars_held", "unrealized_return")
"""Exit-model inputs: the entry features plus the position (side +1 long / -1 short, bars held / 96,
unrealised price return in the position's direction)."""

PIVOT_K = 3
"""A pivot high (low) is a candle whose high (low) is the extreme of the 2k+1 candles around it; it
is known only k candles later, so it is used from then on (past-only pivots)."""
PIVOT_LOOKBACK = 96
"""Only pivots confirmed within this many candles count; otherwise the extreme of that span is used."""
_EMA_SPAN_MULT = 4
"""FIR EMA: the weights of the span-s EMA truncated after 4*s candles (the tail is below 0.1%)."""
STREAK_CAP = 10

WINDOW = 160
"""Candles the live window keeps; the longest lookback (MACD signal: 104 + 36 - 1) fits with room."""


def schema_hash(names: tuple[str, ...] = EXIT_FEATURES) -> str:
    """Identifies the feature schema (names, order and the constants that define them)."""
    text = ",".join(names) + f"|k={PIVOT_K}|pl={PIVOT_LOOKBACK}|ema={_EMA_SPAN_MULT}|cap={STREAK_CAP}|w={WINDOW}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pad(values: np.ndarray, m: int) -> np.ndarray:
    """Right-align ``values`` (one per complete window) in a length-m array, NaN in front."""
    if len(values) == m:
        return values
    out = np.full(m, np.nan)
    if len(values):
        out[m - len(values):] = values
    return out


def _roll(x: np.ndarray, w: int, m: int) -> np.ndarray:
    """The (<= m, w) windows of width w ending at the last m rows of x (fewer when x is short)."""
    n = len(x)
    k = min(m, n - w + 1)
    if k <= 0:
        return np.empty((0, w))
    if k == 1:
        return x[n - w:].reshape(1, w)
    base = np.ascontiguousarray(x[n - w - k + 1:])
    # the layout sliding_window_view builds, without its per-call checks (a read-only view)
    view = np.ndarray((k, w), dtype=base.dtype, buffer=base, strides=(base.itemsize, base.itemsize))
    view.flags.writeable = False
    return view


def _mean(x: np.ndarray, w: int, m: int) -> np.ndarray:
    return _pad(_roll(x, w, m).mean(axis=1), m)


def _std(x: np.ndarray, w: int, m: int) -> np.ndarray:
    return _pad(_roll(x, w, m).std(axis=1), m)


def _max(x: np.ndarray, w: int, m: int) -> np.ndarray:
    return _pad(_roll(x, w, m).max(axis=1), m)


def _min(x: np.ndarray, w: int, m: int) -> np.ndarray:
    return _pad(_roll(x, w, m).min(axis=1), m)


_EMA_W: dict[int, np.ndarray] = {}


def _ema(x: np.ndarray, span: int, m: int) -> np.ndarray:
    """Finite-impulse EMA: the last 4*span values with EMA weights, renormalised (NaN-propagating)."""
    w = _EMA_W.get(span)
    if w is None:
        a = 2.0 / (span + 1)
        w = (1 - a) ** np.arange(_EMA_SPAN_MULT * span - 1, -1, -1, dtype=np.float64)
        w = _EMA_W[span] = w / w.sum()
    return _pad((_roll(x, len(w), m) * w).sum(axis=1), m)


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) > k:
        out[k:] = x[:-k]
    return out


def _streak(flag: np.ndarray) -> np.ndarray:
    """Consecutive True values ending at each row, capped (finite memory once the cap is reached)."""
    idx = np.arange(len(flag))
    last_false = np.maximum.accumulate(np.where(flag, -1, idx))
    streak = np.minimum(idx - last_false, STREAK_CAP).astype(np.float64)
    streak[: STREAK_CAP] = np.nan  # an early streak might have begun before the first candle
    return streak


def _pivot_level(x: np.ndarray, high: bool, m: int) -> np.ndarray:
    """For the last m rows t: the level of the latest pivot confirmed at or before t within
    PIVOT_LOOKBACK candles, else the extreme of the last PIVOT_LOOKBACK candles."""
    n = len(x)
    k = PIVOT_K
    span = min(n, m + PIVOT_LOOKBACK + 2 * k)  # every pivot that can count for the last m rows
    xs = x[n - span:]
    ext = _roll(xs, 2 * k + 1, span)
    ext = ext.max(axis=1) if high else ext.min(axis=1)
    confirmed = np.zeros(span, dtype=bool)
    confirmed[span - len(ext):] = xs[k: span - k] == ext  # the pivot centred on j is known at row j + k
    idx = np.arange(span)
    last = np.maximum.accumulate(np.where(confirmed, idx, -1))
    level = np.where(last >= 0, xs[np.maximum(last - k, 0)], np.nan)
    stale = (last < 0) | (idx - last > PIVOT_LOOKBACK)
    out = np.where(stale[span - m:], _max(x, PIVOT_LOOKBACK, m) if high
                   else _min(x, PIVOT_LOOKBACK, m), level[span - m:])
    return out


def compute(ohlcv: np.ndarray, last: int | None = None) -> np.ndarray:
    """Feature rows for the candles of ``ohlcv`` (columns open, high, low, close, volume): all of
    them, or only the ``last`` ones (the live window asks for 1). Each row is computed from the same
    candles by the same operations either way, so the values are equal."""
    ohlcv = np.asarray(ohlcv, dtype=np.float64)
    n = len(ohlcv)
    m = n if last is None else min(last, n)
    o, h, lo, c, v = (ohlcv[:, i] for i in range(5))
    lc = np.log(c)
    r1 = lc - _shift(lc, 1)
    t = slice(n - m, n)  # the rows asked for
    ct, ot, ht, lt = c[t], o[t], h[t], lo[t]
    # RSI(14) from the mean gain and loss of the last 14 closes (Cutler), centred on 0
    mg, ml = _mean(np.maximum(r1, 0.0), 14, m), _mean(np.maximum(-r1, 0.0), 14, m)
    tot = mg + ml
    rsi = np.where(tot > 0, mg / np.where(tot > 0, tot, 1.0), 0.5) - 0.5
    # MACD(12, 26, 9) on close, normalised by price; the signal needs 35 more MACD rows
    mm = min(n, m + 35)
    macd_ext = (_ema(c, 12, mm) - _ema(c, 26, mm)) / c[n - mm:]
    macd = macd_ext[mm - m:]
    signal = _ema(macd_ext, 9, m)
    # Bollinger(20, 2)
    m20, s20 = _mean(c, 20, m), _std(c, 20, m)
    band = 4.0 * s20
    pctb = np.where(band > 0, (ct - (m20 - 2.0 * s20)) / np.where(band > 0, band, 1.0), 0.5)
    prev_c = _shift(c, 1)
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev_c), np.abs(lo - prev_c)))
    vol20_ext = _std(r1, 20, min(n, m + 99))
    vol20 = vol20_ext[len(vol20_ext) - m:]
    vol_mean = _mean(vol20_ext, 100, m)
    vmean20 = _mean(v, 20, m)
    # volume-price correlation: returns against volume over 20 candles
    rv = _roll(r1, 20, m)
    vv = _roll(v, 20, m)
    rc = rv - rv.mean(axis=1, keepdims=True)
    vc = vv - vv.mean(axis=1, keepdims=True)
    den = np.sqrt((rc * rc).sum(axis=1) * (vc * vc).sum(axis=1))
    corr = _pad(np.where(den > 0, (rc * vc).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0), m)
    rng = ht - lt
    safe_rng = np.where(rng > 0, rng, 1.0)
    has_rng = rng > 0
    lct = lc[t]
    cols = [
        r1[t],
        lct - _shift(lc, 3)[t],
        lct - _shift(lc, 12)[t],
        rsi,
        macd,
        signal,
        macd - signal,
        pctb,
        band / m20,
        _mean(tr, 14, m) / ct,
        vol20,
        np.where(vol_mean > 0, vol20 / np.where(vol_mean > 0, vol_mean, 1.0), 1.0),
        ct / m20 - 1.0,
        ct / _mean(c, 50, m) - 1.0,
        np.where(vmean20 > 0, v[t] / np.where(vmean20 > 0, vmean20, 1.0), 1.0),
        corr,
        np.where(has_rng, (ct - ot) / safe_rng, 0.0),
        np.where(has_rng, (ht - np.maximum(ot, ct)) / safe_rng, 0.0),
        np.where(has_rng, (np.minimum(ot, ct) - lt) / safe_rng, 0.0),
        rng / ct,
        _streak(c > prev_c)[t],
        _streak(c < prev_c)[t],
        ct / _max(h, 20, m) - 1.0,
        ct / _min(lo, 20, m) - 1.0,
        ct / _pivot_level(h, True, m) - 1.0,
        ct / _pivot_level(lo, False, m) - 1.0,
    ]
    out = np.stack(cols, axis=1)
    # a row is valid only once its longest lookback is complete
    out[: max(0, WINDOW - 1 - (n - m))] = np.nan
    return out


def exit_row(entry_row: np.ndarray, side: int, bars_held: int, unrealized: float,
             max_hold: int = 96) -> np.ndarray:
    """The exit-model input: entry features plus the position."""
    return np.concatenate([entry_row, (float(side), bars_held / max_hold, unrealized)])


def exit_matrix(entry_rows: np.ndarray, side: int, bars_held: np.ndarray, unrealized: np.ndarray,
                max_hold: int = 96) -> np.ndarray:
    """Vectorised :func:`exit_row` for training (same columns, same order)."""
    n = len(entry_rows)
    return np.column_stack([entry_rows, np.full(n, float(side)), bars_held / max_hold, unrealized])


class FeatureWindow:
    """The live path: the last :data:`WINDOW` candles; :meth:`last` is ``compute(window)[-1]``."""

    __slots__ = ("_buf", "_n")

    def __init__(self) -> None:
        self._buf = np.empty((2 * WINDOW, 5), dtype=np.float64)
        self._n = 0

    def append(self, o: float, h: float, lo: float, c: float, v: float) -> None:
        if self._n == len(self._buf):
            self._buf[:WINDOW - 1] = self._buf[self._n - WINDOW + 1:]
            self._n = WINDOW - 1
        self._buf[self._n] = (o, h, lo, c, v)
        self._n += 1

    @property
    def ready(self) -> bool:
        return self._n >= WINDOW

    def last(self) -> np.ndarray:
        """The feature row of the newest candle (NaN until WINDOW candles were seen)."""
        return compute(self._buf[max(0, self._n - WINDOW): self._n], last=1)[0]
