"""``gatebot walk-forward CONFIG --candles CSV --train N --test M``: retrain on a rolling window, replay the next.

Windows (:func:`windows`): window k trains on the candles ``[k*M, k*M + N)`` and is replayed on the next M,
``[k*M + N, k*M + N + M)``. The test spans are adjacent and together make one contiguous span (the stitched
out-of-sample span) up to the file's last candle (the last span shorter when the candles left are fewer than M);
none overlaps the training span of its own window (later windows train on earlier test spans: that is the point
of retraining).
A test span's replay starts ``history - 1`` candles before it (the strategy's warm-up, taken from the end of the
training span): the strategy sees them, the engine decides nothing on them (it decides from its ``history``-th
candle on), so the first decision is taken on the first test candle and nothing trades in the warm-up.

Each window is one task on the executor (app/executors.py: local processes, or Ray with ``--ray``): the
strategy's training hook (core/strategy.py ``Trains``) fits on the window's N candles up to the open time of the
last of them, the test span is replayed on the paper exchange with those artifacts (a journal of its own), and
the task returns the journal's and the artifacts' bytes, which the driver writes under ``--out`` (default
``STATE_DIR/walk-forward``): ``window-NN/models/``, ``window-NN/candles.csv`` (the replayed candles),
``window-NN/state/INSTANCE.sqlite``, and ``walkforward.json`` for the whole run. The sha256 of every artifact file
is in the window's journal meta (``walkforward.artifact.FILE.sha256``, beside the strategy's own ``model.*``)
and in ``walkforward.json``.

Stitching (:func:`stitch`): the windows run at once, so each replays from the config's balance; the stitched
account compounds them: window k's money (quantities, PnL, fees, funding) is scaled by the equity the windows
before it ended on over that balance, so every trade keeps its return on the balance before it and the stitched
return is the product of the windows' returns (the sizes were rounded to the instrument's step at the window's
own balance: the stitched curve is the windows' returns compounded, not one account's orders). A position still
open at a window's end is valued at that window's last close (exit ``window_end``), as the evaluation values a
position open at the end of a replay. The stitched figures are app/evaluation.py's on the test spans' candles,
all out of sample; then ``--baseline`` random-entry runs (app/baseline.py) at the stitched trades' rates trade
the same span (after the same warm-up), and the stitched return's percentile and p-value among them are printed.

Deterministic: training seeded and single-threaded, replays pure functions of their inputs, the random runs
seeded: a second run gives the same figures and hashes and, into the same ``--out``, byte-identical journals.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gatebot.app import baseline
from gatebot.app.evaluation import JournalFacts, evaluate, format_part, open_trade, read_journal
from gatebot.app.exit_codes import EXIT_DIVERGED, EXIT_HALTED
from gatebot.core.config import Config, ConfigError, InstanceConfig, MarketConfig, load_config
from gatebot.core.intervals import interval_ms
from gatebot.core.journal import Journal
from gatebot.core.strategy import StrategyContext, Trains

META = "walkforward."
"""Prefix of the walk-forward's keys in each window's journal meta."""
_DURATION_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One window, as row indices into the candle file (half-open spans)."""

    index: int
    train: tuple[int, int]
    test: tuple[int, int]
    warmup: int
    """Candles replayed before the test span (from the end of the training span), never traded on."""

    @property
    def replay(self) -> tuple[int, int]:
        return self.test[0] - self.warmup, self.test[1]


def windows(n: int, train: int, test: int, warmup: int) -> list[Window]:
    """The rolling windows of ``n`` candles: train on ``train``, test on the next ``test``, roll by ``test``."""
    if train < 1 or test < 1:
        raise ConfigError(f"walk-forward: --train and --test must be at least 1 candle (got {train} and {test})")
    if warmup > train:
        raise ConfigError(f"walk-forward: --train {train}: the strategy warms up on {warmup} candles before each "
                          "test span, taken from its training span: train on at least that many")
    if n <= train:
        raise ConfigError(f"walk-forward: the candle file has {n} candles, not more than --train {train}: nothing "
                          "is left to test on")
    out: list[Window] = []
    start = 0
    while start + train < n:
        out.append(Window(index=len(out), train=(start, start + train),
                          test=(start + train, min(n, start + train + test)), warmup=warmup))
        start += test
    return out


