"""Several instances in one process: isolation of a failing instance, replay end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatebot.app.report import report_dir, trades
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager
from tests.helpers import SHARED_5M, replaced, sma_replay_text
from tests.sma_reference import plain_sma_trades

TWO = """
mode = "replay"
state_dir = "{state}"
[journal]
synchronous = "OFF"
[plugins]
modules = ["tests.plugins_for_tests"]
[market]
source = "generated"
seed = 5
bars = 1500
[exchanges.a]
type = "paper"
[exchanges.b]
type = "paper"
[[instances]]
name = "good"
exchange = "a"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ fast = 5, slow = 20 }}
[[instances]]
name = "bad"
exchange = "b"
strategy = "broken"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
"""


def run(config_path: Path, candles: Path | None = None) -> Runner:
    config = load_config(config_path)
    runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable),
                    candles_csv=candles)
    asyncio.run(runner.run())
    return runner


def test_a_raising_strategy_does_not_stop_the_other_instance(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(TWO.format(state=tmp_path / "state"))
    runner = run(path)
    summaries = {s.instance: s for s in report_dir(tmp_path / "state")}
    assert summaries["good"].trades >= 10
    assert summaries["bad"].trades == 0
    journal = Journal(tmp_path / "state" / "bad.sqlite", readonly=True)
    errors = journal.conn.execute("SELECT message FROM rejections WHERE trigger = 'instance_error'").fetchall()
    journal.close()
    # said once (the reason never changed), restarted with backoff: more than once, far fewer times than candles
    assert [m for (m,) in errors] == ["RuntimeError: boom"]
    bad = next(i for i in runner.instances if i.cfg.name == "bad")
    assert 3 <= bad.failures < 100


def sma_text(state: Path) -> str:
    """The example sma_cross replay (tests/helpers.py), its stops filled exactly at their price as the plain loop
    fills them."""
    return replaced(sma_replay_text(state), ("[exchanges.paper.options]\n",
                                             "[exchanges.paper.options]\nstop_slippage_bps = 0\n"))


@pytest.mark.skipif(not SHARED_5M.exists(), reason=f"shared candle file {SHARED_5M} is absent")
def test_replay_makes_the_same_trades_as_a_plain_loop(tmp_path: Path) -> None:
    from decimal import Decimal

    from gatebot.core.market import load_csv

    path = tmp_path / "sma.toml"
    path.write_text(sma_text(tmp_path / "state"))
    run(path, SHARED_5M)
    journal = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    got = [(t.side, t.qty, t.entry_price, t.exit_reason, t.realized_pnl, t.fees) for t in trades(journal)]
    journal.close()
    expected = plain_sma_trades(load_csv(SHARED_5M), fast=10, slow=30, fraction=0.5, leverage=4,
                                leveraged_sl_pct=0.04, balance=Decimal(10000))
    assert len(got) > 100
    assert any(t[3] == "sl" for t in got)
    assert got == expected


def test_a_replay_gives_a_byte_identical_journal(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(TWO.format(state=tmp_path / "state"))
    journal = tmp_path / "state" / "good.sqlite"
    run(path)
    first = journal.read_bytes()
    run(path)
    assert journal.read_bytes() == first


def test_a_damaged_journal_halts_its_instance_only_and_names_the_file(tmp_path: Path) -> None:
    from tests.helpers import gatebot

    path = tmp_path / "two.toml"
    path.write_text(TWO.format(state=tmp_path / "state").replace('strategy = "broken"', 'strategy = "sma_cross"')
                    .replace('mode = "replay"', 'mode = "paper"'))
    (tmp_path / "state").mkdir()
    damaged = tmp_path / "state" / "bad.sqlite"
    damaged.write_bytes(b"not a journal" * 100)
    done = gatebot("run", str(path))
    assert done.returncode == 3, done.stderr
    assert f"instance bad halted: journal {damaged}" in done.stderr
    assert damaged.read_bytes() == b"not a journal" * 100, "a damaged journal is left as it was, for inspection"
    assert "good:" in done.stdout and "good: 0 trades" not in done.stdout


def test_a_replay_never_overwrites_a_paper_journal(tmp_path: Path) -> None:
    from tests.helpers import gatebot

    paper = tmp_path / "paper.toml"
    paper.write_text(TWO.format(state=tmp_path / "state").replace('mode = "replay"', 'mode = "paper"'))
    assert gatebot("run", str(paper)).returncode == 0
    before = (tmp_path / "state" / "good.sqlite").stat().st_size
    replay = tmp_path / "replay.toml"
    replay.write_text(TWO.format(state=tmp_path / "state"))
    done = gatebot("run", str(replay))
    assert done.returncode == 3 and "written by a paper session; a replay does not overwrite it" in done.stderr
    assert (tmp_path / "state" / "good.sqlite").stat().st_size == before


def test_the_replay_command_reads_a_candle_file_and_reports(tmp_path: Path) -> None:
    from gatebot.core.market import generate
    from tests.helpers import gatebot

    csv = tmp_path / "candles.csv"
    rows = [f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}"
            for c in generate(seed=9, symbol="BTC-USDT", interval="5m", bars=600)]
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    config = tmp_path / "sma.toml"
    config.write_text(sma_text(tmp_path / "state"))
    done = gatebot("replay", str(config), "--candles", str(csv))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("600 candles processed (replay)")
    assert "evaluation of sma" in done.stdout and " trades" in done.stdout
    config.write_text(sma_text(tmp_path / "other"))
    missing = gatebot("replay", str(config), "--candles", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "none.csv: cannot read" in missing.stderr
    assert not (tmp_path / "other").exists(), "nothing starts on a bad candle file"


def test_soak_regression_an_hour_of_healthy_trading_forgives_earlier_failures(tmp_path: Path) -> None:
    """Sporadic failures hours apart (a REST timeout now, a 5xx later) must not add up to the longest
    backoff: found by the fault soak, where an instance stayed out for 64 candles (five hours)."""
    from types import SimpleNamespace

    from gatebot.app.runner import HEALTHY_CANDLES, MAX_BACKOFF_CANDLES, Instance
    from gatebot.core.clock import VirtualClock
    from gatebot.core.events import CandleClosed

    path = tmp_path / "two.toml"
    path.write_text(TWO.format(state=tmp_path / "state"))
    runner = SimpleNamespace(state_dir=tmp_path, journals={}, clock=VirtualClock(0), risk=SimpleNamespace(active=False))
    inst = Instance(load_config(path).instances[0], runner)  # type: ignore[arg-type]
    step = 300_000
    for _ in range(8):
        inst.fail(RuntimeError("timeout"), 0)
    assert inst.down_until_bar == MAX_BACKOFF_CANDLES * step
    posted: list[CandleClosed] = []
    inst.engine = SimpleNamespace(post=posted.append, close=lambda: None)  # type: ignore[assignment]

    def candle(t: int) -> CandleClosed:
        return CandleClosed(symbol="BTC-USDT", interval="5m", open_time=t, open=1, high=1, low=1, close=1, volume=1)

    inst.deliver(candle(inst.down_until_bar + (HEALTHY_CANDLES - 1) * step))
    assert inst.failures == 8
    back = inst.down_until_bar + HEALTHY_CANDLES * step
    inst.deliver(candle(back))
    assert inst.failures == 0 and len(posted) == 2
    inst.fail(RuntimeError("5xx"), back)
    assert inst.down_until_bar == back + step  # one candle again


def test_a_stream_gap_naming_a_symbol_reconciles_only_the_instances_trading_it() -> None:
    from types import SimpleNamespace

    from gatebot.app.runner import Runner
    from gatebot.core.events import StreamUp

    posted: dict[str, list[object]] = {"btc": [], "eth": [], "other": []}

    def instance(name: str, exchange: str, symbol: str) -> SimpleNamespace:
        return SimpleNamespace(cfg=SimpleNamespace(name=name, exchange=exchange, symbol=symbol),
                               engine=SimpleNamespace(post=posted[name].append))

    runner = Runner.__new__(Runner)
    runner.instances = [instance("btc", "bx", "BTC-USDT"), instance("eth", "bx", "ETH-USDT"),
                        instance("other", "ot", "BTC-USDT")]
    runner._by_name = {i.cfg.name: i for i in runner.instances}
    sink = runner._router("bx")
    sink(StreamUp(stream="user", symbol="BTC-USDT"))
    assert [len(v) for v in posted.values()] == [1, 0, 0]
    sink(StreamUp(stream="user"))
    assert [len(v) for v in posted.values()] == [2, 1, 0]
