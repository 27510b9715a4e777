"""Recording files: raw exchange frames with their receive time, for replay through the live decoder.

Layout (all integers little-endian)::

    b"GBREC\\n"  u16 version  u32 n  <n bytes: the header, a msgpack map>
    version 2 (written now), then blocks: u32 n  <n bytes: a msgpack array of records>
    version 1 (still read), then records: u32 n  <n bytes: one record>

A record is a msgpack array ``[t, ch, what, data, code]``. The recorder writes a block when it holds
256 records or 8 KiB (and on flush and close), as often as version 1's buffered file reached the
disk; a reader decodes a whole block in one call.

The header says what the file holds (``kind``: ``market`` or ``session``), the config hash and the
model hashes of the session that wrote it, and free-form metadata. A record is one thing that crossed
the wire: ``t`` its receive (or send) time in ms on the session's clock, ``ch`` its channel
(``market``, ``user``: a websocket frame as received, str or gzip bytes; ``rest``: a REST reply,
``what`` = method and request without its signature, ``code`` = HTTP status or -1 for no reply;
``send``: a state-changing request the bot sent, ``what`` as for ``rest``), ``data`` its payload.
Connection markers are records with ``what = "connect"``. A market recording (``gatebot record``) says
where its streams start in a ``market`` record with ``what = "start"``: ``data`` is a JSON list of
``[symbol, interval, open time of the last candle already closed]`` (the history the live stream
continued from), so a replay closes the same first candles.

The reader never crashes on damaged input: anything it cannot read raises :class:`RecordingError`
naming the file and the byte offset.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

MAGIC = b"GBREC\n"
VERSION = 2
READS = (1, 2)
"""The format versions this gatebot reads (1: one length prefix per record)."""
MAX_RECORD = 64 * 1024 * 1024
"""A length prefix above this is damage, not a record."""
BLOCK_RECORDS = 256
BLOCK_BYTES = 8192
"""A block is written when it holds this many records or bytes."""
MAX_BLOCK = MAX_RECORD + BLOCK_BYTES
READ_CHUNK = 1 << 20
"""A version 2 file is read this many bytes at a time (more for a larger block)."""

MARKET, USER, REST, SEND = "market", "user", "rest", "send"
CHANNELS = (MARKET, USER, REST, SEND)
CONNECT = "connect"
START = "start"


class RecordingError(Exception):
    """A recording that cannot be read (missing, truncated, damaged, another version)."""


class Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    version: int = VERSION
    kind: str = "market"
    """``market`` (market data only) or ``session`` (a whole trading session)."""
    config_hash: str = ""
    models: dict[str, str] = {}
    """Model file (or instance) -> sha256 of what the decisions came from."""
    created_ms: int = 0
    meta: dict[str, Any] = {}


class Record(msgspec.Struct, array_like=True, frozen=True, gc=False):
    t: int
    ch: Literal["market", "user", "rest", "send"]
    """One of :data:`CHANNELS` (checked as the record is decoded)."""
    what: str
    data: Any
    """bytes or str (a websocket text frame stays text)."""
    code: int = 0


_enc = msgspec.msgpack.Encoder()
_rec_dec = msgspec.msgpack.Decoder(Record)
_block_dec = msgspec.msgpack.Decoder(list[Record])
_hdr_dec = msgspec.msgpack.Decoder(Header)
_u32 = struct.Struct("<I")
_DATA_TYPES = frozenset((bytes, str))
"""What a record's data may be (a set: one hash lookup per record, whichever it is)."""


class _Clockless:
    def now_ms(self) -> int:
        return 0


