"""A BingX simulator on its own event-loop thread, so that it outlives the bot processes a test kills
and restarts, and so that its ground truth (the matching core) can be read without REST rate limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from gatebot.core.invariants import Violation, check
from gatebot.core.journal import Journal
from gatebot.simulators.bingx import BingXSimulator, SimOptions

T = TypeVar("T")


class SimThread:
    """Start with :meth:`start`, stop with :meth:`stop`; :meth:`call` runs a coroutine function on the
    simulator's loop and returns its result; :meth:`do` runs a plain function there."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bingx-sim", daemon=True)
        self.sim: BingXSimulator | None = None
        self.naked_ms_max = 0.0
        """The longest time (wall ms) the simulator saw a position without a working stop of its side."""
        self.naked_samples = 0
        self._naked_since: dict[tuple[str, str], float] = {}
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> SimThread:
        self.thread.start()
        self.sim = self.call(self._start)
        return self

    async def _start(self) -> BingXSimulator:
        sim = BingXSimulator(self.options)
        sim.core.history_limit = 10**9  # I5 sums every fill of the run: keep the whole order history
        await sim.start()
        return sim

    def stop(self) -> None:
        if self.sim is not None:
            if self._watch is not None:
                self.do(self._watch.cancel)
            self.call(self.sim.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(_wrap(fn), self.loop).result(timeout)

    def do(self, fn: Callable[..., T], *args: Any, timeout: float = 60) -> T:
        async def run() -> T:
            return fn(*args)

        return self.call(run, timeout)

    # --- the market and faults ------------------------------------------------------------------

    def advance(self, candles: int = 1) -> None:
        sim = self.sim
        assert sim is not None
        self.call(lambda: sim.advance(candles))
        self.sample_naked()

    def fault(self, op: str, **args: Any) -> None:
        sim = self.sim
        assert sim is not None
        self.do(sim.faults.apply, op, args)
        self.sample_naked()

    # --- ground truth ---------------------------------------------------------------------------

    def market_subscribed(self) -> bool:
        """True once some client holds a kline subscription: the bot subscribes to candles only after
        every instance's recovery ran (app/runner.py: build, then ``_feed_live``)."""
        sim = self.sim
        assert sim is not None
        return self.do(lambda: any(c.kind == "market" and c.subs for c in sim.streams.conns))

    def streams_up(self) -> bool:
        """The bot's streams are connected: a market subscription and a user connection."""
        sim = self.sim
        assert sim is not None

        def check() -> bool:
            conns = sim.streams.conns
            return any(c.kind == "market" and c.subs for c in conns) and any(c.kind == "user" for c in conns)

        return self.do(check)

    def pending_failures(self) -> int:
        """REST failures queued that no request has met yet."""
        sim = self.sim
        assert sim is not None
        return self.do(sim.faults.pending)

    def connections(self) -> int:
        sim = self.sim
        assert sim is not None
        return self.do(lambda: len(sim.streams.conns))

    def position(self, symbol: str, side: str) -> Decimal:
        sim = self.sim
        assert sim is not None

        async def get() -> Decimal:
            return (await sim.account_view().position(symbol, side)).qty  # type: ignore[arg-type]

        return self.call(get)

    def violations(self, journal_path: Path, *, instance: str, symbol: str) -> list[Violation]:
        sim = self.sim
        assert sim is not None

        async def run() -> list[Violation]:
            journal = Journal(journal_path, readonly=True)
            try:
                return await check(journal, sim.account_view(), instance=instance, symbol=symbol)
            finally:
                journal.close()

        return self.call(run)

    # --- naked time, from the simulator's view -------------------------------------------------

    def watch_naked(self, interval_s: float = 0.005) -> None:
        """Sample every ``interval_s`` on the simulator's loop: a position open without a working
        reduce-only stop of its side is naked from the first sample that sees it."""

        async def watch() -> None:
            while True:
                self._sample()
                await asyncio.sleep(interval_s)

        async def begin() -> None:
            self._watch = asyncio.create_task(watch())

        self.call(begin)

    def sample_naked(self) -> None:
        self.do(self._sample)

    def _sample(self) -> None:
        sim = self.sim
        assert sim is not None
        core = sim.core
        now = time.monotonic()
        self.naked_samples += 1
        for symbol in sim.options.symbols:
            stops = {o.side for o in core.open_orders(symbol) if o.type == "STOP_MARKET"}
            for side in ("long", "short"):
                holding = core.holding(symbol, side)
                qty = holding.qty if holding is not None else 0
                key = (symbol, side)
                if qty > 0 and side not in stops:
                    since = self._naked_since.setdefault(key, now)
                    self.naked_ms_max = max(self.naked_ms_max, (now - since) * 1000)
                else:
                    self._naked_since.pop(key, None)


async def _wrap(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
