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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from benchmarks.decision_latency import Probe, bot_on_simulator, pct, play

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
    os.environ["GATEBOT_API_TOKEN"] = TOKEN
    async with bot_on_simulator(candles, attached=False, api=api) as (sim, runner, state):
        tasks = []
        if api:
            url = json.loads((state / "api.json").read_text())["url"]
            tasks = [asyncio.create_task(load.poll(url)), asyncio.create_task(load.stream(url))]
        await play(sim, runner, candles)
        for t in tasks:
            t.cancel()
        for t in tasks:
            if not t.cancelled() and t.done():
                t.result()  # a poll that failed makes the measurement void
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
