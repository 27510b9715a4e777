"""Injected time. Nothing else in gatebot reads the system clock.

``LiveClock`` is wall time; ``VirtualClock`` only moves when the feed (replay, tests) advances it, so
replays are deterministic and timeouts fire at exact virtual instants without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    advances_alone: bool
    """True when time passes by itself (wall time): a wait for it ends. False for a virtual clock that only
    the feed moves: waiting on it from inside what the feed waits for would never end."""

    def now_ms(self) -> int:
        """Wall time (ms since the epoch): what journals and exchanges call a timestamp. It may step."""
        ...

    def monotonic_ms(self) -> int:
        """A reading that never steps (ms, arbitrary origin): for durations, budgets and deadlines that a
        wall-clock step (NTP, a user setting the time) must neither stretch nor shrink."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LiveClock:
    """Wall-clock time (ms since the epoch) and real sleeping."""

    advances_alone = True

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """Time that advances only through :meth:`advance_to`; sleepers wake in deadline order."""

    advances_alone = False

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def monotonic_ms(self) -> int:
        return self._now  # virtual time never goes back

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + round(seconds * 1000), next(self._tie), fut))
        await fut

    def advance_to(self, ms: int) -> None:
        """Move time forward (never back) and wake every sleeper whose deadline has passed."""
        if ms < self._now:
            return
        self._now = ms
        while self._sleepers and self._sleepers[0][0] <= ms:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
