"""The random-entry baseline (``gatebot evaluate --baseline N``): a planted edge gets a small p-value, a
strategy that itself enters at random does not; the random runs copy the strategy's rates and repeat exactly."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import msgspec
import pytest

from gatebot.app.baseline import RandomEntry, RandomEntryParams, run_baseline
from gatebot.app.cli import main
from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext
from gatebot.plugins.hookspecs import hookimpl
from tests.helpers import config_text, write_edge_candles

STEP = 300_000
EVERY = 30
"""Every 30th candle is followed by one that closes 1.5% higher (and the next one gives it back)."""
CANDLES = 2000


def write_candles(path: Path) -> Path:
    return write_edge_candles(path, CANDLES, every=EVERY)


class EdgeParams(msgspec.Struct, frozen=True, kw_only=True):
    pass


class PlantedEdge:
    """Knows the market's rule: long on every 30th candle, out one candle later."""

    Params: ClassVar[type[msgspec.Struct]] = EdgeParams

    def __init__(self, params: EdgeParams, context: StrategyContext) -> None:
        self.history = 1
        self._index = 0

    def on_candle(self, candle: CandleClosed) -> None:
        self._index = (candle.open_time - 1_735_689_600_000) // STEP

    def decide(self, view: PositionView) -> Decision:
        if view.state == "flat" and self._index % EVERY == 0:
            return Enter(side="long", fraction=0.5)
        if view.state == "protected" and view.bars_held >= 1:
            return Exit(reason="edge")
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"planted_edge": PlantedEdge}


def config(tmp_path: Path, strategy: str, params: str = "") -> Path:
    path = tmp_path / f"{strategy}.toml"
    path.write_text(config_text("plugin_replay", state=tmp_path / "state", instance="x", strategy=strategy, sl=0.04,
                                modules='["tests.integration.test_baseline", "gatebot.app.baseline"]', params=params))
    return path


def test_a_planted_edge_gets_a_small_p_value(tmp_path: Path) -> None:
    csv = write_candles(tmp_path / "c.csv")
    b = run_baseline(config(tmp_path, "planted_edge"), csv, 29, workers=2)
    assert b.strategy_return_pct > 0 and max(b.random_returns_pct) < b.strategy_return_pct
    assert b.percentile == 100.0 and b.p_value == pytest.approx(1 / 30)
    assert b.method.startswith("empirical")
    # the random runs copied its rates: one entry per 30 candles while flat, all long, half the balance, out
    # after one candle
    p = b.params
    assert p["long_share"] == 1.0 and p["max_hold"] == 1
    assert p["entry_rate"] == pytest.approx(1 / (EVERY - 1), rel=0.1)
    assert all(f == pytest.approx(0.5, abs=0.01) for f in p["fractions"])


def test_a_random_strategy_does_not_beat_random_entries(tmp_path: Path) -> None:
    csv = write_candles(tmp_path / "c.csv")
    cfg = config(tmp_path, "random_entry", "seed = 987654\nentry_rate = 0.05\nexit_rate = 0.2\nfractions = [0.5]")
    b = run_baseline(cfg, csv, 29, workers=2)
    assert b.p_value > 0.1
    again = run_baseline(cfg, csv, 29, workers=1)
    assert again.random_returns_pct == b.random_returns_pct, "seeded: the same runs, in any number of processes"


def test_random_entry_draws_once_per_candle_from_its_seed() -> None:
    ctx = StrategyContext(instance="r", symbol="BTC-USDT", interval="5m", leverage=4)
    p = RandomEntryParams(seed=3, entry_rate=0.5, long_share=0.5, fractions=[0.2, 0.9])

    def decisions() -> list[Decision]:
        s = RandomEntry(p, ctx)
        out = []
        for i in range(50):
            s.on_candle(CandleClosed(symbol="BTC-USDT", interval="5m", open_time=i * STEP, open=1, high=1, low=1,
                                     close=1, volume=1, ts=i * STEP))
            first = s.decide(PositionView(state="flat"))
            assert s.decide(PositionView(state="flat")) == first, "asked twice on one candle: the same answer"
            out.append(first)
        return out

    got = decisions()
    assert got == decisions()
    entries = [d for d in got if isinstance(d, Enter)]
    assert 10 < len(entries) < 40 and {e.side for e in entries} == {"long", "short"}
    assert {e.fraction for e in entries} == {0.2, 0.9}


def test_gatebot_evaluate_prints_the_percentile_and_the_report_shows_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_candles(tmp_path / "c.csv")
    cfg = config(tmp_path, "planted_edge")
    assert main(["evaluate", str(cfg), "--candles", str(csv), "--baseline", "9", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "percentile 100.0, p-value 0.100 (empirical, one-sided: (k+1)/(N+1))" in out
    assert (tmp_path / "state" / "baseline.json").is_file()
    assert main(["report", str(tmp_path / "state"), "--no-png"]) == 0
    assert "random-entry baseline (9 runs" in capsys.readouterr().out
    assert main(["replay", str(cfg), "--candles", str(write_candles(tmp_path / "d.csv"))]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "state"), "--no-png"]) == 0
    # the replay made a new journal of the same strategy on the same candles: the same figure, still shown
    assert "random-entry baseline (9 runs" in capsys.readouterr().out


def test_a_baseline_of_another_run_is_not_shown_as_this_ones(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_candles(tmp_path / "c.csv")
    cfg = config(tmp_path, "planted_edge")
    assert main(["evaluate", str(cfg), "--candles", str(csv), "--baseline", "3", "--workers", "1"]) == 0
    shorter = tmp_path / "short.csv"
    shorter.write_text("\n".join(csv.read_text().splitlines()[:1001]) + "\n")
    assert main(["replay", str(cfg), "--candles", str(shorter)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "state"), "--no-png"]) == 0
    out = capsys.readouterr().out
    assert "baseline.json is of another run" in out and "random-entry baseline (3 runs" not in out


def test_evaluate_refuses_an_unknown_instance_and_a_baseline_below_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_candles(tmp_path / "c.csv")
    cfg = config(tmp_path, "planted_edge")
    assert main(["evaluate", str(cfg), "--candles", str(csv), "--baseline", "2", "--instance", "nope"]) == 2
    assert "evaluate --instance: no instance 'nope' (there are x)" in capsys.readouterr().err
    assert main(["evaluate", str(cfg), "--candles", str(csv), "--baseline", "0"]) == 2
    assert "--baseline must be at least 1" in capsys.readouterr().err
