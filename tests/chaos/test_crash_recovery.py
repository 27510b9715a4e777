"""kill -9 at every step of a trade's life, restart on the same journal and the same persisted paper
account, and check I1-I5 against that account."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatebot.core.crashpoints import MOVE_POINTS, POINTS, TAKE_PROFIT_POINTS
from gatebot.core.journal import Journal
from tests.conftest import PaperSession
from tests.helpers import gatebot, paper_violations

pytestmark = pytest.mark.chaos


TAKE_PROFIT_AND_TRAILING = ("leveraged_sl_pct = 0.04,", "leveraged_sl_pct = 0.04, leveraged_tp_pct = 0.04, "
                            "trailing_pct = 0.005,")
"""The session's protection with a take-profit and a trailing stop: the points of both are reached."""


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_then_recover(tmp_path: Path, point: str, paper_session: PaperSession) -> None:
    config = paper_session()
    if point in (*TAKE_PROFIT_POINTS, *MOVE_POINTS):
        config.write_text(config.read_text().replace(*TAKE_PROFIT_AND_TRAILING))
    killed = gatebot("run", str(config), env={"GATEBOT_CRASH_AT": f"{point}:2"})
    assert killed.returncode == -9, f"the crash point {point} was not reached:\n{killed.stdout}\n{killed.stderr}"
    journal = Journal(tmp_path / "state" / "kt.sqlite", readonly=True)
    crashed_in = journal.fold()
    journal.close()
    assert crashed_in is not None

    restarted = gatebot("run", str(config))
    assert restarted.returncode == 0, restarted.stderr
    assert paper_violations(tmp_path) == []
    journal = Journal(tmp_path / "state" / "kt.sqlite", readonly=True)
    try:
        assert journal.fold().seq > crashed_in.seq, "trading went on after the recovery"
        rejected = journal.conn.execute("SELECT trigger, message FROM rejections").fetchall()
        assert rejected == []
    finally:
        journal.close()


def test_a_clean_run_holds_the_invariants(tmp_path: Path, paper_session: PaperSession) -> None:
    config = paper_session()
    done = gatebot("run", str(config))
    assert done.returncode == 0, done.stderr
    assert "trades" in done.stdout
    assert paper_violations(tmp_path) == []
