"""Embedded simulators: an account whose options carry a ``[simulator]`` table (the demo) trades against a
BingX simulator the application starts on loopback. The production adapter never imports the simulator: the
application starts it, points the adapter at its URLs and credentials (``BingXAdapter.embed``), and closes
candles by the simulator's pushes rather than by the local clock (the adapter option ``close_candles_by_clock``,
set here), since a simulator's market clock is its own.

A simulator in ``mode = "lockstep"`` (the demo) shares the bot's virtual clock and moves its market only when
the bot has handled everything it was sent (:class:`Lockstep`): frames and replies cross real loopback
sockets, but in one order, at market times, whatever the machine's load, so a seeded run gives the same
journals every time, and their times are market time. Without a virtual clock (``gatebot record``) it plays
as ``auto`` at its ``speed``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from gatebot.core.clock import Clock, VirtualClock
from gatebot.core.config import Config, ConfigError
from gatebot.core.exchange import ExchangeError
from gatebot.exchanges.bingx.replay import quiesce

if TYPE_CHECKING:
    from gatebot.simulators.bingx import BingXSimulator, SimOptions

IO_WAIT_S = 0.0005
"""Lockstep: how long the driver lets the selector wait for frames and replies still on the loopback."""
SETTLE_LIMIT_S = 60.0
"""Lockstep: the longest the bot may take to handle what it was sent before the run is given up (a bug)."""


class LockstepStalled(ExchangeError):
    """The lockstep driver gave up on the bot (SETTLE_LIMIT_S passed): the embedded exchange cannot be used,
    so the run ends with one line and exit status 4, like any exchange that cannot be used, never a traceback."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the embedded simulator's lockstep gave up: {detail}")


def simulator_table(options: Any) -> dict[str, Any] | None:
    """An account's ``[simulator]`` table, or None (an account of another type has none)."""
    return getattr(options, "simulator", None)


def for_embedded(options: Any) -> Any:
    """The adapter options of an account on an embedded simulator: candles close by its pushes."""
    table = simulator_table(options)
    if table is None:
        return options
    if table.get("mode") == "lockstep":
        # no time passes while the bot works (the clock waits for it): a quiet stream is not a dead one, and a
        # request budget would never refill (the lockstep simulator enforces none either)
        return msgspec.structs.replace(options, close_candles_by_clock=False, user_stream_silence_s=0.0,
                                       rate_limits=dict.fromkeys(("market", "order", "query", "account"), 1e9))
    return msgspec.structs.replace(options, close_candles_by_clock=False)


