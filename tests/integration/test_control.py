"""The operator's commands through the state machine and the journal: a paused instance still exits and its stop
still guards; a close is the state table's manual_close; every command journaled, idempotent, refused with a
reason where it does not apply; a paused instance restarts paused; kill -9 while paused (the chaos driver)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gatebot.app import control
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.journal import Journal, JournalUnwritable
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.integration.sessions import SYMBOL, Session, bingx_config, running

TOKEN = "test-token-0123456789"
API = '[api]\nenabled = true\nport = 0\n'


def write_config(tmp: Path, sim: BingXSimulator, params: str, *, api: bool = True) -> Path:
    path = bingx_config(tmp, sim, attached=False, params=params)
    if api:
        path.write_text(path.read_text() + API)
    return path


@asynccontextmanager
async def bot(tmp: Path, monkeypatch: pytest.MonkeyPatch, *, params: str = "{ every = 2 }",
              sim: BingXSimulator | None = None) -> AsyncIterator[Session]:
    """The bot with its API on a simulator in manual mode (a new one, or ``sim``), started and reconciled."""
    async with _sim(sim) as sim:
        opts = sim.options
        monkeypatch.setenv("SIM_BINGX_KEY", opts.api_key)
        monkeypatch.setenv("SIM_BINGX_SECRET", opts.secret)
        monkeypatch.setenv("GATEBOT_API_TOKEN", TOKEN)
        config = load_config(write_config(tmp, sim, params))
        runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable))
        async with running(sim, runner, tmp / "state" / "it.sqlite") as s:
            yield s


@asynccontextmanager
async def _sim(sim: BingXSimulator | None) -> AsyncIterator[BingXSimulator]:
    if sim is not None:
        yield sim
        return
    async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as new:
        yield new


def controls(path: Path) -> list[dict[str, Any]]:
    journal = Journal(path, readonly=True)
    try:
        return journal.controls()
    finally:
        journal.close()


def stops_on_exchange(s: Session) -> list[str]:
    return [o.view().client_id for o in s.sim.account_view().core.open_orders(SYMBOL) if "-s" in o.view().client_id]


def test_a_paused_instance_still_exits_on_its_signal_and_its_stop_still_fires_but_enters_no_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch) as s:  # enters on candles 1, 3, 5 ..., exits a candle after each
            await s.candles_until(lambda: s.state == "protected", "the first position protected")
            assert control.apply(s.runner, "it", "pause", source="test", reason="news") == "it: active -> reducing"
            assert control.apply(s.runner, "it", "pause", source="test") == "it: paused already (no new entries)"
            assert stops_on_exchange(s), "the stop stays on the exchange while paused"
            await s.candles_until(lambda: s.state == "flat", "the exit signal taken while paused")
            assert ("protected", "exit_signal", "exiting") in s.transitions()
            for _ in range(4):  # entries would come every other candle
                before = s.runner.bars
                await s.sim.advance(1)
                await s.until(lambda before=before: s.runner.bars > before, "a candle")
                await s.settle()
            assert s.state == "flat" and [t for t in s.transitions() if t[1] == "enter"] == [("flat", "enter",
                                                                                            "entering")]
            control.apply(s.runner, "it", "resume", source="test")
            await s.candles_until(lambda: s.state == "protected", "an entry again once resumed")
            control.apply(s.runner, "it", "pause", source="test")
            s.sim.faults.fire_stops_now(SYMBOL)
            await s.until(lambda: s.state == "flat", "the stop filled while paused")
            assert any(t[1] == "stop_filled" for t in s.transitions())
            assert await s.violations() == []
        rows = controls(tmp_path / "state" / "it.sqlite")
        assert [(r["command"], r["outcome"], r["trading_state"]) for r in rows] == [
            ("pause", "done", "reducing"), ("pause", "unchanged", "reducing"), ("resume", "done", "active"),
            ("pause", "done", "reducing")]
        assert rows[0]["source"] == "test" and rows[0]["reason"] == "news" and rows[0]["ts_ms"] > 0

    asyncio.run(go())


def test_close_is_the_manual_close_path_journaled_first_idempotent_and_refused_where_it_does_not_apply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 0 }") as s:
            with pytest.raises(control.Refused, match="no open position"):
                control.apply(s.runner, "it", "close", source="test")
            await s.candles_until(lambda: s.state == "protected", "protected")
            message = control.apply(s.runner, "it", "close", source="test", reason="done for today")
            assert message.startswith("it: closing position 1")
            again = control.apply(s.runner, "it", "close", source="test")
            assert "closing already" in again
            await s.until(lambda: s.state == "flat", "closed by the operator")
            assert ("protected", "manual_close", "exiting") in s.transitions()
            assert ("exiting", "close_filled", "exited_manual") in s.transitions()
            assert not stops_on_exchange(s), "the stop is canceled once the position is closed"
            control.apply(s.runner, "it", "halt", source="test")
            with pytest.raises(control.Refused, match="halted"):
                control.apply(s.runner, "it", "close", source="test")
            with pytest.raises(control.Refused, match="resume it first"):
                control.apply(s.runner, "it", "pause", source="test")
            with pytest.raises(KeyError):
                control.apply(s.runner, "nope", "pause", source="test")
            assert await s.violations() == []
        rows = controls(tmp_path / "state" / "it.sqlite")
        assert [(r["command"], r["outcome"]) for r in rows] == [("close", "done"), ("halt", "done")]

    asyncio.run(go())


def test_a_halted_instance_decides_nothing_and_stays_halted_across_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as sim:
            async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 3 }", sim=sim) as s:
                await s.candles_until(lambda: s.state == "protected", "protected")
                control.apply(s.runner, "it", "halt", source="test", reason="maintenance")
                for _ in range(4):  # the exit signal (candle 3) is not taken: no new orders
                    before = s.runner.bars
                    await s.sim.advance(1)
                    await s.until(lambda before=before: s.runner.bars > before, "a candle")
                    await s.settle()
                assert s.state == "protected" and stops_on_exchange(s), "halted: the position and its stop stay"
            async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 3 }", sim=sim) as s:
                assert s.engine.trading_state == "halted"
                assert await s.violations() == []

    asyncio.run(go())


def test_flatten_pauses_every_instance_and_closes_its_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            results = control.flatten(s.runner, source="test")
            assert results["it"][0], results
            await s.until(lambda: s.state == "flat", "flattened")
            assert s.engine.trading_state == "reducing"
            assert control.flatten(s.runner, source="test") == {"it": (True, "it: paused already (no new entries); "
                                                                       "it: flat")}


            def refused(*args: Any) -> None:
                raise JournalUnwritable("journal it.sqlite cannot be written (disk full)")

            monkeypatch.setattr(s.runner.journals["it"], "add_control", refused)
            with pytest.raises(control.Refused, match=r"cannot be written \(disk full\); nothing done"):
                control.apply(s.runner, "it", "resume", source="test")
            assert s.engine.trading_state == "reducing", "nothing done unjournaled"

    asyncio.run(go())


# --- kill -9 while paused ---------------------------------------------------------------------------


@pytest.mark.chaos
def test_kill_9_while_paused_restarts_paused_with_the_invariants_holding() -> None:
    """The chaos driver's bot in a child process: paused through the CLI, killed (SIGKILL), restarted on the same
    journal: still paused (through the API and the journal), no entry while candles play, I1-I5 hold."""
    from tests.chaos.driver import INSTANCE, Chaos
    from tests.chaos.simthread import wait_for

    workdir = Path(tempfile.mkdtemp(prefix="gatebot-paused-"))
    chaos = Chaos(workdir, seed=5, attached=False)
    (workdir / "logs").mkdir(parents=True)
    chaos.sim.start()
    os.environ["GATEBOT_API_TOKEN"] = TOKEN
    try:
        chaos.write_config(**{'[[instances]]': API + '[[instances]]'})
        assert chaos.recovered(chaos.spawn(None)), chaos.result.violations
        for _ in range(6):
            chaos.sim.advance(1)
        state_dir = workdir / "state"
        from tests.helpers import gatebot

        done = gatebot("pause", INSTANCE, str(state_dir), "--reason", "chaos")
        assert done.returncode == 0, done.stderr
        chaos.kill()
        assert chaos.recovered(chaos.spawn(None)), chaos.result.violations
        assert Journal(chaos.journal, readonly=True).trading_state() == "reducing"
        info = json.loads((state_dir / "api.json").read_text())

        def get(path: str) -> Any:
            req = urllib.request.Request(info["url"] + path, headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())

        assert get("/api/instances")[0]["trading_state"] == "reducing"
        journal = Journal(chaos.journal, readonly=True)
        entries = journal.conn.execute("SELECT count(*) FROM transitions WHERE trigger = 'enter'").fetchone()[0]
        journal.close()
        for _ in range(8):  # the scripted strategy would enter every other candle: each one seen by the bot
            last = get(f"/api/instances/{INSTANCE}/candles?limit=1")[-1]["time_ms"]
            chaos.sim.advance(1)
            assert wait_for(lambda last=last: get(f"/api/instances/{INSTANCE}/candles?limit=1")[-1]["time_ms"] > last,
                            30), "the candle reached the bot"
        chaos.kill()
        assert chaos.recovered(chaos.spawn(None)), chaos.result.violations
        journal = Journal(chaos.journal, readonly=True)
        try:
            after = journal.conn.execute("SELECT count(*) FROM transitions WHERE trigger = 'enter'").fetchone()[0]
            assert journal.trading_state() == "reducing"
        finally:
            journal.close()
        assert after == entries, "no entry while paused"
        assert [str(v) for v in chaos.sim.violations(chaos.journal, instance=INSTANCE, symbol=SYMBOL)] == []
        assert chaos.result.violations == [] and chaos.result.unexpected_exits == []
    finally:
        os.environ.pop("GATEBOT_API_TOKEN", None)
        chaos.kill()
        chaos.sim.stop()
