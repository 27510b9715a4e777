"""The simulator as a whole (simulators/bingx/server.py): ``gatebot sim`` passing every option to it, and funding
pushed, listed in the income history and its rates in the funding-rate history. Its handlers have test files of
their own beside this one; the client they share is clients.py."""

from __future__ import annotations

import asyncio

import pytest

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, run, user_stream, with_sim

# --- market data ---------------------------------------------------------------------------------


# --- trading -------------------------------------------------------------------------------------


def test_auto_mode_times_fills_and_pushes_on_the_market_clock_and_signs_on_the_wall_clock() -> None:
    """Auto mode plays market time at ``speed`` x wall time: an order's fill (and its push) carries the time of
    the candle it filled on, as in lockstep, so that a chart puts its marker there; signatures and serverTime
    stay on the wall clock the bot signs with."""
    import time

    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        start = sim.market_time_ms
        while sim.market_time_ms < start + 4 * 300_000:  # the market runs ahead of the wall clock (3000x)
            await asyncio.sleep(0.01)
        await c.ok("POST", SL, **entry(cid="m-1"))  # signed with wall time: accepted
        (fill,) = sim.core.fills_of("m-1")
        candle = sim.market_time_ms  # the candle it filled on (the market cannot pass a whole candle meanwhile)
        assert candle - 300_000 <= fill.ts < candle + 300_000, (fill.ts, candle)
        await user.wait(lambda m: any(x.get("e") == "ORDER_TRADE_UPDATE" and x["o"]["X"] == "FILLED" for x in m))
        (push,) = [u for u in user.of("ORDER_TRADE_UPDATE") if u["o"]["X"] == "FILLED"]
        assert push["o"]["T"] == fill.ts
        server = (await c.call("GET", C.SERVER_TIME))["data"]["serverTime"]
        assert abs(server - time.time() * 1000) < 60_000, "serverTime is the wall clock's"

    run(lambda: with_sim(SimOptions(history_bars=5, mode="auto", speed=3000), body))


# --- faults --------------------------------------------------------------------------------------


def test_gatebot_sim_passes_every_option_to_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    """``gatebot sim --auto ...`` reaches the simulator's own parser (a subcommand would otherwise take
    the options for its own and refuse them)."""
    from gatebot.app.cli import main
    from gatebot.simulators.bingx.__main__ import parse

    with pytest.raises(SystemExit) as done:
        main(["sim", "--help"])
    assert done.value.code == 0 and "usage: gatebot sim" in capsys.readouterr().out
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    import gatebot.simulators.bingx.__main__ as sim_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim_module, "main", fake_main)
        assert main(["-v", "sim", "--auto", "--speed", "600", "--orphan-stops", "cancel", "--wire", "string"]) == 0
    assert seen == [["--auto", "--speed", "600", "--orphan-stops", "cancel", "--wire", "string"]]
    options = parse(seen[0])
    assert options.mode == "auto" and options.speed == 600 and options.switches.orphan_stops == "cancel"
    assert options.wire == "string" and parse([]).wire == "mixed"


def test_funding_is_pushed_listed_in_income_history_and_its_rates_in_the_funding_rate_history() -> None:
    from gatebot.exchanges.paper.funding import FundingOptions

    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        await c.ok("POST", SL, **entry(qty="0.05", cid="f-1"))
        hour = 3_600_000
        start = sim.market_time_ms
        while sim.market_time_ms // hour == start // hour:
            await sim.advance(1)
        funding_time = sim.market_time_ms // hour * hour
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" and x["a"]["m"] == "FUNDING_FEE" for x in m))
        [push] = [u["a"] for u in user.of("ACCOUNT_UPDATE") if u["a"]["m"] == "FUNDING_FEE"]
        [paid] = sim.core.account.funding
        assert paid.funding_time == funding_time and paid.side == "long" and paid.qty == D("0.05")
        exact = D("0.05") * paid.mark_price * D("0.0002")
        assert paid.paid == exact.quantize(D("0.00000001"), "ROUND_CEILING")
        assert D(push["B"][0]["bc"]) == -paid.paid and "P" not in push, "a cross position pushes the balance only"
        assert D(push["B"][0]["wb"]) == sim.core.account.balance
        rows = await c.ok("GET", C.INCOME, symbol="BTC-USDT", incomeType="FUNDING_FEE")
        assert len(rows) == 1 and D(rows[0]["income"]) == -paid.paid
        assert rows == [{"symbol": "BTC-USDT", "incomeType": "FUNDING_FEE", "income": rows[0]["income"],
                         "asset": "USDT", "info": "Funding Fee", "time": funding_time,
                         "tranId": f"{funding_time}_BTC-USDT_long", "tradeId": f"{funding_time}_BTC-USDT"}]
        assert await c.ok("GET", C.INCOME, symbol="BTC-USDT", incomeType="FUNDING_FEE",
                          startTime=funding_time + 1) == []
        every = await c.ok("GET", C.INCOME, symbol="BTC-USDT")
        assert {r["incomeType"] for r in every} == {"FUNDING_FEE", "TRADING_FEE"}
        body_ = await c.call("GET", C.INCOME, incomeType="DEPOSIT")
        assert body_["code"] == 109400
        status, rates = await c.raw("GET", C.FUNDING_RATE, "symbol=BTC-USDT&limit=3")
        assert status == 200 and rates["data"][-1] == {"symbol": "BTC-USDT", "fundingRate": "0.0002",
                                                       "fundingTime": funding_time}
        assert [r["fundingTime"] for r in rates["data"]] == [funding_time - 2 * hour, funding_time - hour, funding_time]
        status, index = await c.raw("GET", C.PREMIUM_INDEX, "symbol=BTC-USDT")
        assert index["data"]["nextFundingTime"] == funding_time + hour and index["data"]["lastFundingRate"] == "0.0002"
        await user.close()
    run(lambda: with_sim(SimOptions(history_bars=5, volatility=0.0005,
                                    funding=FundingOptions(rate=D("0.0002"), interval_h=1)), body))