def candles_of(text: str, interval: str, what: str) -> int:
    """``--train`` / ``--test``: a number of candles (``2880``) or a duration (``30d``, ``12h``) of whole candles."""
    if text.isdigit():
        return int(text)
    unit, count = text[-1:], text[:-1]
    if unit not in _DURATION_MS or not count.isdigit():
        raise ConfigError(f"walk-forward: {what} {text!r}: a number of candles (2880) or a duration (30d, 12h, 90m)")
    ms, step = int(count) * _DURATION_MS[unit], interval_ms(interval)
    if ms % step:
        raise ConfigError(f"walk-forward: {what} {text}: not a whole number of {interval} candles")
    return ms // step


# --- one window: a task on the executor ------------------------------------------------------------------


class WindowTask(msgspec.Struct, frozen=True, kw_only=True):
    window: Window
    config: Config
    """The replay's config: mode replay, on paper, the one instance walked forward."""
    work: str
    """The window's folder (the same path on the driver and on a local worker)."""


class WindowResult(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    files: dict[str, bytes]
    """Path under the window's folder -> content: the artifacts, the replayed candles, the journal."""
    artifacts: dict[str, str]
    """Artifact file (under ``models/``) -> sha256."""
    params: dict[str, Any]
    halted: str | None = None


def write_candles(path: Path, rows: np.ndarray) -> None:
    """Candles as a CSV load_csv reads back to the same floats (open time in ms, ``repr`` of each value)."""
    lines = [f"{int(t)},{o!r},{h!r},{lo!r},{c!r},{v!r}\n" for t, o, h, lo, c, v in rows.tolist()]
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(lines))


def run_window(task: WindowTask, shared: Any) -> WindowResult:
    """Train on the window's candles, replay its test span with what was trained (one process)."""
    from gatebot.app.runner import Runner
    from gatebot.core.market import read_candles
    from gatebot.plugins.manager import make_plugin_manager

    rows = read_candles(shared.path()).rows  # as the driver (and a replay) reads it
    w = task.window
    work = Path(task.work)
    shutil.rmtree(work, ignore_errors=True)  # a window's folder holds one run's files, never an earlier run's
    models = work / "models"
    models.mkdir(parents=True)
    config = task.config
    inst = config.instances[0]
    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    cls = plugins.strategies()[inst.strategy]
    train_rows = rows[w.train[0]:w.train[1]]
    try:
        params = cls.train(train_rows, int(train_rows[-1, 0]), models, inst.params)
    except ValueError as exc:  # the strategy's word on what it cannot train on: one line, exit status 2
        raise ConfigError(f"walk-forward: window {w.index}: strategy {inst.strategy} cannot train on its "
                          f"{len(train_rows)} candles: {exc}") from None
    artifacts = {p.relative_to(models).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(models.rglob("*")) if p.is_file()}
    csv = work / "candles.csv"
    write_candles(csv, rows[w.replay[0]:w.replay[1]])
    state = work / "state"
    config = msgspec.structs.replace(config, state_dir=str(state),
                                     instances=[msgspec.structs.replace(inst, params=params)])
    runner = Runner(config, plugins, candles_csv=csv)
    asyncio.run(runner.run())
    journal_path = state / f"{inst.name}.sqlite"
    halted = runner.halted.get(inst.name)
    if halted is None:
        journal = Journal(journal_path)
        try:
            journal.set_meta({f"{META}window": str(w.index), f"{META}train_start_ms": str(int(train_rows[0, 0])),
                              f"{META}train_end_ms": str(int(train_rows[-1, 0])),
                              f"{META}test_start_ms": str(int(rows[w.test[0], 0])),
                              f"{META}test_end_ms": str(int(rows[w.test[1] - 1, 0])),
                              f"{META}warmup_candles": str(w.warmup),
                              **{f"{META}artifact.{name}.sha256": digest for name, digest in artifacts.items()}})
        finally:
            journal.close()
    files = {p.relative_to(work).as_posix(): p.read_bytes()
             for p in [*sorted(models.rglob("*")), csv, journal_path] if p.is_file()}
    return WindowResult(index=w.index, files=files, artifacts=artifacts, params=msgspec.to_builtins(params),
                        halted=halted)


# --- stitching ---------------------------------------------------------------------------------------------


def closes_of(rows: np.ndarray, step_ms: int) -> dict[int, float]:
    """Close time -> close, as the evaluation marks equity."""
    return {int(t) + step_ms: float(c) for t, c in zip(rows[:, 0].tolist(), rows[:, 4].tolist(), strict=True)}


