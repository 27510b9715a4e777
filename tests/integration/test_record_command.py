"""`gatebot record CONFIG --out FILE` against the embedded BingX simulator on loopback: market data only
(no orders, no user stream), a header naming the config, and a recording that `gatebot replay CONFIG
FILE` replays on the paper exchange into a journal, with the very candles the recorder saw."""

from __future__ import annotations

import re
from pathlib import Path

from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.core.recording import CONNECT, MARKET, REST, SEND, START, USER, Recording, session_hash
from gatebot.exchanges.bingx import codec
from tests.helpers import gatebot

CONFIG = """
mode = "paper"
state_dir = "{state}"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.sim]
type = "bingx"
[exchanges.sim.options.simulator]
mode = "auto"
speed = 6000.0        # a 5m candle every 50 ms
history_bars = 40
bars = {bars}         # then the market ends, and so does the recording
seed = 11
[[instances]]
name = "bot"
exchange = "sim"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ enter_on = 1, every = 2, fraction = 0.5 }}
protection = {{ leveraged_sl_pct = 0.04 }}
"""

RECORDED = re.compile(r"market data of (\d+) closed candle\(s\) recorded")
REPLAYED = re.compile(r"(\d+) candles from ([\d,]+) frames replayed \(market recording\)")


def write_config(tmp: Path, bars: int) -> Path:
    path = tmp / "record.toml"
    path.write_text(CONFIG.format(state=tmp / "state", bars=bars))
    return path


def record(config: Path, out: Path, *args: str) -> int:
    """`gatebot record` in a child process (it ends by itself: the simulator's market is finite);
    returns the number of closed candles it says it recorded."""
    done = gatebot("record", str(config), "--out", str(out), *args, timeout=90)
    assert done.returncode == 0, done.stderr
    match = RECORDED.search(done.stdout)
    assert match, done.stdout
    return int(match.group(1))


def kline_pushes(recording: Recording) -> list[codec.KlinePush]:
    out = []
    for rec in recording:
        if rec.ch == MARKET and rec.what == "":
            text = codec.ungzip_frame(rec.data)
            if "@kline_" in text and '"data":[' in text:
                out.append(codec.kline_push_decoder.decode(text))
    return out


def test_record_writes_market_data_only_and_its_recording_replays_on_paper(tmp_path: Path) -> None:
    bars = 24
    config = write_config(tmp_path, bars)
    out = tmp_path / "market.gbrec"
    seen = record(config, out)
    # The simulator plays 24 live candles from its start; the recorder continues from the last candle
    # closed when it asked (an instant later), and the last candle never closes on the stream.
    assert bars // 2 <= seen <= bars - 1, seen

    recording = Recording(out)
    header = recording.header
    assert header.kind == "market"
    assert header.config_hash == session_hash(load_config(config))
    assert set(header.models) == {"bot.params"} and header.meta.get("mode") == "paper"
    assert header.created_ms > 0

    records = recording.records()
    channels = {r.ch for r in records}
    assert SEND not in channels and USER not in channels, "a market recording holds no orders, no account events"
    rest = [r.what for r in records if r.ch == REST]
    assert rest and all(w.startswith("GET /openApi/swap/") and "/trade/" not in w for w in rest), rest
    assert not any("/user/" in w or "listenKey" in w for w in rest), "no user stream without credentials"
    markers = [r for r in records if r.ch == MARKET and r.what in (CONNECT, START)]
    assert [r.what for r in markers] == [START, CONNECT], "where the stream started, then one connection"

    pushes = kline_pushes(recording)
    assert all(p.dataType == "BTC-USDT@kline_5m" and p.s == "BTC-USDT" for p in pushes)
    open_times = sorted({(p.data[0] if isinstance(p.data, list) else p.data).T for p in pushes})  # type: ignore[union-attr]
    # four pushes per candle (open, two extremes, close), fewer for the first one joined and the last one
    assert len(open_times) > seen // 2 and len(pushes) >= 4 * (len(open_times) - 2), (len(pushes), open_times)

    done = gatebot("replay", str(config), str(out), timeout=90)
    assert done.returncode == 0, done.stderr
    assert "another configuration" not in done.stderr, "recorded under this very config"
    match = REPLAYED.search(done.stdout)
    assert match, done.stdout
    assert int(match.group(1)) == seen, "the replay closes exactly the candles the recorder saw"

    journal = Journal(tmp_path / "state" / "bot.sqlite", readonly=True)
    try:
        meta = journal.meta()
        exits = journal.conn.execute("SELECT COUNT(*) FROM transitions WHERE dst LIKE 'exited_%' "
                                     "AND src NOT LIKE 'exited_%'").fetchone()[0]
        intents = journal.conn.execute("SELECT COUNT(*) FROM intents").fetchone()[0]
    finally:
        journal.close()
    assert meta["mode"] == "replay" and meta["instance"] == "bot"
    assert exits >= 3 and intents > 0, (exits, intents)  # a trade every two candles, on the paper exchange


def test_record_stops_after_the_candles_asked_for(tmp_path: Path) -> None:
    config = write_config(tmp_path, bars=600)  # 30 s of market, unless --candles ends the recording
    out = tmp_path / "short.gbrec"
    seen = record(config, out, "--candles", "3")
    assert 3 <= seen < 20, seen
    done = gatebot("replay", str(config), str(out), timeout=90)
    assert done.returncode == 0, done.stderr
    match = REPLAYED.search(done.stdout)
    assert match and int(match.group(1)) == seen, done.stdout
