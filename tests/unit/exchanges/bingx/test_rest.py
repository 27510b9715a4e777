"""The REST client (exchanges/bingx/rest.py): the exchange clock when BingX refuses a timestamp, and a request
budget that counts monotonic time, so that a stepped wall clock neither gets requests refused nor blocks them
(against the simulator on loopback where a reply is needed)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from gatebot.core.clock import LiveClock
from gatebot.exchanges.bingx import codec, constants
from gatebot.exchanges.bingx.rest import RestClient, TokenBucket
from gatebot.simulators.bingx import BingXSimulator, SimOptions

SYMBOL = "BTC-USDT"


class SteppedClock(LiveClock):
    """Wall time that a test steps (NTP, a user setting the clock); the monotonic reading does not step."""

    def __init__(self) -> None:
        self.step_ms = 0

    def now_ms(self) -> int:
        return super().now_ms() + self.step_ms


@pytest.mark.parametrize("step_s", [-3600, -30, -8, 8, 30, 3600])
def test_a_stepped_wall_clock_neither_gets_requests_refused_nor_blocks_the_budget(step_s: int) -> None:
    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=10)) as sim:
            clock = SteppedClock()
            rest = RestClient(sim.rest_url, "sim-key", "sim-secret", clock=clock, timeout_s=2, query_retries=0)
            await rest.start()
            try:
                clock.step_ms = step_s * 1000
                for _ in range(3):  # signed, and through the budget: no 100421, no wait for the step
                    await asyncio.wait_for(rest.query(constants.BALANCE, {}, list[codec.Balance]), 5)
            finally:
                await rest.close()

    asyncio.run(go())


class FakeClock:
    """A wall clock that steps back an hour after the first request, a monotonic one that does not."""

    def __init__(self) -> None:
        self.wall_ms = 10_000_000
        self.mono_ms = 0
        self.slept: list[float] = []

    def now_ms(self) -> int:
        return self.wall_ms

    def monotonic_ms(self) -> int:
        return self.mono_ms

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono_ms += round(seconds * 1000)
        self.wall_ms += round(seconds * 1000)


def test_the_request_budget_counts_monotonic_time() -> None:
    async def go() -> None:
        clock = FakeClock()
        bucket = TokenBucket(10.0, 1.0, clock)
        await bucket.take()
        clock.wall_ms -= 3_600_000  # the wall clock steps back an hour
        await bucket.take()
        assert sum(clock.slept) <= 0.11, clock.slept  # one token's wait (0.1 s), not the hour

    asyncio.run(go())


def test_an_order_refused_for_its_timestamp_is_sent_again_on_the_exchange_clock() -> None:
    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=10)) as sim:
            rest = RestClient(sim.rest_url, "sim-key", "sim-secret", clock=LiveClock(), timeout_s=2)
            await rest.start()
            try:
                rest.offset_ms -= 20_000  # the measured offset went stale (the exchange's clock drifted)
                reply = await rest.write("POST", constants.ORDER, {
                    "symbol": SYMBOL, "side": "BUY", "positionSide": "BOTH", "type": "MARKET",
                    "quantity": Decimal("0.001"), "clientOrderId": "ts-1-e1"}, codec.OrderReply)
                assert reply.order.orderId  # placed, after one refusal and a re-measured clock
            finally:
                await rest.close()

    asyncio.run(go())
