"""Logs a person can read: one line per transition, order and fill on the terminal during ``run``; JSON lines to a
rotating file in the state dir; never a line of the ``transitions`` library, at any level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import gatebot, write_paper_session


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_run_says_each_transition_order_and_fill_in_one_line_and_keeps_json_lines(tmp_path: Path,
                                                                                   verbose: bool) -> None:
    config = write_paper_session(tmp_path, bars=200)
    out = gatebot("run", str(config), *(["-v"] if verbose else []))
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    trade = [line for line in lines if " gatebot.trade: " in line]
    assert any("kt: flat --enter--> entering" in line for line in trade), out.stderr[-2000:]
    assert any(" kt: order entry kt-" in line for line in trade)
    assert any(" kt: order stop kt-" in line and " @ " in line for line in trade)
    assert any(" kt: fill kt-" in line for line in trade)
    if not verbose:
        assert all(" gatebot.trade: " in line or " WARNING " in line or " ERROR " in line or " gatebot.api: " in line
                   for line in lines), lines
    assert not any("transitions" in line.split(": ")[0] for line in lines), "the transitions library's chatter"
    path = tmp_path / "state" / "gatebot.log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"time_ms", "level", "logger", "message"} <= set(records[0])
    assert sum(r["logger"] == "gatebot.trade" for r in records) == len(trade)
    assert not any(r["logger"].startswith("transitions") for r in records)
    assert any(r["logger"] == "gatebot.engine" and "reconciled" in r["message"] for r in records), "INFO kept"


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_the_transitions_library_says_nothing_at_any_level(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from gatebot.app import logs

    logs.setup(verbose=True)
    try:
        logging.getLogger("transitions.core").log(getattr(logging, level), "Finished processing state flat")
        logging.getLogger("gatebot.engine").warning("kept")
        err = capsys.readouterr().err
        assert "kept" in err and "Finished processing" not in err
    finally:
        logs.setup(verbose=False)
