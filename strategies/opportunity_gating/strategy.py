"""Opportunity gating at 4x: four ONNX models decide entries and exits (../shared/docs/opportunity-gating.md).

On each closed candle (flat): ``p_long`` and ``p_short`` from the entry models. LONG when
``p_long >= long_threshold``; LONG has priority. Otherwise SHORT when ``p_short >= short_threshold``
and the opportunity gate holds: ``p_short * short_avg_return - p_long * long_avg_return > gate_margin``.
The margin fraction comes from the signal's probability (``sizing`` power or linear, clipped).
When protected: exit when the side's exit model says so, else after ``max_hold`` candles (exchange
candle time, from :class:`PositionView.bars_held`). The stop is not the strategy's business: the
engine places it on the exchange at ``leveraged_sl_pct / leverage`` from the actual fill.

Inference: onnxruntime on CPU, one intra-op thread; one session per model file, shared by every
instance in the process. The model card is checked at start (feature names and order, schema hash,
sha256 of every file): a mismatch refuses to build the instance.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import numpy as np

from gatebot.core.events import CandleClosed
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext
from gatebot.strategies.opportunity_gating import features as F

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAMES = ("long_entry", "short_entry", "long_exit", "short_exit")

Prob = Annotated[float, msgspec.Meta(ge=0, le=1)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]


class OpportunityGatingParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    long_threshold: Prob = 0.65
    short_threshold: Prob = 0.70
    long_avg_return: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0041
    short_avg_return: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0047
    gate_margin: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.001
    sizing: Literal["power", "linear"] = "power"
    """power: 0.5 * (0.5 + ((p - 0.5) / 0.5) ** 1.5) (the live bot); linear: 0.20 + 0.75 * (p - 0.5) / 0.5."""
    min_fraction: Fraction = 0.20
    max_fraction: Fraction = 0.95
    long_exit_threshold: Prob = 0.70
    short_exit_threshold: Prob = 0.72
    max_hold: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 96
    """Candles (exchange candle time) after which a position is closed."""
    allow_short: bool = True
    take_profit: bool = False
    """Kept so that old configs load: the exchange take-profit is a protection option of every strategy now
    (``[instances.protection] leveraged_tp_pct``); true is refused with a pointer there."""
    models_dir: str = ""
    """Folder with the four .onnx files and model_card.json; empty = the models shipped in the package."""
    train_estimators: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 150
    """Trees per model when the training hook retrains (``gatebot walk-forward``); 150 made the shipped models."""

    def __post_init__(self) -> None:
        if self.min_fraction > self.max_fraction:
            raise ValueError(f"min_fraction ({self.min_fraction}) exceeds max_fraction ({self.max_fraction})")
        if self.take_profit:
            raise ValueError("take_profit = true: the take-profit is set in the instance's protection now, e.g. "
                             "protection = { leveraged_tp_pct = 0.12 } (the profit at it as a share of margin)")


def size_fraction(p: float, rule: str = "power", lo: float = 0.20, hi: float = 0.95) -> float:
    """Margin share of the balance for a signal of probability ``p``."""
    x = max(0.0, (p - 0.5) / 0.5)
    f = 0.5 * (0.5 + x ** 1.5) if rule == "power" else 0.20 + 0.75 * x
    return min(hi, max(lo, f))


def gate_value(p_long: float, p_short: float, p: OpportunityGatingParams) -> float:
    """The SHORT gate's left side: expected short edge minus the long edge given up."""
    return p_short * p.short_avg_return - p_long * p.long_avg_return


def entry_side(p_long: float, p_short: float, p: OpportunityGatingParams) -> str | None:
    """'long', 'short' or None for the entry models' probabilities (LONG has priority)."""
    if p_long >= p.long_threshold:
        return "long"
    if p.allow_short and p_short >= p.short_threshold and gate_value(p_long, p_short, p) > p.gate_margin:
        return "short"
    return None


# --- models: sessions shared per file ----------------------------------------------------------


class ModelSet(msgspec.Struct, frozen=True, kw_only=True):
    sessions: dict[str, Any]
    sha256: dict[str, str]
    card: dict[str, Any]


_MODEL_SETS: dict[str, ModelSet] = {}
_LOCK = threading.Lock()


