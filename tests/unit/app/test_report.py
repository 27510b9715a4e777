"""The one evaluation (app/evaluation.py): out of sample first, compounding, mark-to-market drawdown, costs on
their own lines, the open position at the last mark, non-overlapping 5-day windows after the warm-up."""

from __future__ import annotations

from decimal import Decimal
from decimal import Decimal as D
from pathlib import Path

import msgspec
import numpy as np
import pytest

from gatebot.app.cli import main
from gatebot.app.evaluation import WINDOW_MS, JournalFacts, TradeRow, evaluate, format_evaluation
from gatebot.core.position import PositionRecord
from tests.helpers import ROOT, SHARED_5M, replaced, sma_replay_text

STEP = 300_000  # 5m
DAY = 86_400_000


def candles(closes: list[float]) -> np.ndarray:
    n = len(closes)
    t = np.arange(n, dtype=float) * STEP
    c = np.array(closes)
    return np.column_stack([t, c, c, c, c, np.ones(n)])


def trade(pos: int, opened_bar: int, bars: int, entry: float, exit: float, qty: str = "1", reason: str = "exit",
          fees: str = "0") -> TradeRow:
    q = D(qty)
    return TradeRow(position=pos, side="long", qty=q, entry_price=D(repr(entry)), exit_price=D(repr(exit)),
                    opened_at=opened_bar * STEP, filled_at=opened_bar * STEP, closed_at=(opened_bar + bars) * STEP,
                    exit_reason=reason, realized_pnl=(D(repr(exit)) - D(repr(entry))) * q, fees=D(fees),
                    entry_fees=D(fees) / 2, funding=D(0))


def facts(trades: list[TradeRow], *, training: tuple[int, int] | None = None, warmup: int = 0,
          open_rec: PositionRecord | None = None, n: int = 100) -> JournalFacts:
    return JournalFacts(instance="x", initial_balance=D(1000), trades=trades, open=open_rec, funding_times={},
                        first_ts=STEP, last_ts=n * STEP, interval_ms=STEP, warmup_candles=warmup, training=training)


def test_compounding_and_drawdown_marked_to_market_see_the_dip_inside_a_trade() -> None:
    closes = [100.0] * 100
    closes[12] = 50.0  # the held position dips to 50 one candle, then closes at 110
    ev = evaluate(facts([trade(1, 10, 10, 100.0, 110.0, qty="10", fees="2")]), candles(closes))
    whole = ev["whole"]
    assert whole["net"] == "98.00" and ev["final_equity"] == "1098.00"
    assert whole["compound_return_pct"] == pytest.approx(9.8)
    # at the dip: 1000 + 10 * (50 - 100) - 1 (entry fee) = 499: 50.1% below the peak of 1000
    assert whole["max_drawdown_pct"] == pytest.approx(50.1)
    assert ev["marks"] == "candle closes"
    without = evaluate(facts([trade(1, 10, 10, 100.0, 110.0, qty="10", fees="2")]))
    assert without["whole"]["max_drawdown_pct"] == 0.0 and without["marks"] == "entries and trade closes"
    text = format_evaluation(without)
    assert "(at entries and trade closes only)" in text and "marked to market" not in text


def test_out_of_sample_comes_first_and_the_training_window_is_its_own_part() -> None:
    ts = [trade(1, 5, 5, 100.0, 110.0), trade(2, 40, 5, 100.0, 90.0), trade(3, 80, 5, 100.0, 101.0)]
    # trained on candles 30..60 (open times): the trade decided at the close of candle 39 is in sample
    ev = evaluate(facts(ts, training=(30 * STEP, 60 * STEP)), candles([100.0] * 100))
    assert [p["kind"] for p in ev["parts"]] == ["out_of_sample", "in_sample"]
    oos, ins = ev["parts"]
    assert oos["trades"] == 2 and ins["trades"] == 1, "before and after the training window are out of sample"
    assert ins["net"] == "-10.00"
    text = format_evaluation(ev)
    assert text.index("out of sample") < text.index("IN SAMPLE")
    edge = evaluate(facts([trade(4, 61, 5, 100.0, 100.0)], training=(30 * STEP, 60 * STEP)))
    assert edge["parts"][1]["trades"] == 1, "decided at the close of the last training candle: in sample"


