"""The simulator's market (simulators/bingx/market.py): a CSV source re-timed onto the clock."""

from __future__ import annotations

from typing import Any

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.unit.simulators.bingx.clients import Client, run, with_sim


def test_csv_source_is_retimed_onto_the_clock(tmp_path: Any) -> None:
    path = tmp_path / "c.csv"
    rows = ["timestamp,open,high,low,close,volume"]
    rows += [f"{1_600_000_000_000 + i * 300_000},{100 + i},{101 + i},{99 + i},{100.5 + i},10" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")

    async def body(sim: BingXSimulator, c: Client) -> None:
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m"))[1]["data"]
        assert [k["open"] for k in r] == [f"{100 + i}.0" for i in range(6)]
        assert r[-1]["time"] == sim.market_time_ms and r[-1]["time"] % 300_000 == 0
    run(lambda: with_sim(SimOptions(history_bars=5, source="csv", csv=str(path)), body))
