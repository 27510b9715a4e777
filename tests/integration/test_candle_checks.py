"""Every replay checks its candle file against the config's interval: a wrong spacing or too long a gap is
refused with one line (exit 2); smaller gaps and repeated rows are counted in the output and the journal."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import pytest

from gatebot.app.cli import main
from gatebot.core.journal import Journal
from gatebot.core.market import CandleFileError, check_spacing, generate, read_candles
from tests.helpers import SHARED_DATA, replaced, sma_replay_text

SHARED_15M = SHARED_DATA / "bingx_btcusdt_15m_2024-12-26_2025-10-14.csv"


def config(tmp: Path, market: str = "") -> Path:
    path = tmp / "replay.toml"
    path.write_text(replaced(sma_replay_text(tmp / "state"), ("fast = 10, slow = 30", "fast = 3, slow = 8")) + market)
    return path


def candles(path: Path, *, bars: int = 200, drop: Collection[int] = (), repeat: Collection[int] = ()) -> list[str]:
    """A generated 5m file without the candles at the indices in ``drop``, the rows at ``repeat`` written twice."""
    lines = []
    for i, c in enumerate(generate(seed=2, symbol="BTC-USDT", interval="5m", bars=bars)):
        if i in drop:
            continue
        lines += [f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}"] * (2 if i in repeat else 1)
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    return lines


@pytest.mark.skipif(not SHARED_15M.exists(), reason=f"shared candle file {SHARED_15M} is absent")
def test_the_shared_15m_file_under_a_5m_config_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(config(tmp_path)), "--candles", str(SHARED_15M)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {SHARED_15M}: candles are 15m apart, but the config trades 5m: use a 5m candle file "
                   "(or a 15m interval)\n")
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.sqlite")), "nothing started"


def test_an_eleven_candle_gap_is_refused_naming_its_time_and_size(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "gap.csv"
    candles(csv, drop=range(100, 111))
    assert main(["replay", str(config(tmp_path)), "--candles", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {csv}: a gap of 11 missing 5m candles (55m) after the candle at 2025-01-01 08:15 UTC; "
                   "more than max_gap_candles = 10 ([market] in the config)\n")


def test_the_gap_limit_is_a_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "gap.csv"
    candles(csv, drop=range(100, 111))
    assert main(["replay", str(config(tmp_path, "[market]\nmax_gap_candles = 11")), "--candles", str(csv)]) == 0
    assert "1 gap(s) (11 missing candle(s), the longest 11 after 2025-01-01 08:15 UTC)" in capsys.readouterr().out
    assert main(["replay", str(config(tmp_path, "[market]\nmax_gap_candles = -1")), "--candles", str(csv)]) == 2
    assert "max_gap_candles" in capsys.readouterr().err


def test_small_gaps_and_repeated_rows_are_counted_in_the_output_and_the_journal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "holes.csv"
    candles(csv, drop={50, 51, 52, 60}, repeat=(80, 81, 150))
    assert main(["replay", str(config(tmp_path)), "--candles", str(csv)]) == 0
    out = capsys.readouterr().out
    line = (f"candle file {csv} (5m): 196 candles, 2 gap(s) (4 missing candle(s), the longest 3 after "
            "2025-01-01 04:05 UTC), 3 duplicate row(s) dropped")
    assert line in out.splitlines()
    assert "196 candles processed" in out
    journal = Journal(tmp_path / "state" / "sma.sqlite", readonly=True)
    try:
        meta = json.loads(journal.meta()["candle_file"])
    finally:
        journal.close()
    assert {k: meta[k] for k in ("candles", "gaps", "missing", "longest", "duplicates")} == \
        {"candles": 196, "gaps": 2, "missing": 4, "longest": 3, "duplicates": 3}
    assert main(["report", str(tmp_path / "state"), "--no-png"]) == 0
    assert line in capsys.readouterr().out.splitlines(), "the report shows the data's quality as the replay did"
    (report,) = json.loads((tmp_path / "state" / "report.json").read_bytes())["instances"]
    assert report["candle_file"] == meta


def test_a_repeated_time_with_other_values_and_an_off_grid_candle_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    lines = candles(csv, bars=20)
    t, *rest = lines[5].split(",")
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(
        [*lines[:6], f"{t},{rest[0]},{rest[1]},{rest[2]},{rest[3]},999", *lines[6:]]) + "\n")
    with pytest.raises(CandleFileError, match=r"line 8: timestamps are not strictly increasing"):
        read_candles(csv)
    shifted = [*lines[:6], f"{int(t) + 360_000}," + ",".join(rest), *lines[7:]]
    csv.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(shifted) + "\n")
    with pytest.raises(CandleFileError, match=r"the candle at 2025-01-01 00:31 UTC is not on the 5m grid"):
        check_spacing(read_candles(csv), "5m", 10)
    candles(csv, bars=20)
    with pytest.raises(CandleFileError, match=r"candles are 5m apart, but the config trades 15m"):
        check_spacing(read_candles(csv), "15m", 10)