class ModelCardError(ValueError):
    """The model files do not match their card, or the card does not match the feature code."""


def _session(data: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def load_models(models_dir: str | Path = MODELS_DIR) -> ModelSet:
    """The four sessions of ``models_dir``, checked against its card; built once per folder and card (a folder
    retrained in place, as a walk-forward's, has a new card: the card names every file's sha256)."""
    folder = Path(models_dir).resolve()
    with _LOCK:
        try:
            text = (folder / "model_card.json").read_text()
            card = json.loads(text)
        except (OSError, ValueError) as exc:
            raise ModelCardError(f"{folder / 'model_card.json'}: cannot read: {exc}") from None
        key = f"{folder}:{hashlib.sha256(text.encode()).hexdigest()}"
        found = _MODEL_SETS.get(key)
        if found is not None:
            return found
        if card.get("features", {}).get("entry") != list(F.FEATURES) or \
                card.get("features", {}).get("exit") != list(F.EXIT_FEATURES):
            raise ModelCardError(f"{folder}: the card's feature names differ from features.py")
        if card.get("schema_hash") != F.schema_hash():
            raise ModelCardError(f"{folder}: schema hash {card.get('schema_hash')} != {F.schema_hash()}")
        sessions, hashes = {}, {}
        for name in MODEL_NAMES:
            path = folder / f"{name}.onnx"
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ModelCardError(f"{path}: cannot read: {exc.strerror}") from None
            digest = hashlib.sha256(data).hexdigest()
            expected = card.get("models", {}).get(name, {}).get("sha256")
            if digest != expected:
                raise ModelCardError(f"{path}: sha256 {digest} does not match the model card ({expected})")
            sessions[name] = _session(data)
            hashes[name] = digest
        found = _MODEL_SETS[key] = ModelSet(sessions=sessions, sha256=hashes, card=card)
        return found


# --- the strategy ------------------------------------------------------------------------------


class OpportunityGating:
    Params: ClassVar[type[msgspec.Struct]] = OpportunityGatingParams

    def __init__(self, params: OpportunityGatingParams, context: StrategyContext) -> None:
        self.p = params
        self.context = context
        self.history = F.WINDOW
        self.models = load_models(params.models_dir or MODELS_DIR)
        self._run = {name: (s.run, ["probabilities"]) for name, s in self.models.sessions.items()}
        self._window = F.FeatureWindow()
        self._close = math.nan
        self._row: np.ndarray | None = None
        self._row32 = np.empty((1, len(F.FEATURES)), dtype=np.float32)
        self._exit32 = np.empty((1, len(F.EXIT_FEATURES)), dtype=np.float32)
        self._fresh = False
        self.model_hashes = dict(self.models.sha256)
        self.last: dict[str, float] = {}
        """The latest probabilities, for inspection and tests."""
        self._prepared: dict[int, int] = {}
        self._i: int | None = None
        self._feats = self._valid = self._p_long = self._p_short = np.empty(0)

    @classmethod
    def train(cls, rows: np.ndarray, until: int, out: Path, params: OpportunityGatingParams
              ) -> OpportunityGatingParams:
        """The training hook (core.strategy.Trains, ``gatebot walk-forward``): the four models fitted on the
        candles of ``rows`` up to ``until`` into ``out`` (train.py's code and labels, needs the ``train`` extra),
        and ``params`` pointing at them."""
        try:
            import lightgbm  # noqa: F401
            import onnxmltools  # noqa: F401
        except ImportError:
            raise ValueError("training needs the train extra: pip install 'gatebot[train]'") from None
        from gatebot.strategies.opportunity_gating.train import train_until

        train_until(rows, until, out, n_estimators=params.train_estimators)
        return msgspec.structs.replace(params, models_dir=str(out))

    def journal_meta(self) -> dict[str, str]:
        """What the runner writes into this instance's journal meta table, so that a journal names the models
        its decisions came from: the model hashes, the feature schema and the training period of the model card."""
        card = self.models.card
        out = {f"model.{name}.sha256": digest for name, digest in self.model_hashes.items()}
        out["model.schema_hash"] = str(card.get("schema_hash", ""))
        training = card.get("training_period", {})
        out["model.training_start_ms"] = str(training.get("start_ms", ""))
        out["model.training_end_ms"] = str(training.get("end_ms", ""))
        return out

    def evaluation_meta(self) -> dict[str, Any]:
        """The model card: its ``training_period`` is the training window the evaluation holds apart as in
        sample (the runner journals it as ``training_start_ms`` / ``training_end_ms``)."""
        return {"model_card": self.models.card,
                "interval_ms": int(self.models.card.get("source", {}).get("interval_ms") or 300_000)}

    def prepare(self, rows: np.ndarray) -> None:
        """Replay knows the whole series in advance: compute every feature row at once (the same
        causal function the rolling window uses, whose rows are equal: tests prove both) and run the
        entry models in one batch. Candles not in ``rows`` fall back to the rolling window."""
        feats = F.compute(rows[:, 1:6])
        valid = ~np.isnan(feats).any(axis=1)
        x = np.nan_to_num(feats).astype(np.float32)
        self._feats, self._valid = feats, valid
        self._p_long = self._run["long_entry"][0](["probabilities"], {"X": x})[0][:, 1].astype(np.float64)
        self._p_short = self._run["short_entry"][0](["probabilities"], {"X": x})[0][:, 1].astype(np.float64)
        self._prepared = {int(t): i for i, t in enumerate(rows[:, 0].tolist())}

    def on_candle(self, candle: CandleClosed) -> None:
        self._close = candle.close
        self._fresh = False
        self._i = self._prepared.get(candle.open_time) if self._prepared else None
        self._window.append(candle.open, candle.high, candle.low, candle.close, candle.volume)

    def _features(self) -> np.ndarray | None:
        """This candle's feature row (computed once per candle, on first use); None while warming up."""
        if not self._fresh:
            self._fresh = True
            if self._i is not None:
                row = self._feats[self._i] if self._valid[self._i] else None
            else:
                row = self._window.last() if self._window.ready else None
            self._row = None if row is None or np.isnan(row).any() else row
            if self._row is not None:
                self._row32[0] = self._row
        return self._row

    def features(self) -> dict[str, float]:
        """This candle's feature row and entry probabilities by name (empty while warming up), for the
        look-ahead check: the batch path's prepared rows must be what the rolling window computes."""
        row = self._features()
        if row is None:
            return {}
        p_long, p_short = self._entry_probs()
        return {**dict(zip(F.FEATURES, row.tolist(), strict=True)), "p_long": p_long, "p_short": p_short}

    def _entry_probs(self) -> tuple[float, float]:
        if self._i is not None:
            return float(self._p_long[self._i]), float(self._p_short[self._i])
        return self._prob("long_entry", self._row32), self._prob("short_entry", self._row32)

    def _prob(self, name: str, x: np.ndarray) -> float:
        run, outputs = self._run[name]
        return float(run(outputs, {"X": x})[0][0, 1])

    def decide(self, view: PositionView) -> Decision:
        row = self._features()
        if row is None:
            return None
        p = self.p
        if view.state == "flat":
            p_long, p_short = self._entry_probs()
            gate = gate_value(p_long, p_short, p)
            self.last = {"p_long": p_long, "p_short": p_short, "gate": gate}
            side = entry_side(p_long, p_short, p)
            if side is None:
                return None
            prob = p_long if side == "long" else p_short
            return Enter(side=side, fraction=size_fraction(prob, p.sizing, p.min_fraction, p.max_fraction),
                         info={"p_long": round(p_long, 6), "p_short": round(p_short, 6), "gate": round(gate, 8),
                               "sizing": p.sizing, "models": self.model_hashes})
        if view.state != "protected" or view.side is None or not view.avg_entry:
            return None
        long = view.side == "long"
        sign = 1 if long else -1
        x = self._exit32
        x[0] = F.exit_row(row, sign, view.bars_held, sign * (self._close / view.avg_entry - 1.0), p.max_hold)
        name = "long_exit" if long else "short_exit"
        p_exit = self._prob(name, x)
        self.last = {"p_exit": p_exit}
        if p_exit >= (p.long_exit_threshold if long else p.short_exit_threshold):
            return Exit(reason="exit_model", info={"p_exit": round(p_exit, 6), "bars_held": view.bars_held})
        if view.bars_held >= p.max_hold:
            return Exit(reason="max_hold", info={"p_exit": round(p_exit, 6), "bars_held": view.bars_held})
        return None
