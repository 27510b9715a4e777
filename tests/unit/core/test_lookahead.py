"""check-lookahead: the future replaced by noise at cut points changes nothing before them, for each shipped
strategy on both paths; a planted one-candle look-ahead is found and its candle named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gatebot.app.cli import main
from gatebot.core import lookahead
from gatebot.core.market import generate, load_csv
from gatebot.core.strategy import StrategyContext
from gatebot.strategies.sma_cross.strategy import SmaCross, SmaCrossParams
from tests.helpers import ROOT

PEEKING = """
mode = "replay"
state_dir = "{state}"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.paper]
type = "paper"
[[instances]]
name = "peek"
exchange = "paper"
strategy = "peeking"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ peek_at_ms = {peek_at_ms}, expose = {expose} }}
"""


def write_candles(path: Path, bars: int, seed: int = 5) -> np.ndarray:
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}"
              for c in generate(seed=seed, symbol="BTC-USDT", interval="5m", bars=bars, volatility=0.004)]
    path.write_text("\n".join(lines) + "\n")
    return load_csv(path)


def test_perturbed_keeps_the_past_and_replaces_all_of_the_future(tmp_path: Path) -> None:
    rows = write_candles(tmp_path / "c.csv", 50)
    noisy = lookahead.perturbed(rows, 20, seed=1)
    np.testing.assert_array_equal(noisy[:21], rows[:21])
    np.testing.assert_array_equal(noisy[:, 0], rows[:, 0])
    assert (noisy[21:, 1:] != rows[21:, 1:]).all()
    o, h, lo, c = noisy[:, 1], noisy[:, 2], noisy[:, 3], noisy[:, 4]
    assert ((lo <= np.minimum(o, c)) & (h >= np.maximum(o, c)) & (lo > 0)).all()
    np.testing.assert_array_equal(lookahead.perturbed(rows, 20, seed=1), noisy)  # seeded
    assert not np.array_equal(lookahead.perturbed(rows, 20, seed=2), noisy)


def test_sma_cross_is_causal_on_both_paths(tmp_path: Path) -> None:
    rows = write_candles(tmp_path / "c.csv", 300)
    ctx = StrategyContext(instance="s", symbol="BTC-USDT", interval="5m", leverage=4)
    params = SmaCrossParams(fast=3, slow=8)
    assert lookahead.check(lambda: SmaCross(params, ctx), rows, cuts=40) == []
    decided = sum(d is not None for ds, _ in lookahead.trace(lambda: SmaCross(params, ctx), rows, batch=True)
                  for d in ds)
    assert decided > 20, "the check compared real decisions, not a run of Nones"


def test_cli_passes_both_shipped_strategies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "c.csv"
    write_candles(csv, 400)
    for config, strategy in (("paper_replay.toml", "sma_cross"), ("opportunity_gating.toml", "opportunity_gating")):
        assert main(["check-lookahead", str(ROOT / "examples" / config), "--candles", str(csv), "--cuts", "12"]) == 0
        out = capsys.readouterr().out
        assert f"({strategy}): no look-ahead (400 candles, 12 cut points" in out


def test_opportunity_gating_exposes_its_features_to_the_check() -> None:
    from gatebot.strategies.opportunity_gating import features as F
    from gatebot.strategies.opportunity_gating.strategy import OpportunityGating, OpportunityGatingParams

    rows = np.array([[c.open_time, c.open, c.high, c.low, c.close, c.volume]
                     for c in generate(seed=4, symbol="BTC-USDT", interval="5m", bars=200)])
    ctx = StrategyContext(instance="og", symbol="BTC-USDT", interval="5m", leverage=4)
    got = lookahead.trace(lambda: OpportunityGating(OpportunityGatingParams(), ctx), rows, batch=True)
    assert got[F.WINDOW - 2][1] == {}
    assert set(got[-1][1]) == {*F.FEATURES, "p_long", "p_short"}


@pytest.mark.parametrize("expose", [True, False])
def test_a_planted_one_candle_look_ahead_is_found_and_its_candle_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], expose: bool) -> None:
    rows = write_candles(tmp_path / "c.csv", 300)
    k = lookahead.cut_points(len(rows), 24)[7]  # the check cuts there: the candle after it becomes noise
    peek_at_ms = int(rows[k, 0])
    config = tmp_path / "peek.toml"
    config.write_text(PEEKING.format(state=tmp_path / "state", peek_at_ms=peek_at_ms, expose=str(expose).lower()))
    assert main(["check-lookahead", str(config), "--candles", str(tmp_path / "c.csv"), "--cuts", "24"]) == 1
    out = capsys.readouterr().out
    at = datetime.fromtimestamp(peek_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert out.startswith(f"look-ahead: instance peek (peeking): candle {at} (#{k}), "), out
    assert ("feature next_close" if expose else "decision (flat)") in out
    assert out.count("\n") == 1


def test_cli_bad_candle_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,o\n1,2\n")
    assert main(["check-lookahead", str(ROOT / "examples" / "paper_replay.toml"), "--candles", str(bad)]) == 2
    assert "bad.csv: line 1" in capsys.readouterr().err


def test_a_strategy_that_never_decides_is_not_passed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_candles(tmp_path / "c.csv", 100)
    config = tmp_path / "peek.toml"
    config.write_text(PEEKING.format(state=tmp_path / "state", peek_at_ms=1, expose="true"))  # no candle opens then
    assert main(["check-lookahead", str(config), "--candles", str(tmp_path / "c.csv"), "--cuts", "4"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: instance peek (peeking): nothing to compare: it decided nothing and exposed no "
                            "feature in 100 candles (a longer --bars?)\n") and captured.out == ""
