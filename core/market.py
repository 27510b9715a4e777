"""Candle sources for replay and paper sessions: a candle CSV, or a seeded generated market.

Both yield :class:`CandleClosed` lazily in time order, so a million-bar replay never holds a million
candle objects. The generator is deterministic: the same seed, symbol and length give the same bars.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gatebot.core.events import CandleClosed
from gatebot.core.intervals import interval_ms

_CHUNK = 65_536
CSV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


class CandleFileError(Exception):
    """A candle file that cannot be used; the message names the file, the line and the problem."""


class CandleFile(msgspec.Struct, frozen=True, kw_only=True):
    """A candle file's rows (an (n, 6) float64 array, times in ms) and the repeated rows dropped from it."""

    path: str
    rows: Any
    duplicates: int = 0
    """Rows that repeated the row before them exactly (same time, same values): dropped, counted."""


class Spacing(msgspec.Struct, frozen=True, kw_only=True):
    """A candle file's spacing against an interval: the gaps it has (none refused) and their size."""

    interval: str
    candles: int
    gaps: int = 0
    missing: int = 0
    """Candles missing in all gaps together."""
    longest: int = 0
    """Missing candles in the longest gap."""
    longest_after_ms: int | None = None
    """The open time of the candle before the longest gap."""


def load_csv(path: str | Path) -> np.ndarray:
    """Read ``timestamp,open,high,low,close,volume`` (timestamp = open time, UTC; ISO-8601, or epoch
    seconds or ms) into an (n, 6) float64 array with times in ms, checking order and OHLC consistency.
    Errors name the file and the first bad line; a repeated row is one too (:func:`read_candles` drops and
    counts them)."""
    found = read_candles(path, refuse_duplicates=True)
    return found.rows  # type: ignore[no-any-return]