def test_no_training_window_is_all_out_of_sample() -> None:
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)]))
    assert len(ev["parts"]) == 1 and ev["parts"][0]["kind"] == "out_of_sample" and ev["parts"][0]["trades"] == 1


def test_open_position_is_valued_at_the_last_mark() -> None:
    rec = PositionRecord(state="protected", seq=2, side="long", entry_qty=D(2), filled_qty=D(2), entry_cost=D(200),
                         fees=D(1), opened_at=50 * STEP, stop_price=D(99))
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)], open_rec=rec), candles([100.0] * 99 + [105.0]))
    assert ev["open_position"]["net"] == "9.00"  # 2 * (105 - 100) - 1
    assert ev["final_equity"] == "1019.00"
    assert ev["equity_curve"]["equity"][-1] == pytest.approx(1019.0)
    assert ev["whole"]["trades"] == 1 and ev["whole"]["open_positions"] == 1


def test_five_day_windows_do_not_overlap_skip_the_warm_up_and_count_a_trade_where_it_closes() -> None:
    per_day = DAY // STEP
    n = 12 * per_day  # 12 days
    warm = per_day  # one day of warm-up: 11 days left, two whole windows
    crossing = trade(1, warm + 5 * per_day - 10, 20, 100.0, 110.0, qty="10")  # crosses the first boundary
    ts = [trade(2, warm + 10, 5, 100.0, 95.0, qty="10"), crossing]
    ev = evaluate(facts(ts, warmup=warm, n=n), candles([100.0] * n))
    w = ev["whole"]["windows"]
    assert w["count"] == 2
    first = -50 / 1000
    second = 100 / 950
    assert w["returns_pct"] == pytest.approx([first * 100, second * 100])
    assert w["mean_return_pct"] == pytest.approx((first + second) / 2 * 100)
    assert WINDOW_MS == 5 * DAY


def test_a_run_shorter_than_a_window_says_so() -> None:
    ev = evaluate(facts([trade(1, 5, 5, 100.0, 110.0)]), candles([100.0] * 100))
    assert ev["whole"]["windows"]["count"] == 0
    assert "none (the period after the warm-up is 0.3 days, shorter than one window)" in format_evaluation(ev)
    assert "over 0 windows" not in format_evaluation(ev)


def test_slippage_is_a_line_of_its_own() -> None:
    stop = trade(1, 5, 5, 100.5, 98.0, reason="sl")  # entered 0.5 above the decision close, stopped 1 below 99
    stop.stop_price = D(99)
    ev = evaluate(facts([stop]), candles([100.0] * 100))
    assert ev["whole"]["slippage"] == "1.50"
    assert "slippage +1.50 USDT" in format_evaluation(ev)


# --- on the shared 5m file: replay leads with out of sample; report, JSON and PNG agree to the cent --------

SHARED_TOML_STATE = 'state_dir = "../state/opportunity_gating"'


