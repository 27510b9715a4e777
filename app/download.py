"""``gatebot download-candles`` and ``gatebot download-funding``: BingX's public history as the files gatebot reads.

Candles (``/openApi/swap/v3/quote/klines``) are written as ``timestamp,open,high,low,close,volume`` (open time
in UTC as ``YYYY-MM-DD HH:MM:SS``, the exchange's numbers as sent): the format of the shared data files and of
``replay --candles``. Funding rates (``/openApi/swap/v2/quote/fundingRate``) are written as ``time,rate``
(epoch ms): the format the paper exchange and the simulator read (``[...options.funding] csv``).

Paginated by time windows that hold at most one page (1440 candles; 1000 hours of funding, the shortest
funding interval being 1 h), so every page is whole whichever end BingX keeps of a longer range and in
whichever order it lists it; an empty window (an outage, before the listing) is passed over. Resumable: an
existing ``--out`` is checked and continued after its last row (a torn last line, from a download killed
mid-write, is dropped first), so no row is written twice; each page is flushed to disk as it arrives, and a
failed download says how far it got. Requests go through :class:`RestClient`: its "market" budget paces them
and its retries absorb a busy exchange. Only closed candles (open time + interval <= the exchange's clock) and
funding times already passed are written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from gatebot.app.exit_codes import EXIT_BAD_INPUT, EXIT_EXCHANGE, EXIT_OK
from gatebot.core.clock import LiveClock
from gatebot.core.config import ConfigError
from gatebot.core.exchange import ExchangeError
from gatebot.core.intervals import INTERVALS, interval_ms
from gatebot.core.market import CandleFileError, load_csv
from gatebot.exchanges.bingx import codec, constants
from gatebot.exchanges.bingx.errors import InvalidRequest
from gatebot.exchanges.bingx.rest import RestClient
from gatebot.exchanges.paper.funding import HOUR_MS, FundingError, load_rates

CANDLE_HEADER = "timestamp,open,high,low,close,volume"
FUNDING_HEADER = "time,rate"
FUNDING_WINDOW_MS = constants.FUNDING_RATE_LIMIT * HOUR_MS
"""One funding page: at most 1000 funding times even at BingX's shortest interval (1 h)."""

Page = list[tuple[int, str]]
"""(time ms, CSV line) of one window's rows."""
Fetch = Callable[[int, int], Awaitable[Page]]
"""The rows with ``start <= time < end`` that may be written now."""


