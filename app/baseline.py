"""``gatebot evaluate CONFIG --candles CSV --baseline N``: does the strategy beat luck?

The strategy is replayed once; from its journal come its entry rate (entries per candle while flat, after
the warm-up), side mix, sizes (the margin share of each entry), its exit-signal rate (exits it asked for per
candle held) and its longest hold. N seeded :class:`RandomEntry` strategies then trade the same candles with
those rates through the same engine, paper account, costs and exchange stop, each on an account of its
own (in a few processes). The figure compared is the compounded return of the part the report leads with
(out of sample when the strategy declares a training window). The strategy's percentile among them and an
empirical one-sided p-value, (k + 1) / (N + 1) with k the random runs at least as good, are printed, written to
``baseline.json`` (which ``gatebot report`` shows) and drawn in ``baseline.png``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np

from gatebot.core.config import Config, ExchangeConfig, InstanceConfig, load_config
from gatebot.core.events import CandleClosed
from gatebot.core.journal import Journal
from gatebot.core.strategy import Decision, Enter, Exit, PositionView, StrategyContext
from gatebot.plugins.hookspecs import hookimpl

MODULE = "gatebot.app.baseline"
"""Registered as a plugin module for the random runs (the strategy below)."""
Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]


class RandomEntryParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    seed: int = 0
    entry_rate: Rate = 0.01
    """Chance of an entry on a candle while flat."""
    long_share: Rate = 0.5
    fractions: list[float] = msgspec.field(default_factory=lambda: [0.5])
    """Margin shares to draw from (the strategy's own sizes)."""
    exit_rate: Rate = 0.0
    """Chance of an exit signal on a candle while protected."""
    max_hold: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    warmup: Annotated[int, msgspec.Meta(ge=1)] = 1


class RandomEntry:
    """Enters and exits at random at given rates (the draws of each candle made once, in ``on_candle``, from a
    generator seeded by ``seed``: the same seed repeats the run exactly)."""

    Params: ClassVar[type[msgspec.Struct]] = RandomEntryParams

    def __init__(self, params: RandomEntryParams, context: StrategyContext) -> None:
        self.p = params
        self.history = params.warmup
        self._rng = np.random.default_rng(params.seed)
        self._draw = np.zeros(4)

    def on_candle(self, candle: CandleClosed) -> None:
        self._draw = self._rng.random(4)

    def decide(self, view: PositionView) -> Decision:
        enter_u, side_u, size_u, exit_u = self._draw.tolist()
        p = self.p
        if view.state == "flat":
            if enter_u >= p.entry_rate:
                return None
            fraction = p.fractions[min(len(p.fractions) - 1, int(size_u * len(p.fractions)))]
            return Enter(side="long" if side_u < p.long_share else "short", fraction=fraction)
        if view.state != "protected":
            return None
        if view.bars_held >= p.max_hold:
            return Exit(reason="max_hold")
        if exit_u < p.exit_rate:
            return Exit(reason="random")
        return None


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"random_entry": RandomEntry}


# --- the strategy's rates, from its journal ---------------------------------------------------------------


def exit_requests(journal: Journal) -> int:
    """The exits the strategy asked for on a signal of its own (not its max hold)."""
    return int(journal.conn.execute("SELECT COUNT(*) FROM transitions WHERE trigger = 'exit_signal' AND "
                                    "detail NOT LIKE '%max_hold%'").fetchone()[0])