def stitch(facts: list[JournalFacts], replayed: list[np.ndarray]) -> JournalFacts:
    """The windows' journals as one out-of-sample account that compounds them (the module's docstring): each
    window's money scaled by the equity the windows before it ended on over the start balance; a position open
    at a window's end closed at its last close (``window_end``). ``replayed``: each window's replayed candles."""
    initial = facts[0].initial_balance
    if any(f.initial_balance != initial for f in facts) or initial <= 0:
        raise ValueError("walk-forward: the windows' journals do not start from one positive balance")
    scale = Decimal(1)
    trades = []
    funding: dict[int, list[tuple[int, Decimal]]] = {}
    for f, rows in zip(facts, replayed, strict=True):
        closes = closes_of(rows, f.interval_ms)
        own = list(f.trades)
        held = open_trade(f, closes, max(closes))
        if held is not None:
            own.append(msgspec.structs.replace(held, exit_reason="window_end"))
        for t in own:
            n = len(trades) + 1
            funding[n] = [(ft, paid * scale) for ft, paid in f.funding_times.get(t.position, [])]
            trades.append(msgspec.structs.replace(
                t, position=n, qty=t.qty * scale, realized_pnl=t.realized_pnl * scale, fees=t.fees * scale,
                entry_fees=t.entry_fees * scale, funding=t.funding * scale))
        scale *= (initial + sum((t.net for t in own), Decimal(0))) / initial
    firsts = [f.first_ts for f in facts if f.first_ts is not None]
    lasts = [f.last_ts for f in facts if f.last_ts is not None]
    return JournalFacts(instance=facts[0].instance, initial_balance=initial, trades=trades, open=None,
                        funding_times=funding, first_ts=min(firsts, default=None), last_ts=max(lasts, default=None),
                        interval_ms=facts[0].interval_ms, warmup_candles=0, training=None)


class WalkForwardError(Exception):
    """A window could not be replayed through (its instance halted: exit status 3), or traded outside its test
    span (a broken promise: 1)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


STITCHED_LABEL = "out of sample, stitched (each window's models trained only on candles before its test span)"


# --- the run ------------------------------------------------------------------------------------------------


class WalkForward(msgspec.Struct, kw_only=True):
    """What walkforward.json holds."""

    instance: str
    strategy: str
    candles_csv: str
    interval: str
    train_candles: int
    test_candles: int
    warmup_candles: int
    windows: list[dict[str, Any]]
    stitched: dict[str, Any]
    baseline: dict[str, Any] | None = None
    seconds: float = 0.0


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _replay_config(base: Config, path: Path, instance: str | None) -> tuple[Config, InstanceConfig]:
    """CONFIG for one window's replay: mode replay, on paper, only ``instance`` (default the first) and its account."""
    from gatebot.app.replayer import on_paper

    if base.mode == "live":
        raise ConfigError(f"{path}: $.mode: walk-forward never uses a live config")
    inst = next((i for i in base.instances if i.name == instance), None) if instance else base.instances[0]
    if inst is None:
        raise ConfigError(f"{path}: walk-forward --instance: no instance {instance!r} (there are "
                          f"{', '.join(i.name for i in base.instances)})")
    config = on_paper(msgspec.structs.replace(base, mode="replay", instances=[inst],
                                              exchanges={inst.exchange: base.exchanges[inst.exchange]}))
    return config, inst


