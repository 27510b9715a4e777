"""Decision latency and protection gap of the bot against its BingX simulator on loopback.

    python benchmarks/decision_latency.py [--candles 600]

Starts a simulator (manual market), runs the bot on it with a strategy that enters on every other
closed candle and exits on the next, and measures:
- decision: from receiving the websocket frame that closes a candle to the entry request being
  written to the socket (the order POST leaving the adapter);
- protection gap: from the entry fill event reaching the engine to the stop being confirmed, with
  the stop as a separate order (with the stop attached to the entry, the exchange creates it with
  the fill: the gap is zero by construction, and is measured too).
The market is played as fast as the bot keeps up (hundreds of candles a second), so the adapter's
client-side request budget (a few requests a second per endpoint group, never reached with 5-minute
candles) is lifted: the measurement is the pipeline, not a throttle the live bot never meets.
Prints ``RESULT decision_p50_us=… decision_p99_us=… protect_gap_p50_ms=… protect_gap_p99_ms=…
attached_gap_p99_ms=… candles=… entries=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.engine import Engine
from gatebot.core.events import OrderAccepted, OrderFilled
from gatebot.exchanges.bingx.market_stream import CandleAssembler
from gatebot.exchanges.bingx.rest import RestClient
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions

CONFIG = """
mode = "paper"
state_dir = "{state}"
[plugins]
modules = ["gatebot.strategies.scripted"]
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
rest_url = "{rest}"
ws_url = "{ws}"
attached_stop = {attached}
close_candles_by_clock = false
rate_limits = {{ market = 1000.0, order = 1000.0, query = 1000.0, account = 1000.0 }}
api_key_env = "BENCH_BINGX_KEY"
secret_env = "BENCH_BINGX_SECRET"
[[instances]]
name = "lat"
exchange = "bx"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ every = 2, fraction = 0.2 }}
"""


class Probe:
    """perf_counter stamps at the points the measurement is defined by."""

    def __init__(self) -> None:
        self.closing_frames: list[int] = []
        self.entry_sends: list[int] = []
        self.fills: dict[str, int] = {}
        self.stop_acks: dict[str, int] = {}

    def install(self) -> None:
        probe = self
        push = CandleAssembler.push

        def timed_push(self: CandleAssembler, k: Any) -> Any:
            closes = self.forming is not None and k.T - k.T % self.step > self.forming.open_time
            if closes:
                probe.closing_frames.append(time.perf_counter_ns())
            return push(self, k)

        CandleAssembler.push = timed_push  # type: ignore[method-assign]
        send = RestClient._send

        async def timed_send(self: RestClient, method: str, url: str, path: str) -> bytes:
            if method == "POST" and path.endswith("/trade/order") and "-e1&" in url:
                probe.entry_sends.append(time.perf_counter_ns())
            return await send(self, method, url, path)

        RestClient._send = timed_send  # type: ignore[method-assign]
        post = Engine.post

        def timed_post(self: Engine, event: Any) -> None:
            now = time.perf_counter_ns()
            if isinstance(event, OrderFilled) and event.client_id.endswith("-e1"):
                probe.fills.setdefault(event.client_id.rsplit("-", 1)[0], now)
            elif isinstance(event, OrderAccepted) and "-s" in event.client_id[-3:]:
                probe.stop_acks.setdefault(event.client_id.rsplit("-", 1)[0], now)
            post(self, event)

        Engine.post = timed_post  # type: ignore[method-assign]

    def decisions_us(self) -> list[float]:
        out = []
        for sent in self.entry_sends:
            before = [f for f in self.closing_frames if f <= sent]
            if before:
                out.append((sent - before[-1]) / 1000)
        return out

    def gaps_ms(self) -> list[float]:
        return [max(0, self.stop_acks[k] - t) / 1e6 for k, t in self.fills.items() if k in self.stop_acks]


@asynccontextmanager
async def bot_on_simulator(candles: int, *, attached: bool, api: bool = False) -> AsyncIterator[
        tuple[BingXSimulator, Runner, Path]]:
    """The bot (its API on when ``api``) on a new simulator of ``candles`` candles, its market stream connected:
    (simulator, runner, state folder); after the block, a bot that failed voids the measurement, else it stops."""
    options = SimOptions(mode="manual", history_bars=100, bars=candles + 10, rate_limit_per_s=10_000.0,
                         rate_limit_burst=10_000.0)
    os.environ["BENCH_BINGX_KEY"], os.environ["BENCH_BINGX_SECRET"] = options.api_key, options.secret
    with tempfile.TemporaryDirectory() as tmp:
        async with BingXSimulator(options) as sim:
            path = Path(tmp) / "bench.toml"
            text = CONFIG.format(state=Path(tmp) / "state", rest=sim.rest_url, ws=sim.ws_url,
                                 attached=str(attached).lower())
            if api:
                text = text.replace("[[instances]]", "[api]\nenabled = true\nport = 0\n[[instances]]")
            path.write_text(text)
            config = load_config(path)
            runner = Runner(config, make_plugin_manager(config.plugins.modules))
            task = asyncio.create_task(runner.run())
            while runner.instances[0].engine is None or runner.adapters["bx"].market is None:
                await asyncio.sleep(0.01)
            await runner.adapters["bx"].market.connected.wait()
            yield sim, runner, Path(tmp) / "state"
            if runner.instances[0].failures:
                raise SystemExit(f"the bot failed {runner.instances[0].failures} time(s): the measurement is void")
            runner.stop()
            await task


async def play(sim: BingXSimulator, runner: Runner, candles: int) -> None:
    """The market ``candles`` candles on, each once the bot has handled the last (as fast as it keeps up)."""
    for _ in range(candles):
        before = runner.bars
        await sim.advance(1)
        while runner.bars == before or not (runner.instances[0].engine is None
                                            or runner.instances[0].engine.idle):
            await asyncio.sleep(0.0005)


async def session(candles: int, attached: bool) -> Probe:
    probe = Probe()
    probe.install()
    async with bot_on_simulator(candles, attached=attached) as (sim, runner, _):
        await play(sim, runner, candles)
    return probe


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candles", type=int, default=600)
    args = parser.parse_args()
    separate = asyncio.run(session(args.candles, attached=False))
    decisions, gaps = separate.decisions_us(), separate.gaps_ms()  # read before the next probe wraps this one
    attached = asyncio.run(session(args.candles, attached=True))
    decisions += attached.decisions_us()
    attached_gaps = attached.gaps_ms()
    print(f"RESULT decision_p50_us={pct(decisions, 50):.0f} decision_p99_us={pct(decisions, 99):.0f} "
          f"protect_gap_p50_ms={pct(gaps, 50):.2f} protect_gap_p99_ms={pct(gaps, 99):.2f} "
          f"attached_gap_p99_ms={pct(attached_gaps, 99):.2f} candles={2 * args.candles} entries={len(decisions)}")


if __name__ == "__main__":
    main()
