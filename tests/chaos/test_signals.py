"""SIGINT / SIGTERM stop a session cleanly and leave the exchange stop in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gatebot.core.journal import Journal, JournalError
from tests.conftest import PaperSession
from tests.helpers import ROOT, paper_violations

pytestmark = pytest.mark.chaos


def wait_for_state(journal_path: Path, state: str, proc: subprocess.Popen[str], deadline_s: float = 60) -> None:
    """Poll the journal (another process's) until the instance reaches ``state``."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the session ended before reaching {state}: {proc.communicate()}"
        if journal_path.exists():
            try:
                journal = Journal(journal_path, readonly=True)
                try:
                    rec = journal.fold()
                finally:
                    journal.close()
            except JournalError:
                rec = None  # created but not yet initialised
            if rec is not None and rec.state == state:
                return
        time.sleep(0.02)
    raise AssertionError(f"no {state} within {deadline_s} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_session_and_the_stop_stays_on_the_exchange(tmp_path: Path, sig: int,
        paper_session: PaperSession) -> None:
    config = paper_session(bars=100_000, speed=6000)  # 0.05 s per 5m candle
    env = {k: v for k, v in os.environ.items() if k != "GATEBOT_CRASH_AT"}
    proc = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "run", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_state(tmp_path / "state" / "kt.sqlite", "protected", proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "candles processed" in out
    journal = Journal(tmp_path / "state" / "kt.sqlite", readonly=True)
    try:
        rec = journal.fold()
    finally:
        journal.close()
    assert rec is not None and rec.state in ("protected", "entering", "exiting", "flat")
    assert paper_violations(tmp_path) == []
    if rec.state == "protected":
        from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions

        account = PaperExchange(PaperOptions(state_file=str(tmp_path / "account.json")))
        assert [o.client_id for o in account.core.open_orders("BTC-USDT")] == [rec.stop_id]
