"""Recording files: raw exchange frames with their receive time, for replay through the live decoder.

Layout (all integers little-endian)::

    b"GBREC\\n"  u16 version  u32 n  <n bytes: the header, a msgpack map>
    then records: u32 n  <n bytes: a msgpack array [t, ch, what, data, code]>

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
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

MAGIC = b"GBREC\n"
VERSION = 1
MAX_RECORD = 64 * 1024 * 1024
"""A length prefix above this is damage, not a record."""

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
_hdr_dec = msgspec.msgpack.Decoder(Header)
_u32 = struct.Struct("<I")
_DATA_TYPES = (bytes, str)


class _Clockless:
    def now_ms(self) -> int:
        return 0


class Recorder:
    """Appends records to a recording file. ``record`` costs one encode and one buffered write."""

    def __init__(self, path: str | Path, header: Header, *, clock: Any = None) -> None:
        self.path = Path(path)
        self.clock = clock or _Clockless()
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: BinaryIO | None = self.path.open("wb")
        head = _enc.encode(header)
        self._f.write(MAGIC + struct.pack("<H", VERSION) + _u32.pack(len(head)) + head)
        self._buf = bytearray()

    def record(self, ch: str, what: str, data: bytes | str, code: int = 0, t: int | None = None) -> None:
        if self._f is None:
            return
        body = _enc.encode(Record(self.clock.now_ms() if t is None else t, ch, what, data, code))
        self._f.write(_u32.pack(len(body)))
        self._f.write(body)
        self.count += 1
        if self.count % 256 == 0:
            self._f.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Recording:
    """A recording read whole into memory (records are small; replays want random access)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._buf = self.path.read_bytes()
        except OSError as exc:
            raise RecordingError(f"recording {self.path}: {exc.strerror or exc}") from None
        self.header, self._start = _read_header(self._buf, self.path)

    def __iter__(self) -> Iterator[Record]:
        return iter_records(self._buf, self._start, self.path)

    def records(self) -> list[Record]:
        return list(self)


def _read_header(buf: bytes, path: Path) -> tuple[Header, int]:
    if not buf.startswith(MAGIC):
        raise RecordingError(f"recording {path}: not a gatebot recording (no {MAGIC[:-1].decode()} header)")
    p = len(MAGIC)
    if len(buf) < p + 6:
        raise RecordingError(f"recording {path}: truncated header")
    (version,) = struct.unpack_from("<H", buf, p)
    if version != VERSION:
        raise RecordingError(f"recording {path}: format version {version}; this gatebot reads version {VERSION}")
    (n,) = _u32.unpack_from(buf, p + 2)
    start = p + 6
    if n > MAX_RECORD or start + n > len(buf):
        raise RecordingError(f"recording {path}: truncated header")
    try:
        header = _hdr_dec.decode(buf[start:start + n])
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise RecordingError(f"recording {path}: damaged header ({exc})") from None
    if header.version != VERSION or header.kind not in ("market", "session"):
        raise RecordingError(f"recording {path}: header says version {header.version}, kind {header.kind!r}")
    return header, start + n


def iter_records(buf: bytes, start: int, path: Path) -> Iterator[Record]:
    """The records of ``buf`` from ``start``, decoded one at a time as they are asked for."""
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
    from core.config import config_hash

    return config_hash(msgspec.structs.replace(config, mode="replay", state_dir=""))


def strategy_hashes(config: Any, plugins: Any) -> dict[str, str]:
    """Per instance, what its strategy says its decisions come from (e.g. model file hashes), else a
    hash of its parameters."""
    from strategies.base import StrategyContext

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
