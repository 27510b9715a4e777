"""The demo repeats itself: a lockstep simulator (examples/demo.toml) moves its market as the bot gets through it,
on the bot's virtual clock, so one seed gives byte-identical journals on every run, timed in market time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatebot.simulators.bingx.options import LOCKSTEP_START_MS
from tests.helpers import ROOT, gatebot

BARS = 80


def short_demo(tmp: Path) -> Path:
    """examples/demo.toml with a shorter market and its journals in ``tmp``."""
    text = (ROOT / "examples" / "demo.toml").read_text()
    assert 'mode = "lockstep"' in text and "bars = 576" in text
    path = tmp / "demo.toml"
    path.write_text(text.replace('state_dir = "../state/demo"', f'state_dir = "{tmp / "state"}"')
                    .replace("bars = 576", f"bars = {BARS}"))
    return path


def journals(state: Path) -> dict[str, str]:
    out = {}
    for name in ("btc", "eth"):
        conn = sqlite3.connect(state / f"{name}.sqlite")
        try:
            out[name] = "\n".join(conn.iterdump())
        finally:
            conn.close()
    return out


def run_once(config: Path, state: Path) -> tuple[str, dict[str, str]]:
    for f in state.glob("*"):
        f.unlink()
    done = gatebot("run", str(config), timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, journals(state)


def test_two_runs_of_the_seeded_demo_give_byte_identical_journals_in_market_time(tmp_path: Path) -> None:
    config = short_demo(tmp_path)
    state = tmp_path / "state"
    out1, first = run_once(config, state)
    out2, second = run_once(config, state)
    assert first == second
    assert out1 == out2
    assert f"{2 * (BARS - 1)} candles processed (paper, on the embedded BingX simulator)" in out1
    conn = sqlite3.connect(state / "btc.sqlite")
    try:
        times = [t for (t,) in conn.execute("SELECT ts FROM transitions")]
    finally:
        conn.close()
    assert times, "the demo's btc instance traded"
    # market time: within the simulated 80 candles of 5 minutes from the lockstep start, not the wall clock
    assert all(LOCKSTEP_START_MS <= t <= LOCKSTEP_START_MS + BARS * 300_000 for t in times)


def test_a_stalled_lockstep_ends_the_run_with_one_line_and_exit_4(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The driver gives up when the bot has not handled what it was sent within its limit (a bug, or a machine
    far too slow): the run ends as for an exchange that could not be used, one line naming it, no traceback."""
    from gatebot.app import embedded
    from gatebot.app.cli import main
    from gatebot.app.exit_codes import EXIT_EXCHANGE
    from gatebot.exchanges.bingx.adapter import BingXAdapter

    config = short_demo(tmp_path)
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))  # no port taken
    monkeypatch.setattr(embedded, "SETTLE_LIMIT_S", 0.2)
    monkeypatch.setattr(BingXAdapter, "busy", property(lambda self: (-1, 0)))  # never catches up with a frame
    assert main(["run", str(config)]) == EXIT_EXCHANGE
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == ("error: the embedded simulator's lockstep gave up: the bot did not handle the "
                                    "simulator's frames within 0.2 s (-1 of 0 read, 0 requests in flight)"), err
