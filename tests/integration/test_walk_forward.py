"""``gatebot walk-forward``: each window retrains the strategy on its own candles only and replays the next ones
with what it learned; the stitched out-of-sample figures and the baseline repeat exactly, on any executor.

A planted market (a jump after every 30th candle, whose phase changes halfway) and a strategy that learns the
phase keep the machinery's test fast; opportunity gating over the shared 15m file with monthly retraining is
the real one."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np
import pytest

from gatebot.app.walkforward import run_walk_forward
from gatebot.core.events import CandleClosed
from gatebot.core.journal import Journal
from gatebot.core.market import load_csv
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext, Trains
from gatebot.plugins.hookspecs import hookimpl
from tests.helpers import SHARED_15M, config_text, example_text, gatebot, replaced, write_edge_candles

T0 = 1_735_689_600_000
STEP = 300_000
EVERY = 30
CANDLES = 2400
SHIFT = 1200
"""Before this candle the jump follows candles i with i % 30 == 0; from it on, i % 30 == 15."""


def write_candles(path: Path) -> Path:
    return write_edge_candles(path, CANDLES, phase=lambda i: 1 if i < SHIFT else 16, every=EVERY)


class LearnedParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str = ""
    """A file :meth:`LearnedEdge.train` wrote; empty: nothing learned, no trades."""


class LearnedEdge:
    """Learns on which candle of 30 the jump comes (the most common one in its training candles) and goes long
    on the candle before it, out one candle later."""

    Params: ClassVar[type[msgspec.Struct]] = LearnedParams
    history = 3

    def __init__(self, params: LearnedParams, context: StrategyContext) -> None:
        self.phase = json.loads(Path(params.model).read_text())["phase"] if params.model else None
        self._index = 0

    @classmethod
    def train(cls, rows: np.ndarray, until: int, out: Path, params: LearnedParams) -> LearnedParams:
        seen = rows[rows[:, 0] <= until]
        jumps = seen[1:][seen[1:, 4] / seen[:-1, 4] > 1.01, 0]
        phase = int(np.bincount(((jumps - T0) // STEP).astype(np.int64) % EVERY, minlength=EVERY).argmax())
        model = out / "edge.json"
        model.write_text(json.dumps({"phase": phase, "rows": len(rows), "first_ms": int(rows[0, 0]),
                                     "last_ms": int(rows[-1, 0]), "until": until}, sort_keys=True))
        return msgspec.structs.replace(params, model=str(model))

    def on_candle(self, candle: CandleClosed) -> None:
        self._index = (candle.open_time - T0) // STEP

    def decide(self, view: PositionView) -> Decision:
        if view.state == "flat" and self.phase is not None and (self._index + 1) % EVERY == self.phase:
            return Enter(side="long", fraction=0.5)
        if view.state == "protected" and view.bars_held >= 1:
            return Exit(reason="edge")
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"learned_edge": LearnedEdge}


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(config_text("plugin_replay", state=tmp_path / "state", instance="edge", strategy="learned_edge",
                               sl=0.2, modules='["tests.integration.test_walk_forward"]', params=""))
    return cfg, write_candles(tmp_path / "c.csv")


def _figures(out: Path) -> dict[str, Any]:
    """walkforward.json without its timings (everything else must repeat)."""
    r = json.loads((out / "walkforward.json").read_text())
    r.pop("seconds")
    if r["baseline"] is not None:
        r["baseline"].pop("seconds")
    return r


def _journals(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("window-*/state/*.sqlite"))}


def test_each_window_learns_from_its_own_candles_and_trades_only_its_test_span(tmp_path: Path) -> None:
    assert isinstance(LearnedEdge, Trains)
    cfg, csv = _setup(tmp_path)
    out = tmp_path / "wf"
    r = run_walk_forward(cfg, csv, "600", "300", out=out, workers=2, baseline_runs=19)
    assert len(r.windows) == 6
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    phases = []
    for k, w in enumerate(r.windows):
        model = json.loads((out / f"window-{k:02d}" / "models" / "edge.json").read_text())
        assert model["rows"] == 600, "the hook is given the window's N training candles"
        assert model["first_ms"] == int(rows[k * 300, 0]) and model["last_ms"] == model["until"] == w["train"][1]
        assert w["test"][0] == w["train"][1] + STEP, "the test span starts right after the training span"
        phases.append(model["phase"])
        journal = Journal(out / f"window-{k:02d}" / "state" / "edge.sqlite", readonly=True)
        try:
            meta = journal.meta()
            opened = [ts for (ts,) in journal.conn.execute("SELECT ts FROM transitions WHERE trigger = 'enter'")]
        finally:
            journal.close()
        digest = hashlib.sha256((out / f"window-{k:02d}" / "models" / "edge.json").read_bytes()).hexdigest()
        assert meta["walkforward.artifact.edge.json.sha256"] == digest == w["artifacts"]["edge.json"]
        assert meta["walkforward.window"] == str(k) and meta["walkforward.warmup_candles"] == "2"
        assert opened, f"window {k} traded"
        # every entry was decided on a candle of the test span (ts: the decision candle's close)
        assert all(w["test"][0] < ts <= w["test"][1] + STEP for ts in opened), f"window {k} traded outside its span"
    # retrained: the windows that trained before the shift learned its phase, those after it the new one
    assert phases[:2] == [1, 1] and phases[-2:] == [16, 16]
    s = r.stitched["parts"][0]
    assert s["label"].startswith("out of sample, stitched")
    assert s["trades"] == sum(w["trades"] for w in r.windows) + sum(w["open_at_end"] for w in r.windows)
    factor = np.prod([1 + w["compound_return_pct"] / 100 for w in r.windows])
    assert s["compound_return_pct"] == pytest.approx((factor - 1) * 100, rel=1e-9), "the windows compounded"
    assert s["compound_return_pct"] > 10
    assert r.baseline is not None and r.baseline["percentile"] == 100.0 and r.baseline["p_value"] == 0.05
    first, journals = _figures(out), _journals(out)
    # once more, on one process: the same figures, hashes and journals, byte for byte
    run_walk_forward(cfg, csv, "600", "300", out=out, workers=1, baseline_runs=19)
    assert _figures(out) == first
    assert _journals(out) == journals


def test_ray_gives_what_local_processes_give(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra (pip install -e .[ray]) is not installed")
    cfg, csv = _setup(tmp_path)
    run_walk_forward(cfg, csv, "1200", "600", out=tmp_path / "local", workers=2, baseline_runs=4)
    run_walk_forward(cfg, csv, "1200", "600", out=tmp_path / "ray", workers=2, ray="local", baseline_runs=4)
    local, ray = _figures(tmp_path / "local"), _figures(tmp_path / "ray")
    for r in (local, ray):  # the windows' folders differ, and with them the params naming the model file
        for w in r["windows"]:
            w.pop("params")
    assert local == ray


def test_no_worker_reads_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The windows and the baseline's random runs get the loaded config, never its path: the workers of a Ray
    cluster without a shared folder have no such file. Here the file is gone once the driver has read it."""
    from gatebot.app import executors

    cfg, csv = _setup(tmp_path)
    run_walk_forward(cfg, csv, "1200", "600", out=tmp_path / "with", workers=2, baseline_runs=4)
    made = executors.executor_for

    class FileGone:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> FileGone:
            self.inner.__enter__()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)

        @property
        def workers(self) -> int:
            return self.inner.workers

        def map(self, fn: Any, items: Any, shared: Any = None) -> Any:
            if cfg.exists():
                cfg.rename(tmp_path / "elsewhere.toml")
            return self.inner.map(fn, items, shared=shared)

    monkeypatch.setattr(executors, "executor_for", lambda ray, workers: FileGone(made(ray, workers)))
    run_walk_forward(cfg, csv, "1200", "600", out=tmp_path / "without", workers=2, baseline_runs=4)
    assert not cfg.exists()
    got, want = _figures(tmp_path / "without"), _figures(tmp_path / "with")
    for r in (got, want):  # the windows' folders differ, and with them the params naming the model file
        for w in r["windows"]:
            w.pop("params")
    assert got == want and got["baseline"] is not None