class Result(NamedTuple):
    out: Path
    kept: int
    """Rows the file already held."""
    added: int
    requests: int
    first_ms: int | None
    last_ms: int | None


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, what in (("download-candles", "candles"), ("download-funding", "funding rates")):
        p = sub.add_parser(name, help=f"download BingX's {what} into a CSV (paginated, resumable)", description=__doc__)
        p.add_argument("--symbol", required=True, help="BingX's name, e.g. BTC-USDT")
        if name == "download-candles":
            p.add_argument("--interval", required=True, help=f"one of {', '.join(INTERVALS)}")
        p.add_argument("--since", required=True, help="UTC date or time, e.g. 2025-08-01 or 2025-08-01T12:00")
        p.add_argument("--until", help="UTC date or time, exclusive (default: now)")
        p.add_argument("--out", type=Path, required=True, metavar="CSV", help="written, or continued if it exists")
        p.add_argument("--rest", default=constants.LIVE_REST, help=f"REST URL (default {constants.LIVE_REST})")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The CLI entry: bad arguments are refused (one line, exit 2) before any request is sent."""
    candles = args.command == "download-candles"
    symbol, since_ms, until_ms = parse_args(args.command, args.symbol, args.since, args.until,
                                            args.interval if candles else None)
    header, last_row = ((CANDLE_HEADER, candle_last_row(args.interval)) if candles
                        else (FUNDING_HEADER, funding_last_row))
    rest = RestClient(args.rest, "", "", clock=LiveClock())

    async def go() -> Result:
        await rest.start()
        try:
            if candles:
                return await download_candles(rest, symbol, args.interval, since_ms, until_ms, args.out)
            return await download_funding(rest, symbol, since_ms, until_ms, args.out)
        finally:
            await rest.close()

    try:
        if _ready_to_append(args.out, header):  # a file that cannot be continued is refused before any request
            last_row(args.out)
        result = asyncio.run(go())
    except (CandleFileError, FundingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExchangeError as exc:
        kept = _last_row_line(args.out)
        print(f"error: {args.command}: {exc}; {kept}; the same command continues from there", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, InvalidRequest) else EXIT_EXCHANGE
    what = f"{symbol} {args.interval} candles" if candles else f"{symbol} funding rates"
    span = (f", {_utc(result.first_ms)} .. {_utc(result.last_ms)} UTC" if result.first_ms is not None else "")
    gaps = f"; {candle_gaps(result.out, args.interval)}" if candles and result.first_ms is not None else ""
    print(f"{result.out}: {result.added} {what} added to {result.kept} already there{span}{gaps} "
          f"({result.requests} request(s))")
    return EXIT_OK


def parse_args(command: str, symbol: str, since: str, until: str | None, interval: str | None,
               *, now_ms: int | None = None) -> tuple[str, int, int]:
    """(symbol, since ms, until ms), or ConfigError naming the argument that is wrong."""
    if interval is not None and interval not in INTERVALS:
        raise ConfigError(f"{command}: --interval {interval!r} is not one of {', '.join(INTERVALS)}")
    if not re.fullmatch(r"[A-Z0-9]+-[A-Z0-9]+", symbol):
        raise ConfigError(f"{command}: --symbol {symbol!r} is not a BingX symbol (upper case with a hyphen: BTC-USDT)")
    now_ms = LiveClock().now_ms() if now_ms is None else now_ms
    since_ms = _utc_ms(command, "--since", since)
    until_ms = now_ms if until is None else _utc_ms(command, "--until", until)
    if since_ms >= until_ms:
        raise ConfigError(f"{command}: --since {since} is not before --until {until or 'now'}")
    if since_ms > now_ms:
        raise ConfigError(f"{command}: --since {since} is in the future")
    return symbol, since_ms, until_ms


async def download_candles(rest: RestClient, symbol: str, interval: str, since_ms: int, until_ms: int, out: Path,
                           *, on_page: Callable[[int], None] | None = None) -> Result:
    """Closed candles with ``since_ms <= open time < until_ms`` appended to ``out`` after its last row."""
    step = interval_ms(interval)

    async def fetch(start: int, end: int) -> Page:
        rows = await rest.public(constants.KLINES, {"symbol": symbol, "interval": interval, "startTime": start,
                                                    "endTime": end - 1, "limit": constants.KLINE_LIMIT},
                                 list[codec.Kline])
        now = rest.server_ms()
        return [(k.time, _candle_line(k)) for k in rows if start <= k.time < end and k.time + step <= now]

    return await _download(rest, out, CANDLE_HEADER, candle_last_row(interval), fetch, since_ms, until_ms,
                           constants.KLINE_LIMIT * step, on_page)


def candle_last_row(interval: str) -> Callable[[Path], tuple[int, int | None]]:
    """(rows, last open time) of a candle file to continue with ``interval`` candles (refused if it has another)."""
    step = interval_ms(interval)

    def last_row(path: Path) -> tuple[int, int | None]:
        rows = load_csv(path)
        diffs = np.diff(rows[:, 0]).astype(np.int64)
        if len(diffs) and (int(diffs.min()) != step or (diffs % step).any()):
            raise CandleFileError(f"{path}: its candles are not {interval} apart: not continued with {interval} "
                                  "candles (another --out, or its interval)")
        return len(rows), int(rows[-1, 0])

    return last_row


async def download_funding(rest: RestClient, symbol: str, since_ms: int, until_ms: int, out: Path,
                           *, on_page: Callable[[int], None] | None = None) -> Result:
    """Funding times with ``since_ms <= time < until_ms`` and their rates appended to ``out`` after its last row."""

    async def fetch(start: int, end: int) -> Page:
        rows = await rest.public(constants.FUNDING_RATE, {"symbol": symbol, "startTime": start, "endTime": end - 1,
                                                          "limit": constants.FUNDING_RATE_LIMIT},
                                 list[codec.FundingRate])
        now = rest.server_ms()
        return [(r.fundingTime, f"{r.fundingTime},{codec.dec(r.fundingRate):f}") for r in rows
                if start <= r.fundingTime < end and r.fundingTime <= now and r.symbol in ("", symbol)]

    return await _download(rest, out, FUNDING_HEADER, funding_last_row, fetch, since_ms, until_ms, FUNDING_WINDOW_MS,
                           on_page)


def funding_last_row(path: Path) -> tuple[int, int | None]:
    """(rows, last funding time) of a funding file (``time,rate``, checked as the paper exchange reads it)."""
    times, _ = load_rates(path)
    return len(times), times[-1]


async def _download(rest: RestClient, out: Path, header: str, last_row: Callable[[Path], tuple[int, int | None]],
                    fetch: Fetch, since_ms: int, until_ms: int, window_ms: int,
                    on_page: Callable[[int], None] | None) -> Result:
    """The one pagination loop: windows of ``window_ms`` from after the file's last row (or ``since_ms``) to
    ``until_ms`` (at most the exchange's clock), each page appended and flushed before the next is asked for."""
    has_rows = _ready_to_append(out, header)
    kept, last = last_row(out) if has_rows else (0, None)
    cursor = since_ms if last is None else max(since_ms, last + 1)
    end_ms = min(until_ms, rest.server_ms())
    added = requests = 0
    first: int | None = None
    with out.open("a", encoding="utf-8") as f:
        while cursor < end_ms:
            window_end = min(end_ms, cursor + window_ms)
            page = sorted(dict(await fetch(cursor, window_end)).items())  # one row per time, ascending
            requests += 1
            if page:
                f.write("".join(f"{line}\n" for _, line in page))
                f.flush()
                os.fsync(f.fileno())
                first = page[0][0] if first is None else first
                last = page[-1][0]
                added += len(page)
            cursor = window_end
            if on_page is not None:
                on_page(requests)
    return Result(out=out, kept=kept, added=added, requests=requests, first_ms=first, last_ms=last if added else None)


def _ready_to_append(out: Path, header: str) -> bool:
    """Make ``out`` end after a whole line with ``header`` first (a new file gets the header; a torn last line
    is cut off); True when it holds rows. A file with another header is refused, never overwritten."""
    try:
        data = out.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise CandleFileError(f"{out}: cannot read: {exc.strerror or exc}") from None
    whole = data[: data.rfind(b"\n") + 1]
    first_line = whole.split(b"\n", 1)[0].decode("utf-8", "replace").strip().lower()
    if whole and first_line != header:
        raise CandleFileError(f"{out}: line 1: not a {header} file ({first_line[:60]!r}); not overwritten")
    if not whole and data and not header.startswith(data.decode("utf-8", "replace")):
        raise CandleFileError(f"{out}: not a {header} file; not overwritten")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not whole:
            out.write_text(f"{header}\n", encoding="utf-8")
        elif len(whole) < len(data):
            with out.open("r+b") as f:
                f.truncate(len(whole))
    except OSError as exc:
        raise CandleFileError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return whole.count(b"\n") > 1


def _candle_line(k: codec.Kline) -> str:
    o, h, lo, c, v = (codec.dec(x) for x in (k.open, k.high, k.low, k.close, k.volume))
    if not (lo <= min(o, c) and h >= max(o, c) and lo > 0 and v >= 0):
        raise CandleFileError(f"the exchange sent an inconsistent candle at {_utc(k.time)} UTC "
                              f"(open {o}, high {h}, low {lo}, close {c}, volume {v}); nothing after it written")
    stamp = datetime.fromtimestamp(k.time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return ",".join([stamp, *(format(x, "f") for x in (o, h, lo, c, v))])


def candle_gaps(path: Path, interval: str) -> str:
    """The file's gaps in words (what a replay will count, and refuse beyond its max_gap_candles)."""
    times = load_csv(path)[:, 0].astype(np.int64)
    missing = np.diff(times) // interval_ms(interval) - 1
    return f"{int((missing > 0).sum())} gap(s) ({int(missing.sum())} missing candle(s)) in the file"


def _last_row_line(out: Path) -> str:
    """How far a failed download got, from the file itself."""
    try:
        lines = out.read_text(encoding="utf-8").splitlines()
    except OSError:
        return f"nothing saved in {out}"
    return f"{out} holds {len(lines) - 1} row(s)" + (f", the last {lines[-1].split(',')[0]}" if len(lines) > 1 else "")


def _utc_ms(command: str, name: str, text: str) -> int:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{command}: {name} {text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _utc(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")

