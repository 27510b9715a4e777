"""opportunity_gating: causal features, the gate and sizing rules, the shipped models, a rebuild and a replay."""

from __future__ import annotations

import asyncio
import hashlib
import json
from decimal import Decimal
from pathlib import Path

import msgspec
import numpy as np
import pytest

from gatebot.core import lookahead
from gatebot.core.events import CandleClosed
from gatebot.core.instrument import Instrument
from gatebot.core.market import generate
from gatebot.core.strategy import Enter, Exit, PositionView, StrategyContext
from gatebot.strategies.opportunity_gating import features as F
from gatebot.strategies.opportunity_gating.strategy import (
    MODEL_NAMES,
    MODELS_DIR,
    OpportunityGating,
    OpportunityGatingParams,
    entry_side,
    gate_value,
    load_models,
    size_fraction,
)
from tests.helpers import ROOT, SHARED_5M

NO_SHARED = pytest.mark.skipif(not SHARED_5M.exists(), reason=f"shared candle file {SHARED_5M} is absent")
CTX = StrategyContext(instance="og", symbol="BTC-USDT", interval="5m", leverage=4)


def market(bars: int, seed: int = 3) -> np.ndarray:
    return np.array([(c.open, c.high, c.low, c.close, c.volume)
                     for c in generate(seed=seed, symbol="BTC-USDT", interval="5m", bars=bars)])


# --- features ----------------------------------------------------------------------------------


def test_a_different_future_changes_no_past_row() -> None:
    """The cut-point perturbation check-lookahead runs (gatebot.core.lookahead), here on the feature function
    alone: the rows up to each cut are the same whatever the candles after it are (noise, or none at all)."""
    x = market(900)
    full = F.compute(x)
    rows = np.column_stack((np.arange(len(x)) * 300_000.0, x))
    for k in (*lookahead.cut_points(len(x), 12), F.WINDOW - 1, 300, 301):
        np.testing.assert_array_equal(F.compute(lookahead.perturbed(rows, k, seed=k)[:, 1:])[: k + 1], full[: k + 1])
        np.testing.assert_array_equal(F.compute(x[: k + 1]), full[: k + 1])
    assert not np.isnan(full[F.WINDOW - 1:]).any(), "every row after the warm-up is defined"
    assert np.isnan(full[: F.WINDOW - 1]).all()


def test_live_window_rows_equal_whole_series_rows() -> None:
    x = market(700, seed=8)
    full = F.compute(x)
    window = F.FeatureWindow()
    live = []
    for row in x:
        window.append(*row)
        live.append(window.last() if window.ready else np.full(len(F.FEATURES), np.nan))
    np.testing.assert_allclose(np.array(live)[F.WINDOW - 1:], full[F.WINDOW - 1:], rtol=0, atol=1e-12)


def test_no_raw_price_level_is_a_feature() -> None:
    x = market(600, seed=4)
    scaled = x.copy()
    scaled[:, :4] *= 7.0  # the same market at seven times the price
    np.testing.assert_allclose(F.compute(scaled)[F.WINDOW:], F.compute(x)[F.WINDOW:], rtol=1e-9, atol=1e-12)


# --- the gate, sizing, the instrument ------------------------------------------------------------

P = OpportunityGatingParams()


@pytest.mark.parametrize(("p_long", "p_short", "expected"), [
    (0.65, 0.99, "long"),    # LONG has priority whatever p_short says
    (0.90, 0.00, "long"),
    (0.64, 0.69, None),      # neither threshold
    (0.30, 0.70, "short"),   # 0.70*0.0047 - 0.30*0.0041 = 0.00206 > 0.001
    (0.558, 0.70, "short"),  # just below the boundary p_long < 0.00229 / 0.0041 = 0.5585...
    (0.559, 0.70, None),     # just above it: the gate refuses
    (0.64, 0.70, None),      # gate 0.000666
    (0.64, 0.95, "short"),   # 0.95*0.0047 - 0.64*0.0041 = 0.001841
    (0.10, 0.6999, None),    # gate holds but p_short is under its threshold
])
def test_entry_gate(p_long: float, p_short: float, expected: str | None) -> None:
    assert entry_side(p_long, p_short, P) == expected