def run_walk_forward(path: Path, csv: Path, train: str, test: str, *, out: Path | None = None,
                     workers: int | None = None, ray: str | None = None, baseline_runs: int = 100, seed: int = 0,
                     instance: str | None = None) -> WalkForward:
    """The whole walk-forward (the module's docstring); writes ``out`` and returns what walkforward.json holds."""
    from gatebot.app.executors import SharedFile, executor_for
    from gatebot.core.market import check_spacing, read_candles
    from gatebot.plugins.manager import make_plugin_manager

    t0 = time.perf_counter()
    base = load_config(path)
    config, inst = _replay_config(base, path, instance)
    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    cls = plugins.strategies()[inst.strategy]
    if not isinstance(cls, Trains):
        raise ConfigError(f"{path}: instance {inst.name}: strategy {inst.strategy} cannot train (it has no train "
                          "hook, core/strategy.py Trains): walk-forward retrains the strategy on every window")
    candle_file = read_candles(csv)
    check_spacing(candle_file, inst.interval, (config.market or MarketConfig()).max_gap_candles)
    rows = candle_file.rows
    n_train, n_test = candles_of(train, inst.interval, "--train"), candles_of(test, inst.interval, "--test")
    history = int(cls(inst.params, StrategyContext(instance=inst.name, symbol=inst.symbol, interval=inst.interval,
                                                   leverage=inst.leverage)).history)
    found = windows(len(rows), n_train, n_test, max(0, history - 1))
    out = (out or Path(base.state_dir) / "walk-forward").resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "walkforward.json").unlink(missing_ok=True)  # never an earlier run's beside this one's windows
    for stale in out.glob("window-*"):
        shutil.rmtree(stale)
    tasks = [WindowTask(window=w, config=config, work=str(out / f"window-{w.index:02d}")) for w in found]
    shared = SharedFile(csv)
    results: dict[int, WindowResult] = {}
    with executor_for(ray, workers) as executor:
        for i, result in executor.map(run_window, tasks, shared=shared):
            results[i] = result
        for result in results.values():
            if result.halted is not None:
                raise WalkForwardError(f"walk-forward: window {result.index}: instance {inst.name} halted: "
                                       f"{result.halted}", EXIT_HALTED)
            for name, data in result.files.items():  # a remote worker's files, here; a local one's, again
                target = out / f"window-{result.index:02d}" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        facts, replayed, summaries, asked = [], [], [], 0
        step = interval_ms(inst.interval)
        for w in found:
            journal = Journal(out / f"window-{w.index:02d}" / "state" / f"{inst.name}.sqlite", readonly=True)
            try:
                f = read_journal(journal)
                asked += baseline.exit_requests(journal)
            finally:
                journal.close()
            span = rows[w.replay[0]:w.replay[1]]
            ev = evaluate(f, span)
            if any(t["sample"] != "out_of_sample" for t in ev["trades_table"]) or \
                    any(t.opened_at - step < int(rows[w.test[0], 0]) for t in f.trades):
                raise WalkForwardError(f"walk-forward: window {w.index}: a trade was decided outside its test span",
                                       EXIT_DIVERGED)
            facts.append(f)
            replayed.append(span)
            part = ev["parts"][0]
            summaries.append({
                "index": w.index, "train": [int(rows[w.train[0], 0]), int(rows[w.train[1] - 1, 0])],
                "test": [int(rows[w.test[0], 0]), int(rows[w.test[1] - 1, 0])], "warmup_candles": w.warmup,
                "artifacts": results[w.index].artifacts, "params": results[w.index].params,
                "trades": part["trades"], "open_at_end": part["open_positions"],
                "compound_return_pct": part["compound_return_pct"], "max_drawdown_pct": part["max_drawdown_pct"]})
        tested = rows[found[0].test[0]:found[-1].test[1]]
        stitched = evaluate(stitch(facts, replayed), tested)
        stitched["parts"][0]["label"] = STITCHED_LABEL
        result = WalkForward(instance=inst.name, strategy=inst.strategy, candles_csv=str(csv.resolve()),
                             interval=inst.interval, train_candles=n_train, test_candles=n_test,
                             warmup_candles=found[0].warmup,
                             windows=summaries, stitched=stitched)
        if baseline_runs > 0:
            b = _baseline(base, out, inst, stitched, rows[found[0].replay[0]:found[-1].test[1]], history, asked,
                          baseline_runs, seed, executor)
            result.baseline = msgspec.to_builtins(b)
    result.seconds = time.perf_counter() - t0
    (out / "walkforward.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    return result


def _random_chunk(item: tuple[Config, str, str, list[tuple[str, str, Any]]], shared: Any) -> list[float]:
    """One process's share of the random runs over the stitched span (the baseline's own run-and-judge)."""
    base, state, template, runs = item
    return baseline._run_and_judge(base, shared.path(), Path(state), template, runs, None)


def _baseline(base: Config, out: Path, inst: InstanceConfig, stitched: dict[str, Any], rows: np.ndarray, history: int,
              asked: int, n: int, seed: int, executor: Any) -> baseline.Baseline:
    """``n`` random-entry runs at the stitched trades' rates over the stitched span (the same warm-up before it)."""
    from gatebot.app.executors import SharedFile

    t0 = time.perf_counter()
    folder = out / "baseline"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    csv = folder / "candles.csv"
    write_candles(csv, rows)
    params = baseline.rates(asked, stitched, candles=len(rows), step_ms=interval_ms(inst.interval), warmup=history,
                            leverage=inst.leverage, max_hold=getattr(inst.params, "max_hold", None))
    runs = baseline.random_runs(params, n, seed)
    k = max(1, min(executor.workers, n))
    items = [(base, str(folder / f"random{i}"), inst.name, runs[i::k]) for i in range(k)]
    figures: dict[str, float] = {}
    for i, got in executor.map(_random_chunk, items, shared=SharedFile(csv)):
        figures |= {name: f for (name, _, _), f in zip(items[i][3], got, strict=True)}
    randoms = [figures[name] for name, _, _ in runs]
    mine = baseline.figure(stitched)
    percentile, p_value = baseline.compare(mine, randoms)
    return baseline.Baseline(instance=inst.name, part=stitched["parts"][0]["label"], strategy_return_pct=mine,
                             random_returns_pct=randoms, percentile=percentile, p_value=p_value,
                             method="empirical, one-sided: (k+1)/(N+1)", params=msgspec.to_builtins(params),
                             seconds=time.perf_counter() - t0)


def format_walk_forward(r: WalkForward) -> str:
    days = 86_400_000 / interval_ms(r.interval)
    lines = [f"walk-forward of {r.instance} ({r.strategy}) over {r.candles_csv}: {len(r.windows)} window(s), "
             f"train {r.train_candles} candles ({r.train_candles / days:.1f} days), test {r.test_candles} "
             f"({r.test_candles / days:.1f} days; the last span the candles left), warm-up {r.warmup_candles} "
             "candles before each test span"]
    for w in r.windows:
        hashes = ", ".join(f"{name} {digest[:12]}" for name, digest in w["artifacts"].items()
                           if not name.endswith(".json"))
        lines.append(f"  window {w['index']}: train {_utc(w['train'][0])} .. {_utc(w['train'][1])}, test "
                     f"{_utc(w['test'][0])} .. {_utc(w['test'][1])} UTC: {w['trades']} trades"
                     + (" (+1 open at the end)" if w["open_at_end"] else "")
                     + f", {w['compound_return_pct']:+.2f}%, max drawdown {w['max_drawdown_pct']:.2f}%; "
                       f"sha256 {hashes}")
    ev = r.stitched
    lines.append(f"stitched out-of-sample evaluation of {r.instance} (windows compounded: each starts from the "
                 f"equity the one before it ended on; equity marked at {ev['marks']}):")
    lines += format_part(ev["parts"][0], ev["initial_balance_valid"], ev["marks"] == "candle closes")
    if r.baseline is not None:
        lines.append(msgspec.convert(r.baseline, baseline.Baseline).text())
    return "\n".join(lines)


def cmd_walk_forward(args: Any) -> int:
    """``gatebot walk-forward CONFIG --candles CSV --train N --test M``."""
    if args.baseline < 0:
        raise ConfigError(f"walk-forward: --baseline must be 0 (none) or more, got {args.baseline}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"walk-forward: --workers must be at least 1, got {args.workers}")
    from gatebot.app.executors import ExecutorError

    try:
        r = run_walk_forward(args.config, args.candles, args.train, args.test, out=args.out, workers=args.workers,
                             ray=args.ray, baseline_runs=args.baseline, seed=args.seed, instance=args.instance)
    except ExecutorError as exc:
        raise ConfigError(str(exc)) from None
    except WalkForwardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    print(format_walk_forward(r))
    out = args.out or Path(load_config(args.config).state_dir) / "walk-forward"
    print(f"walk-forward: {out / 'walkforward.json'}")
    print(f"({r.seconds:.1f} s)", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("walk-forward", help="retrain the strategy on rolling windows, replay each on the next "
                                            "candles, stitch the out-of-sample results")
    p.add_argument("config", type=Path)
    p.add_argument("--candles", type=Path, required=True, help="candle CSV")
    p.add_argument("--train", required=True, help="training candles per window (a number, or a duration: 90d)")
    p.add_argument("--test", required=True, help="candles replayed after each training span, the roll (30d)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: the CPU count)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the windows on a Ray cluster (local: start one here)")
    p.add_argument("--out", type=Path, help="folder of the windows and walkforward.json "
                                            "(default: STATE_DIR/walk-forward)")
    p.add_argument("--baseline", type=int, default=100, help="random-entry runs over the stitched span (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random runs")
    p.add_argument("--instance", help="the instance to walk forward (default: the config's first)")
    p.set_defaults(func=cmd_walk_forward)
