"""Faults beyond kill -9, each ending safe: start-up failures in one line with their exit status, signals
during a replay, a user stream that goes quiet or half-open, an entry whose fill report is lost, a busy
reply during recovery, a journal whose disk refuses writes, a wall clock that steps."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gatebot.app.cli import main
from gatebot.app.runner import YIELD_EVERY, Runner
from gatebot.core.config import load_config
from gatebot.core.market import generate
from gatebot.exchanges.bingx import constants
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.conftest import PaperSession
from tests.helpers import gatebot
from tests.integration.sessions import SYMBOL, BingXSession, bingx_config, sim_in_thread

HOLD = "{ enter_on = 1, exit_on = 0 }"


def _bingx_config(tmp: Path, sim: BingXSimulator, *, options: str = "", protection: str = "") -> Path:
    """The faults' bot: separate stops, enters on the first candle and holds."""
    return bingx_config(tmp, sim, attached=False, params=HOLD, options=options, protection=protection)


# --- start-up ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "secret"), [("sim-key", "not-the-secret"), ("not-the-key", "sim-secret")],
                         ids=["wrong-secret", "wrong-key"])
def test_credentials_refused_at_start_end_the_run_in_one_line_with_exit_status_4(tmp_path: Path, key: str,
                                                                                   secret: str) -> None:
    with sim_in_thread(SimOptions(mode="manual", history_bars=120)) as sim:
        config = _bingx_config(tmp_path, sim)
        out = gatebot("run", str(config), env={"SIM_BINGX_KEY": key, "SIM_BINGX_SECRET": secret}, timeout=60)
    assert out.returncode == 4, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "restarting" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: BingX 100"), out.stderr  # 100001 / 100413
    assert "not-the-secret" not in out.stderr


def _immutable(path: Path) -> bool:
    """Make ``path`` immutable (chattr +i): the one way to refuse writes to root, who ignores modes."""
    chattr = shutil.which("chattr")
    return chattr is not None and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0


def _mutable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.parametrize("kind", ["a-file", "read-only"])
def test_a_state_dir_that_cannot_be_written_is_refused_in_one_line_with_exit_status_2(
        tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str], paper_session: PaperSession) -> None:
    config = paper_session(bars=20)
    state = tmp_path / "state"
    if kind == "a-file":
        state.write_text("not a folder")
    else:
        state.mkdir()
        if not _immutable(state):
            pytest.skip("chattr +i is not available here: root cannot be refused a write another way")
    try:
        for command in ("check-config", "run"):
            assert main([command, str(config)]) == 2, command
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"state_dir {state}" in err[0], err
            assert ("not a folder" if kind == "a-file" else "cannot be written") in err[0]
        out = gatebot("run", str(config))  # a child process, as a user runs it: no traceback either
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    finally:
        if kind == "read-only":
            _mutable(state)


def test_status_and_report_exit_2_on_no_journals_and_on_a_damaged_one(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
        paper_session: PaperSession) -> None:
    state = tmp_path / "state"
    for command in (["status"], ["report", "--no-png"]):
        assert main([command[0], str(state), *command[1:]]) == 2, f"{command} of a missing folder"
        assert "does not exist" in capsys.readouterr().err
    state.mkdir()
    for command in (["status"], ["report", "--no-png"]):
        assert main([command[0], str(state), *command[1:]]) == 2, f"{command} of an empty folder"
        assert "no journals" in capsys.readouterr().err
    config = paper_session(bars=60)
    assert main(["run", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", str(state)]) == 0
    assert main(["report", str(state), "--no-png"]) == 0
    (state / "broken.sqlite").write_bytes(b"\x00garbage" * 64)
    capsys.readouterr()
    assert main(["status", str(state)]) == 2
    out = capsys.readouterr().out
    assert "broken: ERROR" in out and "kt: " in out, out  # the damaged one named, the good one still shown
    assert main(["report", str(state), "--no-png"]) == 2
    assert "broken.sqlite" in capsys.readouterr().err


REPLAY = """
mode = "replay"
state_dir = "{state}"
[exchanges.paper]
type = "paper"
[[instances]]
name = "rp"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ fast = 3, slow = 8, fraction = 0.5 }}
"""


def _replay_runner(tmp: Path, candles: AsyncIterator[Any], *, group_commit: int | None = None) -> Runner:
    path = tmp / "replay.toml"
    grouping = "" if group_commit is None else f"[journal]\ngroup_commit = {group_commit}\n"
    path.write_text(REPLAY.format(state=tmp / "state") + grouping)
    config = load_config(path)
    return Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable), candle_source=candles)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_replay_within_a_few_hundred_candles(tmp_path: Path, sig: signal.Signals) -> None:
    sent_at = 300

    async def candles() -> AsyncIterator[Any]:
        for i, c in enumerate(generate(seed=5, symbol="BTC-USDT", interval="5m", bars=20_000)):
            if i == sent_at:
                os.kill(os.getpid(), sig)  # as Ctrl-C or `kill` would, while the replay runs flat out
            yield c

    runner = _replay_runner(tmp_path, candles())
    asyncio.run(runner.run())
    # the loop takes a few turns to run the handler (the wakeup pipe, then the callback): milliseconds
    assert sent_at <= runner.bars <= sent_at + 5 * YIELD_EVERY <= 2_000, runner.bars  # of 20,000


