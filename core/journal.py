"""The journal: one SQLite file per instance, append-only, written before anything is sent.

Tables (all append-only):
- ``transitions``: every state change with the full position record after it (the fold source);
- ``rejections``: triggers the state table refused (never silently ignored);
- ``intents``: every command, committed *before* it is sent (status ``pending``), then its outcome
  as further rows for the same client id (``acked`` / ``failed`` / ``unknown`` / ``gone``);
- ``fills``: every fill, booked once per (client id, trade id);
- ``meta``: schema version, config hash, model hashes.

sqlite-utils creates the schema and serves queries; the hot path uses prepared statements on the
raw connection (sqlite-utils adds ~15 us per insert). One writer: a lock file next to the journal
keeps a second process off the same instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from core.events import ZERO, AnyCommand, CancelOrder, OrderFilled
from core.position import PositionRecord

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 1
Synchronous = Literal["FULL", "NORMAL", "OFF"]
IntentStatus = Literal["pending", "acked", "failed", "unknown", "gone"]

_enc = msgspec.json.Encoder()
_record_dec = msgspec.json.Decoder(PositionRecord)
_command_dec = msgspec.json.Decoder(AnyCommand)


class JournalError(Exception):
    """The journal cannot be used; the message names the file and what is wrong with it."""


class JournalLocked(JournalError):
    pass


class StateDirLock:
    """One gatebot process per state directory: taken before any exchange is touched, so a second process
    refuses at once instead of halting its instances and then trading (or writing a paper account) anyway
    next to the first. Released by :meth:`release` or by the process's death (an ``flock``)."""

    NAME = ".gatebot.lock"

    def __init__(self, state_dir: str | Path) -> None:
        path = Path(state_dir) / self.NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalLocked(f"state directory {state_dir} is in use by another gatebot process (pid {holder}); "
                                "refusing to start a second one") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class IntentRow(msgspec.Struct, frozen=True):
    client_id: str
    position: int
    command: AnyCommand
    status: IntentStatus
    detail: str