class Recorder:
    """Appends records to a recording file. ``record`` costs one encode into the pending block; a full
    block is one write."""

    def __init__(self, path: str | Path, header: Header, *, clock: Any = None) -> None:
        self.path = Path(path)
        self.clock = clock or _Clockless()
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO | None = self.path.open("wb")
        head = _enc.encode(msgspec.structs.replace(header, version=VERSION))
        self._f.write(MAGIC + struct.pack("<H", VERSION) + _u32.pack(len(head)) + head)
        self._block = bytearray()
        self._n = 0
        """Records in ``_block`` (encoded, one after the other) not written yet."""

    def record(self, ch: str, what: str, data: bytes | str, code: int = 0, t: int | None = None) -> None:
        if self._f is None:
            return
        _enc.encode_into(Record(self.clock.now_ms() if t is None else t, ch, what, data, code), self._block, -1)
        self._n += 1
        self.count += 1
        if self._n >= BLOCK_RECORDS or len(self._block) >= BLOCK_BYTES:
            self._write_block()

    def _write_block(self) -> None:
        if self._n and self._f is not None:
            # the msgpack array header (array 32: 0xdd, count big-endian) makes the block one list
            self._f.write(_u32.pack(len(self._block) + 5) + b"\xdd" + self._n.to_bytes(4, "big"))
            self._f.write(self._block)
            self._f.flush()
            self._block.clear()
            self._n = 0

    def flush(self) -> None:
        if self._f is not None:
            self._write_block()
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._write_block()
            self._f.close()
            self._f = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Recording:
    """A recording file: the header is read at once, the records each time they are iterated (version 2:
    a block at a time, through one reused buffer; version 1: the whole file at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as f:
                self.header, self._start = _read_header(f, self.path)
        except OSError as exc:
            raise RecordingError(f"recording {self.path}: {exc.strerror or exc}") from None

    def __iter__(self) -> Iterator[Record]:
        if self.header.version == 1:
            return iter_records(self._read(), self._start, self.path)
        return chain.from_iterable(iter_blocks(self.path, self._start))

    def blocks(self) -> Iterator[list[Record]]:
        """The records in the blocks they were written in (version 1: one record per block): a reader
        that handles a block at a time pays the per-record step of iteration once per block."""
        if self.header.version == 1:
            return ([rec] for rec in iter_records(self._read(), self._start, self.path))
        return iter_blocks(self.path, self._start)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise RecordingError(f"recording {self.path}: {exc.strerror or exc}") from None

    def records(self) -> list[Record]:
        return list(self)


def _read_header(f: BinaryIO, path: Path) -> tuple[Header, int]:
    p = len(MAGIC)
    head = f.read(p + 6)
    if not head.startswith(MAGIC):
        raise RecordingError(f"recording {path}: not a gatebot recording (no {MAGIC[:-1].decode()} header)")
    if len(head) < p + 6:
        raise RecordingError(f"recording {path}: truncated header")
    (version,) = struct.unpack_from("<H", head, p)
    if version not in READS:
        raise RecordingError(f"recording {path}: format version {version}; this gatebot reads versions "
                             f"{', '.join(map(str, READS))}")
    (n,) = _u32.unpack_from(head, p + 2)
    body = f.read(n) if n <= MAX_RECORD else b""
    if len(body) < n or n > MAX_RECORD:
        raise RecordingError(f"recording {path}: truncated header")
    try:
        header = _hdr_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RecordingError(f"recording {path}: damaged header ({exc})") from None
    if header.version != version or header.kind not in ("market", "session"):
        raise RecordingError(f"recording {path}: header says version {header.version}, kind {header.kind!r}")
    return header, p + 6 + n


def iter_blocks(path: Path, start: int) -> Iterator[list[Record]]:
    """The blocks of a version 2 file from byte ``start``, read and decoded one at a time as they are asked
    for (the file as long as it is when the iteration starts)."""
    try:
        f = path.open("rb", buffering=0)
    except OSError as exc:
        raise RecordingError(f"recording {path}: {exc.strerror or exc}") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            f.seek(start)
        except OSError as exc:
            raise RecordingError(f"recording {path}: {exc.strerror or exc}") from None
        buf = bytearray(READ_CHUNK)
        view = memoryview(buf)
        base, p, have = start, 0, 0  # buf[p:have] holds the file's bytes from base + p on, not decoded yet

        def refill(need: int) -> None:
            """At least ``need`` bytes from ``base + p`` in the buffer, which then starts there."""
            nonlocal buf, view, base, p, have
            rest = have - p
            if need > len(buf):
                view.release()
                buf = bytearray(buf[p:have]) + bytearray(need - rest)
                view = memoryview(buf)
            elif rest:
                buf[:rest] = buf[p:have]
            base, p, have = base + p, 0, rest
            end = min(len(buf), size - base)
            while have < end:
                try:
                    got = f.readinto(view[have:end])
                except OSError as exc:
                    raise RecordingError(f"recording {path}: {exc.strerror or exc}") from None
                if not got:
                    raise RecordingError(f"recording {path}: truncated at byte {base + have} (the file shrank "
                                         f"while read)")
                have += got

        unpack, decode, data_types = _u32.unpack_from, _block_dec.decode, _DATA_TYPES
        while base + p < size:
            if have - p < 4:
                if base + p + 4 > size:
                    raise RecordingError(f"recording {path}: truncated at byte {base + p} (a partial length "
                                         f"prefix)")
                refill(4)
            (n,) = unpack(buf, p)
            if n > MAX_BLOCK or base + p + 4 + n > size:
                raise RecordingError(f"recording {path}: truncated at byte {base + p} (a block of {n} bytes "
                                     f"does not fit)")
            if have - p < 4 + n:
                refill(4 + n)
            q = p + 4 + n
            try:
                block = decode(view[p + 4:q])
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8, a channel not in CHANNELS
                raise RecordingError(f"recording {path}: damaged block at byte {base + p} ({exc})") from None
            for rec in block:
                if rec.data.__class__ not in data_types:
                    raise RecordingError(f"recording {path}: damaged block at byte {base + p} "
                                         f"(data {type(rec.data).__name__})")
            yield block
            p = q


def iter_records(buf: bytes, start: int, path: Path) -> Iterator[Record]:
    """The records of a version 1 ``buf`` from ``start``, decoded one at a time as they are asked for."""
    view = memoryview(buf)
    p, end = start, len(buf)
    unpack, decode, data_types = _u32.unpack_from, _rec_dec.decode, _DATA_TYPES
    while p < end:
        try:
            (n,) = unpack(buf, p)
        except struct.error:
            raise RecordingError(f"recording {path}: truncated at byte {p} (a partial length prefix)") from None
        q = p + 4 + n
        if q > end or n > MAX_RECORD:
            raise RecordingError(f"recording {path}: truncated at byte {p} (a record of {n} bytes does not fit)")
        try:
            rec = decode(view[p + 4:q])
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8, a channel not in CHANNELS
            raise RecordingError(f"recording {path}: damaged record at byte {p} ({exc})") from None
        if rec.data.__class__ not in data_types:
            raise RecordingError(f"recording {path}: damaged record at byte {p} (data {type(rec.data).__name__})")
        yield rec
        p = q


def session_hash(config: Any) -> str:
    """The config hash a recording is checked against: the config without its mode and state folder
    (a replay runs the same instances in mode replay elsewhere)."""
    from gatebot.core.config import config_hash

    return config_hash(msgspec.structs.replace(config, mode="replay", state_dir=""))


def strategy_hashes(config: Any, plugins: Any) -> dict[str, str]:
    """Per instance, what its strategy says its decisions come from (e.g. model file hashes), else a
    hash of its parameters."""
    from gatebot.core.strategy import StrategyContext

    out: dict[str, str] = {}
    for inst in config.instances:
        cls = plugins.strategies()[inst.strategy]
        strategy = cls(inst.params, StrategyContext(instance=inst.name, symbol=inst.symbol, interval=inst.interval,
                                                    leverage=inst.leverage))
        meta = getattr(strategy, "journal_meta", None)
        values = meta() if meta is not None else {}
        if values:
            out.update({f"{inst.name}.{k}": str(v) for k, v in values.items()})
        else:
            out[f"{inst.name}.params"] = hashlib.sha256(msgspec.json.encode(inst.params)).hexdigest()[:16]
    return out


def describe(rec: Record, index: int) -> str:
    """One line naming a record (for divergence reports)."""
    data = rec.data if isinstance(rec.data, str) else _text(rec.data)
    what = f" {rec.what}" if rec.what else ""
    return f"record #{index} t={rec.t} {rec.ch}{what}: {data[:160]}"


def _text(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        import gzip

        try:
            return gzip.decompress(data).decode(errors="replace")
        except (OSError, EOFError):
            return repr(data[:80])
    return data.decode(errors="replace")
