"""gatebot sweep for real: the baseline's p-value as a constraint on real trials, mistakes refused in one line
(exit 2); and 200 trials of sma_cross over the shared 5m file on local processes, the driver killed
with SIGKILL mid-sweep (when the storage says enough trials finished, in the middle of a batch) and started
again, finishes with 200 distinct trials and gives the same table as the same sweep on a local Ray instance;
the best config it writes replays (gatebot replay) to the figure the sweep gave it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.helpers import ROOT, SHARED_5M, example_text, gatebot

needs_shared_5m = pytest.mark.skipif(not SHARED_5M.is_file(), reason=f"the shared candle file {SHARED_5M} is absent")

CONFIG = example_text("sweep_sma_cross", "state")
"""The README's example sweep: sma_cross over fast, slow and the stop, TPE."""
TRIALS, BATCH = 200, 16
"""The example's trials and batch (the kill lands mid-batch after 40 of them; the assertions below count them)."""


def _states(out: Path) -> dict[str, int]:
    """Trials per state, read from the study's storage as the driver writes it (0 before it exists)."""
    path = out / "study.sqlite"
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the tables are not made yet
        return {}


def _command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gatebot.app.cli", "sweep", str(config), "--candles", str(SHARED_5M),
            "--workers", "2", "--out", str(out), *extra]


@needs_shared_5m
def test_a_killed_sweep_resumes_to_the_same_table_as_on_ray(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG)
    local = tmp_path / "local"
    env = {k: v for k, v in os.environ.items() if k != "GATEBOT_CRASH_AT"}
    driver = subprocess.Popen(_command(config, local), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:  # mid-batch: some of this batch told, others not (so every trial of it was asked)
            done = _states(local).get("COMPLETE", 0)
            if done >= 40 and done % BATCH:
                break
            assert driver.poll() is None, f"the sweep ended before it could be killed: {driver.communicate()}"
            assert time.monotonic() < deadline, f"no 40 finished trials in time: {_states(local)}"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # its workers, orphaned by its death (its own group)
            os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
    killed = _states(local)
    assert 40 <= killed.get("COMPLETE", 0) < TRIALS and killed.get("RUNNING", 0) >= 1, killed

    again = gatebot(*_command(config, local)[3:], timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"{TRIALS} trials ({TRIALS} completed, 0 pruned)" in again.stdout
    assert f"resumed: {killed['RUNNING']} interrupted trial(s) run again, 0 replaced" in again.stdout, again.stdout
    assert _states(local) == {"COMPLETE": TRIALS}
    rows = msgspec.json.decode((local / "sweep.json").read_bytes())["trials"]
    assert sorted(r["trial"] for r in rows) == list(range(TRIALS))
    assert sorted(p.name for p in (local / "trials").iterdir()) == [f"{n:05d}" for n in range(TRIALS)]
    assert len({(r["params.fast"], r["params.slow"], r["protection.leveraged_sl_pct"]) for r in rows}) > 100

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the optional extra gatebot[ray], which make's set-up installs): "
                    "the local half passed")
    on_ray = tmp_path / "ray"
    ray = gatebot(*_command(config, on_ray, "--ray", "local")[3:], timeout=900)
    assert ray.returncode == 0, ray.stderr
    assert "on Ray at local" in ray.stdout
    assert (on_ray / "sweep.csv").read_bytes() == (local / "sweep.csv").read_bytes()

    best = min(rows, key=lambda r: r["rank"])
    replay = gatebot("replay", str(local / "best-1.toml"), "--candles", str(SHARED_5M))
    assert replay.returncode == 0, replay.stderr
    from gatebot.app.evaluation import evaluate, read_journal
    from gatebot.core.journal import Journal
    from gatebot.core.market import read_candles

    journal = Journal(local / "best-1" / "sma.sqlite", readonly=True)
    try:
        ev = evaluate(read_journal(journal), read_candles(SHARED_5M).rows)
    finally:
        journal.close()
    assert ev["parts"][0]["compound_return_pct"] == best["objective"]


def test_the_p_value_constraint_on_real_trials(tmp_path: Path) -> None:
    """Each trial runs its random-entry baseline (3 runs here) after its replay: p = (k+1)/(3+1)."""
    from gatebot.app.executors import LocalExecutor
    from gatebot.app.sweep import load_sweep, run_sweep
    from gatebot.core.market import generate

    csv = tmp_path / "candles.csv"
    rows = [f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}"
            for c in generate(seed=5, symbol="BTC-USDT", interval="5m", bars=3000)]
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.replace(f"trials = {TRIALS}", "trials = 3\nmax_p_value = 0.5\nbaseline_runs = 3")
                      .replace('sampler = "tpe"', 'sampler = "random"'))
    with LocalExecutor(1) as executor:
        outcome = run_sweep(load_sweep(config), csv, tmp_path / "out", executor)
    assert outcome.completed == 3
    rows_out = msgspec.json.decode((tmp_path / "out" / "sweep.json").read_bytes())["trials"]
    assert all(r["p_value"] in (0.25, 0.5, 0.75, 1.0) for r in rows_out), rows_out
    assert all(r["feasible"] == (r["p_value"] <= 0.5) for r in rows_out)


def test_a_mistake_in_the_sweep_table_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(CONFIG.replace("fast = { low = 3, high = 20 }", "fast = { low = 30, high = 20 }"))
    csv = tmp_path / "candles.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n")
    done = gatebot("sweep", str(config), "--candles", str(csv))
    assert done.returncode == 2
    assert done.stderr.strip() == f"{config}: $.sweep.params.fast: low (30) must be below high (20)"