class EmbeddedSimulators:
    """The simulators of the accounts ``names`` of ``config`` that embed one, validated at construction (a bad
    table is a ConfigError naming it, before anything starts)."""

    def __init__(self, config: Config, names: list[str] | None = None) -> None:
        self.options: dict[str, SimOptions] = {}
        for name, ex in config.exchanges.items():
            table = simulator_table(ex.options)
            if table is None or (names is not None and name not in names):
                continue
            from gatebot.simulators.bingx import SimOptions  # only a config that embeds one loads the simulator

            try:
                sim = msgspec.convert(table, SimOptions)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"$.exchanges.{name}.options.simulator: {exc}") from None
            self.options[name] = msgspec.structs.replace(sim, hedge_mode=ex.hedge_mode)
        lockstep = [name for name, sim in self.options.items() if sim.mode == "lockstep"]
        if len(lockstep) > 1:
            raise ConfigError(f"$.exchanges.{lockstep[1]}.options.simulator.mode: one account only may embed a "
                              f"lockstep simulator (the bot's clock follows it), and {lockstep[0]!r} does")
        self.lockstep = lockstep[0] if lockstep else None
        """The account whose simulator runs in lockstep with the bot, if any."""
        self.running: list[BingXSimulator] = []
        self._lockstep: Lockstep | None = None

    @property
    def start_ms(self) -> int:
        """Where the bot's virtual clock starts for a lockstep simulator: its market's start."""
        from gatebot.simulators.bingx.options import LOCKSTEP_START_MS

        assert self.lockstep is not None
        start = self.options[self.lockstep].start_ms
        return LOCKSTEP_START_MS if start is None else start

    def seed(self) -> int | None:
        """The lockstep simulator's seed (a lockstep run's journal epochs derive from it), else None."""
        return None if self.lockstep is None else self.options[self.lockstep].seed

    async def start(self, adapters: dict[str, Any], clock: Clock | None = None) -> None:
        """Start each account's simulator and point its adapter at it (before the adapter starts)."""
        for name, sim_options in self.options.items():
            if name not in adapters:
                continue
            from gatebot.simulators.bingx import BingXSimulator

            lockstep = sim_options.mode == "lockstep" and isinstance(clock, VirtualClock)
            if sim_options.mode == "lockstep" and not lockstep:  # no virtual clock to share (gatebot record)
                sim_options = msgspec.structs.replace(sim_options, mode="auto")
            sim = BingXSimulator(sim_options, clock=clock if lockstep else None)
            self.running.append(sim)
            await sim.start()
            adapters[name].embed(sim.rest_url, sim.ws_url, (sim_options.api_key, sim_options.secret), sim.finished)
            if lockstep:
                assert isinstance(clock, VirtualClock)
                self._lockstep = Lockstep(sim, adapters[name], clock)

    def drive(self) -> asyncio.Task[None] | None:
        """Lockstep: start moving the market (once the bot's market stream is being started), else None."""
        if self._lockstep is None:
            return None
        return asyncio.create_task(self._lockstep.run(), name="embedded-lockstep")

    async def stop(self) -> None:
        for sim in self.running:
            await sim.stop()
        self.running.clear()


class Lockstep:
    """Moves a lockstep simulator's market as the bot gets through it: release the held frames of one socket,
    wait until the bot has read and handled them and every reply it waits for has come (``adapter.busy``
    against the frames released) and nothing else is ready to run, then the next socket's; when nothing is
    held, move the clock to the next path point's market time (the bot's timers fire there first), then play
    it for one symbol (symbols take turns). The bot sees only BingX's protocol; only the pace is the bot's."""

    def __init__(self, sim: BingXSimulator, adapter: Any, clock: VirtualClock) -> None:
        self.sim = sim
        self.adapter = adapter
        self.clock = clock

    async def run(self) -> None:
        sim = self.sim
        try:
            await self._subscribed()
            due: int | None = None
            while True:
                await self.settle()
                if sim.streams.release():
                    continue
                if due is not None:  # the clock is at the point's time and its timers have been handled
                    sim.step()
                    due = None
                    continue
                due = sim.next_due_ms()
                if due is None:
                    break
                self.clock.advance_to(due)
        finally:
            sim.finished.set()

    async def _subscribed(self) -> None:
        """Before the first candle: the bot's market stream has connected and every subscription is answered
        (a candle pushed before would be missed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT_S
        while True:
            await self.settle()
            if self.sim.streams.release():
                continue
            market = getattr(self.adapter, "market", None)
            if market is not None and market.connected.is_set():
                return
            if loop.time() > deadline:
                raise LockstepStalled(f"the bot's market stream did not subscribe within {SETTLE_LIMIT_S:g} s")
            await asyncio.sleep(IO_WAIT_S)

    async def settle(self) -> None:
        """Return once the bot has handled every frame released and has no request in flight, and no task is
        ready to run: only the next frame or the clock can move anything."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT_S
        while True:
            await quiesce()
            frames, in_flight = self.adapter.busy
            if frames >= self.sim.streams.released and in_flight == 0:
                return
            if loop.time() > deadline:
                raise LockstepStalled(f"the bot did not handle the simulator's frames within {SETTLE_LIMIT_S:g} s "
                                   f"({frames} of {self.sim.streams.released} read, {in_flight} requests in flight)")
            await asyncio.sleep(IO_WAIT_S)  # frames or replies still on the loopback: the selector delivers them
