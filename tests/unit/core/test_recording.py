"""Recording files (format, damage), deterministic market replays, and `gatebot report`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import struct
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from gatebot.app.cli import main
from gatebot.app.replayer import import_candles, replay
from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.core.market import generate
from gatebot.core.recording import MAGIC, Header, Recorder, Recording, RecordingError
from gatebot.plugins.manager import make_plugin_manager
from tests.helpers import replaced, sma_replay_text


def replay_text(state: Path) -> str:
    """The example sma_cross replay (tests/helpers.py) with sma_cross(5, 20): trades enough on 1,500 candles."""
    return replaced(sma_replay_text(state), ("fast = 10, slow = 30", "fast = 5, slow = 20"))


def write_csv(path: Path, bars: int = 1500) -> Path:
    lines = ["timestamp,open,high,low,close,volume"]
    for c in generate(seed=7, symbol="BTC-USDT", interval="5m", bars=bars, volatility=0.004):
        lines.append(f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}")
    path.write_text("\n".join(lines) + "\n")
    return path


def sample(path: Path) -> Path:
    with Recorder(path, Header(kind="session", config_hash="abc", models={"m": "123"})) as rec:
        rec.record("market", "", '{"x":1}', t=1)
        rec.record("user", "", b"\x1f\x8bgz", t=2)
        rec.record("rest", "GET /a?b=1", b'{"code":0}', 200, t=3)
        rec.record("send", "POST /o?c=d", b"", t=4)
    return path


def test_a_recording_round_trips(tmp_path: Path) -> None:
    r = Recording(sample(tmp_path / "r.gbrec"))
    assert (r.header.kind, r.header.config_hash, r.header.models) == ("session", "abc", {"m": "123"})
    assert [(x.t, x.ch, x.what, x.data, x.code) for x in r] == [
        (1, "market", "", '{"x":1}', 0), (2, "user", "", b"\x1f\x8bgz", 0),
        (3, "rest", "GET /a?b=1", b'{"code":0}', 200), (4, "send", "POST /o?c=d", b"", 0)]


def test_a_truncated_recording_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = sample(tmp_path / "r.gbrec")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RecordingError, match=r"r\.gbrec: truncated at byte \d+"):
        Recording(path).records()


def test_another_format_version_is_a_clear_error(tmp_path: Path) -> None:
    path = sample(tmp_path / "r.gbrec")
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, len(MAGIC), 99)
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=r"r\.gbrec: format version 99; this gatebot reads versions 1, 2"):
        Recording(path)
    path.write_bytes(b"PK\x03\x04 not a recording")
    with pytest.raises(RecordingError, match="not a gatebot recording"):
        Recording(path)
    with pytest.raises(RecordingError, match=r"missing\.gbrec"):
        Recording(tmp_path / "missing.gbrec")


@pytest.mark.parametrize("version", [2, 1])
def test_any_damage_gives_a_recording_error_never_a_crash(tmp_path: Path, version: int) -> None:
    good = sample(tmp_path / "r.gbrec")
    good = (good if version == 2 else _as_version_1(good, tmp_path / "v1.gbrec")).read_bytes()
    rnd = random.Random(5)
    damaged = [good[:n] for n in range(len(good))]
    for _ in range(400):
        b = bytearray(good)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        damaged.append(bytes(b))
    damaged += [good + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 12))) for _ in range(100)]
    path = tmp_path / "bad.gbrec"
    for data in damaged:
        path.write_bytes(data)
        try:
            Recording(path).records()
        except RecordingError as exc:
            assert "bad.gbrec" in str(exc)


def _as_version_1(src: Path, dst: Path) -> Path:
    """``src`` in the version 1 layout: one length prefix per record (as gatebot wrote it before blocks)."""
    r = Recording(src)
    enc = msgspec.msgpack.Encoder()
    head = enc.encode(msgspec.structs.replace(r.header, version=1))
    out = bytearray(MAGIC + struct.pack("<H", 1) + struct.pack("<I", len(head)) + head)
    for rec in r:
        body = enc.encode(rec)
        out += struct.pack("<I", len(body)) + body
    dst.write_bytes(bytes(out))
    return dst


def test_records_are_written_in_blocks_and_read_through_a_small_buffer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.gbrec"
    big = bytes(range(256)) * 40  # a record larger than a block and than the read buffer below
    with Recorder(path, Header(kind="session")) as rec:
        for i in range(1000):
            rec.record("market", "", f'{{"i":{i}}}', t=i)
            if i % 300 == 7:
                rec.record("rest", "GET /big", big, 200, t=i)
    expected = [(i, "market", "", f'{{"i":{i}}}', 0) for i in range(1000)]
    for i in range(7, 1000, 300):
        expected.insert(expected.index((i, "market", "", f'{{"i":{i}}}', 0)) + 1, (i, "rest", "GET /big", big, 200))
    got = [(x.t, x.ch, x.what, x.data, x.code) for x in Recording(path)]
    assert got == expected
    data = path.read_bytes()
    assert len(data) < 1004 * 40 + len(big) * 4, "not one length prefix per record"
    monkeypatch.setattr("gatebot.core.recording.READ_CHUNK", 100)
    assert [(x.t, x.ch, x.what, x.data, x.code) for x in Recording(path)] == expected
    path.write_bytes(data[:-1])
    with pytest.raises(RecordingError, match=r"r\.gbrec: truncated at byte \d+"):
        Recording(path).records()


def test_a_version_1_recording_still_reads_and_replays_the_same(tmp_path: Path, market: tuple[Path, Path]) -> None:
    cfg, rec = market
    old = _as_version_1(rec, tmp_path / "v1.gbrec")
    assert Recording(old).header.version == 1 and Recording(rec).header.version == 2
    assert Recording(old).records() == Recording(rec).records()
    assert hashlib.sha256(_replay(cfg, old)).hexdigest() == hashlib.sha256(_replay(cfg, rec)).hexdigest()
    old.write_bytes(old.read_bytes()[:-3])
    with pytest.raises(RecordingError, match=r"v1\.gbrec: truncated at byte \d+"):
        Recording(old).records()


def _replay(config_path: Path, recording: Path) -> bytes:
    config = load_config(config_path)
    result = asyncio.run(replay(config, make_plugin_manager(config.plugins.modules, config.plugins.disable),
                                recording))
    assert result.kind == "market" and result.bars > 1000
    journal = Journal(Path(config.state_dir) / "sma.sqlite", readonly=True)
    try:
        return journal.dump()
    finally:
        journal.close()


@pytest.fixture
def market(tmp_path: Path) -> tuple[Path, Path]:
    csv = write_csv(tmp_path / "candles.csv")
    rec = tmp_path / "market.gbrec"
    assert import_candles(csv, rec) == 1500 * 4 + 1
    cfg = tmp_path / "replay.toml"
    cfg.write_text(replay_text(tmp_path / "state"))
    return cfg, rec


def test_replaying_a_recording_twice_gives_byte_identical_journals_and_one_changed_frame_changes_it(
        tmp_path: Path, market: tuple[Path, Path]) -> None:
    cfg, rec = market
    first = hashlib.sha256(_replay(cfg, rec)).hexdigest()
    second = hashlib.sha256(_replay(cfg, rec)).hexdigest()
    assert first == second

    recording = Recording(rec)
    records = recording.records()
    altered = tmp_path / "altered.gbrec"
    with Recorder(altered, recording.header) as out:
        for i, r in enumerate(records):
            data = r.data
            if i == 2003:  # the closing push of candle 500: its close moves 3%
                k = json.loads(data)
                k["data"][0]["c"] = str(float(k["data"][0]["c"]) * 1.03)
                k["data"][0]["h"] = str(max(float(k["data"][0]["h"]), float(k["data"][0]["c"])))
                data = json.dumps(k)
            out.record(r.ch, r.what, data, r.code, t=r.t)
    assert hashlib.sha256(_replay(cfg, altered)).hexdigest() != first


def test_a_market_recording_replays_like_its_csv(tmp_path: Path, market: tuple[Path, Path]) -> None:
    cfg, rec = market
    assert main(["replay", str(cfg), str(rec)]) == 0
    frames = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    from_frames = [tuple(r) for r in frames.conn.execute("SELECT src, trigger, dst, record FROM transitions")]
    frames.close()
    assert main(["replay", str(cfg), "--candles", str(tmp_path / "candles.csv")]) == 0
    csv = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    from_csv = [tuple(r) for r in csv.conn.execute("SELECT src, trigger, dst, record FROM transitions")]
    csv.close()
    assert from_frames == from_csv and len(from_frames) > 50


BINGX_CONFIG = """
mode = "paper"
state_dir = "{state}"
[exchanges.sim]
type = "bingx"
[exchanges.sim.options]
attached_stop = true
[exchanges.sim.options.simulator]
mode = "auto"
speed = 6000.0
balance = 5000
bars = 50
symbols = ["BTC-USDT"]
[[instances]]
name = "sma"
exchange = "sim"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ fast = 5, slow = 20, fraction = 0.5 }}
protection = {{ leveraged_sl_pct = 0.04 }}
"""


def test_a_candle_replay_of_a_bingx_config_runs_on_paper_never_on_the_exchange(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatebot.exchanges.bingx.adapter import BingXAdapter

    def no_bingx(*_: object, **__: object) -> None:
        raise AssertionError("a candle replay started the BingX adapter")

    monkeypatch.setattr(BingXAdapter, "start", no_bingx)
    csv = write_csv(tmp_path / "candles.csv", bars=600)
    cfg = tmp_path / "bingx.toml"
    cfg.write_text(BINGX_CONFIG.format(state=tmp_path / "state"))
    assert main(["replay", str(cfg), "--candles", str(csv)]) == 0
    journal = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    try:
        assert journal.meta()["initial_balance"] in ("5000", "5000.0")  # the simulator's balance, on paper
        assert journal.conn.execute("SELECT COUNT(*) FROM transitions").fetchone()[0] > 10
    finally:
        journal.close()


def test_gatebot_report_writes_a_png_and_json_whose_equity_matches_the_journal(
        tmp_path: Path, market: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    cfg, rec = market
    assert main(["replay", str(cfg), str(rec)]) == 0
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "state"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "protection gap" in text and "exits by reason" in text and "5-day window" in text
    data = msgspec.json.decode((out / "report.json").read_bytes())["instances"][0]
    from gatebot.app.plot import read_series

    plotted = read_series(out / "report.png")["sma"]
    assert plotted == data["evaluation"]["equity_curve"]
    journal = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    try:
        closed = {p for (p,) in journal.conn.execute("SELECT position FROM transitions WHERE dst LIKE 'exited_%'")}
        rows = [(p, Decimal(r), Decimal(f)) for p, r, f in journal.conn.execute(
            "SELECT position, realized_pnl, fee FROM fills")]
        pnl = sum((r for p, r, _ in rows if p in closed), Decimal(0))
        fees = sum((f for p, _, f in rows if p in closed), Decimal(0))
        initial = Decimal(journal.meta()["initial_balance"])
        n_trades = journal.conn.execute(
            "SELECT COUNT(*) FROM transitions WHERE dst LIKE 'exited_%' AND src NOT LIKE 'exited_%'").fetchone()[0]
    finally:
        journal.close()
    ev = data["evaluation"]
    # a market recording has no candle file: the replay wrote its candles beside the journals, to mark equity at
    assert ev["whole"]["trades"] == n_trades and ev["marks"] == "candle closes"
    assert len(plotted["equity"]) == len((tmp_path / "state" / "candles-BTC-USDT-5m.csv").read_text().splitlines()) - 1
    assert plotted["equity"][0] == float(initial)
    opened = Decimal(ev["open_position"]["net"]) if ev["open_position"] else Decimal(0)
    assert abs(Decimal(ev["final_equity"]) - (initial + pnl - fees + opened)) <= Decimal("0.01")  # each to the cent
    assert plotted["equity"][-1] == pytest.approx(float(initial + pnl - fees + opened), abs=0.01)
    assert max(plotted["drawdown_pct"]) == pytest.approx(ev["whole"]["max_drawdown_pct"])


def test_gatebot_replay_of_a_recording_damaged_midway_says_what_was_replayed_before_it(
        tmp_path: Path, market: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A recording cut short (a crash while recording) replays up to the damage: exit status 2, the file
    and byte named, and the journals keep the candles before it; a file that is no recording starts
    nothing."""
    cfg, rec = market
    cut = tmp_path / "cut.gbrec"
    data = rec.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert main(["replay", str(cfg), str(cut)]) == 2
    err = capsys.readouterr().err
    assert "cut.gbrec: truncated at byte" in err and "the replay stopped there" in err
    journal = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    try:
        assert journal.conn.execute("SELECT COUNT(*) FROM transitions").fetchone()[0] > 0
    finally:
        journal.close()

    not_one = tmp_path / "notes.gbrec"
    not_one.write_text("hello")
    for path in (tmp_path / "state").iterdir():
        path.unlink()
    assert main(["replay", str(cfg), str(not_one)]) == 2
    err = capsys.readouterr().err
    assert "notes.gbrec: not a gatebot recording" in err and "stopped there" not in err
    assert not list((tmp_path / "state").iterdir()), "nothing started"
