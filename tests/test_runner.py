"""Several instances in one process: isolation of a failing instance, replay end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.config import load_config
from core.journal import Journal
from core.report import report_dir, trades
from core.runner import Runner
from plugins.manager import make_plugin_manager
from tests.helpers import SHARED_5M
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
    run(path)
    summaries = {s.instance: s for s in report_dir(tmp_path / "state")}
    assert summaries["good"].trades >= 10
    assert summaries["bad"].trades == 0
    journal = Journal(tmp_path / "state" / "bad.sqlite", readonly=True)
    errors = journal.conn.execute("SELECT message FROM rejections WHERE trigger = 'instance_error'").fetchall()
    journal.close()
    assert errors and all("RuntimeError: boom" in m for (m,) in errors)
    # restarted with backoff: more than once, far fewer times than there were candles
    assert 3 <= len(errors) < 100


SMA = """
mode = "replay"
state_dir = "{state}"
[journal]
synchronous = "OFF"
[exchanges.paper]
type = "paper"
[exchanges.paper.options]
balance = 10000.0
[[instances]]
name = "sma"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ fast = 10, slow = 30, fraction = 0.5 }}
protection = {{ leveraged_sl_pct = 0.04 }}
"""


@pytest.mark.skipif(not SHARED_5M.exists(), reason=f"shared candle file {SHARED_5M} is absent")
def test_replay_makes_the_same_trades_as_a_plain_loop(tmp_path: Path) -> None:
    from decimal import Decimal

    from core.market import load_csv

    path = tmp_path / "sma.toml"
    path.write_text(SMA.format(state=tmp_path / "state"))
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
