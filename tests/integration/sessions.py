"""The bot against a BingX simulator on loopback, in the test's own event loop: one way to start it (``session``,
also the ``bingx_session`` fixture of tests/integration/conftest.py) and ways to wait for what it did."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from gatebot.app.runner import Runner
from gatebot.core import ids
from gatebot.core.config import load_config
from gatebot.core.invariants import check
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import config_text, until

SYMBOL = "BTC-USDT"


class Session:
    """A simulator, the bot running on it (a task), and ways to wait for what the bot did."""

    def __init__(self, sim: BingXSimulator, runner: Runner, task: asyncio.Task[None], journal_path: Path) -> None:
        self.sim, self.runner, self.task, self.journal_path = sim, runner, task, journal_path

    @property
    def engine(self) -> Any:
        return self.runner.instances[0].engine

    @property
    def state(self) -> str:
        engine = self.engine
        return engine.pos.state if engine is not None else "down"

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        await until(condition, what, task=self.task, timeout=timeout, detail=lambda: f"state {self.state}")

    async def candles_until(self, condition: Callable[[], bool], what: str, limit: int = 20) -> None:
        """Play candles one at a time until ``condition`` (each candle fully handled before the next)."""
        for _ in range(limit):
            if condition():
                return
            before = self.runner.bars
            await self.sim.advance(1)
            await self.until(lambda before=before: self.runner.bars > before, "the candle to reach the bot")
            await self.settle()
        await self.until(condition, what, timeout=5)

    async def settle(self) -> None:
        await self.until(lambda: self.engine is None or self.engine.idle, "the engine to go idle")

    def cid(self, seq: int, role: str, attempt: int = 1) -> str:
        """The client id the bot gives this order (its journal's epoch in it)."""
        journal = Journal(self.journal_path, readonly=True)
        try:
            return ids.make("it", journal.epoch, seq, role, attempt)
        finally:
            journal.close()

    def transitions(self) -> list[tuple[str, str, str]]:
        journal = Journal(self.journal_path, readonly=True)
        try:
            return [tuple(r) for r in journal.conn.execute("SELECT src, trigger, dst FROM transitions ORDER BY seq")]
        finally:
            journal.close()

    async def violations(self) -> list[Any]:
        journal = Journal(self.journal_path, readonly=True)
        try:
            return await check(journal, self.sim.account_view(), instance="it", symbol=SYMBOL)
        finally:
            journal.close()


@asynccontextmanager
async def session(tmp: Path, monkeypatch: pytest.MonkeyPatch, *, hedge: bool = False, attached: bool = True,
                  params: str = "{ enter_on = 1, exit_on = 3 }", sim_options: dict[str, Any] | None = None,
                  sim: BingXSimulator | None = None, state: str = "state", adopt: bool = False, options: str = "",
                  protection: str = "") -> AsyncIterator[Session]:
    """The bot on a new simulator, or on ``sim`` (another bot's, or the one a previous session left);
    ``options``: extra lines of the adapter's options table; ``protection``: extra keys of the instance's."""
    if sim is None:
        sim_opts = SimOptions(mode="manual", history_bars=120, hedge_mode=hedge, **(sim_options or {}))
        async with BingXSimulator(sim_opts) as own, session(tmp, monkeypatch, hedge=hedge, attached=attached,
                                                            params=params, sim=own, state=state, adopt=adopt,
                                                            options=options, protection=protection) as s:
            yield s
        return
    runner = bot(tmp, monkeypatch, sim, hedge=hedge, attached=attached, params=params, state=state, adopt=adopt,
                 options=options, protection=protection)
    async with running(sim, runner, tmp / state / "it.sqlite") as s:
        yield s


@asynccontextmanager
async def running(sim: BingXSimulator, runner: Runner, journal_path: Path) -> AsyncIterator[Session]:
    """``runner`` started on ``sim``: its session once the instance runs and the market stream is connected; the
    runner stopped (and waited for) after."""
    task = asyncio.create_task(runner.run())
    s = Session(sim, runner, task, journal_path)
    try:
        await s.until(lambda: s.engine is not None and s.engine.status == "running", "the bot to start")
        await s.until(lambda: runner.adapters["bx"].market is not None
                      and runner.adapters["bx"].market.connected.is_set(), "the market stream")
        yield s
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=15)


def bingx_config(tmp: Path, sim: BingXSimulator, *, hedge: bool = False, attached: bool = True,
                 params: str = "{ enter_on = 1, exit_on = 3 }", state: str = "state", options: str = "",
                 protection: str = "") -> Path:
    """tests/configs/bingx_sim.toml for ``sim``, written to ``tmp / <state>.toml``, its journals in ``tmp / state``."""
    path = tmp / f"{state}.toml"
    path.write_text(config_text("bingx_sim", state=tmp / state, hedge=str(hedge).lower(), rest=sim.rest_url,
                                ws=sim.ws_url, attached=str(attached).lower(), params=params, options=options,
                                protection=f", {protection}" if protection else ""))
    return path


def bot(tmp: Path, monkeypatch: pytest.MonkeyPatch, sim: BingXSimulator, *, adopt: bool = False,
        **config: Any) -> Runner:
    """A runner of :func:`bingx_config` (``config``: its keywords) on ``sim`` (not started)."""
    monkeypatch.setenv("SIM_BINGX_KEY", sim.options.api_key)
    monkeypatch.setenv("SIM_BINGX_SECRET", sim.options.secret)
    loaded = load_config(bingx_config(tmp, sim, **config))
    return Runner(loaded, make_plugin_manager(loaded.plugins.modules, loaded.plugins.disable), adopt=adopt)


BingXSession = Callable[..., AbstractAsyncContextManager[Session]]
"""The ``bingx_session`` fixture: :func:`session` with the test's ``tmp_path`` and ``monkeypatch`` bound."""


@contextmanager
def sim_in_thread(options: SimOptions) -> Iterator[BingXSimulator]:
    """A simulator serving on loopback from its own loop in a thread, for ``main()`` (which runs a loop of its own)
    or a ``gatebot`` child process to talk to."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def go() -> None:
            async with BingXSimulator(options) as sim:
                box["sim"], box["stop"] = sim, asyncio.Event()
                ready.set()
                await box["stop"].wait()

        box["loop"] = asyncio.new_event_loop()
        box["loop"].run_until_complete(go())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30), "the simulator did not start"
    try:
        yield box["sim"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
