"""Damaged state: truncated, corrupted, foreign and too-new journals each stop with a clear message and no
trading; a second process on the same state directory refuses and says why, and the first keeps going.

Every case runs the CLI in a child process, as a user would, on a paper account persisted to a file: the
account's orders before and after tell whether anything traded.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gatebot.core.journal import Journal
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from tests.conftest import PaperSession
from tests.helpers import ROOT, gatebot, paper_violations


def _orders(tmp: Path) -> int:
    account = tmp / "account.json"
    if not account.exists():
        return 0
    return len(PaperExchange(PaperOptions(state_file=str(account))).core.account.orders)


def _drop_wal(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # every page after the first: headers and cells
        data[offset:offset + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)


def _foreign(path: Path) -> None:
    path.unlink()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users(name) VALUES ('alice')")
    conn.commit()
    conn.close()


def _emptied(path: Path) -> None:
    path.write_bytes(b"")  # a disk that filled up, a copy cut short: it used to start a fresh journal silently


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def _broken_chain(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM transitions WHERE seq = (SELECT min(seq) FROM transitions WHERE src != dst AND seq > "
                 "(SELECT max(seq) / 2 FROM transitions))")  # a state change: the chain breaks there
    conn.commit()
    conn.close()


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, r"unreadable or corrupted|malformed|not a gatebot journal|inconsistent|damaged"),
    "corrupted": (_corrupt, r"unreadable or corrupted|malformed|not a gatebot journal|inconsistent|damaged"),
    "not-sqlite": (_garbage, r"unreadable or corrupted"),
    "foreign-sqlite": (_foreign, r"is not a gatebot journal \(tables: \['users'\]\)"),
    "newer-schema": (_newer, r"schema version 99, newer than this gatebot understands"),
    "zero-bytes": (_emptied, r"is damaged: 0 bytes and no tables"),
    "lost-transition": (_broken_chain, r"inconsistent at transition"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_journal_ends_with_a_clear_message_and_no_trading(tmp_path: Path, case: str,
        paper_session: PaperSession) -> None:
    damage, message = CASES[case]
    config = paper_session(bars=200)
    first = gatebot("run", str(config))
    assert first.returncode == 0, first.stderr
    journal = tmp_path / "state" / "kt.sqlite"
    orders_before = _orders(tmp_path)
    assert orders_before > 0, "the first session traded"
    _drop_wal(journal)
    damage(journal)
    paper_session(bars=400)  # 200 more candles to trade on, if anything would
    second = gatebot("run", str(config))
    assert second.returncode in (2, 3), (second.returncode, second.stdout, second.stderr)
    assert str(journal) in second.stderr, second.stderr
    import re

    assert re.search(message, second.stderr), second.stderr
    assert "Traceback" not in second.stderr
    assert _orders(tmp_path) == orders_before, "nothing traded on a damaged journal"
    status = gatebot("status", str(tmp_path / "state"))  # damaged: named, and exit status 2
    assert status.returncode == 2 and "kt: ERROR" in status.stdout, status.stdout


def test_a_second_process_on_the_same_state_directory_refuses_and_the_first_keeps_running(tmp_path: Path,
        paper_session: PaperSession) -> None:
    config = paper_session(bars=80, speed=3000.0)  # 0.1 s a candle: ~8 s
    env = {k: v for k, v in os.environ.items() if k != "GATEBOT_CRASH_AT"}
    first = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "run", str(config)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = tmp_path / "state" / "kt.sqlite"
        deadline = time.monotonic() + 20
        while not _has_transitions(journal):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first process never started trading"
            time.sleep(0.05)
        second = gatebot("run", str(config), timeout=60)
        assert second.returncode == 2, (second.stdout, second.stderr)
        assert f"state directory {tmp_path / 'state'} is in use by another gatebot process (pid {first.pid}); " \
               "refusing to start a second one" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the first process is still running"
        _out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert "halted" not in err
    finally:
        if first.poll() is None:
            first.kill()
    assert paper_violations(tmp_path) == []
    j = Journal(journal, readonly=True)
    try:
        assert j.conn.execute("SELECT count(*) FROM rejections").fetchone()[0] == 0
    finally:
        j.close()


def _has_transitions(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM transitions").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def test_a_new_journal_on_a_used_paper_account_is_refused_until_run_adopt(tmp_path: Path,
        paper_session: PaperSession) -> None:
    """Finding 1 on the paper exchange: killed with a position open and its stop working, the state folder
    set aside, started again: the new journal used to take over the old one's orders and ids. Now the start
    is refused with one line and exit status 2, nothing traded; ``run --adopt`` adopts and protects it."""
    config = paper_session(bars=200)
    killed = gatebot("run", str(config), env={"GATEBOT_CRASH_AT": "stop_confirmed"})
    assert killed.returncode == -9, killed.stderr
    (tmp_path / "state").rename(tmp_path / "state.bak")
    orders_before = _orders(tmp_path)
    refused = gatebot("run", str(config))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("error:")]
    assert re.search(r"is new, but the account holds a (long|short) position", line), line
    assert "gatebot run --adopt" in line and "Traceback" not in refused.stderr
    assert _orders(tmp_path) == orders_before, "nothing traded, nothing canceled"
    adopted = gatebot("run", "--adopt", str(config))
    assert adopted.returncode == 0, adopted.stderr
    assert paper_violations(tmp_path) == []
    j = Journal(tmp_path / "state" / "kt.sqlite", readonly=True)
    try:
        first = j.conn.execute("SELECT src, trigger FROM transitions ORDER BY seq LIMIT 1").fetchone()
        assert tuple(first) == ("flat", "adopt")
    finally:
        j.close()
