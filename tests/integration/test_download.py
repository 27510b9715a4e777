"""download-candles / download-funding against the BingX simulator on loopback: pages are whole and exact,
an interrupted download resumed gives the file an uninterrupted one gives, requests are paced by the
RestClient's budget, bad arguments are refused in one line (exit 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gatebot.app.cli import main
from gatebot.app.download import FUNDING_WINDOW_MS, download_candles, download_funding
from gatebot.core.clock import VirtualClock
from gatebot.core.market import check_spacing, load_csv, read_candles
from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.rest import RestClient, TransportError
from gatebot.exchanges.paper.funding import HOUR_MS, FundingOptions, load_rates
from gatebot.simulators.bingx import BingXSimulator, SimOptions, Switches
from tests.helpers import replaced, sma_replay_text
from tests.integration.sessions import sim_in_thread

STEP_MS = 300_000
BARS = 3500
"""Three kline pages of 1440."""


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


class Jumping(VirtualClock):
    """Virtual time that a sleeper moves forward at once (the sleeps are counted, not waited)."""

    slept_s = 0.0

    async def sleep(self, seconds: float) -> None:
        self.slept_s += seconds
        self.advance_to(self.now_ms() + round(seconds * 1000))


async def with_sim(options: SimOptions, body: Callable[[BingXSimulator, RestClient], Awaitable[None]],
                   **rest: Any) -> None:
    async with BingXSimulator(options) as sim:
        client = RestClient(sim.rest_url, "", "", clock=rest.pop("clock", None) or Jumping(0), **rest)
        await client.start()
        try:
            await body(sim, client)
        finally:
            await client.close()


def history_span(sim: BingXSimulator) -> tuple[int, int]:
    """The simulator's closed history: from its first candle to the forming one (exclusive)."""
    closed = sim.markets["BTC-USDT"].closed
    return closed[0][0], sim.market_time_ms


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_a_paged_download_is_the_simulators_history_exactly(tmp_path: Path, order: str) -> None:
    out = tmp_path / "c.csv"

    async def body(sim: BingXSimulator, rest: RestClient) -> None:
        since, until = history_span(sim)
        result = await download_candles(rest, "BTC-USDT", "5m", since, until, out)
        assert (result.kept, result.added, result.requests) == (0, BARS, 3)
        rows = load_csv(out)
        np.testing.assert_array_equal(rows, np.array(sim.markets["BTC-USDT"].closed, dtype=np.float64))
        lines = out.read_text().splitlines()
        stamp = datetime.fromtimestamp(since / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert lines[0] == "timestamp,open,high,low,close,volume" and lines[1].startswith(f"{stamp},")
        spacing = check_spacing(read_candles(out), "5m", 0)  # replay-ready: no gap, no duplicate
        assert (spacing.candles, spacing.gaps) == (BARS, 0)

    run(lambda: with_sim(SimOptions(history_bars=BARS, switches=Switches(kline_order=order)), body))  # type: ignore[arg-type]


def test_the_forming_candle_and_the_window_ends_are_never_written(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"

    async def body(sim: BingXSimulator, rest: RestClient) -> None:
        since, forming = history_span(sim)
        result = await download_candles(rest, "BTC-USDT", "5m", since + 7 * STEP_MS + 1, forming + 10 * STEP_MS, out)
        times = load_csv(out)[:, 0]
        assert times[0] == since + 8 * STEP_MS and times[-1] == forming - STEP_MS, "the forming candle is not closed"
        assert result.added == 40 - 8

    run(lambda: with_sim(SimOptions(history_bars=40), body))


def test_an_interrupted_download_resumed_gives_the_same_file(tmp_path: Path) -> None:
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"

    async def body(sim: BingXSimulator, rest: RestClient) -> None:
        since, until = history_span(sim)
        await download_candles(rest, "BTC-USDT", "5m", since, until, whole)

        def exchange_fails(pages: int) -> None:  # after the first page, every retry of the next one fails
            if pages == 1:
                sim.faults.fail_next(C.KLINES, "5xx", count=rest.query_retries + 1)

        with pytest.raises(TransportError):
            await download_candles(rest, "BTC-USDT", "5m", since, until, resumed, on_page=exchange_fails)
        assert len(resumed.read_text().splitlines()) == 1 + C.KLINE_LIMIT, "the first page was saved whole"
        text = whole.read_text()  # a process killed while writing a page leaves a part of it, the last line torn
        resumed.write_text(text[: text.index("\n", len(text) // 2) + 18])
        kept = len(resumed.read_text().splitlines()) - 2
        result = await download_candles(rest, "BTC-USDT", "5m", since, until, resumed)
        assert (result.kept, result.added) == (kept, BARS - kept) and C.KLINE_LIMIT < kept < 2 * C.KLINE_LIMIT
        assert resumed.read_bytes() == whole.read_bytes()
        again = await download_candles(rest, "BTC-USDT", "5m", since, until, resumed)
        assert (again.kept, again.added) == (BARS, 0) and resumed.read_bytes() == whole.read_bytes()

    run(lambda: with_sim(SimOptions(history_bars=BARS), body, query_retries=1))


def test_requests_are_paced_by_the_rest_clients_market_budget(tmp_path: Path) -> None:
    clock = Jumping(0)

    async def body(sim: BingXSimulator, rest: RestClient) -> None:
        since, until = history_span(sim)
        result = await download_candles(rest, "BTC-USDT", "5m", since, until, tmp_path / "c.csv")
        assert result.requests == 7
        # 8 requests (the server time, 7 pages) through a bucket of 5 refilled at 2/s: 1.5 s of waiting at least
        assert clock.slept_s >= 1.5 - 1e-6
        assert len(load_csv(tmp_path / "c.csv")) == 10_000

    run(lambda: with_sim(SimOptions(history_bars=10_000), body, clock=clock, rate_limits={"market": 2.0}))


def funding_csv(path: Path, start_ms: int, hours: int) -> dict[int, Decimal]:
    rng = np.random.default_rng(7)
    rates = {start_ms + h * HOUR_MS: Decimal(int(x)).scaleb(-6) for h, x in enumerate(rng.integers(-300, 300, hours))}
    path.write_text("time,rate\n" + "".join(f"{t},{r}\n" for t, r in rates.items()))
    return rates


def test_funding_history_in_windows_interrupted_and_resumed(tmp_path: Path) -> None:
    now_h = datetime.now(UTC).timestamp() * 1000 // HOUR_MS * HOUR_MS
    start = int(now_h) - 100 * 24 * HOUR_MS
    rates = funding_csv(tmp_path / "rates.csv", start, 100 * 24 + 48)
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"

    async def body(sim: BingXSimulator, rest: RestClient) -> None:
        since, until = start + HOUR_MS // 2, sim.market_time_ms
        result = await download_funding(rest, "BTC-USDT", since, until, whole)
        assert result.requests == -(-(until - since) // FUNDING_WINDOW_MS) == 3
        times, got = load_rates(whole)
        expected = [t for t in rates if since <= t < until]  # --until is exclusive
        assert times == expected and got == [rates[t] for t in expected]

        def exchange_fails(pages: int) -> None:
            if pages == 2:
                sim.faults.fail_next(C.FUNDING_RATE, "5xx", count=rest.query_retries + 1)

        with pytest.raises(TransportError):
            await download_funding(rest, "BTC-USDT", since, until, resumed, on_page=exchange_fails)
        await download_funding(rest, "BTC-USDT", since, until, resumed)
        assert resumed.read_bytes() == whole.read_bytes()

    options = SimOptions(history_bars=20, funding=FundingOptions(csv=str(tmp_path / "rates.csv"), interval_h=1))
    run(lambda: with_sim(options, body, query_retries=1))


# --- the command line ------------------------------------------------------------------------------


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def test_cli_downloads_a_file_replay_accepts_and_refuses_it_under_another_interval(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.csv"
    with sim_in_thread(SimOptions(history_bars=300)) as sim:
        since, until = history_span(sim)
        args = ["download-candles", "--symbol", "BTC-USDT", "--interval", "5m", "--since", utc(since),
                "--until", utc(until), "--out", str(out), "--rest", sim.rest_url]
        assert main(args) == 0
        assert capsys.readouterr().out == (
            f"{out}: 300 BTC-USDT 5m candles added to 0 already there, {utc(since).replace('T', ' ')} .. "
            f"{utc(until - STEP_MS).replace('T', ' ')} UTC; 0 gap(s) (0 missing candle(s)) in the file "
            "(1 request(s))\n")
        assert main(args) == 0
        assert capsys.readouterr().out.startswith(f"{out}: 0 BTC-USDT 5m candles added to 300 already there")
        failing = tmp_path / "failing.csv"
        sim.faults.fail_next(C.KLINES, "5xx", count=4)  # the first try and its three retries
        assert main([*args[:-4], "--out", str(failing), *args[-2:]]) == 4
        err = capsys.readouterr().err.splitlines()  # the retries said as warnings, then the one error line
        assert err[-1] == (f"error: download-candles: GET {C.KLINES}: HTTP 500; {failing} holds 0 "
                           "row(s); the same command continues from there")
        assert len(err) == 4 and all("retrying in" in line for line in err[:-1])
        assert main([*args[:-4], "--out", str(failing), *args[-2:]]) == 0
        assert failing.read_bytes() == out.read_bytes()
        capsys.readouterr()
        assert main([*args[:4], "15m", *args[5:]]) == 2
        assert capsys.readouterr().err == (f"error: {out}: its candles are not 15m apart: not continued with 15m "
                                           "candles (another --out, or its interval)\n")
        assert main([*args[:2], "NOPE-USDT", *args[3:-4], "--out", str(tmp_path / "n.csv"), *args[-2:]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: download-candles: ") and "NOPE-USDT not exist" in err and err.count("\n") == 1
    config = tmp_path / "replay.toml"
    for interval, status in (("5m", 0), ("15m", 2)):
        config.write_text(replaced(sma_replay_text(tmp_path / f"state{interval}"),
                                   ("fast = 10, slow = 30", "fast = 3, slow = 8"),
                                   ('interval = "5m"', f'interval = "{interval}"')))
        assert main(["replay", str(config), "--candles", str(out)]) == status
    assert "candles are 5m apart, but the config trades 15m" in capsys.readouterr().err


def test_cli_funding_file_is_what_the_paper_exchange_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.csv"
    with sim_in_thread(SimOptions(history_bars=20, funding=FundingOptions(rate=Decimal("0.0001")))) as sim:
        since = sim.market_time_ms - 3 * 86_400_000 + 60_000  # 9 funding times, whatever the hour
        assert main(["download-funding", "--symbol", "BTC-USDT", "--since", utc(since), "--out", str(out),
                     "--rest", sim.rest_url]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: 9 BTC-USDT funding rates added to 0 already there, ")
    times, rates = load_rates(out)
    assert len(times) == 9 and all(t % (8 * HOUR_MS) == 0 for t in times) and set(rates) == {Decimal("0.0001")}


@pytest.mark.parametrize(("argv", "message"), [
    (["--interval", "7m"], "download-candles: --interval '7m' is not one of 1m, 3m, 5m"),
    (["--since", "2025-13-01"], "download-candles: --since '2025-13-01' is not a date (YYYY-MM-DD"),
    (["--until", "2025-01-01"], "download-candles: --since 2025-02-01 is not before --until 2025-01-01"),
    (["--since", "2999-01-01", "--until", "3000-01-01"], "download-candles: --since 2999-01-01 is in the future"),
    (["--symbol", "btcusdt"], "download-candles: --symbol 'btcusdt' is not a BingX symbol"),
])
def test_cli_bad_arguments_are_refused_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  argv: list[str], message: str) -> None:
    given = {"--symbol": "BTC-USDT", "--interval": "5m", "--since": "2025-02-01", "--out": str(tmp_path / "c.csv"),
             "--rest": "http://127.0.0.1:9"}
    given.update(zip(argv[::2], argv[1::2], strict=True))
    assert main(["download-candles", *(x for kv in given.items() for x in kv)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message) and captured.err.count("\n") == 1 and captured.out == ""
    assert not (tmp_path / "c.csv").exists(), "nothing was written"


def test_a_file_of_another_kind_is_refused_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.csv"
    out.write_text("time,rate\n1700000000000,0.0001\n")
    assert main(["download-candles", "--symbol", "BTC-USDT", "--interval", "5m", "--since", "2025-01-01",
                 "--until", "2025-01-02", "--out", str(out), "--rest", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == (f"error: {out}: line 1: not a timestamp,open,high,low,close,volume file "
                                       "('time,rate'); not overwritten\n")
    assert out.read_text() == "time,rate\n1700000000000,0.0001\n"


def test_the_same_seed_serves_the_same_candles(tmp_path: Path) -> None:
    files = [tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"]

    async def body(out: Path, sim: BingXSimulator, rest: RestClient) -> None:
        await download_candles(rest, "BTC-USDT", "5m", *history_span(sim), out)

    for out, seed in zip(files, (9, 9, 10), strict=True):
        run(lambda out=out, seed=seed: with_sim(SimOptions(history_bars=200, seed=seed),  # type: ignore[misc]
                                                lambda sim, rest: body(out, sim, rest)))
    a, b, c = (load_csv(f)[:, 1:] for f in files)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 200 and not np.array_equal(a, c)
