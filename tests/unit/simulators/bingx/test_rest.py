"""The simulator's REST side (simulators/bingx/rest.py): market-data shapes, the kline order switch, rate limits."""

from __future__ import annotations

import time

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions, Switches
from tests.unit.simulators.bingx.clients import Client, D, run, with_sim


def test_contracts_klines_premium_index_shapes() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        _, r = await c.raw("GET", C.SERVER_TIME)
        assert abs(r["data"]["serverTime"] - time.time() * 1000) < 5000
        contract = (await c.raw("GET", C.CONTRACTS))[1]["data"][0]
        assert contract["symbol"] == "BTC-USDT" and contract["pricePrecision"] == 1
        assert contract["quantityPrecision"] == 4 and contract["apiStateOpen"] == "true"
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m&limit=1440"))[1]["data"]
        assert len(r) == 11  # 10 history + the forming candle
        times = [k["time"] for k in r]
        assert times == sorted(times) and all(t % 300_000 == 0 for t in times)
        assert times[-1] == sim.market_time_ms and all(isinstance(k["open"], str) for k in r)
        assert set(r[0]) == {"open", "close", "high", "low", "volume", "time"}
        r2 = (await c.raw("GET", "/openApi/swap/v2/quote/klines",
                          f"symbol=BTC-USDT&interval=5m&startTime={times[2]}&endTime={times[4]}"))[1]["data"]
        assert [k["time"] for k in r2] == times[2:5]
        await sim.advance(2)
        r3 = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m&limit=3"))[1]["data"]
        assert [k["time"] for k in r3] == [times[-1], times[-1] + 300_000, times[-1] + 600_000]
        mark = (await c.raw("GET", C.PREMIUM_INDEX, "symbol=BTC-USDT"))[1]["data"]
        assert D(mark["markPrice"]) == D(r3[-1]["open"])
        assert (await c.raw("GET", "/openApi/swap/v2/nothing"))[0] == 404
    run(lambda: with_sim(SimOptions(history_bars=10), body))


def test_kline_order_desc_switch() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        r = (await c.raw("GET", C.KLINES, "symbol=BTC-USDT&interval=5m"))[1]["data"]
        times = [k["time"] for k in r]
        assert times == sorted(times, reverse=True)
    run(lambda: with_sim(SimOptions(history_bars=5, switches=Switches(kline_order="desc")), body))


def test_rate_limit_http429_switch_and_budget() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        statuses = [(await c.raw("GET", C.SERVER_TIME))[0] for _ in range(6)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses
    run(lambda: with_sim(SimOptions(history_bars=5, rate_limit_per_s=0.1, rate_limit_burst=3,
                                    switches=Switches(rate_limit_signal="http429")), body))
