"""Paper trading on the live market: a paper account (``market = "bx"``) fed by a BingX account's public
market stream and klines, here the simulator's on loopback, with no credentials for it; the trades are the paper
account's (its matching core's fills, stop and take-profit), and nothing reaches the BingX account."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.app.runner import Runner
from gatebot.core.config import ConfigError, load_config
from gatebot.core.invariants import check
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import until

SYMBOL = "BTC-USDT"
CONFIG = """mode = "paper"
state_dir = "{state}"
[journal]
synchronous = "OFF"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
rest_url = "{rest}"
ws_url = "{ws}"
close_candles_by_clock = false
api_key_env = "NO_SUCH_KEY_FOR_THIS_TEST"
secret_env = "NO_SUCH_SECRET_FOR_THIS_TEST"
[exchanges.paper]
type = "paper"
market = "{market}"
[exchanges.paper.options]
stop_slippage_bps = 0
[[instances]]
name = "lp"
exchange = "paper"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ enter_on = 1, exit_on = 0 }}
protection = {{ leveraged_sl_pct = 0.04, leveraged_tp_pct = 0.08 }}
"""


def write(tmp: Path, sim: BingXSimulator, market: str = "bx") -> Path:
    path = tmp / "live_paper.toml"
    path.write_text(CONFIG.format(state=tmp / "state", rest=sim.rest_url, ws=sim.ws_url, market=market))
    return path


def test_a_paper_account_trades_on_the_simulators_public_market(tmp_path: Path) -> None:
    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as sim:
            loaded = load_config(write(tmp_path, sim))
            runner = Runner(loaded, make_plugin_manager(loaded.plugins.modules, loaded.plugins.disable))
            task = asyncio.create_task(runner.run())
            try:
                await until(lambda: runner.instances[0].engine is not None
                            and runner.instances[0].engine.status == "running", "the bot to start", task=task)
                await until(lambda: runner.adapters["bx"].market is not None
                            and runner.adapters["bx"].market.connected.is_set(), "the market stream", task=task)
                engine = runner.instances[0].engine
                for _ in range(10):
                    if engine.pos.state == "protected" and engine.pos.rec.tp_live:
                        break
                    before = runner.bars
                    await sim.advance(1)
                    await until(lambda before=before: runner.bars > before, "a candle from the stream", task=task)
                    await until(lambda: engine.idle, "the engine to go idle", task=task)
                assert engine.pos.state == "protected" and engine.pos.rec.tp_live
                paper = runner.adapters["paper"]
                last = sim.markets[SYMBOL].closed[-1]
                held = await paper.position(SYMBOL, "long")
                assert held.qty == engine.pos.rec.open_qty > 0
                assert held.entry_price == Decimal(repr(last[4]))  # filled at the market's last close
                assert sorted(o.role for o in await paper.open_orders(SYMBOL)) == ["stop", "take_profit"]
                bingx = sim.account_view()
                assert await bingx.open_orders(SYMBOL) == [] and (await bingx.position(SYMBOL, "long")).qty == 0
                journal = Journal(tmp_path / "state" / "lp.sqlite", readonly=True)
                try:
                    assert await check(journal, paper, instance="lp", symbol=SYMBOL) == []
                finally:
                    journal.close()
            finally:
                runner.stop()
                await asyncio.wait_for(task, timeout=15)

    asyncio.run(go())


@pytest.mark.parametrize(("market", "says"), [("nowhere", "not an exchange of this config"),
                                               ("paper", "not an exchange of this config")])
def test_a_market_that_is_not_another_accounts_is_refused(tmp_path: Path, market: str, says: str) -> None:
    sim = BingXSimulator(SimOptions(mode="manual"))
    with pytest.raises(ConfigError, match=says):
        load_config(write(tmp_path, sim, market))
