"""Candle files and the generated market: exact parsing, errors that name the line, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gatebot.core.market import CandleFileError, array_candles, generate, load_csv
from tests.helpers import SHARED_5M

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD_ROWS = ["2025-08-06 16:05:00,100.5,101.0,100.0,100.7,3.2", "2025-08-06 16:10:00,100.7,100.9,99.8,100.1,1.0"]


def write(tmp: Path, text: str) -> Path:
    path = tmp / "c.csv"
    path.write_text(text)
    return path


def test_iso_times_are_open_times_in_ms(tmp_path: Path) -> None:
    rows = load_csv(write(tmp_path, HEADER + "\n".join(GOOD_ROWS) + "\n"))
    assert rows[:, 0].tolist() == [1754496300000.0, 1754496600000.0]
    assert rows[0, 1:].tolist() == [100.5, 101.0, 100.0, 100.7, 3.2]


@pytest.mark.parametrize("unit", [1, 1000])
def test_epoch_seconds_and_ms(tmp_path: Path, unit: int) -> None:
    rows = load_csv(write(tmp_path, HEADER + f"{1754496300 * unit},1,2,0.5,1.5,10\n"))
    assert rows[0, 0] == 1754496300000.0


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty file"),
    ("time,o,h,l,c,v\n" + GOOD_ROWS[0], "line 1: expected header"),
    (HEADER, "no candles"),
    (HEADER + GOOD_ROWS[0] + "\n2025-08-06 16:10:00,100.7,100.9,99.8\n", "line 3: expected 6 columns, got 4"),
    (HEADER + GOOD_ROWS[0] + "\n2025-08-06 16:10:00,100.7,abc,99.8,100.1,1\n", "line 3:"),
    (HEADER + "yesterday,1,2,0.5,1.5,1\n", "line 2:"),
    (HEADER + GOOD_ROWS[0] + "\n2025-08-06 16:10:00,100.7,100.0,99.8,100.1,1\n", "line 3: inconsistent OHLC"),
    (HEADER + GOOD_ROWS[1] + "\n" + GOOD_ROWS[0] + "\n", "line 3: timestamps are not strictly increasing"),
    (HEADER + GOOD_ROWS[0] + "\n" + GOOD_ROWS[0] + "\n", "line 3: timestamps are not strictly increasing"),
    (HEADER + "2025-08-06 16:05:00,0,0,0,0,1\n", "line 2: inconsistent OHLC"),
])
def test_a_bad_file_is_refused_naming_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CandleFileError) as info:
        load_csv(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CandleFileError, match="cannot read"):
        load_csv(tmp_path / "none.csv")


def test_generated_market_is_seeded_and_consistent() -> None:
    a = list(generate(seed=7, symbol="BTC-USDT", interval="5m", bars=3000))
    b = list(generate(seed=7, symbol="BTC-USDT", interval="5m", bars=3000))
    c = list(generate(seed=8, symbol="BTC-USDT", interval="5m", bars=3000))
    assert a == b and a != c
    assert all(k.low <= min(k.open, k.close) and k.high >= max(k.open, k.close) and k.low > 0 for k in a)
    assert [k.open_time for k in a] == list(range(a[0].open_time, a[0].open_time + 3000 * 300_000, 300_000))
    assert all(k.open == prev.close for prev, k in itertools.pairwise(a))


@pytest.mark.skipif(not SHARED_5M.exists(), reason=f"shared candle file {SHARED_5M} is absent")
def test_the_shared_bingx_file_loads() -> None:
    rows = load_csv(SHARED_5M)
    assert len(rows) > 19_000
    assert np.all(np.diff(rows[:, 0]) % 300_000 == 0)
    first = next(array_candles(rows, "BTC-USDT", "5m"))
    assert first.open_time == 1754496300000 and first.open == 115391.1
