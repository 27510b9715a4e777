"""Take-profit and trailing stops from TOML: a replay (mode "replay", a paper account, a hand-written candle
CSV, the scripted strategy entering on its first candle) whose journal matches a hand-computed reference: a long
entered at 100, the configured stop 1% below (leveraged_sl_pct 0.04 at 4x: 99.0), the tick 0.1, stops and
take-profits filled exactly at their price (stop_slippage_bps 0)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from gatebot.app.report import trades
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager

D = Decimal
CONFIG = """mode = "replay"
state_dir = "{state}"
[market]
source = "csv"
csv = "{csv}"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.paper]
type = "paper"
[exchanges.paper.options]
stop_slippage_bps = 0
[[instances]]
name = "pr"
exchange = "paper"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ enter_on = 1, exit_on = 0 }}
protection = {{ leveraged_sl_pct = 0.04, {protection} }}
"""


def replay(tmp: Path, candles: list[tuple[float, float, float, float]], protection: str) -> Journal:
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"{1_735_689_600 + i * 300},{o},{h},{lo},{c},1" for i, (o, h, lo, c) in enumerate(candles)]
    (tmp / "market.csv").write_text("\n".join(rows) + "\n")
    path = tmp / "replay.toml"
    path.write_text(CONFIG.format(state=tmp / "state", csv=tmp / "market.csv", protection=protection))
    loaded = load_config(path)
    asyncio.run(Runner(loaded, make_plugin_manager(loaded.plugins.modules, loaded.plugins.disable)).run())
    return Journal(tmp / "state" / "pr.sqlite", readonly=True)


def flat(price: float) -> tuple[float, float, float, float]:
    return (price, price, price, price)


def stops_placed(journal: Journal) -> list[Decimal]:
    return [cmd.stop_price for cmd in (row.command for row in journal.intents().values())
            if type(cmd).__name__ == "SubmitStop"]


def test_a_trailing_stop_from_toml_matches_the_hand_computed_reference(tmp_path: Path) -> None:
    candles = [flat(100), flat(100), flat(102), flat(104), flat(103.5), (103.5, 103.5, 102.5, 102.8), flat(102.8)]
    journal = replay(tmp_path, candles, "trailing_pct = 0.01")
    # entry on the first close (100): 99.0; 102 x 0.99 -> 101.0; 104 x 0.99 -> 103.0; 103.5 x 0.99 = 102.465 is
    # farther from the price than 103.0 (no move); the next candle falls through 103.0: filled there
    assert stops_placed(journal) == [D("99.0"), D("101.0"), D("103.0")]
    (qty, price, pnl) = journal.conn.execute("SELECT qty, price, realized_pnl FROM fills WHERE client_id LIKE '%-s3'"
                                             ).fetchone()
    assert (D(price), D(pnl)) == (D("103.0"), D(qty) * D("3.0"))
    assert journal.fold().state == "flat"
    assert [t for (t,) in journal.conn.execute("SELECT trigger FROM transitions ORDER BY seq")].count("move_stop") == 2


def test_a_take_profit_from_toml_matches_the_hand_computed_reference(tmp_path: Path) -> None:
    candles = [flat(100), flat(100.5), (100.5, 101.5, 100.0, 101.2), flat(101.2)]
    journal = replay(tmp_path, candles, "leveraged_tp_pct = 0.04")
    # the take-profit 1% above the entry at 100: 101.0, reached by the third candle's high
    (qty, price, pnl) = journal.conn.execute("SELECT qty, price, realized_pnl FROM fills WHERE client_id LIKE '%-t1'"
                                             ).fetchone()
    assert (D(price), D(pnl)) == (D("101.0"), D(qty) * D("1.0"))
    triggers = [t for (t,) in journal.conn.execute("SELECT trigger FROM transitions ORDER BY seq")]
    assert triggers[-3:] == ["tp_filled", "order_gone", "settled"]
    assert journal.fold().state == "flat"
    assert [t.exit_reason for t in trades(journal)] == ["tp"]  # the report counts it apart from signal exits