def test_gate_boundary_value_and_short_switch() -> None:
    boundary = (0.70 * 0.0047 - 0.001) / 0.0041
    assert boundary == pytest.approx(0.558537, abs=1e-6)
    assert gate_value(boundary - 1e-9, 0.70, P) > P.gate_margin > gate_value(boundary + 1e-9, 0.70, P)
    assert entry_side(0.3, 0.9, msgspec.structs.replace(P, allow_short=False)) is None


@pytest.mark.parametrize(("p", "rule", "expected"), [
    (0.65, "power", 0.5 * (0.5 + 0.3 ** 1.5)),    # 0.33216
    (0.72, "power", 0.5 * (0.5 + 0.44 ** 1.5)),   # 0.39593
    (0.95, "power", 0.5 * (0.5 + 0.9 ** 1.5)),    # 0.67691
    (0.65, "linear", 0.425),
    (0.72, "linear", 0.53),
    (0.95, "linear", 0.875),
    (1.00, "linear", 0.95),                        # clipped at max_fraction
    (0.50, "linear", 0.20),
    (0.40, "power", 0.25),
])
def test_sizing(p: float, rule: str, expected: float) -> None:
    assert size_fraction(p, rule) == pytest.approx(expected, abs=1e-12)


BTC = Instrument(symbol="BTC-USDT", tick=Decimal("0.1"), step=Decimal("0.0001"), min_qty=Decimal("0.0001"),
                 min_notional=Decimal("2"))


def test_quantity_is_rounded_down_to_the_step_as_the_engine_does() -> None:
    balance, price = Decimal("10000"), Decimal("114523.1")
    fraction = Decimal(repr(size_fraction(0.65)))
    qty = BTC.floor_qty(balance * fraction * 4 / price)
    assert qty == Decimal("0.1160")  # 0.11601... floored, never rounded up
    assert qty * price <= balance * fraction * 4
    assert BTC.entry_refusal(qty, price) is None


def test_below_minimum_notional_or_quantity_no_entry() -> None:
    small = Instrument(symbol="X-USDT", tick=Decimal("0.01"), step=Decimal("0.01"), min_qty=Decimal("0.01"),
                       min_notional=Decimal("5"))
    qty = small.floor_qty(Decimal("2") * Decimal(repr(size_fraction(0.65, "linear"))) * 4 / Decimal("100"))
    assert qty == Decimal("0.03")  # 0.034 floored; 3 USDT of notional < 5
    assert "notional" in small.entry_refusal(qty, Decimal("100"))
    tiny = BTC.floor_qty(Decimal("1") * Decimal("0.2") * 4 / Decimal("114523.1"))
    assert tiny == 0 and "quantity" in BTC.entry_refusal(tiny, Decimal("114523.1"))


def test_stop_prices_from_the_fill_round_toward_the_entry() -> None:
    pct = Decimal("0.04") / 4
    fill = Decimal("114523.1")
    assert BTC.stop_price("long", fill, pct) == Decimal("113377.9")   # 113377.869 rounded up
    assert BTC.stop_price("short", fill, pct) == Decimal("115668.3")  # 115668.331 rounded down


# --- the strategy's decisions with stubbed probabilities ---------------------------------------


def warm(strategy: OpportunityGating, bars: int = F.WINDOW) -> None:
    for c in generate(seed=5, symbol="BTC-USDT", interval="5m", bars=bars):
        strategy.on_candle(c)


def stub(strategy: OpportunityGating, probs: dict[str, float]) -> None:
    strategy._prob = lambda name, x: probs[name]  # type: ignore[method-assign]


def test_decisions_record_probabilities_gate_and_model_hashes() -> None:
    s = OpportunityGating(OpportunityGatingParams(), CTX)
    assert s.decide(PositionView(state="flat")) is None  # warming up: no features yet
    warm(s)
    stub(s, {"long_entry": 0.30, "short_entry": 0.72})
    d = s.decide(PositionView(state="flat"))
    assert isinstance(d, Enter) and d.side == "short"
    assert d.fraction == pytest.approx(size_fraction(0.72))
    assert d.info["p_long"] == 0.3 and d.info["p_short"] == 0.72
    assert d.info["gate"] == pytest.approx(0.72 * 0.0047 - 0.30 * 0.0041)
    card = json.loads((MODELS_DIR / "model_card.json").read_text())
    assert d.info["models"] == {n: card["models"][n]["sha256"] for n in MODEL_NAMES}
    meta = s.journal_meta()
    assert meta["model.long_entry.sha256"] == card["models"]["long_entry"]["sha256"]
    assert meta["model.training_end_ms"] == str(card["training_period"]["end_ms"])


