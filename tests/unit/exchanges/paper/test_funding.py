"""Funding: settled by the paper matching core at each funding time, booked once by the journal, in I5 and
in the report; a replay over a day books three payments per position held across them."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.app.report import format_report, report_data, trades
from gatebot.app.runner import Runner
from gatebot.core.config import ConfigError, load_config
from gatebot.core.events import CandleClosed, FundingPaid
from gatebot.core.invariants import check
from gatebot.core.journal import Journal
from gatebot.exchanges.paper.funding import FundingOptions, FundingSchedule, payment
from gatebot.plugins.manager import make_plugin_manager

D = Decimal
DAY_MS = 86_400_000
START = 1_735_689_600_000  # 2025-01-01 00:00 UTC

REPLAY = """
mode = "replay"
state_dir = "{state}"
[plugins]
modules = ["tests.plugins_for_tests"]
[market]
source = "generated"
seed = 3
bars = {bars}
start_ms = {start}
volatility = 0.0005
[exchanges.paper]
type = "paper"
[exchanges.paper.options]
balance = 10000.0
stop_slippage_bps = 0
[exchanges.paper.options.funding]
{funding}
[[instances]]
name = "fu"
exchange = "paper"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ {params} }}
protection = {{ leveraged_sl_pct = 0.8 }}
"""


def replay(tmp_path: Path, *, bars: int = 288, funding: str = 'rate = "0.0001"', params: str = "enter_on = 1",
           name: str = "r.toml") -> tuple[Runner, Journal]:
    path = tmp_path / name
    path.write_text(REPLAY.format(state=tmp_path / "state", bars=bars, start=START, funding=funding, params=params))
    config = load_config(path)
    runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable))
    asyncio.run(runner.run())
    return runner, Journal(tmp_path / "state" / "fu.sqlite", readonly=True)


def test_a_day_held_books_three_payments_at_00_08_16_on_the_mark_price(tmp_path: Path) -> None:
    runner, journal = replay(tmp_path)
    try:
        rows = journal.conn.execute(
            "SELECT position, key, funding_time, paid, rate FROM funding ORDER BY seq").fetchall()
        rec = journal.fold()
        assert rec is not None and rec.state == "protected" and rec.side == "long"
        times = [START + 8 * 3_600_000, START + 16 * 3_600_000, START + DAY_MS]
        assert [r[2] for r in rows] == times, "08:00, 16:00 and 00:00 UTC; none for the 00:00 before the first candle"
        assert all(r[0] == rec.seq and r[4] == "0.0001" for r in rows)
        assert [r[1] for r in rows] == [f"fu:BTC-USDT:{t}" for t in times]
        adapter = runner.adapters["paper"]
        exchange = asyncio.run(adapter.funding("BTC-USDT"))  # type: ignore[attr-defined]
        assert [D(r[3]) for r in rows] == [p.paid for p in exchange]
        # a long pays qty x mark x rate, the mark being the close of the candle that ends at the funding time
        closes = {c.open_time + 300_000: c.close for c in runner._candles()}
        for p in exchange:
            assert p.mark_price == D(repr(closes[p.funding_time]))
            exact = rec.open_qty * p.mark_price * D("0.0001")
            assert p.paid == exact.quantize(D("0.00000001"), rounding="ROUND_CEILING")
            assert p.paid > 0
        assert journal.funding_total() == sum((p.paid for p in exchange), D(0))
        assert asyncio.run(check(journal, adapter, instance="fu", symbol="BTC-USDT")) == []
    finally:
        journal.close()


def test_short_positions_receive_and_trades_carry_their_own_funding_in_the_report(tmp_path: Path) -> None:
    # a short entered every 48 candles and held one: entered at 07:55, 15:55 and 23:55 it is held at a funding
    # time; entered at 03:55, 11:55, 19:55 not
    runner, journal = replay(tmp_path, params='side = "short", every = 48, enter_on = 95')
    try:
        ts = trades(journal)
        held = [t for t in ts if t.funding]
        assert len(ts) == 6 and len(held) == 3
        assert all(t.funding < 0 for t in held), "a short receives at a positive rate"
        assert all(t.net == t.realized_pnl - t.fees - t.funding for t in ts)
        data = report_data(journal)
        assert D(data["funding_booked"]) == journal.funding_total() < 0
        text = format_report(data)
        assert "funding: " in text and f"{journal.funding_count()} payments booked" in text
        # the evaluation's funding line and trades table carry the same payments, to the cent
        whole = data["evaluation"]["whole"]
        assert D(whole["funding"]) == sum((t.funding for t in ts), D(0)).quantize(D("0.01")) != 0
        rows = data["evaluation"]["trades_table"]
        assert [D(r["funding"]) for r in rows] == [t.funding.quantize(D("0.01")) for t in ts]
        assert f"funding {D(whole['funding']):+.2f} USDT" in text
        assert asyncio.run(check(journal, runner.adapters["paper"], instance="fu", symbol="BTC-USDT")) == []
    finally:
        journal.close()


def test_the_same_replay_with_funding_gives_a_byte_identical_journal(tmp_path: Path) -> None:
    _, journal = replay(tmp_path)
    journal.close()
    first = (tmp_path / "state" / "fu.sqlite").read_bytes()
    _, journal = replay(tmp_path)
    journal.close()
    assert (tmp_path / "state" / "fu.sqlite").read_bytes() == first


def test_rates_from_a_csv_hold_until_the_next_row(tmp_path: Path) -> None:
    csv = tmp_path / "rates.csv"
    csv.write_text(f"time,rate\n{START + 8 * 3_600_000},-0.0003\n{START + 16 * 3_600_000},0.0002\n")
    _, journal = replay(tmp_path, funding='rate = "0.0001"\ncsv = "rates.csv"')
    try:
        rates = [r for (r,) in journal.conn.execute("SELECT rate FROM funding ORDER BY seq")]
        assert rates == ["-0.0003", "0.0002", "0.0002"]
        paid = [D(p) for (p,) in journal.conn.execute("SELECT paid FROM funding ORDER BY seq")]
        assert [p < 0 for p in paid] == [True, False, False]
    finally:
        journal.close()


@pytest.mark.parametrize(("text", "problem"), [
    ("when,rate\n1,0.1\n", "expected header time,rate"),
    ("time,rate\n100,0.0001\n50,0.0001\n", "line 3: times are not strictly increasing"),
    ("time,rate\n100,abc\n", "line 2: not a number"),
    ("time,rate\n100,0.5\n", "line 2: rate 0.5 is not within"),
])
def test_a_bad_funding_csv_is_refused_at_load_with_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "rates.csv").write_text(text)
    path = tmp_path / "bad.toml"
    path.write_text(REPLAY.format(state=tmp_path / "state", bars=10, start=START, funding='csv = "rates.csv"',
                                  params="enter_on = 1"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "$.exchanges.paper.options.funding.csv" in str(err.value) and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_funding_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(REPLAY.format(state=tmp_path / "state", bars=10, start=START, funding='rates = "0.1"',
                                  params="enter_on = 1"))
    with pytest.raises(ConfigError, match=r"funding\.rates: unknown field"):
        load_config(path)


def test_schedule_times_and_payment_rounding() -> None:
    s = FundingSchedule(FundingOptions(rate=D("0.0001"), interval_h=4))
    h = 3_600_000
    assert s.times(0, 12 * h) == [4 * h, 8 * h, 12 * h]
    assert s.times(4 * h, 4 * h) == [] and s.times(4 * h - 1, 4 * h) == [4 * h]
    long = payment("X-USDT", "long", D("0.0003"), D("60000.1"), D("0.0001"), 0)
    short = payment("X-USDT", "short", D("0.0003"), D("60000.1"), D("0.0001"), 0)
    assert long.paid == D("0.00180001")  # 0.001800003 rounded up: the account pays a little more
    assert short.paid == D("-0.00180000")  # and receives a little less


def test_the_journal_books_a_payment_once_and_a_version_1_journal_gains_the_table(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "j.sqlite"
    j = Journal(path)
    p = FundingPaid(symbol="BTC-USDT", funding_time=8 * 3_600_000, paid=D("0.5"))
    assert j.add_funding(1, 1, "a:BTC-USDT:28800000", p) is True
    assert j.add_funding(2, 1, "a:BTC-USDT:28800000", p) is False
    assert j.funding_total() == D("0.5") and j.funding_count() == 1
    j.close()
    # an older journal (schema 1, no funding table) reads as no funding, and is migrated when opened to write
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE funding")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    ro = Journal(path, readonly=True)
    assert ro.funding_total() == 0 and ro.funding_count() == 0
    ro.dump()
    ro.close()
    rw = Journal(path)
    assert rw.meta()["schema_version"] == "2" and rw.add_funding(3, 1, "k", p)
    rw.close()


def test_the_paper_core_settles_funding_only_for_times_the_account_lived_through() -> None:
    from gatebot.exchanges.paper.matching import Account, MatchingCore
    from tests.unit.exchanges.paper.test_matching import instrument

    core = MatchingCore(Account(balance=D(10000)), {"BTC-USDT": instrument()}, fee_rate=D(0),
                        funding=FundingSchedule(FundingOptions(rate=D("0.001"))))
    h = 3_600_000

    def candle(open_time: int, price: float) -> CandleClosed:
        return CandleClosed(symbol="BTC-USDT", interval="1h", open_time=open_time, open=price, high=price, low=price,
                            close=price, volume=1)

    core.on_candle(candle(7 * h, 100.0), 0)
    assert core.settle_funding("BTC-USDT", 8 * h, 0) == [], "no position: nothing to pay"
    from gatebot.core.events import SubmitEntry

    core.submit(SubmitEntry(client_id="e", symbol="BTC-USDT", side="long", qty=D(1)), 0)
    core.on_candle(candle(8 * h, 110.0), 0)
    assert core.settle_funding("BTC-USDT", 9 * h, 0) == []
    core.on_candle(candle(15 * h, 120.0), 0)
    paid = core.settle_funding("BTC-USDT", 16 * h, 0)
    assert [(p.funding_time, p.paid, p.side) for p in paid] == [(16 * h, D("0.12"), "long")]
    assert core.settle_funding("BTC-USDT", 16 * h, 0) == [], "settled once"
    assert core.account.balance == D(10000) - D("0.12")


CLI = """
mode = "replay"
state_dir = "state"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.a]
type = "paper"
[exchanges.a.options]
funding = {{ rate = "0.0001" }}
[exchanges.b]
type = "paper"
[exchanges.b.options]
funding = {{ rate = "0.0001" }}
[[instances]]
name = "longs"
exchange = "a"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ enter_on = 1 }}
protection = {{ leveraged_sl_pct = 0.8 }}
[[instances]]
name = "shorts"
exchange = "b"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ side = "short", enter_on = 1 }}
protection = {{ leveraged_sl_pct = 0.8 }}
"""


def test_gatebot_replay_of_a_day_books_three_payments_per_position_and_the_report_shows_them(tmp_path: Path) -> None:
    import json

    from gatebot.core.market import generate
    from tests.helpers import gatebot

    csv = tmp_path / "day.csv"
    rows = [f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}"
            for c in generate(seed=4, symbol="BTC-USDT", interval="5m", bars=288, start_ms=START, volatility=0.0005)]
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    config = tmp_path / "day.toml"
    config.write_text(CLI.format())
    done = gatebot("replay", str(config), "--candles", str(csv))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("288 candles processed (replay)")
    times = [START + 8 * 3_600_000, START + 16 * 3_600_000, START + DAY_MS]
    for name, sign in (("longs", 1), ("shorts", -1)):
        journal = Journal(tmp_path / "state" / f"{name}.sqlite", readonly=True)
        try:
            rows_ = journal.conn.execute("SELECT position, funding_time, paid FROM funding ORDER BY seq").fetchall()
            rec = journal.fold()
        finally:
            journal.close()
        assert rec is not None and rec.state == "protected"
        assert [r[1] for r in rows_] == times and {r[0] for r in rows_} == {rec.seq}
        assert all(D(r[2]) * sign > 0 for r in rows_), "longs pay, shorts receive at a positive rate"
    report = gatebot("report", str(tmp_path / "state"), "--no-png")
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("3 payments booked") == 2
    data = json.loads((tmp_path / "state" / "report.json").read_text())
    assert [i["funding_payments"] for i in data["instances"]] == [3, 3]


def test_with_two_intervals_of_a_symbol_only_the_shorter_settles_funding() -> None:
    """A replay feeds every candle stream to every paper account, each candle at its open time: the hour that
    ends at 08:00 arrives before the 5m candles inside it, and must not settle 08:00 on the position of 07:00."""
    from gatebot.core.events import SubmitClose, SubmitEntry
    from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions

    ex = PaperExchange(PaperOptions(funding=FundingOptions(rate=D("0.001"))))
    asyncio.run(ex.configure("BTC-USDT", 4, False))

    def bar(interval: str, t: int) -> CandleClosed:
        return CandleClosed(symbol="BTC-USDT", interval=interval, open_time=t, open=100, high=100, low=100, close=100,
                            volume=1)

    h, m5 = 3_600_000, 300_000
    ex.on_candle(bar("5m", 6 * h + 55 * m5 // 5))  # 06:55: the 5m stream is seen first
    asyncio.run(ex.submit(SubmitEntry(client_id="e", symbol="BTC-USDT", side="long", qty=D(1))))
    ex.on_candle(bar("1h", 7 * h))  # closes at 08:00, but 07:00..07:55 have not been played yet
    assert ex.core.account.funding == []
    for i in range(12):
        if i == 6:  # 07:30: the position is closed before 08:00
            asyncio.run(ex.submit(SubmitClose(client_id="x", symbol="BTC-USDT", side="long", qty=D(1))))
        ex.on_candle(bar("5m", 7 * h + i * m5))
    assert ex.core.account.funding == [], "nothing was held at 08:00"