def rates(asked: int, ev: dict[str, Any], *, candles: int, step_ms: int, warmup: int, leverage: int,
          max_hold: int | None) -> RandomEntryParams:
    """What the random runs copy of the strategy: entry rate while flat, side mix, sizes, exit-signal rate
    per candle held (``asked``: :func:`exit_requests`), the longest hold (its ``max_hold`` parameter when it has
    one)."""
    rows = ev["trades_table"]
    held = sum(max(1, r["duration_ms"] // step_ms) for r in rows)
    flat = max(1, candles - warmup - held)
    balance = float(ev["initial_balance"])
    fractions = []
    for r in rows:
        fractions.append(min(1.0, float(r["qty"]) * float(r["entry_price"]) / leverage / balance) if balance > 0
                         else 0.5)
        balance += float(r["net"])
    longest = max((r["duration_ms"] // step_ms for r in rows), default=1)
    return RandomEntryParams(
        entry_rate=min(1.0, len(rows) / flat),
        long_share=sum(r["side"] == "long" for r in rows) / len(rows) if rows else 0.5,
        fractions=sorted(round(f, 4) for f in fractions) or [0.5],
        exit_rate=min(1.0, asked / max(1, held)), max_hold=max_hold or max(1, int(longest)), warmup=max(1, warmup))


# --- running ----------------------------------------------------------------------------------------------


def _config(base: Config, state: Path, template: str, instances: list[tuple[str, str, Any]]) -> Config:
    """CONFIG (``base``, loaded) with instance ``template`` and its account copied once per (name, strategy,
    params): each its own. The loaded config, not its path, travels to a worker: a cluster's need not have it."""
    from gatebot.app.replayer import on_paper

    config = on_paper(msgspec.structs.replace(base, mode="replay"))
    first = next(i for i in config.instances if i.name == template)
    account = config.exchanges[first.exchange]
    exchanges: dict[str, ExchangeConfig] = {}
    out: list[InstanceConfig] = []
    for name, strategy, params in instances:
        exchanges[name] = account
        out.append(msgspec.structs.replace(first, name=name, exchange=name, strategy=strategy, params=params))
    modules = [*config.plugins.modules, MODULE]
    return msgspec.structs.replace(config, state_dir=str(state), exchanges=exchanges, instances=out,
                                   plugins=msgspec.structs.replace(config.plugins, modules=modules))


def _run(base: Config, csv: Path, state: Path, template: str, instances: list[tuple[str, str, Any]]) -> None:
    """One process: these instances over the candles (their journals in ``state``)."""
    from gatebot.app.runner import Runner
    from gatebot.plugins.manager import make_plugin_manager

    config = _config(base, state, template, instances)
    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    asyncio.run(Runner(config, plugins, candles_csv=csv).run())


def _run_and_judge(base: Config, csv: Path, state: Path, template: str, instances: list[tuple[str, str, Any]],
                   training: tuple[int, int] | None) -> list[float]:
    """One process: run these instances, then evaluate each (split as the strategy's was): their figures."""
    from gatebot.core.market import read_candles

    _run(base, csv, state, template, instances)
    rows = read_candles(csv).rows  # as the replay reads it
    return [figure(_evaluate(state, name, rows, training)[0]) for name, _, _ in instances]


def _judge(item: tuple[Config, Path, Path, str, list[tuple[str, str, Any]], tuple[int, int] | None]) -> list[float]:
    return _run_and_judge(*item)


def _evaluate(state: Path, name: str, rows: np.ndarray,
              training: tuple[int, int] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The evaluation of one run (with ``training``: split as the strategy's was) and its journal's meta."""
    from gatebot.app.evaluation import evaluate, read_journal

    journal = Journal(state / f"{name}.sqlite", readonly=True)
    try:
        facts = read_journal(journal)
        meta = journal.meta()
        if training is not None:
            facts.training = training
        return evaluate(facts, rows), meta
    finally:
        journal.close()


def figure(ev: dict[str, Any]) -> float:
    """The compared figure: the compounded return (%) of the part the report leads with."""
    return float(ev["parts"][0]["compound_return_pct"])


class Baseline(msgspec.Struct, kw_only=True):
    instance: str
    part: str
    strategy_return_pct: float
    random_returns_pct: list[float]
    percentile: float
    """Share of the random runs the strategy beat (ties count half), in %."""
    p_value: float
    method: str
    params: dict[str, Any]
    seconds: float = 0.0

    def text(self) -> str:
        r = np.array(self.random_returns_pct)
        return (f"random-entry baseline ({len(r)} seeded runs at the strategy's entry rate, side mix, sizes and exit "
                f"rules, same engine and costs), {self.part}: strategy {self.strategy_return_pct:+.2f}% vs random "
                f"median {np.median(r):+.2f}% (5%..95%: {np.percentile(r, 5):+.2f}%..{np.percentile(r, 95):+.2f}%); "
                f"percentile {self.percentile:.1f}, p-value {self.p_value:.3f} ({self.method})")


def run_baseline(path: Path, csv: Path, n: int, *, workers: int | None = None, seed: int = 0,
                 state: Path | None = None, strategy_dir: Path | None = None, instance: str | None = None) -> Baseline:
    """Replay CONFIG's instance ``instance`` (default the first; into ``strategy_dir``, default a temporary
    folder), then ``n`` random-entry runs with its rates; compare."""
    import time

    from gatebot.core.market import read_candles

    t0 = time.perf_counter()
    rows = read_candles(csv).rows  # as the replay reads it
    with tempfile.TemporaryDirectory(prefix="gatebot-baseline-") as tmp:
        root = state or Path(tmp)
        base = load_config(path)
        instances = base.instances
        first = next((i for i in instances if i.name == instance), None) if instance else instances[0]
        if first is None:
            from gatebot.core.config import ConfigError

            raise ConfigError(f"{path}: evaluate --instance: no instance {instance!r} (there are "
                              f"{', '.join(i.name for i in instances)})")
        mine_dir = strategy_dir or root / "strategy"
        _run(base, csv, mine_dir, first.name, [(first.name, first.strategy, first.params)])
        ev, meta = _evaluate(mine_dir, first.name, rows)
        randoms, params = random_returns(base, csv, root, first, ev, meta, mine_dir / f"{first.name}.sqlite", rows,
                                         n, seed=seed, workers=workers)
    mine = figure(ev)
    percentile, p_value = compare(mine, randoms)
    return Baseline(instance=first.name, part=ev["parts"][0]["label"], strategy_return_pct=mine,
                    random_returns_pct=randoms, percentile=percentile, p_value=p_value,
                    method="empirical, one-sided: (k+1)/(N+1)", params=msgspec.to_builtins(params),
                    seconds=time.perf_counter() - t0)


def random_returns(base: Config, csv: Path, root: Path, first: InstanceConfig, ev: dict[str, Any], meta: dict[str, str],
                   journal_path: Path, rows: np.ndarray, n: int, *, seed: int = 0,
                   workers: int | None = None) -> tuple[list[float], RandomEntryParams]:
    """The figures of ``n`` random-entry runs with the rates of instance ``first``'s replay (its evaluation ``ev``,
    journal meta ``meta``, journal at ``journal_path``), each on its own account, in state folders under ``root``
    (in ``workers`` processes; 1: in this one); and the rates they ran with."""
    journal = Journal(journal_path, readonly=True)
    try:
        params = rates(exit_requests(journal), ev, candles=len(rows), step_ms=int(meta.get("interval_ms", 300_000)),
                       warmup=int(meta.get("warmup_candles", 1)), leverage=first.leverage,
                       max_hold=getattr(first.params, "max_hold", None))
    finally:
        journal.close()
    training = None if ev["training"] is None else (ev["training"]["start_ms"], ev["training"]["end_ms"])
    runs = random_runs(params, n, seed)
    names = [name for name, _, _ in runs]
    k = max(1, min(workers or os.cpu_count() or 1, n))
    dirs = [root / f"random{i}" for i in range(k)]  # one state folder per process (each holds its lock)
    chunks = [runs[i::k] for i in range(k)]
    if k == 1:
        figures = [_run_and_judge(base, csv, dirs[0], first.name, runs, training)]
    else:
        from gatebot.app.executors import LocalExecutor

        with LocalExecutor(k) as executor:  # the sweep's and walk-forward's local processes (spawned, retried)
            by_chunk = dict(executor.map(_judge, [(base, csv, d, first.name, c, training)
                                                  for d, c in zip(dirs, chunks, strict=True)]))
        figures = [by_chunk[i] for i in range(k)]
    by_name = {name: f for chunk, got in zip(chunks, figures, strict=True)
               for (name, _, _), f in zip(chunk, got, strict=True)}
    return [by_name[name] for name in names], params


def random_runs(params: RandomEntryParams, n: int, seed: int) -> list[tuple[str, str, Any]]:
    """The ``n`` random-entry instances (name, strategy, params), each seeded from ``seed`` and its number."""
    return [(f"rnd{i:04d}", "random_entry", msgspec.structs.replace(params, seed=seed * 1_000_003 + i))
            for i in range(n)]


def compare(mine: float, randoms: list[float]) -> tuple[float, float]:
    """The strategy's percentile among the random runs (ties count half, in %) and the empirical one-sided
    p-value (k + 1) / (N + 1), k the random runs at least as good."""
    beats = sum(1.0 if r < mine else 0.5 if r == mine else 0.0 for r in randoms)
    at_least = sum(1 for r in randoms if r >= mine)
    return (beats / len(randoms) * 100 if randoms else 0.0), (at_least + 1) / (len(randoms) + 1)


def plot_baseline(b: Baseline, out: Path) -> bool:
    """The random runs' distribution with the strategy marked; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(b.random_returns_pct, bins=max(5, len(b.random_returns_pct) // 5), color="0.6", label="random entries")
    ax.axvline(b.strategy_return_pct, color="tab:red", lw=2, label=f"{b.instance}: {b.strategy_return_pct:+.2f}%")
    ax.set_xlabel(f"compounded return %, {b.part}")
    ax.set_ylabel("runs")
    ax.set_title(f"percentile {b.percentile:.1f}, p = {b.p_value:.3f} ({b.method})")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=80)
    plt.close(fig)
    return True


def cmd_evaluate(args: Any) -> int:
    """``gatebot evaluate CONFIG --candles CSV --baseline N``."""
    from gatebot.core.config import ConfigError

    if args.baseline < 1:
        raise ConfigError(f"evaluate: --baseline must be at least 1, got {args.baseline}")
    base = load_config(args.config)
    if base.mode == "live":
        raise ConfigError(f"{args.config}: $.mode: evaluate never uses a live config")
    from gatebot.app.cli import write_report
    from gatebot.app.report import evaluation_text

    out = Path(base.state_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baseline.json").unlink(missing_ok=True)  # never one of an earlier run beside the new journal
    b = run_baseline(args.config, args.candles, args.baseline, workers=args.workers, seed=args.seed,
                     strategy_dir=out, instance=args.instance)
    print(evaluation_text(out, args.candles, only=b.instance))
    print(b.text())
    (out / "baseline.json").write_bytes(msgspec.json.format(msgspec.json.encode(b)))
    print(f"baseline: {out / 'baseline.json'}")
    if plot_baseline(b, out / "baseline.png"):
        print(f"chart: {out / 'baseline.png'}")
    write_report(out, None, quiet=True)
    print(f"({b.seconds:.1f} s)", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="the strategy against N random-entry runs with its own rates and exits")
    p.add_argument("config", type=Path)
    p.add_argument("--candles", type=Path, required=True, help="candle CSV to replay")
    p.add_argument("--baseline", type=int, default=100, help="random runs (default 100)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPU count)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random runs")
    p.add_argument("--instance", help="the instance to evaluate (default: the config's first)")
    p.set_defaults(func=cmd_evaluate)