# --- the bot on the simulator ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["silence_user_streams", "freeze_user_streams"])
def test_a_user_stream_without_data_is_reconnected_and_reconciled_within_the_push_cadence(
        bingx_session: BingXSession, fault: str) -> None:
    async def go() -> None:
        async with bingx_session(attached=False, params=HOLD, options="user_stream_silence_s = 1.5\n",
                       sim_options={"config_push_interval_s": 0.5, "ping_interval_s": 0.5}) as s:
            user = s.runner.adapters["bx"].user
            before = user.connections
            getattr(s.sim.faults, fault)()
            # websockets' own pings would take 40 s on a half-open socket, and never notice a quiet one
            await s.until(lambda: user.silences >= 1 and user.connections > before, "a reconnect for silence",
                          timeout=10)
            await s.candles_until(lambda: s.state == "protected", "protected on the new stream")
            assert await s.violations() == []

    asyncio.run(go())


def test_an_entry_whose_fill_report_never_comes_is_asked_about_and_protected(
        bingx_session: BingXSession) -> None:
    async def go() -> None:
        # the stream watch off: only the entry's own deadline can notice the lost fill
        async with bingx_session(attached=False, params=HOLD, options="user_stream_silence_s = 0\n",
                       protection="fill_timeout_s = 0.5") as s:
            s.sim.faults.silence_user_streams()  # pings go on, the fill push is lost
            before = s.runner.bars
            await s.sim.advance(1)
            await s.until(lambda: s.runner.bars > before, "the candle")
            await s.until(lambda: s.state == "protected", "protected without any fill push", timeout=10)
            assert await s.violations() == []

    asyncio.run(go())


def test_a_busy_reply_to_a_recovery_query_is_retried(bingx_session: BingXSession) -> None:
    async def go() -> None:
        async with bingx_session(attached=False, params=HOLD) as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            engine = s.engine
            s.sim.faults.fail_next(constants.ORDER, "busy")  # 100500 to recovery's first order query
            reconciles = s.sim.faults.pending()
            s.sim.faults.drop_user_streams()  # the reconnect makes the engine reconcile
            await s.until(lambda: s.sim.faults.pending() < reconciles, "the busy reply to be given")
            await s.until(lambda: engine.idle and not engine._recovering, "recovery to finish")
            inst = s.runner.instances[0]
            assert inst.failures == 0 and s.engine is engine, "one busy reply aborted recovery"
            assert s.state == "protected" and await s.violations() == []

    asyncio.run(go())


# --- a journal that cannot be written ----------------------------------------------------------------------


