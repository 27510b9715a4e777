"""The journal: write-ahead rows, folding, idempotent fills, damaged files, single writer."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.core.events import OrderFilled, SubmitEntry
from gatebot.core.journal import SCHEMA_VERSION, Journal, JournalError, JournalLocked, JournalUnwritable
from gatebot.core.position import PositionRecord

D = Decimal


def rec(state: str, seq: int = 1) -> PositionRecord:
    return PositionRecord(state=state, seq=seq, symbol="BTC-USDT", side="long" if state != "flat" else None)


def test_fold_returns_the_last_record_and_checks_the_chain(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a.sqlite")
    assert j.fold() is None
    with j.transaction():
        j.add_transition(1, "flat", "enter", rec("entering"))
        j.add_transition(2, "entering", "stop_confirmed", rec("protected"))
    assert j.fold() == rec("protected")
    with j.transaction():
        j.add_transition(3, "flat", "enter", rec("entering", 2))  # does not start where the chain ended
    with pytest.raises(JournalError, match="inconsistent at transition 3"):
        j.fold()
    j.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a.sqlite")
    with pytest.raises(RuntimeError), j.transaction():
        j.add_transition(1, "flat", "enter", rec("entering"))
        j.add_intent(1, 1, SubmitEntry(client_id="a-1-e1", symbol="BTC-USDT", side="long", qty=D("0.01")))
        raise RuntimeError("crash before commit")
    assert j.fold() is None and j.intents() == {}
    j.close()


def test_intents_keep_their_latest_status(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a.sqlite")
    cmd = SubmitEntry(client_id="a-1-e1", symbol="BTC-USDT", side="long", qty=D("0.01"))
    with j.transaction():
        j.add_intent(1, 1, cmd)
        j.add_status(2, 1, "a-1-e1", "unknown", "timeout")
    (row,) = j.intents().values()
    assert row.command == cmd and row.status == "unknown" and row.detail == "timeout"
    j.close()


def test_a_fill_is_booked_once(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a.sqlite")
    f = OrderFilled(client_id="a-1-e1", trade_id="t1", qty=D("0.01"), price=D("60000"), cum_qty=D("0.01"),
                    fee=D("0.3"), realized_pnl=D("0"))
    assert j.add_fill(1, 1, f) is True
    assert j.add_fill(2, 1, f) is False
    assert j.is_booked("a-1-e1", "t1") and not j.is_booked("a-1-e1", "t2")
    assert j.realized() == (D("0"), D("0.3"))
    j.close()


def test_garbage_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalError, match=r"bad\.sqlite"):
        Journal(path)


def test_truncated_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    j = Journal(path)
    with j.transaction():
        for i in range(200):
            j.add_transition(i, "flat" if i % 2 == 0 else "entering", "x", rec("entering" if i % 2 == 0 else "flat"))
    j.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with pytest.raises(JournalError, match=r"t\.sqlite"):
        Journal(path).fold()


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people(name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a gatebot journal"):
        Journal(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    j = Journal(path)
    j.set_meta({"schema_version": str(SCHEMA_VERSION + 1)})
    j.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_second_process_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    j = Journal(path)
    code = (f"from gatebot.core.journal import Journal, JournalLocked\n"
            f"try:\n    Journal({str(path)!r})\nexcept JournalLocked as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in out.stdout and "in use by another gatebot process" in out.stdout
    j.close()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout == ""


def test_same_process_second_open_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    j = Journal(path)
    with pytest.raises(JournalLocked):
        Journal(path)
    j.close()


def test_readonly_open_of_a_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        Journal(tmp_path / "none.sqlite", readonly=True)


def test_group_commit_keeps_each_transaction_whole_and_commits_on_close(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    j = Journal(path, synchronous="OFF", group_commit=1000)
    with j.transaction():
        j.add_transition(1, "flat", "enter", rec("entering"))
    with pytest.raises(RuntimeError), j.transaction():
        j.add_transition(2, "entering", "stop_confirmed", rec("protected"))
        raise RuntimeError("boom")
    assert j.fold() == rec("entering"), "the failed transaction is rolled back, the one before it stays"
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM transitions").fetchone() == (0,), "not committed yet"
    j.close()
    assert other.execute("SELECT count(*) FROM transitions").fetchone() == (1,)
    other.close()


def test_group_commit_commits_every_n_transactions(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    j = Journal(path, synchronous="OFF", group_commit=3)
    states = ["entering", "flat"]
    for i in range(7):
        with j.transaction():
            j.add_transition(i, states[(i + 1) % 2], "x", rec(states[i % 2]))
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM transitions").fetchone() == (6,)
    other.close()
    j.close()


def test_a_cancel_keeps_the_command_that_placed_the_order_and_its_attached_stop(tmp_path: Path) -> None:
    """Chaos run with attached stops: an entry canceled after its attached stop fired lost its SubmitEntry
    (the cancel replaced it), and with it the stop's id: the invariant check no longer counted that stop's
    fill, and recovery would not have asked about it."""
    from gatebot.core.events import CancelOrder, StopSpec, SubmitEntry

    j = Journal(tmp_path / "j.sqlite")
    entry = SubmitEntry(client_id="a-1-e1", symbol="BTC-USDT", side="long", qty=Decimal("0.2"),
                        stop=StopSpec(client_id="a-1-s1", price=Decimal("59000")))
    with j.transaction():
        j.add_intent(1, 1, entry)
    with j.transaction():
        j.add_status(2, 1, "a-1-e1", "acked")
    with j.transaction():
        j.add_intent(3, 1, CancelOrder(client_id="a-1-e1", symbol="BTC-USDT"))
        j.add_intent(3, 1, CancelOrder(client_id="a-1-x9", symbol="BTC-USDT"))
    rows = j.intents()
    assert rows["a-1-e1"].command == entry and rows["a-1-e1"].status == "pending"
    assert isinstance(rows["a-1-x9"].command, CancelOrder)
    j.close()


def test_the_journal_seam_turns_refused_writes_into_journal_unwritable(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    try:
        journal.set_meta({"a": "1"})
        journal.conn.execute("PRAGMA query_only = ON")
        with pytest.raises(JournalUnwritable, match="readonly"):
            journal.set_meta({"a": "2"})
        with pytest.raises(JournalUnwritable):
            journal.add_status(1, 1, "x-1-e1", "acked")
        assert not journal.probe_write()
        journal.conn.execute("PRAGMA query_only = OFF")
        assert journal.probe_write() and journal.meta()["a"] == "1" and "write_probe" not in journal.meta()
        pages = journal.conn.execute("PRAGMA page_count").fetchone()[0]
        journal.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
        with pytest.raises(JournalUnwritable, match="full"), journal.transaction():
            journal.conn.execute("INSERT INTO meta(key, value) VALUES ('big', ?)", ("x" * 100_000,))
        assert "big" not in journal.meta() and not journal.conn.in_transaction
    finally:
        journal.close()