class Journal:
    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL", lock: bool = True,
                 readonly: bool = False, group_commit: int = 0) -> None:
        """``group_commit`` > 0 (replay only) commits once per that many transactions: each still
        lands whole or not at all (a savepoint), but a crash may lose the uncommitted tail, which a
        replay rebuilds anyway. Paper and live use 0: every transaction is committed before the
        command it carries is sent."""
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._group = 0  # the schema is committed at once; grouping starts after opening
        self._pending = 0
        self._depth = 0
        if lock and not readonly:
            self._take_lock()
        try:
            self._open(readonly, synchronous)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise JournalError(f"journal {self.path} is unreadable or corrupted: {exc}") from None
        self._group = 0 if readonly else group_commit

    # --- opening ---------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"journal {self.path} is in use by another gatebot process; refusing to start a second one"
            ) from None
        self._lock_fd = fd

    def _open(self, readonly: bool, synchronous: Synchronous) -> None:
        if readonly:
            if not self.path.exists():
                raise JournalError(f"journal {self.path} does not exist")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn = conn
        conn.execute("PRAGMA schema_version").fetchone()  # raises on a file that is not SQLite
        if readonly:
            self._check_schema()
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=wal")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        existing = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if existing and "meta" not in existing:
            raise JournalError(f"journal {self.path} is not a gatebot journal (tables: {sorted(existing)})")
        if not existing:
            self._create()
        self._check_schema()

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the connection, imported when first needed (creating a journal, status): it
        costs a restart a fifth of a second of imports, and recovery time includes interpreter start."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def _create(self) -> None:
        db = self.db
        with self.transaction():
            db["meta"].create({"key": str, "value": str}, pk="key")
            db["transitions"].create(
                {"seq": int, "ts": int, "position": int, "src": str, "trigger": str, "dst": str,
                 "record": str, "detail": str}, pk="seq")
            db["rejections"].create(
                {"seq": int, "ts": int, "position": int, "state": str, "trigger": str, "message": str},
                pk="seq")
            db["intents"].create(
                {"seq": int, "ts": int, "position": int, "client_id": str, "status": str,
                 "command": str, "detail": str}, pk="seq")
            db["intents"].create_index(["client_id"])
            db["fills"].create(
                {"seq": int, "ts": int, "position": int, "client_id": str, "trade_id": str, "qty": str,
                 "price": str, "fee": str, "realized_pnl": str, "fill": str}, pk="seq")
            db["fills"].create_index(["client_id", "trade_id"], unique=True)
            db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)})

    def _check_schema(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is not a gatebot journal: {exc}") from None
        if row is None:
            raise JournalError(f"journal {self.path} has no schema version")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.path} has schema version {version}, newer than this gatebot "
                f"understands ({SCHEMA_VERSION}); upgrade gatebot instead of starting on it")

    def close(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            if conn.in_transaction:
                conn.execute("COMMIT")
            conn.close()
            self.conn = None  # type: ignore[assignment]
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- meta ------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, values: dict[str, str]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``: everything inside lands together or not at all."""
        conn = self.conn
        if self._group:
            yield from self._grouped()
            return
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _grouped(self) -> Iterator[None]:
        conn = self.conn
        if self._depth:
            yield
            return
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        conn.execute("SAVEPOINT tx")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO tx")
            conn.execute("RELEASE tx")
            raise
        finally:
            self._depth = 0
        conn.execute("RELEASE tx")
        self._pending += 1
        if self._pending >= self._group:
            self._pending = 0
            conn.execute("COMMIT")

    def add_transition(self, ts: int, src: str, trigger: str, record: PositionRecord,
                       detail: dict[str, Any] | None = None) -> None:
        self.conn.execute(
            "INSERT INTO transitions(ts, position, src, trigger, dst, record, detail) VALUES (?,?,?,?,?,?,?)",
            (ts, record.seq, src, trigger, record.state, _enc.encode(record).decode(),
             _enc.encode(detail or {}).decode()))

    def add_rejection(self, ts: int, position: int, state: str, trigger: str, message: str) -> None:
        self.conn.execute(
            "INSERT INTO rejections(ts, position, state, trigger, message) VALUES (?,?,?,?,?)",
            (ts, position, state, trigger, message))

    def add_intent(self, ts: int, position: int, command: AnyCommand) -> None:
        self.conn.execute(
            "INSERT INTO intents(ts, position, client_id, status, command, detail) VALUES (?,?,?,?,?,?)",
            (ts, position, command.client_id, "pending", _enc.encode(command).decode(), ""))

    def add_status(self, ts: int, position: int, client_id: str, status: IntentStatus,
                   detail: str = "") -> None:
        self.conn.execute(
            "INSERT INTO intents(ts, position, client_id, status, command, detail) VALUES (?,?,?,?,?,?)",
            (ts, position, client_id, status, "", detail))

    def add_fill(self, ts: int, position: int, fill: OrderFilled) -> bool:
        """Book a fill; False (and nothing written) when this trade was booked before."""
        try:
            self.conn.execute(
                "INSERT INTO fills(ts, position, client_id, trade_id, qty, price, fee, realized_pnl, fill)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (ts, position, fill.client_id, fill.trade_id, str(fill.qty), str(fill.price), str(fill.fee),
                 str(fill.realized_pnl), _enc.encode(fill).decode()))
        except sqlite3.IntegrityError:
            return False
        return True

    # --- reading ---------------------------------------------------------------------------

    def fold(self) -> PositionRecord | None:
        """The current position, folded from ``transitions``. The chain must be unbroken: every row
        starts where the previous one ended, so a lost or foreign row is detected, not trusted."""
        state = "flat"
        last: str | None = None
        seq = 0
        try:
            for seq, src, dst, record in self.conn.execute(
                    "SELECT seq, src, dst, record FROM transitions ORDER BY seq"):
                if src != state:
                    raise JournalError(
                        f"journal {self.path} is inconsistent at transition {seq}: it starts in "
                        f"{src!r} but the position was {state!r}")
                state, last = dst, record
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is unreadable or corrupted: {exc}") from None
        if last is None:
            return None
        try:
            rec = _record_dec.decode(last)
        except msgspec.DecodeError as exc:
            raise JournalError(f"journal {self.path} has a damaged record at transition {seq}: {exc}") from None
        if rec.state != state:
            raise JournalError(f"journal {self.path} transition {seq} records state {rec.state!r}, not {state!r}")
        return rec

    def intents(self, position: int | None = None) -> dict[str, IntentRow]:
        """Every order with the command that placed it and its latest status, by client id. A later
        cancel of the same id changes the status, not the command (the order and, for an entry, the
        stop attached to it stay known); an id only ever canceled keeps its CancelOrder."""
        out: dict[str, IntentRow] = {}
        query = "SELECT client_id, position, status, command, detail FROM intents"
        args: tuple[Any, ...] = ()
        if position is not None:
            query += " WHERE position = ?"
            args = (position,)
        for cid, pos, status, command, detail in self.conn.execute(query + " ORDER BY seq", args):
            if status == "pending":
                cmd = _command_dec.decode(command)
                prev = out.get(cid)
                if prev is not None and isinstance(cmd, CancelOrder) and not isinstance(prev.command, CancelOrder):
                    cmd = prev.command
                out[cid] = IntentRow(cid, pos if prev is None else prev.position, cmd, status, detail)
            elif cid in out:
                prev = out[cid]
                out[cid] = IntentRow(cid, prev.position, prev.command, status, detail)
        return out

    def client_ids(self, position: int | None = None) -> list[str]:
        """Every client id the journal sent (of one position, or of all), the stops attached to entries
        included: the orders whose fills belong to this journal."""
        ids: dict[str, None] = {}
        for cid, intent in self.intents(position).items():
            ids[cid] = None
            stop = getattr(intent.command, "stop", None)
            if stop is not None:
                ids[stop.client_id] = None
        return list(ids)

    def is_booked(self, client_id: str, trade_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM fills WHERE client_id = ? AND trade_id = ?",
                                 (client_id, trade_id)).fetchone() is not None

    def realized(self) -> tuple[Decimal, Decimal]:
        """(gross realised PnL, fees) over every booked fill."""
        pnl = fees = ZERO
        for p, f in self.conn.execute("SELECT realized_pnl, fee FROM fills"):
            pnl += Decimal(p)
            fees += Decimal(f)
        return pnl, fees

    def moved_at(self, position: int) -> int:
        """When the journal last moved ``position`` (ms on the bot's clock; 0 if it never did)."""
        (ts,) = self.conn.execute("SELECT max(ts) FROM transitions WHERE position = ?", (position,)).fetchone()
        return int(ts or 0)

    def high_water(self) -> list[int]:
        """The last row of each append-only table (transitions, rejections, intents, fills): equal values at
        two moments mean the journal did not move in between."""
        return [self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {t}").fetchone()[0]
                for t in ("transitions", "rejections", "intents", "fills")]

    def last_transitions(self, n: int = 5) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT seq, ts, position, src, trigger, dst FROM transitions ORDER BY seq DESC LIMIT ?", [n])
        return list(rows)[::-1]

    def dump(self) -> bytes:
        """The journal's contents in a canonical form: equal journals give equal bytes."""
        parts = []
        for table in ("meta", "transitions", "rejections", "intents", "fills"):
            rows = self.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            parts.append(_enc.encode([table, rows]))
        return b"\n".join(parts)
