"""Rebuild the four opportunity-gating models from a candle CSV (needs the ``train`` extra).

    python -m gatebot.strategies.opportunity_gating.train --csv PATH [--out DIR] [--train-share 0.6]

Labels are trade outcomes simulated with the strategy's exact exit rules: entry at the close of
candle t, an intrabar stop 1% (``leveraged_sl_pct / leverage``) from the entry that fills at the stop
price or at the open when a candle gaps through it, a forced exit at the close of candle t + 96 (max
hold), fees 0.05% of notional per side. An entry row is 1 when the trade's leveraged return after
fees is >= 2%. An exit row (a position of that simulation, still open at the close of a held candle)
is 1 when holding on to the end of the trade returns less than closing now.

The split is chronological: the first ``train_share`` of the candles train (the last 96 training
rows are purged so no label looks into the test span); the rest is out of sample and only
measured. LightGBM runs single-threaded with fixed seeds and ``deterministic=True`` and the converter's
output is normalised (:func:`_fit_onnx`), so a rebuild from the same CSV gives byte-identical ONNX files in any
process. The ONNX files and ``model_card.json`` go to ``--out``.

The strategy's training hook (``OpportunityGating.train``, used by ``gatebot walk-forward``) is
:func:`train_until`: the same labels and purge on every candle up to a time, nothing measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from gatebot.core.market import load_csv
from gatebot.strategies.opportunity_gating import features as F

MODELS_DIR = Path(__file__).resolve().parent / "models"
LEVERAGE = 4
PRICE_SL = 0.01
MAX_HOLD = 96
FEE = 0.0005
TARGET = 0.02
ENTRY_STRIDE = 2
"""Exit-model training positions start every ENTRY_STRIDE candles (each gives up to 95 held rows)."""
SEED = 7
LGB_PARAMS = {
    "objective": "binary", "n_estimators": 150, "learning_rate": 0.05, "num_leaves": 15, "max_depth": 5,
    "min_child_samples": 200, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "reg_lambda": 1.0,
    "class_weight": "balanced", "random_state": SEED, "n_jobs": 1, "deterministic": True, "force_row_wise": True,
    "verbose": -1,
}


def simulate(ohlc: np.ndarray, side: int, *, price_sl: float = PRICE_SL, max_hold: int = MAX_HOLD
             ) -> tuple[np.ndarray, np.ndarray]:
    """For every entry candle t (entry at its close): the exit price and the candles held (1..max_hold).

    A stop fills at the open when the candle opens through it, else at the stop price when the
    candle's low (long) / high (short) reaches it; without a stop the trade closes at the close of
    t + max_hold. Entries too late to run max_hold candles get NaN / 0."""
    o, h, lo, c = (ohlc[:, i] for i in range(4))
    n = len(c)
    exit_px = np.full(n, np.nan)
    held = np.zeros(n, dtype=np.int64)
    m = n - max_hold
    if m <= 0:
        return exit_px, held
    idx = np.arange(m)[:, None] + np.arange(1, max_hold + 1)[None, :]
    entry = c[:m]
    if side > 0:
        stop = entry * (1 - price_sl)
        hit = lo[idx] <= stop[:, None]
    else:
        stop = entry * (1 + price_sl)
        hit = h[idx] >= stop[:, None]
    any_hit = hit.any(axis=1)
    first = np.where(any_hit, hit.argmax(axis=1), max_hold - 1)
    j = np.arange(m) + first + 1
    gap = (o[j] <= stop) if side > 0 else (o[j] >= stop)
    stop_px = np.where(gap, o[j], stop)
    exit_px[:m] = np.where(any_hit, stop_px, c[j])
    held[:m] = first + 1
    return exit_px, held


def leveraged_return(entry: np.ndarray, exit_px: np.ndarray, side: int, *, leverage: int = LEVERAGE,
                     fee: float = FEE) -> np.ndarray:
    """Return on margin after a fee of ``fee`` on the notional at entry and at exit."""
    ratio = exit_px / entry
    return leverage * (side * (ratio - 1) - fee * (1 + ratio))


def entry_labels(ohlc: np.ndarray, side: int) -> np.ndarray:
    exit_px, _ = simulate(ohlc, side)
    ret = leveraged_return(ohlc[:, 3], exit_px, side)
    return np.where(np.isnan(ret), np.nan, (ret >= TARGET).astype(np.float64))


def exit_dataset(feats: np.ndarray, ohlc: np.ndarray, side: int, starts: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Rows (entry features + position) and labels for positions opened at ``starts``."""
    c = ohlc[:, 3]
    exit_px, held = simulate(ohlc, side)
    rows, ks, unreal, labels = [], [], [], []
    for t in starts:
        if np.isnan(exit_px[t]):
            continue
        # open at the close of t + k for k < held (the stop had not fired); k = MAX_HOLD is a forced exit
        k = np.arange(1, min(int(held[t]), MAX_HOLD))
        if not len(k):
            continue
        now = c[t + k]
        rows.append(t + k)
        ks.append(k)
        unreal.append(side * (now / c[t] - 1))
        labels.append((side * (exit_px[t] / now - 1) < 0).astype(np.float64))
    if not rows:
        return np.empty((0, len(F.EXIT_FEATURES))), np.empty(0)
    r = np.concatenate(rows)
    X = F.exit_matrix(feats[r], side, np.concatenate(ks).astype(np.float64), np.concatenate(unreal))
    return X, np.concatenate(labels)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (rank form, ties averaged)."""
    pos = y == 1
    npos, nneg = int(pos.sum()), int((~pos).sum())
    if not npos or not nneg:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    _, first, counts = np.unique(p[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based ranks, ties averaged
    return float((ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _fit_onnx(X: np.ndarray, y: np.ndarray, n_features: int, params: dict = LGB_PARAMS) -> bytes:
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = lgb.LGBMClassifier(**params)
    model.fit(X.astype(np.float32), y.astype(np.int64))
    onx = convert_lightgbm(model, initial_types=[("X", FloatTensorType([None, n_features]))], zipmap=False,
                           target_opset=15)
    onx.producer_version = ""
    onx.graph.name = "opportunity_gating"  # the converter names graphs with a random uuid
    # and lists the operator sets in the order of a set of domain names, which changes with each interpreter's
    # string-hash seed: sorted, the same fit gives the same bytes in every process
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    return onx.SerializeToString()


def predict(model: bytes, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"X": X.astype(np.float32)})[0][:, 1]


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | int]:
    sel = p >= threshold
    return {"rows": len(y), "positive_rate": round(float(y.mean()), 4) if len(y) else 0.0,
            "auc": round(auc(y, p), 4), "threshold": threshold, "signals": int(sel.sum()),
            "precision_at_threshold": round(float(y[sel].mean()), 4) if sel.any() else None}


def _iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(csv: Path, out: Path, train_share: float = 0.6) -> dict:
    """The shipped models: trained on the first ``train_share`` of ``csv``, measured on the rest."""
    rows = load_csv(csv)
    return fit_and_write(rows, int(len(rows) * train_share), out, source=csv.name)


def train_until(rows: np.ndarray, until_ms: int, out: Path, *, n_estimators: int | None = None) -> dict:
    """The strategy's training hook (``OpportunityGating.train``): the four models fitted on the candles of
    ``rows`` opened at or before ``until_ms`` and on nothing later (the purge keeps every label inside them),
    written to ``out``; nothing is measured (a walk-forward replays the next candles instead)."""
    rows = rows[rows[:, 0] <= until_ms]
    if len(rows) < F.WINDOW + MAX_HOLD + 2:
        raise ValueError(f"{len(rows)} training candles: at least {F.WINDOW + MAX_HOLD + 2} are needed (the "
                         f"features' warm-up of {F.WINDOW - 1}, the purge of {MAX_HOLD})")
    return fit_and_write(rows, len(rows), out, source="", n_estimators=n_estimators)


def fit_and_write(rows: np.ndarray, split: int, out: Path, *, source: str, n_estimators: int | None = None
                  ) -> dict:
    """Train on ``rows[:split]`` (the last MAX_HOLD of them purged), measure on ``rows[split:]`` when there are
    any; the ONNX files and ``model_card.json`` into ``out``. Returns the card."""
    times, ohlcv = rows[:, 0], rows[:, 1:6]
    ohlc = ohlcv[:, :4]
    n = len(rows)
    feats = F.compute(ohlcv)
    first = F.WINDOW - 1
    train_idx = np.arange(first, split - MAX_HOLD)  # purged: every label ends before the split
    test_idx = np.arange(split, n - MAX_HOLD)
    params = LGB_PARAMS if n_estimators is None else {**LGB_PARAMS, "n_estimators": n_estimators}
    out.mkdir(parents=True, exist_ok=True)
    card: dict = {
        "strategy": "opportunity_gating",
        "features": {"entry": list(F.FEATURES), "exit": list(F.EXIT_FEATURES)},
        "schema_hash": F.schema_hash(),
        "source": {"csv": source, "candles": n, "interval_ms": int(times[1] - times[0]) if n > 1 else 0},
        "training_period": {"start": _iso(times[first]), "end": _iso(times[split - 1]),
                            "start_ms": int(times[first]), "end_ms": int(times[split - 1]),
                            "candles": int(split - first),
                            "note": "features warm up on the first candles; labels of the last 96 training "
                                    "rows would reach past the end and are purged"},
        "labels": {"leverage": LEVERAGE, "price_sl_pct": PRICE_SL, "max_hold": MAX_HOLD, "fee_per_side": FEE,
                   "target_leveraged_return": TARGET, "exit_label": "1 when holding to the end of the trade "
                   "returns less than closing now", "exit_entry_stride": ENTRY_STRIDE},
        "trainer": {"library": "lightgbm", "params": params, "onnx_input": "X float32",
                    "output": "probabilities[:, 1]",
                    "note": "class-balanced training: probabilities rank opportunities, they are not calibrated "
                            "frequencies"},
        "models": {},
    }
    if split < n:
        card["test_period"] = {"start": _iso(times[split]), "end": _iso(times[n - 1]), "start_ms": int(times[split]),
                               "end_ms": int(times[n - 1]), "candles": int(n - split)}
    for name, (model, info) in fit_all(feats, ohlc, train_idx, test_idx if len(test_idx) else None,
                                       params=params).items():
        _write(out, card, name, model, info)
    (out / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


THRESHOLDS = {"long_entry": 0.65, "short_entry": 0.70, "long_exit": 0.70, "short_exit": 0.72}


def fit_all(feats: np.ndarray, ohlc: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray | None, *,
            params: dict = LGB_PARAMS) -> dict[str, tuple[bytes, dict]]:
    """The four models trained on the entry rows ``train_idx`` and measured on ``test_idx`` (None: not measured)."""
    out: dict[str, tuple[bytes, dict]] = {}
    for side, name in ((1, "long"), (-1, "short")):
        y = entry_labels(ohlc, side)
        ytr = y[train_idx]
        model = _fit_onnx(feats[train_idx], ytr, len(F.FEATURES), params)
        info: dict = {"train_rows": len(ytr), "train_positive_rate": round(float(ytr.mean()), 4)}
        if test_idx is not None:
            info["oos"] = _metrics(y[test_idx], predict(model, feats[test_idx]), THRESHOLDS[f"{name}_entry"])
        out[f"{name}_entry"] = (model, info)
        Xe, ye = exit_dataset(feats, ohlc, side, train_idx[::ENTRY_STRIDE])
        model = _fit_onnx(Xe, ye, len(F.EXIT_FEATURES), params)
        info = {"train_rows": len(ye), "train_positive_rate": round(float(ye.mean()), 4)}
        if test_idx is not None:
            Xt, yt = exit_dataset(feats, ohlc, side, test_idx[::ENTRY_STRIDE])
            info["oos"] = _metrics(yt, predict(model, Xt), THRESHOLDS[f"{name}_exit"])
        out[f"{name}_exit"] = (model, info)
    return dict(sorted(out.items(), key=lambda kv: ("long_entry", "long_exit", "short_entry",
                                                    "short_exit").index(kv[0])))


def _write(out: Path, card: dict, name: str, model: bytes, info: dict) -> None:
    (out / f"{name}.onnx").write_bytes(model)
    card["models"][name] = {"file": f"{name}.onnx", "sha256": hashlib.sha256(model).hexdigest(),
                            "bytes": len(model), **info}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    parser.add_argument("--train-share", type=float, default=0.6)
    args = parser.parse_args(argv)
    card = build(args.csv, args.out, args.train_share)
    for name, m in card["models"].items():
        print(f"{name}: {m['bytes']} bytes, oos {m['oos']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