@pytest.mark.parametrize(("side", "p_exit", "bars", "reason"), [
    ("long", 0.70, 5, "exit_model"),
    ("long", 0.69, 5, None),
    ("short", 0.71, 5, None),        # the SHORT exit threshold is 0.72
    ("short", 0.72, 5, "exit_model"),
    ("long", 0.10, 95, None),
    ("long", 0.10, 96, "max_hold"),  # max hold in candles of exchange time
    ("short", 0.10, 200, "max_hold"),
])
def test_exits(side: str, p_exit: float, bars: int, reason: str | None) -> None:
    s = OpportunityGating(OpportunityGatingParams(), CTX)
    warm(s)
    stub(s, {"long_exit": p_exit, "short_exit": p_exit})
    d = s.decide(PositionView(state="protected", side=side, qty=0.1, avg_entry=100_000.0, bars_held=bars))
    if reason is None:
        assert d is None
    else:
        assert isinstance(d, Exit) and d.reason == reason and d.info["bars_held"] == bars


def test_params_are_validated() -> None:
    with pytest.raises(msgspec.ValidationError, match="take_profit"):
        msgspec.convert({"take_profit": True}, OpportunityGatingParams)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"long_threshold": 1.5}, OpportunityGatingParams)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"sizing": "kelly"}, OpportunityGatingParams)
    with pytest.raises(msgspec.ValidationError, match="min_fraction"):
        msgspec.convert({"min_fraction": 0.9, "max_fraction": 0.5}, OpportunityGatingParams)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"gate": 0.1}, OpportunityGatingParams)


# --- the shipped models -----------------------------------------------------------------------


def test_model_files_match_the_card() -> None:
    card = json.loads((MODELS_DIR / "model_card.json").read_text())
    assert card["features"]["entry"] == list(F.FEATURES)
    assert card["features"]["exit"] == list(F.EXIT_FEATURES)
    assert card["schema_hash"] == F.schema_hash()
    assert card["training_period"]["end_ms"] < card["test_period"]["start_ms"]
    models = load_models()
    for name in MODEL_NAMES:
        data = (MODELS_DIR / f"{name}.onnx").read_bytes()
        assert hashlib.sha256(data).hexdigest() == card["models"][name]["sha256"]
        assert len(data) < 400_000, f"{name} is too large for the package"
        (inp,) = models.sessions[name].get_inputs()
        width = len(F.EXIT_FEATURES) if name.endswith("_exit") else len(F.FEATURES)
        assert inp.shape[1] == width
        assert "auc" in card["models"][name]["oos"]


def test_sessions_are_shared_and_a_tampered_file_is_refused(tmp_path: Path) -> None:
    a = OpportunityGating(OpportunityGatingParams(), CTX)
    b = OpportunityGating(OpportunityGatingParams(), CTX)
    assert a.models.sessions["long_entry"] is b.models.sessions["long_entry"]
    for f in MODELS_DIR.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "short_exit.onnx").write_bytes((MODELS_DIR / "short_exit.onnx").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="does not match the model card"):
        load_models(tmp_path)