def test_replay_of_the_shared_file_leads_with_out_of_sample_and_every_view_agrees(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not SHARED_5M.exists():
        pytest.skip(f"shared candle file {SHARED_5M} is absent")
    pytest.importorskip("matplotlib")
    cfg = tmp_path / "og.toml"
    example = (ROOT / "examples" / "opportunity_gating.toml").read_text()
    assert SHARED_TOML_STATE in example
    cfg.write_text(example.replace(SHARED_TOML_STATE, f'state_dir = "{tmp_path / "state"}"'))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "report.json").write_text('{"instances": []}')  # an earlier run's, to be refreshed
    assert main(["replay", str(cfg), "--candles", str(SHARED_5M)]) == 0
    replay_out = capsys.readouterr().out.splitlines()
    figures = [line for line in replay_out if "USDT" in line or "%" in line]
    assert figures[0].startswith("  out of sample: "), figures[:2]
    assert any(line.startswith("  IN SAMPLE") for line in figures)
    data = msgspec.json.decode((tmp_path / "state" / "report.json").read_bytes())["instances"]
    assert len(data) == 1, "the replay refreshed report.json"
    assert main(["report", str(tmp_path / "state"), "--out", str(tmp_path / "r")]) == 0
    report_out = capsys.readouterr().out
    ev = msgspec.json.decode((tmp_path / "r" / "report.json").read_bytes())["instances"][0]["evaluation"]
    assert ev == data[0]["evaluation"]
    oos = ev["parts"][0]
    assert oos["kind"] == "out_of_sample" and oos["trades"] > 0
    for p in ev["parts"]:
        line = f"{p['trades']} trades"
        net = f"net {Decimal(p['net']):+.2f} USDT, compounded return {p['compound_return_pct']:+.2f}%, max drawdown " \
              f"{p['max_drawdown_pct']:.2f}%"
        for text in ("\n".join(replay_out), report_out):
            assert f"{p['label']}: {line}" in text and net in text
            for cost in (f"\n    fees {Decimal(p['fees']):.2f} USDT",
                         f"\n    funding {Decimal(p['funding']):+.2f} USDT",
                         f"\n    slippage {Decimal(p['slippage']):+.2f} USDT"):
                assert cost in text, cost
    # the trades' nets add up to the parts' nets, to the cent
    rows = ev["trades_table"]
    for p in ev["parts"]:
        assert sum((Decimal(r["net"]) for r in rows if r["sample"] == p["kind"]), Decimal(0)) == \
            pytest.approx(Decimal(p["net"]), abs=Decimal("0.01") * len(rows))
    from gatebot.app.plot import read_series

    plotted = read_series(tmp_path / "r" / "report.png")["og"]
    assert plotted == ev["equity_curve"]
    assert round(plotted["equity"][-1], 2) == pytest.approx(float(ev["final_equity"]), abs=0.01)
    assert max(plotted["drawdown_pct"]) == pytest.approx(ev["whole"]["max_drawdown_pct"])


def generated_replay_text(state: Path) -> str:
    """The example sma_cross replay (tests/helpers.py) of a generated market of 300 candles."""
    return replaced(sma_replay_text(state),
                    ("[exchanges.paper]\n", '[market]\nsource = "generated"\nbars = 300\n\n[exchanges.paper]\n'))


def test_instances_on_one_account_share_its_balance_at_first_start_and_a_bad_base_is_no_percentage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Each fresh journal's initial balance is the account's balance when the process first asked, not what is
    available when its own instance happens to start (another instance's margin in use: once -2417.89)."""
    import asyncio

    from gatebot.app.report import format_summary, report_dir
    from gatebot.app.runner import Runner
    from gatebot.core.config import load_config
    from gatebot.core.journal import Journal
    from gatebot.exchanges.paper.exchange import PaperExchange
    from gatebot.plugins.manager import make_plugin_manager

    reads = iter([D("10000"), D("-2417.89"), D("5")])

    async def balance(self: PaperExchange) -> D:
        return next(reads)

    monkeypatch.setattr(PaperExchange, "balance", balance)
    cfg = tmp_path / "two.toml"
    one = generated_replay_text(tmp_path / "state")
    instance = one[one.index("[[instances]]"):]
    cfg.write_text(replaced(one, ('name = "sma"', 'name = "btc"'))
                   + replaced(instance, ('name = "sma"', 'name = "eth"'), ('"BTC-USDT"', '"ETH-USDT"')))
    config = load_config(cfg)
    asyncio.run(Runner(config, make_plugin_manager()).run())
    bases = []
    for name in ("btc", "eth"):
        j = Journal(tmp_path / "state" / f"{name}.sqlite", readonly=True)
        bases.append(j.meta()["initial_balance"])
        j.close()
    assert bases == ["10000", "10000"]
    bad = Journal(tmp_path / "state" / "eth.sqlite")
    bad.set_meta({"initial_balance": "-2417.89"})
    bad.close()
    line = next(format_summary(s) for s in report_dir(tmp_path / "state") if s.instance == "eth")
    assert "return n/a: the initial balance -2417.89 is not positive" in line and "% of -2417.89" not in line


def test_a_replay_without_a_candle_file_keeps_its_candles_to_mark_equity_at(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gen.toml"
    cfg.write_text(generated_replay_text(tmp_path / "state"))
    assert main(["replay", str(cfg)]) == 0
    assert "equity marked at candle closes" in capsys.readouterr().out
    marks = tmp_path / "state" / "candles-BTC-USDT-5m.csv"
    assert len(marks.read_text().splitlines()) == 301
    ev = msgspec.json.decode((tmp_path / "state" / "report.json").read_bytes())["instances"][0]["evaluation"]
    assert ev["marks"] == "candle closes" and len(ev["equity_curve"]["t"]) == 300