FAULTS = {"read-only": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
          "full": ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1073741823")}
"""sqlite refusing writes on the bot's own connection as a read-only file does (SQLITE_READONLY, "attempt to
write a readonly database") and as a full disk does (SQLITE_FULL, "database or disk is full": the file may
not grow by a page): root ignores file modes, and no filesystem can be filled here safely. Both reach the
bot through the same seam a real disk's refusal does (sqlite3.OperationalError from the journal's write)."""


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_instance_whose_journal_cannot_be_written_sends_nothing_says_so_once_and_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    from gatebot.exchanges.paper.exchange import PaperExchange

    off_at, on_at = 150, 400
    seen = [0]
    sent: list[tuple[int, str, bool]] = []  # (candle, client id, its intent row in the journal when sent)
    runner_box: dict[str, Runner] = {}

    def journaled(cid: str) -> bool:
        journal = runner_box["r"].journals["rp"]
        return journal.conn.execute("SELECT 1 FROM intents WHERE client_id = ?", (cid,)).fetchone() is not None

    for name in ("submit", "cancel"):
        original = getattr(PaperExchange, name)

        async def record(self: Any, cmd: Any, _original: Any = original) -> Any:
            sent.append((seen[0], cmd.client_id, journaled(cmd.client_id)))
            return await _original(self, cmd)

        monkeypatch.setattr(PaperExchange, name, record)
    off, on = FAULTS[fault]

    async def candles() -> AsyncIterator[Any]:
        for i, c in enumerate(generate(seed=5, symbol="BTC-USDT", interval="5m", bars=700, volatility=0.004)):
            seen[0] = i
            if i in (off_at, on_at):
                conn = runner_box["r"].journals["rp"].conn
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute((off if i == off_at else on).format(pages=pages))
            yield c

    # Every transaction committed on its own (as paper and live do): a refused write loses nothing, so the
    # instance can pause and come back. (Grouped commits lost to a full disk halt: the next test.)
    runner = _replay_runner(tmp_path, candles(), group_commit=1)
    runner_box["r"] = runner
    with caplog.at_level(logging.WARNING, logger="gatebot.runner"):
        asyncio.run(runner.run())
    said = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    # read-only refuses every write: one outage, said once. A full file takes what fits in its pages, so
    # the instance may trade a while between refusals (each candle is 5 minutes): each outage said once.
    assert (len(said) == 1 if fault == "read-only" else 1 <= len(said) <= 3) and "sending nothing" in said[0], said
    assert any("writable again" in r.getMessage() for r in caplog.records)
    if fault == "read-only":  # a full file still takes what fits in its pages: that is journaled, then sent
        assert not [s for s in sent if off_at <= s[0] < on_at], "a command was sent while the journal refused writes"
    assert [s for s in sent if s[0] < off_at] and [s for s in sent if s[0] > on_at], "it traded before and after"
    assert all(row for _, _, row in sent), "a command was sent without its journal row"
    assert runner.instances[0].halted is None and runner.instances[0].unwritable is None


def test_a_full_disk_that_loses_a_replays_grouped_commits_halts_the_instance_naming_the_loss(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A replay commits in groups; a full disk makes sqlite roll the whole open group back, commands of it
    already sent to the paper exchange. Pausing and coming back would trade on a journal behind what was
    sent: the instance halts with one line that says what was lost and what to do."""
    seen = [0]
    runner_box: dict[str, Runner] = {}

    async def candles() -> AsyncIterator[Any]:
        for i, c in enumerate(generate(seed=5, symbol="BTC-USDT", interval="5m", bars=700, volatility=0.004)):
            seen[0] = i
            if i == 150:
                conn = runner_box["r"].journals["rp"].conn
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(FAULTS["full"][0].format(pages=pages))
            yield c

    runner = _replay_runner(tmp_path, candles())  # the default grouping (1000 transactions a commit)
    runner_box["r"] = runner
    with caplog.at_level(logging.WARNING, logger="gatebot.runner"):
        asyncio.run(runner.run())
    halted = runner.instances[0].halted
    assert halted is not None and "lost" in halted and "grouped transactions" in halted, halted
    assert "run the replay again" in halted


def test_live_an_instance_suspended_on_its_journal_comes_back_by_itself_within_seconds(
        bingx_session: BingXSession) -> None:
    async def go() -> None:
        async with bingx_session(attached=False, params=HOLD) as s:
            inst = s.runner.instances[0]
            off, on = FAULTS["read-only"]
            journal = s.runner.journals["it"]
            journal.conn.execute(off)
            before = s.runner.bars
            await s.sim.advance(1)  # the entry's candle: its transition cannot be journaled
            await s.until(lambda: s.runner.bars > before, "the candle")
            await s.until(lambda: inst.unwritable is not None, "the instance suspended")
            assert await s.sim.account_view().open_orders(SYMBOL) == [] and s.engine is None, "nothing sent"
            journal.conn.execute(on)
            # back on the runner's tick (seconds), not after a candle: no candle is played meanwhile
            await s.until(lambda: inst.unwritable is None and s.engine is not None
                          and s.engine.status == "running", "the instance back", timeout=10)
            await s.candles_until(lambda: s.state == "protected", "protected after coming back")
            assert await s.violations() == []

    asyncio.run(go())


