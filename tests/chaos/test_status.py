"""`gatebot status` reads each instance's state from journals written by another process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import PaperSession
from tests.helpers import gatebot

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize(("point", "state"), [("entry_sent", "entering"), ("stop_confirmed", "protected"),
                                              ("exit_sent", "exiting")])
def test_status_after_a_kill(tmp_path: Path, point: str, state: str, paper_session: PaperSession) -> None:
    config = paper_session()
    assert gatebot("run", str(config), env={"GATEBOT_CRASH_AT": point}).returncode == -9
    out = gatebot("status", str(tmp_path / "state"))
    assert out.returncode == 0, out.stderr
    line = out.stdout.splitlines()[0]
    assert line.startswith(f"kt: {state} "), out.stdout
    if state != "entering":
        assert "stop " in line and re.search(r"\(kt-[0-9a-z]{5}-1-s1\)", line), line
    assert "--enter--> entering" in out.stdout


def test_status_flat(tmp_path: Path, paper_session: PaperSession) -> None:
    config = paper_session(bars=5)  # too little history for a decision
    assert gatebot("run", str(config)).returncode == 0
    out = gatebot("status", str(tmp_path / "state"))
    assert out.stdout.startswith("kt: flat"), out.stdout
    assert "    reconciled " in out.stdout and "(flat; 0 intents in 1 round(s)" in out.stdout, out.stdout


def test_status_flat_after_a_trade(tmp_path: Path, paper_session: PaperSession) -> None:
    config = paper_session()
    assert gatebot("run", str(config), env={"GATEBOT_CRASH_AT": "entry_intent_committed:2"}).returncode == -9
    out = gatebot("status", str(tmp_path / "state"))
    assert "--settled--> flat" in out.stdout and out.stdout.startswith("kt: entering"), out.stdout


def test_status_names_a_damaged_journal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "broken.sqlite").write_bytes(b"\x00garbage" * 64)
    out = gatebot("status", str(state))
    assert "broken: ERROR" in out.stdout and "broken.sqlite" in out.stdout