# --- opportunity gating over the shared 15m file, retrained every month --------------------------------------


def og_text(state: Path) -> str:
    """examples/walk_forward.toml with 50 trees per model instead of the shipped 150: 40% less CPU for the test (two
    runs of seven windows, four models each, on 2 cores), the same data, windows and code."""
    return replaced(example_text("walk_forward", state), ("[instances.params]\n",
                                                          "[instances.params]\ntrain_estimators = 50\n"))


@pytest.mark.skipif(not SHARED_15M.exists(), reason=f"the shared 15m candles are not at {SHARED_15M}")
def test_opportunity_gating_retrained_monthly_over_the_15m_file_repeats_itself(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm", reason="the train extra (pip install -e .[train]) is not installed")
    cfg = tmp_path / "og.toml"
    cfg.write_text(og_text(tmp_path / "state"))
    out = tmp_path / "wf"
    args = ["walk-forward", str(cfg), "--candles", str(SHARED_15M), "--train", "90d", "--test", "30d",
            "--workers", "2", "--baseline", "20", "--out", str(out)]
    # the two runs' processes hash strings differently (the seeds order the ONNX converter's set of operator
    # domains both ways): a result that depended on the interpreter would differ here every time, not by chance
    t0 = time.perf_counter()
    done = gatebot(*args, env={"PYTHONHASHSEED": "0"}, timeout=900)
    first_s = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "7 window(s), train 8640 candles (90.0 days), test 2880 (30.0 days" in text
    assert "warm-up 159 candles before each test span" in text
    assert "out of sample, stitched (each window's models trained only on candles before its test span)" in text
    assert "compounded return" in text and "max drawdown" in text
    assert "random-entry baseline (20 seeded runs" in text and "percentile" in text
    first = _figures(out)
    assert first["windows"][-1]["test"][1] == int(load_csv(SHARED_15M)[-1, 0]), "tested up to the last candle"
    models = ("long_entry", "long_exit", "short_entry", "short_exit")
    hashes = []
    for k, w in enumerate(first["windows"]):
        folder = out / f"window-{k:02d}"
        journal = Journal(folder / "state" / "og.sqlite", readonly=True)
        try:
            meta = journal.meta()
        finally:
            journal.close()
        for name in models:
            digest = hashlib.sha256((folder / "models" / f"{name}.onnx").read_bytes()).hexdigest()
            assert meta[f"model.{name}.sha256"] == digest, "the replay's decisions came from this window's models"
            assert w["artifacts"][f"{name}.onnx"] == digest == meta[f"walkforward.artifact.{name}.onnx.sha256"]
        assert int(meta["model.training_end_ms"]) == w["train"][1] < w["test"][0]
        hashes.append(tuple(w["artifacts"][f"{name}.onnx"] for name in models))
    assert len(set(hashes)) == 7, "every window has models of its own"
    assert all(w["params"]["train_estimators"] == 50 for w in first["windows"])
    journals = _journals(out)
    again = gatebot(*args, env={"PYTHONHASHSEED": "20"}, timeout=900)
    assert again.returncode == 0, again.stderr
    assert again.stdout == text, "the same figures, hashes and baseline printed"
    assert _figures(out) == first
    assert _journals(out) == journals, "byte-identical journals"
    print(f"walk-forward over the 15m file, monthly retraining, 2 workers: {first_s:.0f} s per run")
