"""The journal: one SQLite file per instance, append-only, written before anything is sent.

Tables (all append-only):
- ``transitions``: every state change with the full position record after it (the fold source);
- ``rejections``: triggers the state table refused (never silently ignored);
- ``intents``: every command, committed *before* it is sent (status ``pending``), then its outcome
  as further rows for the same client id (``acked`` / ``failed`` / ``unknown`` / ``gone``);
- ``fills``: every fill, booked once per (client id, trade id);
- ``funding``: every funding payment, booked once per key (instance, symbol, funding time), with the
  position it was charged on;
- ``meta``: schema version, the journal's epoch (core/ids.py: part of every client id it sends), config
  hash, model hashes.

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
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gatebot.core import ids
from gatebot.core.events import ZERO, AnyCommand, CancelOrder, FundingPaid, OrderFilled
from gatebot.core.position import EXITED, PositionRecord
from gatebot.core.telemetry import Observe, ignore

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 2
"""1: no funding table and no epoch in ``meta``. A version 1 journal opened for writing gains the table
and the legacy epoch (so the ids it already sent still parse), and its version is raised."""
Synchronous = Literal["FULL", "NORMAL", "OFF"]
IntentStatus = Literal["pending", "acked", "failed", "unknown", "gone"]

_enc = msgspec.json.Encoder()
_record_dec = msgspec.json.Decoder(PositionRecord)
_command_dec = msgspec.json.Decoder(AnyCommand)


class JournalError(Exception):
    """The journal cannot be used; the message names the file and what is wrong with it."""


class JournalLocked(JournalError):
    pass


class JournalUnwritable(Exception):
    """The journal cannot be written now (a read-only or full disk, an I/O error). Not damage: nothing
    may be sent until it can be written again, and then the instance comes back by itself."""


_UNWRITABLE_CODES = frozenset((sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
                               sqlite3.SQLITE_CANTOPEN))
"""sqlite's primary result codes that say "cannot write here now" (extended codes carry them in the
low byte); any other OperationalError is a bug and propagates as such."""


def _unwritable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _UNWRITABLE_CODES
    return isinstance(exc, OSError)


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


def check_state_dir(state_dir: str | Path, *, create: bool = False) -> None:
    """Refuse, in one line (JournalError), a state folder that is a file or cannot be written: found
    at start (and by ``check-config``), not as a traceback at the first journal write. ``create``: make
    it when missing; else its nearest existing parent must take a new folder. Written to for real (a
    probe file), not judged by permission bits: root passes those, not a read-only or immutable folder."""
    path = Path(state_dir)
    if path.exists() and not path.is_dir():
        raise JournalError(f"state_dir {path} is not a folder")
    if not path.exists():
        if create:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"state_dir {path} cannot be created: {exc.strerror or exc}") from None
        else:
            parent = next((p for p in path.parents if p.exists()), Path("."))
            if not parent.is_dir():
                raise JournalError(f"state_dir {path} cannot be created: {parent} is not a folder")
            _probe(parent, f"state_dir {path} cannot be created")
            return
    _probe(path, f"state_dir {path} cannot be written")


def _probe(folder: Path, what: str) -> None:
    probe = folder / f".gatebot-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise JournalError(f"{what}: {exc.strerror or exc}") from None


class IntentRow(msgspec.Struct, frozen=True):
    client_id: str
    position: int
    command: AnyCommand
    status: IntentStatus
    detail: str


class Journal:
    def __init__(self, path: str | Path, *, synchronous: Synchronous = "FULL", lock: bool = True,
                 readonly: bool = False, group_commit: int = 0, epoch: str = ids.LEGACY) -> None:
        """``group_commit`` > 0 (replay only) commits once per that many transactions: each still
        lands whole or not at all (a savepoint), but a crash may lose the uncommitted tail, which a
        replay rebuilds anyway. Paper and live use 0: every transaction is committed before the
        command it carries is sent. ``epoch``: the one a journal created by this call is given (the
        runner draws a new one; the legacy default suits journals that never meet an exchange account)."""
        if not ids.is_epoch(epoch):
            raise ValueError(f"not an epoch: {epoch!r}")
        self.path = Path(path)
        self._new_epoch = epoch
        self._lock_fd: int | None = None
        self._group = 0  # the schema is committed at once; grouping starts after opening
        self.observe: Observe = ignore
        """Where commit latencies go (app/metrics.py sets it)."""
        self._pending = 0
        self._depth = 0
        if lock and not readonly:
            self._take_lock()
        try:
            if not readonly and not self.path.exists():
                self._create_file()
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
        self.__dict__.pop("db", None)  # sqlite-utils over this connection, made when first needed
        conn.execute("PRAGMA schema_version").fetchone()  # raises on a file that is not SQLite
        if readonly:
            self._check_schema()
            return
        existing = self._tables()  # before anything is written into the file
        if not existing:
            # A journal is created whole under another name and renamed into place (_create_file): one
            # without tables (0 bytes, or cut short) is damage, never a new journal to start afresh on.
            size = self.path.stat().st_size
            raise JournalError(f"journal {self.path} is damaged: {size} bytes and no tables (restore it from a "
                               "backup; if the account holds nothing of this instance, delete it to start afresh)")
        if "meta" not in existing:
            raise JournalError(f"journal {self.path} is not a gatebot journal (tables: {sorted(existing)})")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=wal")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        version = self._check_schema()
        if version < SCHEMA_VERSION:
            self._migrate(version)

    @functools.cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the connection, imported when first needed (creating a journal, status): it
        costs a restart a fifth of a second of imports, and recovery time includes interpreter start."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    def _tables(self) -> set[str]:
        return {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _create_file(self) -> None:
        """Create the journal at a temporary name and rename it into place once its schema is committed:
        a crash midway leaves no file at ``path`` that could pass for an empty journal."""
        tmp = self.path.with_name(self.path.name + ".new")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            self.conn = conn
            self.__dict__.pop("db", None)
            conn.execute("PRAGMA journal_mode=wal")
            self._create()
        finally:
            conn.close()
            self.conn = None  # type: ignore[assignment]
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself is durable
        finally:
            os.close(fd)

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
            self._create_funding()
            db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)})
            db["meta"].insert({"key": "epoch", "value": self._new_epoch})

    def _create_funding(self) -> None:
        self.db["funding"].create(
            {"seq": int, "ts": int, "position": int, "key": str, "symbol": str, "funding_time": int, "paid": str,
             "rate": str, "funding": str}, pk="seq")
        self.db["funding"].create_index(["key"], unique=True)

    def _migrate(self, version: int) -> None:
        """Bring an older journal up to this schema (writers only; readers read either)."""
        if version < 2:
            with self.transaction():
                if "funding" not in self._tables():
                    self._create_funding()
                self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?)", (ids.LEGACY,))
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _check_schema(self) -> int:
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
        return version

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

    @property
    def epoch(self) -> str:
        """Part of every client id this journal sends (core/ids.py); legacy for a version 1 journal."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        return row[0] if row is not None else ids.LEGACY

    def set_meta(self, values: dict[str, str]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())

    # --- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``: everything inside lands together or not at all. A disk that
        refuses the write raises :class:`JournalUnwritable` with nothing of it written."""
        conn = self.conn
        if conn.in_transaction and not self._group:
            yield
            return
        with self._writing():
            if self._group:
                yield from self._grouped()
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            started = time.perf_counter()
            conn.execute("COMMIT")
            self.observe("commit", time.perf_counter() - started)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The one seam where a refused write (sqlite3.OperationalError READONLY / FULL / IOERR, OSError)
        becomes :class:`JournalUnwritable`, the transaction rolled back (grouped: only its savepoint, the
        group's earlier transactions are kept for a later commit)."""
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            if not _unwritable(exc):
                raise
            if self.conn is not None and self.conn.in_transaction and not self._group:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if self._group and self._pending and self.conn is not None and not self.conn.in_transaction:
                # sqlite rolled the whole group back itself (a full disk does): transactions whose commands
                # were already sent are gone, so the journal is behind what happened. Not a pause: damage.
                lost, self._pending = self._pending, 0
                raise JournalError(f"journal {self.path} lost {lost} grouped transactions when the disk refused a "
                                   f"write ({exc}): it no longer matches what was sent; run the replay again "
                                   "(or set [journal] group_commit = 1)") from None
            raise JournalUnwritable(f"journal {self.path} cannot be written ({exc})") from None

    def probe_write(self) -> bool:
        """True when a write reaches the disk now (a row committed and deleted again: the contents, and
        so a replay's journal, do not change)."""
        try:
            with self.transaction():
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('write_probe', '')")
                self.conn.execute("DELETE FROM meta WHERE key = 'write_probe'")
        except JournalUnwritable:
            return False
        return True

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
            if conn.in_transaction:  # sqlite may have rolled the whole transaction back itself (a full disk)
                with contextlib.suppress(sqlite3.OperationalError):
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
        with self.transaction():  # one row, often outside any other transaction
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

    def add_funding(self, ts: int, position: int, key: str, payment: FundingPaid) -> bool:
        """Book a funding payment; False (and nothing written) when this key was booked before."""
        try:
            self.conn.execute(
                "INSERT INTO funding(ts, position, key, symbol, funding_time, paid, rate, funding)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (ts, position, key, payment.symbol, payment.funding_time, str(payment.paid), str(payment.rate),
                 _enc.encode(payment).decode()))
        except sqlite3.IntegrityError:
            return False
        return True

    def add_control(self, ts: int, command: str, source: str, reason: str, outcome: str,
                    trading_state: str) -> None:
        """Journal an operator's command (what, when, from where, why, and the trading state it leaves)
        before it acts. The ``controls`` table is made by its first row (journals without one read as
        never commanded: no schema version change)."""
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS controls (seq INTEGER PRIMARY KEY, ts INTEGER, command TEXT, "
                "source TEXT, reason TEXT, outcome TEXT, trading_state TEXT)")
            self.conn.execute(
                "INSERT INTO controls(ts, command, source, reason, outcome, trading_state) VALUES (?,?,?,?,?,?)",
                (ts, command, source, reason, outcome, trading_state))

    def _has_controls(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'controls'"
                                 ).fetchone() is not None

    def trading_state(self) -> str:
        """The trading state the operator's last command left (active when never commanded): it outlives
        the process, so a paused or halted instance restarts paused or halted."""
        if not self._has_controls():
            return "active"
        row = self.conn.execute("SELECT trading_state FROM controls ORDER BY seq DESC LIMIT 1").fetchone()
        return "active" if row is None else str(row[0])

    def resumed_at(self) -> int:
        """When the last command that set the instance trading took effect (ms on the bot's clock; 0: never)."""
        if not self._has_controls():
            return 0
        row = self.conn.execute("SELECT max(ts) FROM controls WHERE trading_state = 'active' AND outcome = 'done'"
                                ).fetchone()
        return int(row[0] or 0)

    def controls(self, limit: int = 20) -> list[dict[str, Any]]:
        """The operator's latest commands, oldest first."""
        if not self._has_controls():
            return []
        rows = self.conn.execute("SELECT ts, command, source, reason, outcome, trading_state FROM controls "
                                 "ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        keys = ("ts_ms", "command", "source", "reason", "outcome", "trading_state")
        return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]

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
        out: dict[str, None] = {}
        for cid, intent in self.intents(position).items():
            out[cid] = None
            stop = getattr(intent.command, "stop", None)
            if stop is not None:
                out[stop.client_id] = None
        return list(out)

    def fresh(self) -> bool:
        """Nothing journaled yet: no transition, no intent (a new journal, or one that never traded)."""
        return (self.conn.execute("SELECT 1 FROM transitions LIMIT 1").fetchone() is None
                and self.conn.execute("SELECT 1 FROM intents LIMIT 1").fetchone() is None)

    def knows(self, client_id: str) -> bool:
        """Whether this journal sent the order (or the entry it travelled with, for an attached stop)."""
        if self.conn.execute("SELECT 1 FROM intents WHERE client_id = ? LIMIT 1", (client_id,)).fetchone():
            return True
        p = ids.parse(client_id)
        if p is None or p.role != "s" or p.attempt != 1:
            return False
        entry = ids.make(p.instance, p.epoch, p.seq, "e", 1)
        return any(getattr(row.command, "stop", None) is not None and row.command.stop.client_id == client_id
                   for row in self.intents(p.seq).values() if row.client_id == entry)

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

    def _has_funding(self) -> bool:
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'funding'"
                                 ).fetchone() is not None

    def funding_booked(self, key: str) -> bool:
        return self._has_funding() and self.conn.execute(
            "SELECT 1 FROM funding WHERE key = ?", (key,)).fetchone() is not None

    def funding_total(self) -> Decimal:
        """Funding paid over every booked payment (positive = paid; a version-1 journal has none)."""
        if not self._has_funding():
            return ZERO
        return sum((Decimal(p) for (p,) in self.conn.execute("SELECT paid FROM funding")), ZERO)

    def funding_count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM funding").fetchone()[0] if self._has_funding() else 0

    def funding_payments(self) -> list[tuple[int, int, Decimal]]:
        """(position seq, funding time ms, paid) of every payment, in booking order."""
        if not self._has_funding():
            return []
        return [(pos, int(t), Decimal(paid)) for pos, t, paid in self.conn.execute(
            "SELECT position, funding_time, paid FROM funding ORDER BY seq")]

    def funding_by_position(self) -> dict[int, Decimal]:
        """Funding paid per position seq."""
        out: dict[int, Decimal] = {}
        if self._has_funding():
            for pos, paid in self.conn.execute("SELECT position, paid FROM funding ORDER BY seq"):
                out[pos] = out.get(pos, ZERO) + Decimal(paid)
        return out

    def position_opened_by(self, t_ms: int) -> int | None:
        """The latest position opened at or before market time ``t_ms`` (its ``opened_at`` bar): the one a
        payment at that time was charged on. None when none was."""
        row = self.conn.execute(
            "SELECT position FROM transitions WHERE trigger IN ('enter', 'adopt') AND "
            "json_extract(record, '$.opened_at') <= ? ORDER BY seq DESC LIMIT 1", (t_ms,)).fetchone()
        return None if row is None else int(row[0])

    def first_opened_at(self) -> int | None:
        """Market time the journal's first position was opened at (None before any)."""
        return self._opened_at("ASC")

    def latest_opened_at(self) -> int | None:
        """Market time the journal's latest position was opened at (None before any)."""
        return self._opened_at("DESC")

    def funding_since(self) -> int | None:
        """From which market time the exchange's funding history must be read to find every payment not
        booked yet: the latest position's opening, or earlier, right after the last payment booked (one of an
        earlier position may have been missed); None before any position."""
        latest = self.latest_opened_at()
        if latest is None:
            return None
        last = self.conn.execute("SELECT max(funding_time) FROM funding").fetchone()[0] if self._has_funding() else None
        earliest = self.first_opened_at() if last is None else int(last) + 1
        return min(latest, earliest if earliest is not None else latest)

    def _opened_at(self, order: str) -> int | None:
        row = self.conn.execute(
            "SELECT json_extract(record, '$.opened_at') FROM transitions WHERE trigger IN ('enter', 'adopt') "
            f"ORDER BY seq {order} LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def moved_at(self, position: int) -> int:
        """When the journal last moved ``position`` (ms on the bot's clock; 0 if it never did)."""
        (ts,) = self.conn.execute("SELECT max(ts) FROM transitions WHERE position = ?", (position,)).fetchone()
        return int(ts or 0)

    def filled_at(self, position: int) -> int:
        """When ``position``'s entry last took a fill or was ended by the exchange (ms on the bot's clock): since
        then a position that has no confirmed stop is unprotected. Its last move if neither was journaled (a
        position adopted)."""
        (ts,) = self.conn.execute("SELECT max(ts) FROM transitions WHERE position = ? AND trigger IN (?, ?)",
                                  (position, "entry_filled", "entry_completed")).fetchone()
        return int(ts) if ts is not None else self.moved_at(position)

    def high_water(self) -> list[int]:
        """The last row of each append-only table (transitions, rejections, intents, fills): equal values at
        two moments mean the journal did not move in between."""
        return [self.conn.execute(f"SELECT coalesce(max(seq), 0) FROM {t}").fetchone()[0]
                for t in ("transitions", "rejections", "intents", "fills")]

    def exits(self) -> list[tuple[int, str, PositionRecord]]:
        """(ts, exited state, record) of every position's exit, in order (the risk guards' and reports' trades)."""
        return [(int(ts), dst, _record_dec.decode(record)) for ts, dst, record in self.conn.execute(
            "SELECT ts, dst, record FROM transitions WHERE dst IN (?,?,?) AND src NOT IN (?,?,?) ORDER BY seq",
            (*EXITED, *EXITED))]

    def entries_since(self, ts_ms: int) -> int:
        """How many positions were entered at or after ``ts_ms`` (the bot's clock)."""
        return int(self.conn.execute("SELECT count(*) FROM transitions WHERE src = 'flat' AND dst = 'entering' "
                                     "AND ts >= ?", (ts_ms,)).fetchone()[0])

    def last_transitions(self, n: int = 5) -> list[dict[str, Any]]:
        rows = self.db.query(
            "SELECT seq, ts, position, src, trigger, dst FROM transitions ORDER BY seq DESC LIMIT ?", [n])
        return list(rows)[::-1]

    def dump(self) -> bytes:
        """The journal's contents in a canonical form: equal journals give equal bytes."""
        parts = []
        for table in ("meta", "transitions", "rejections", "intents", "fills", "funding", "controls"):
            if table == "funding" and not self._has_funding():
                continue
            if table == "controls" and not self._has_controls():
                continue
            rows = self.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            parts.append(_enc.encode([table, rows]))
        return b"\n".join(parts)
