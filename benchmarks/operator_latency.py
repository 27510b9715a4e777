"""Does the operator plane slow trading? The decision latency (benchmarks/decision_latency.py's measurement) with
the control API polled every second and an event stream open (a dashboard's load), beside the same run without
the API, both in one process, sessions alternated (off, on, off, on ...) so that drift of a loaded machine falls
on both sides.

    python benchmarks/operator_latency.py [--candles 800] [--rounds 2]

Prints ``RESULT decision_p50_us_off=… decision_p50_us_on=… decision_p99_us_off=… decision_p99_us_on=…
ratio_p50=… ratio_p99=… polls=… events=… entries_off=… entries_on=…`` (ratio = with the API / without).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from benchmarks.decision_latency import CONFIG, Probe, pct
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions

TOKEN = "bench-token-not-a-secret"
POLLED = ("/api/instances", "/api/instances/lat", "/api/instances/lat/candles?limit=300",
          "/api/instances/lat/transitions?limit=50", "/api/instances/lat/equity", "/api/instances/lat/trades")
"""What a dashboard asks for, every second."""


class Load:
    """The dashboard's load on the API: every POLLED endpoint once a second, and an event stream read."""

    def __init__(self) -> None:
        self.polls = 0
        self.events = 0

    async def poll(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as http:
            while True:
                for path in POLLED:
                    async with http.get(url + path, headers=headers) as r:
                        assert r.status == 200, (path, r.status)
                        await r.read()
                self.polls += 1
                await asyncio.sleep(1.0)

    async def stream(self, url: str) -> None:
        async with aiohttp.ClientSession() as http, http.get(url + "/api/events", params={"token": TOKEN}) as r:
            async for line in r.content:
                if line.startswith(b"event: snapshot"):
                    self.events += 1


async def session(probe: Probe, candles: int, *, api: bool, load: Load) -> list[float]:
    probe.__init__()  # type: ignore[misc]  # one set of wrappers for every session: none stacked on another
    options = SimOptions(mode="manual", history_bars=100, bars=candles + 10, rate_limit_per_s=10_000.0,
                         rate_limit_burst=10_000.0)
    os.environ["BENCH_BINGX_KEY"], os.environ["BENCH_BINGX_SECRET"] = options.api_key, options.secret
    os.environ["GATEBOT_API_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory() as tmp:
        async with BingXSimulator(options) as sim:
            path = Path(tmp) / "bench.toml"
            text = CONFIG.format(state=Path(tmp) / "state", rest=sim.rest_url, ws=sim.ws_url, attached="false")
            if api:
                text = text.replace("[[instances]]", "[api]\nenabled = true\nport = 0\n[[instances]]")
            path.write_text(text)
            config = load_config(path)
            runner = Runner(config, make_plugin_manager(config.plugins.modules))
            task = asyncio.create_task(runner.run())
            while runner.instances[0].engine is None or runner.adapters["bx"].market is None:
                await asyncio.sleep(0.01)
            await runner.adapters["bx"].market.connected.wait()
            tasks = []
            if api:
                url = json.loads((Path(tmp) / "state" / "api.json").read_text())["url"]
                tasks = [asyncio.create_task(load.poll(url)), asyncio.create_task(load.stream(url))]
            for _ in range(candles):
                before = runner.bars
                await sim.advance(1)
                while runner.bars == before or not (runner.instances[0].engine is None
                                                    or runner.instances[0].engine.idle):
                    await asyncio.sleep(0.0005)
            for t in tasks:
                t.cancel()
            for t in tasks:
                if not t.cancelled() and t.done():
                    t.result()  # a poll that failed makes the measurement void
            if runner.instances[0].failures:
                raise SystemExit(f"the bot failed {runner.instances[0].failures} time(s): the measurement is void")
            runner.stop()
            await task
    return probe.decisions_us()


async def run(candles: int, rounds: int) -> str:
    probe = Probe()
    probe.install()
    load = Load()
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        off += await session(probe, candles, api=False, load=load)
        on += await session(probe, candles, api=True, load=load)
    p50_off, p50_on, p99_off, p99_on = pct(off, 50), pct(on, 50), pct(off, 99), pct(on, 99)
    return (f"RESULT decision_p50_us_off={p50_off:.0f} decision_p50_us_on={p50_on:.0f} "
            f"decision_p99_us_off={p99_off:.0f} decision_p99_us_on={p99_on:.0f} ratio_p50={p50_on / p50_off:.2f} "
            f"ratio_p99={p99_on / p99_off:.2f} polls={load.polls} events={load.events} entries_off={len(off)} "
            f"entries_on={len(on)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candles", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(asyncio.run(run(args.candles, args.rounds)))


if __name__ == "__main__":
    main()