@NO_SHARED
def test_a_rebuild_predicts_what_the_shipped_models_predict(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm", reason="the train extra (pip install -e .[train]) is not installed")
    pytest.importorskip("onnxmltools", reason="the train extra (pip install -e .[train]) is not installed")
    from gatebot.core.market import load_csv
    from gatebot.strategies.opportunity_gating.train import build, predict

    build(SHARED_5M, tmp_path)
    feats = F.compute(load_csv(SHARED_5M)[:, 1:6])
    sample = feats[F.WINDOW::37]
    exit_sample = F.exit_matrix(sample, 1, np.arange(len(sample)) % 96, np.linspace(-0.01, 0.01, len(sample)))
    for name in MODEL_NAMES:
        x = exit_sample if name.endswith("_exit") else sample
        shipped = predict((MODELS_DIR / f"{name}.onnx").read_bytes(), x)
        rebuilt = predict((tmp_path / f"{name}.onnx").read_bytes(), x)
        np.testing.assert_allclose(rebuilt, shipped, rtol=0, atol=1e-6, err_msg=name)


def _candle_rows(bars: int, seed: int = 5) -> np.ndarray:
    return np.array([(c.open_time, c.open, c.high, c.low, c.close, c.volume)
                     for c in generate(seed=seed, symbol="BTC-USDT", interval="15m", bars=bars)])


def test_the_training_hook_never_looks_past_until_and_repeats_itself(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm", reason="the train extra (pip install -e .[train]) is not installed")
    pytest.importorskip("onnxmltools", reason="the train extra (pip install -e .[train]) is not installed")
    from gatebot.core.strategy import Trains
    from gatebot.strategies.opportunity_gating.train import MAX_HOLD

    assert isinstance(OpportunityGating, Trains)
    rows = _candle_rows(1400)
    until = int(rows[999, 0])
    params = OpportunityGatingParams(train_estimators=5)
    got = OpportunityGating.train(rows, until, tmp_path / "a", params)
    assert got == msgspec.structs.replace(params, models_dir=str(tmp_path / "a"))
    # the candles after until changed beyond recognition, and cut off: byte-identical models and card
    later = rows.copy()
    later[1000:, 1:5] *= 1.5
    OpportunityGating.train(later, until, tmp_path / "b", params)
    OpportunityGating.train(rows[:1000], until, tmp_path / "c", params)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["long_entry.onnx", "long_exit.onnx", "model_card.json", "short_entry.onnx", "short_exit.onnx"]
    for name in files:
        data = (tmp_path / "a" / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() == data, name
        assert (tmp_path / "c" / name).read_bytes() == data, name
    card = json.loads((tmp_path / "a" / "model_card.json").read_text())
    assert card["training_period"]["end_ms"] == until and "test_period" not in card
    assert card["trainer"]["params"]["n_estimators"] == 5
    # the purge: the last entry row trained on is MAX_HOLD candles before the end, so its label ends at until
    assert card["models"]["long_entry"]["train_rows"] == 1000 - (F.WINDOW - 1) - MAX_HOLD
    # not vacuous: the models do depend on the candles they may see (a later until, more rows, other models)
    OpportunityGating.train(rows, int(rows[1199, 0]), tmp_path / "d", params)
    assert (tmp_path / "d" / "long_entry.onnx").read_bytes() != (tmp_path / "a" / "long_entry.onnx").read_bytes()
    strategy = OpportunityGating(got, CTX)
    assert strategy.model_hashes == {name: card["models"][name]["sha256"] for name in MODEL_NAMES}
    assert strategy.journal_meta()["model.training_end_ms"] == str(until)


_FIT_IN_A_FRESH_INTERPRETER = """
import hashlib, json
import numpy as np
from onnxmltools import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType
import lightgbm as lgb
from gatebot.strategies.opportunity_gating.train import LGB_PARAMS, _fit_onnx
rng = np.random.default_rng(1)
X = rng.normal(size=(3000, 4))
y = (X[:, 0] + rng.normal(size=3000) > 0).astype(np.float64)
params = {**LGB_PARAMS, "n_estimators": 3, "min_child_samples": 20}
raw = convert_lightgbm(lgb.LGBMClassifier(**params).fit(X.astype(np.float32), y.astype(np.int64)),
                       initial_types=[("X", FloatTensorType([None, 4]))], zipmap=False, target_opset=15)
print(json.dumps({"raw": [o.domain for o in raw.opset_import],
                  "sha256": hashlib.sha256(_fit_onnx(X, y, 4, params)).hexdigest()}))
"""


def test_a_fit_gives_the_same_bytes_whatever_the_interpreters_string_hash_seed() -> None:
    """The converter lists the operator sets in a set's order, which follows the interpreter's string-hash seed:
    a walk-forward's windows train in worker processes, each with its own seed, and must hash the same."""
    pytest.importorskip("lightgbm", reason="the train extra (pip install -e .[train]) is not installed")
    pytest.importorskip("onnxmltools", reason="the train extra (pip install -e .[train]) is not installed")
    import os
    import subprocess
    import sys

    seeds = ("0", "20")  # two seeds that order the converter's set of domains differently (CPython 3.11+)
    runs = [subprocess.Popen([sys.executable, "-c", _FIT_IN_A_FRESH_INTERPRETER], stdout=subprocess.PIPE,
                             env={**os.environ, "PYTHONHASHSEED": seed}, text=True) for seed in seeds]
    got = [json.loads(run.communicate(timeout=600)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert got[0]["raw"] != got[1]["raw"], f"seeds {seeds} no longer give the two orders: choose others"
    assert got[0]["sha256"] == got[1]["sha256"]


def test_too_few_candles_to_train_on_are_refused(tmp_path: Path) -> None:
    rows = _candle_rows(200)
    with pytest.raises(ValueError, match="200 training candles: at least"):
        OpportunityGating.train(rows, int(rows[-1, 0]), tmp_path, OpportunityGatingParams())


# --- a replay on the paper exchange ------------------------------------------------------------


@NO_SHARED
def test_a_replay_trades_and_journals_its_probabilities(tmp_path: Path) -> None:
    from gatebot.app.report import evaluation_text, trades
    from gatebot.app.runner import Runner
    from gatebot.core.config import load_config
    from gatebot.core.journal import Journal
    from gatebot.plugins.manager import make_plugin_manager

    lines = SHARED_5M.read_text().splitlines()
    csv = tmp_path / "candles.csv"
    csv.write_text("\n".join(lines[:2501]) + "\n")
    example = load_config(ROOT / "examples" / "opportunity_gating.toml")  # the shipped models at their thresholds
    config = msgspec.structs.replace(example, state_dir=str(tmp_path / "state"))
    asyncio.run(Runner(config, make_plugin_manager(), candles_csv=csv).run())
    journal = Journal(tmp_path / "state" / "og.sqlite", readonly=True)
    try:
        done = trades(journal)
        entries = [json.loads(d) for (d,) in journal.conn.execute(
            "SELECT detail FROM transitions WHERE trigger = 'enter'")]
        exits = [json.loads(d) for (d,) in journal.conn.execute(
            "SELECT detail FROM transitions WHERE trigger = 'exit_signal'")]
    finally:
        journal.close()
    assert len(done) >= 3
    card = json.loads((MODELS_DIR / "model_card.json").read_text())
    for e in entries:
        assert {"p_long", "p_short", "gate", "models"} <= e.keys()
        assert e["p_long"] >= 0.65 or (e["p_short"] >= 0.70 and e["gate"] > 0.001)
        assert e["models"]["long_entry"] == card["models"]["long_entry"]["sha256"]
    assert exits and all(x["reason"] in ("exit_model", "max_hold") and x["bars_held"] <= 96 for x in exits)
    text = evaluation_text(tmp_path / "state", csv)
    assert "IN SAMPLE (the models were trained on these candles" in text
    # the first 2,500 candles: a day before the training window (out of sample, warm-up) and the rest inside it
    assert text.index("out of sample") < text.index("IN SAMPLE")


def test_candle_struct_is_what_the_strategy_reads() -> None:
    c = CandleClosed(symbol="BTC-USDT", interval="5m", open_time=0, open=1.0, high=2.0, low=0.5, close=1.5,
                     volume=3.0)
    s = OpportunityGating(OpportunityGatingParams(), CTX)
    s.on_candle(c)
    assert s.decide(PositionView(state="flat")) is None


def test_prepared_series_gives_the_same_decisions_as_the_rolling_window() -> None:
    """Replay prepares features and entry probabilities for the whole series at once; every decision
    must be the one the live path (rolling window, one row at a time) makes."""
    rows = np.array([[c.open_time, c.open, c.high, c.low, c.close, c.volume]
                     for c in generate(seed=4, symbol="BTC-USDT", interval="5m", bars=900, volatility=0.004)])
    ctx = StrategyContext(instance="og", symbol="BTC-USDT", interval="5m", leverage=4)
    params = OpportunityGatingParams(long_threshold=0.5, short_threshold=0.5, gate_margin=-1.0)
    live, prepared = OpportunityGating(params, ctx), OpportunityGating(params, ctx)
    prepared.prepare(rows)
    views = [PositionView(state="flat"),
             PositionView(state="protected", side="long", qty=1.0, avg_entry=60000.0, bars_held=5),
             PositionView(state="protected", side="short", qty=1.0, avg_entry=60000.0, bars_held=95)]
    decided = 0
    for t, o, h, lo, c, v in rows.tolist():
        candle = CandleClosed(symbol="BTC-USDT", interval="5m", open_time=int(t), open=o, high=h, low=lo, close=c,
                              volume=v)
        live.on_candle(candle)
        prepared.on_candle(candle)
        for view in views:
            a, b = live.decide(view), prepared.decide(view)
            assert a == b, (t, view, a, b)
            decided += a is not None
    assert decided > 100