def read_candles(path: str | Path, *, refuse_duplicates: bool = False) -> CandleFile:
    """:func:`load_csv`, except that a row repeating the one before it exactly is dropped and counted (a row
    repeating only its time, with other values, is always refused: which one is right cannot be known)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CandleFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines:
        raise CandleFileError(f"{path}: empty file")
    header = tuple(h.strip().lower() for h in lines[0].split(","))
    if header[:6] != CSV_COLUMNS:
        raise CandleFileError(f"{path}: line 1: expected header {','.join(CSV_COLUMNS)}, got {lines[0]!r}")
    numbers = [n for n, line in enumerate(lines[1:], start=2) if line and not line.isspace()]
    if not numbers:
        raise CandleFileError(f"{path}: no candles")
    rows = _rows_fast([lines[n - 1] for n in numbers])
    if rows is None:
        rows = _rows_checked(path, [(n, lines[n - 1].split(",")) for n in numbers])
    o, h, lo, c = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    bad = ~((lo <= np.minimum(o, c)) & (h >= np.maximum(o, c)) & (lo > 0) & np.isfinite(rows).all(axis=1))
    if bad.any():
        i = int(np.argmax(bad))
        raise CandleFileError(f"{path}: line {numbers[i]}: inconsistent OHLC {lines[numbers[i] - 1]!r}")
    step = np.diff(rows[:, 0])
    repeated = np.concatenate(([False], (step == 0) & (rows[1:] == rows[:-1]).all(axis=1)))
    unordered = (step <= 0) & ~repeated[1:]
    if refuse_duplicates:
        unordered |= step <= 0
    if unordered.any():
        i = int(np.argmax(unordered)) + 1
        raise CandleFileError(f"{path}: line {numbers[i]}: timestamps are not strictly increasing")
    return CandleFile(path=str(path), rows=rows[~repeated], duplicates=int(repeated.sum()))


def check_spacing(found: CandleFile, interval: str, max_gap_candles: int) -> Spacing:
    """The file's candles must be ``interval`` apart: another typical spacing (a 15m file under a 5m config),
    a candle off the interval's grid, or a gap of more than ``max_gap_candles`` missing candles is refused
    (CandleFileError, one line naming the file and the spacing, time or gap); smaller gaps are counted."""
    step_ms = interval_ms(interval)
    rows = found.rows
    if len(rows) < 2:
        return Spacing(interval=interval, candles=len(rows))
    diffs = np.diff(rows[:, 0]).astype(np.int64)
    values, counts = np.unique(diffs, return_counts=True)
    typical = int(values[np.argmax(counts)])
    if typical != step_ms:
        raise CandleFileError(f"{found.path}: candles are {_duration(typical)} apart, but the config trades "
                              f"{interval}: use a {interval} candle file (or a {_duration(typical)} interval)")
    off = diffs % step_ms != 0
    if off.any():
        i = int(np.argmax(off)) + 1
        raise CandleFileError(f"{found.path}: the candle at {_utc(int(rows[i, 0]))} is not on the {interval} grid "
                              f"of the one before it ({_duration(int(diffs[i - 1]))} after it)")
    missing = diffs // step_ms - 1
    worst = int(np.argmax(missing))
    spacing = Spacing(interval=interval, candles=len(rows), gaps=int((missing > 0).sum()),
                      missing=int(missing.sum()), longest=int(missing[worst]),
                      longest_after_ms=int(rows[worst, 0]) if missing[worst] else None)
    if spacing.longest > max_gap_candles:
        raise CandleFileError(f"{found.path}: a gap of {spacing.longest} missing {interval} candles "
                              f"({_duration(spacing.longest * step_ms)}) after the candle at "
                              f"{_utc(int(rows[worst, 0]))}; more than max_gap_candles = {max_gap_candles} "
                              "([market] in the config)")
    return spacing


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rows_fast(lines: list[str]) -> np.ndarray | None:
    """All lines at once when every line has exactly six fields; None sends the caller to the
    line-by-line path that names what is wrong."""
    flat = ",".join(lines).split(",")
    if len(flat) != 6 * len(lines):
        return None
    rows = np.empty((len(lines), 6), dtype=np.float64)
    try:
        rows[:, 0] = _parse_times([t.strip() for t in flat[0::6]])
        for col in range(1, 6):
            rows[:, col] = np.array(flat[col::6], dtype=np.float64)
    except ValueError:
        return None
    return rows


def _rows_checked(path: Path, body: list[tuple[int, list[str]]]) -> np.ndarray:
    for lineno, parts in body:
        if len(parts) < 6:
            raise CandleFileError(f"{path}: line {lineno}: expected 6 columns, got {len(parts)}")
    rows = np.empty((len(body), 6), dtype=np.float64)
    for i, (lineno, parts) in enumerate(body):
        try:
            rows[i, 0] = _parse_times([parts[0].strip()])[0]
            rows[i, 1:] = [float(x) for x in parts[1:6]]
        except ValueError as exc:
            raise CandleFileError(f"{path}: line {lineno}: {exc}") from None
    return rows


def _parse_times(texts: list[str]) -> np.ndarray:
    if texts[0].replace(".", "", 1).isdigit():
        values = np.array(texts, dtype=np.float64)
        with np.errstate(over="ignore"):  # an absurd time becomes inf, which the finiteness check refuses
            return np.where(values < 1e11, values * 1000, values)  # seconds or milliseconds
    return np.array([t.rstrip("Z") for t in texts], dtype="datetime64[ms]").astype(np.int64).astype(np.float64)


def array_candles(rows: np.ndarray, symbol: str, interval: str) -> Iterator[CandleClosed]:
    for t, o, h, lo, c, v in rows.tolist():
        yield CandleClosed(symbol=symbol, interval=interval, open_time=int(t), open=o, high=h, low=lo, close=c,
                           volume=v, ts=int(t))


def generate(*, seed: int, symbol: str, interval: str, bars: int, start_ms: int = 1_735_689_600_000,
             start_price: float = 60_000.0, volatility: float = 0.002) -> Iterator[CandleClosed]:
    """A seeded random-walk market with realistic candles (prices on a 0.1 tick), in chunks."""
    step = interval_ms(interval)
    digest = hashlib.sha256(f"{seed}:{symbol}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    price = start_price
    done = 0
    while done < bars:
        n = min(_CHUNK, bars - done)
        rets = rng.standard_t(4, n) * volatility / np.sqrt(2.0)
        closes = price * np.exp(np.cumsum(rets))
        opens = np.concatenate(([price], closes[:-1]))
        wick = np.abs(rng.normal(0.0, volatility / 2, (2, n)))
        highs = np.maximum(opens, closes) * (1 + wick[0])
        lows = np.minimum(opens, closes) * (1 - wick[1])
        vols = rng.lognormal(3.0, 0.5, n)
        o, h, lo, c = (np.round(a, 1) for a in (opens, highs, lows, closes))
        h = np.maximum(h, np.maximum(o, c))
        lo = np.minimum(lo, np.minimum(o, c))
        times = start_ms + (done + np.arange(n, dtype=np.int64)) * step
        for t, oo, hh, ll, cc, vv in zip(times.tolist(), o.tolist(), h.tolist(), lo.tolist(), c.tolist(),
                                         np.round(vols, 4).tolist(), strict=True):
            yield CandleClosed(symbol=symbol, interval=interval, open_time=t, open=oo, high=hh, low=ll, close=cc,
                               volume=vv, ts=t)
        price = float(closes[-1])
        done += n
