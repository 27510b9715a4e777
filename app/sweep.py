"""``gatebot sweep CONFIG --candles CSV``: search a strategy's and its protection's parameters, one replay per trial.

CONFIG is a replay config with a ``[sweep]`` table (the search space, the sampler, the objective); the instance
swept (``[sweep].instance``, default the first) is replayed alone in each trial, exactly as ``gatebot replay
TRIAL/config.toml --candles CSV`` would (app/replayer.py: the same config path, runner and evaluation), in a
temporary folder on whichever worker the executor picks (app/executors.py: local processes, or Ray with
``--ray``); its journal and figures come back to the driver, which keeps them under ``OUT/trials/NNNNN/``.

The study lives in Optuna's SQLite storage ``OUT/study.sqlite``; the driver asks Optuna for a batch of trials,
runs the batch on the executor and tells each result as it arrives, then asks the next. Resumable: started
again on the same OUT (after a kill -9 too), the driver finishes the batch it was in (trials RUNNING in the
storage re-run once, with the parameters stored for them; a trial killed before all its parameters were stored
is marked failed and replaced) and goes on until ``trials`` trials are finished (completed, or pruned: a
combination the strategy refuses, a replay that failed). Results do not depend on the executor or on a restart:
each trial's sampler is seeded by the sweep's seed and the trial's number, a batch is asked whole before any of
it runs, and the next batch only after every result of this one is told.

The result: ``OUT/sweep.csv`` and ``sweep.json`` (every trial in number order, the objective and figures), the
best ranked as text, ``importance.json`` and ``importance.png`` (Optuna's parameter importances; the plot needs
matplotlib), and ``best-<k>.toml`` (the best K trials' configs, which ``gatebot replay`` accepts).
"""

from __future__ import annotations

import asyncio
import csv as csv_module
import hashlib
import io
import itertools
import logging
import math
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gatebot.app.executors import Executor, ExecutorError, SharedFile, executor_for
from gatebot.core.config import (
    Config,
    ConfigError,
    InstanceConfig,
    ProtectionConfig,
    _one_line,
    config_from,
    config_hash,
    read_toml,
)
from gatebot.core.journal import StateDirLock

log = logging.getLogger("gatebot.sweep")

STUDY = "sweep"
"""The study's name in OUT/study.sqlite (one study per OUT folder)."""
DONE = ("COMPLETE", "PRUNED")
"""Finished trial states: they count toward ``trials``; a FAIL (interrupted while asked) is replaced."""


class Objective(msgspec.Struct, frozen=True):
    figure: str
    """The key in a trial's figures (:func:`figures_of`)."""
    direction: Literal["maximize", "minimize"]
    meaning: str


OBJECTIVES: dict[str, Objective] = {
    "oos_return": Objective("oos_return_pct", "maximize", "compounded return %, out of sample"),
    "oos_sharpe": Objective("oos_sharpe", "maximize",
                            "mean / standard deviation of the 5-day window returns, out of sample"),
    "oos_drawdown": Objective("oos_drawdown_pct", "minimize", "maximum drawdown %, out of sample"),
    "oos_net": Objective("oos_net", "maximize", "net USDT, out of sample"),
}
"""The figures a sweep may optimise: each from the evaluation's leading part (out of sample; app/evaluation.py)."""

Number = int | float
Choice = int | float | str | bool


class Range(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``{ low = 5, high = 30 }`` (whole numbers: an integer range), ``step``, ``log = true``."""

    low: Number
    high: Number
    step: Number | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high, self.step) if v is not None)


Values = Range | list[Choice]
"""One swept parameter: a range or choices."""


class SweepSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    trials: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """How many trials finish (``--trials`` overrides); a grid's default is every point."""
    sampler: Literal["tpe", "random", "qmc", "grid"] = "tpe"
    seed: int = 0
    batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 16
    """Trials asked at a time: the results depend on it (not on the executor); at least the workers' count keeps
    them busy."""
    objective: Literal[tuple(OBJECTIVES)] = "oos_return"  # type: ignore[valid-type]
    instance: str | None = None
    max_p_value: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    """A constraint: the random-entry baseline's p-value (app/baseline.py) at most this (each trial then runs
    ``baseline_runs`` random-entry replays after its own)."""
    baseline_runs: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    best: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    """How many of the best configs are written as TOML."""
    keep_journals: bool = True
    """Each trial's journal comes back to OUT/trials/NNNNN/state; false: only its config and figures (a replay of
    its config.toml makes the same journal again), for sweeps too large to keep every journal."""
    params: dict[str, Any] = {}
    """The strategy's parameters: ranges or choices (each checked as a :data:`Values`, naming its key)."""
    protection: dict[str, Any] = {}
    """The instance's [protection] settings: ranges or choices."""


class Sweep(msgspec.Struct, kw_only=True):
    """A checked sweep: the spec, the base config and what the trials vary."""

    path: str
    spec: SweepSpec
    base: Config
    instance: InstanceConfig
    space: dict[str, Any]
    """``params.fast`` / ``protection.leveraged_sl_pct`` -> an Optuna distribution."""
    grid: list[dict[str, Any]] | None = None
    """A grid's points in the order its trials take them (shuffled by the seed)."""
    fingerprint: str = ""
    """What the study in OUT must have been made for (the base config, the [sweep] table; not ``trials``)."""


def load_sweep(path: Path, *, trials: int | None = None) -> Sweep:
    """CONFIG's [sweep] table and the rest of it, checked; ConfigError (one line) naming the first mistake."""
    raw = read_toml(path)
    table = raw.pop("sweep", None)
    if table is None:
        raise ConfigError(f"{path}: $.sweep: no [sweep] table (the search space: [sweep.params] ranges or choices)")
    base = config_from(path, raw)  # a live config is refused here (it would need --live), as for replay
    try:
        spec = msgspec.convert(table, SweepSpec)
    except msgspec.ValidationError as exc:
        raise ConfigError(_one_line(path, exc, "$.sweep", raw=table)) from exc
    if trials is not None:
        if trials < 1:
            raise ConfigError(f"--trials: must be at least 1, got {trials}")
        spec = msgspec.structs.replace(spec, trials=trials)
    names = [i.name for i in base.instances]
    if spec.instance is not None and spec.instance not in names:
        raise ConfigError(f"{path}: $.sweep.instance: no instance {spec.instance!r} (there are {', '.join(names)})")
    instance = next(i for i in base.instances if i.name == (spec.instance or names[0]))
    if not spec.params and not spec.protection:
        raise ConfigError(f"{path}: $.sweep: nothing to sweep: give [sweep.params] or [sweep.protection] ranges "
                          "({ low = ..., high = ... }) or choices ([...])")
    space: dict[str, Any] = {}
    for group, table_of, struct, owner in (("params", spec.params, type(instance.params), instance.strategy),
                                           ("protection", spec.protection, ProtectionConfig, "[protection]")):
        base_values = msgspec.to_builtins(getattr(instance, group))
        fields = [f.name for f in msgspec.structs.fields(struct)]
        for name, values in table_of.items():
            where = f"{path}: $.sweep.{group}.{name}"
            if name not in fields:
                raise ConfigError(f"{where}: {owner} has no parameter {name!r} (it has: {', '.join(fields)})")
            try:
                values = msgspec.convert(values, Values)
            except msgspec.ValidationError as exc:
                raise ConfigError(_one_line(path, exc, f"$.sweep.{group}.{name}", raw=values)) from exc
            space[f"{group}.{name}"] = _distribution(where, values)
            for key, value in _bounds(values):
                _check_value(f"{where}{key}", struct, base_values, name, value)
    grid = None
    if spec.sampler == "grid":
        grid = _grid(path, space, spec.seed)
        if spec.trials is not None and spec.trials > len(grid):
            raise ConfigError(f"{path}: $.sweep.trials: {spec.trials} trials, but the grid has {len(grid)} points")
        spec = msgspec.structs.replace(spec, trials=spec.trials or len(grid))
    elif spec.trials is None:
        raise ConfigError(f"{path}: $.sweep.trials: how many trials? (set trials in [sweep], or --trials N)")
    fingerprint = hashlib.sha256(msgspec.json.encode(
        [config_hash(base), instance.name, msgspec.to_builtins(msgspec.structs.replace(spec, trials=None))],
        order="sorted")).hexdigest()[:16]
    return Sweep(path=str(path), spec=spec, base=base, instance=instance, space=space, grid=grid,
                 fingerprint=fingerprint)


def _distribution(where: str, values: Range | list[Choice]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(values, list):
        if not values:
            raise ConfigError(f"{where}: no choices (give at least one)")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}: a choice is given twice")
        return CategoricalDistribution(values)
    r = values
    if r.low >= r.high:
        raise ConfigError(f"{where}: low ({r.low}) must be below high ({r.high})")
    if r.log and r.step is not None:
        raise ConfigError(f"{where}: log and step cannot go together")
    if r.log and r.low <= 0:
        raise ConfigError(f"{where}: log needs low > 0, got {r.low}")
    if r.step is not None:
        if r.step <= 0:
            raise ConfigError(f"{where}.step: must be positive, got {r.step}")
        steps = (r.high - r.low) / r.step
        if abs(steps - round(steps)) > 1e-9:
            raise ConfigError(f"{where}: {r.low}..{r.high} is not a whole number of steps of {r.step}")
    if r.integer:
        return IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))
    return FloatDistribution(float(r.low), float(r.high), log=r.log,
                             step=None if r.step is None else float(r.step))


def _bounds(values: Range | list[Choice]) -> list[tuple[str, Any]]:
    if isinstance(values, list):
        return [(f"[{i}]", v) for i, v in enumerate(values)]
    return [(".low", values.low), (".high", values.high)]


def _check_value(where: str, struct: type, base: dict[str, Any], name: str, value: Any) -> None:
    """A bound or choice the field itself refuses (out of its limits, the wrong type) is a mistake in the
    config; one refused only in combination with another parameter (sma_cross's fast < slow) is not: such a
    trial is pruned when drawn."""
    try:
        msgspec.convert({**base, name: value}, struct)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        if at.rstrip("`").lstrip(".").split(".")[0].split("[")[0] == name:
            raise ConfigError(f"{where}: {value!r}: {message}") from None


def _grid(path: Path, space: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Every point of a discrete space (ranges need a step, or are whole numbers), shuffled by ``seed``."""
    import numpy as np
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    axes: list[list[Any]] = []
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            axes.append(list(dist.choices))
        elif isinstance(dist, IntDistribution) and not dist.log:
            axes.append(list(range(dist.low, dist.high + 1, dist.step)))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = round((dist.high - dist.low) / dist.step)
            axes.append([round(dist.low + i * dist.step, 12) for i in range(n + 1)])
        else:
            group, _, field = name.partition(".")
            raise ConfigError(f"{path}: $.sweep.{group}.{field}: a grid needs choices or a range with a step "
                              "(no log)")
    points = [dict(zip(space, p, strict=True)) for p in itertools.product(*axes)]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order.tolist()]


# --- one trial's config -------------------------------------------------------------------------------------


class Invalid(Exception):
    """The strategy or the protection refuses this combination of values (the trial is pruned, with why)."""


def trial_config(sweep: Sweep, values: dict[str, Any], state_dir: str = "state") -> Config:
    """The base config with only the swept instance, these values, the state folder ``state_dir`` (relative to
    the TOML file it is written to) and every account a paper one, in mode replay."""
    from gatebot.app.replayer import on_paper

    inst = sweep.instance
    params = msgspec.to_builtins(inst.params)
    protection = msgspec.to_builtins(inst.protection)
    for name, value in values.items():
        group, _, field = name.partition(".")
        (params if group == "params" else protection)[field] = value
    try:
        new_params = msgspec.convert(params, type(inst.params))
        new_protection = msgspec.convert(protection, ProtectionConfig)
    except msgspec.ValidationError as exc:
        raise Invalid(str(exc)) from None
    instance = msgspec.structs.replace(inst, params=new_params, protection=new_protection)
    config = msgspec.structs.replace(sweep.base, mode="replay", state_dir=state_dir, instances=[instance],
                                     exchanges={inst.exchange: sweep.base.exchanges[inst.exchange]})
    return on_paper(config)


def config_toml(config: Config) -> str:
    """A Config as TOML that ``load_config`` reads back as the same config (absent values left out: each is
    its field's default)."""
    return msgspec.toml.encode(_no_none(msgspec.to_builtins(config))).decode()


def _no_none(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _no_none(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_no_none(v) for v in node]
    return node


# --- the trial, on a worker ---------------------------------------------------------------------------------


class TrialTask(msgspec.Struct, frozen=True, kw_only=True):
    number: int
    config_toml: str
    instance: str
    baseline_runs: int = 0
    keep_journal: bool = True
    seed: int = 0
    """The trial's own seed (the random-entry baseline's)."""


class TrialResult(msgspec.Struct, kw_only=True):
    number: int
    figures: dict[str, Any] = {}
    error: str | None = None
    files: dict[str, bytes] = {}
    """The trial's state folder (its journal), name -> content, for the driver to keep."""
    seconds: float = 0.0


def run_trial(task: TrialTask, candles: SharedFile) -> TrialResult:
    """One trial: ``gatebot replay config.toml --candles CSV`` in a temporary folder (the same config path,
    runner and evaluation), then its figures; a failure is the trial's result (one line), not the sweep's end."""
    from gatebot.app.baseline import compare, random_returns
    from gatebot.app.evaluation import evaluate, read_journal
    from gatebot.app.replayer import candle_replay_config
    from gatebot.app.runner import Runner
    from gatebot.core.journal import Journal
    from gatebot.plugins.manager import make_plugin_manager

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gatebot-trial-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(task.config_toml)
        csv = candles.path()
        try:
            config = candle_replay_config(path)
            plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
            runner = Runner(config, plugins, candles_csv=csv)
            asyncio.run(runner.run())
            if runner.halted:
                raise RuntimeError("; ".join(f"instance {k} halted: {v}" for k, v in runner.halted.items()))
            assert runner.candle_file is not None
            rows = runner.candle_file.rows
            state = Path(config.state_dir)
            journal = Journal(state / f"{task.instance}.sqlite", readonly=True)
            try:
                meta = journal.meta()
                ev = evaluate(read_journal(journal), rows)
            finally:
                journal.close()
            figures = figures_of(ev)
            if task.baseline_runs:
                randoms, _ = random_returns(config, csv, Path(tmp) / "baseline", config.instances[0], ev,
                                            meta, state / f"{task.instance}.sqlite", rows, task.baseline_runs,
                                            seed=task.seed, workers=1)
                figures["p_value"] = compare(figures["oos_return_pct"], randoms)[1]
            files = ({name: (state / name).read_bytes() for name in _settled(state / f"{task.instance}.sqlite")}
                     if task.keep_journal else {})
        except Exception as exc:  # the trial's failure, said in one line; the sweep goes on
            text = str(exc).splitlines()[0] if str(exc) else ""
            return TrialResult(number=task.number, error=f"{type(exc).__name__}: {text}",
                               seconds=time.perf_counter() - t0)
    return TrialResult(number=task.number, figures=figures, files=files, seconds=time.perf_counter() - t0)


def _settled(journal: Path) -> list[str]:
    """The journal as one file: its write-ahead log checkpointed into it (the runner has closed it)."""
    import sqlite3

    conn = sqlite3.connect(journal)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return [journal.name]


def figures_of(ev: dict[str, Any]) -> dict[str, Any]:
    """The figures a trial is judged on, from the evaluation's leading part (out of sample)."""
    part = ev["parts"][0]
    windows = part["windows"]["returns_pct"]
    sharpe = 0.0
    if len(windows) >= 2:
        mean = sum(windows) / len(windows)
        sd = math.sqrt(sum((w - mean) ** 2 for w in windows) / (len(windows) - 1))
        sharpe = mean / sd if sd > 0 else 0.0
    return {"oos_return_pct": part["compound_return_pct"], "oos_drawdown_pct": part["max_drawdown_pct"],
            "oos_sharpe": sharpe, "oos_net": float(part["net"]), "trades": part["trades"],
            "win_rate": part["win_rate"], "windows": len(windows)}


# --- the driver ---------------------------------------------------------------------------------------------


def _seed_for(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % 2**32


def _grid_sampler(points: list[dict[str, Any]], index: int) -> Any:
    """A grid's sampler: the point at this trial's place in the grid's (shuffled) order, given by the driver."""
    from optuna.samplers import BaseSampler

    class GridOrder(BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return points[index][name]

    return GridOrder()


def _sampler(sweep: Sweep, number: int, index: int) -> Any:
    """A fresh sampler for trial ``number`` (the ``index``-th not replaced), seeded by the sweep's seed and the
    trial's number: its draws depend on nothing but the finished trials and that number."""
    import optuna

    spec = sweep.spec
    if spec.sampler == "grid":
        assert sweep.grid is not None
        return _grid_sampler(sweep.grid, index)
    if spec.sampler == "qmc":  # the sequence's place is kept in the study; one scrambling seed for all
        return optuna.samplers.QMCSampler(seed=spec.seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=_seed_for(spec.seed, number))
    return optuna.samplers.TPESampler(seed=_seed_for(spec.seed, number))  # it heeds the trials' constraints


class Outcome(msgspec.Struct, kw_only=True):
    """What a sweep run did (the table itself is in the storage and OUT's files)."""

    out: str
    finished: int
    completed: int
    pruned: int
    replaced: int
    """Trials interrupted while being asked (a kill), marked failed and replaced."""
    rerun: int
    """Trials found RUNNING at start (a kill) and run again."""
    ran: int
    """Trials this run replayed."""
    seconds: float
    workers: int
    where: str


def run_sweep(sweep: Sweep, candles: Path, out: Path, executor: Executor,
              trial_fn: Callable[[TrialTask, SharedFile], TrialResult] = run_trial) -> Outcome:
    """Ask, run and tell until ``trials`` trials are finished (resuming what OUT holds), then write the results."""
    from optuna.trial import TrialState

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    lock = StateDirLock(out)  # one driver per OUT: a second one refuses (JournalLocked, one line)
    try:
        study = open_study(sweep, out)
        shared = SharedFile(candles)
        n = sweep.spec.trials or 0
        counts = {"replaced": 0, "rerun": 0, "ran": 0}
        first = True
        while True:
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            whole = [t for t in running if _is_whole(sweep, t)]
            for t in running:
                if t not in whole:  # killed between its creation and its last parameter: replaced
                    study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted while being asked")
                    study.tell(t.number, state=TrialState.FAIL)
                    counts["replaced"] += 1
            if first:
                counts["rerun"] = len(whole)
                first = False
            batch = list(whole)
            if whole:  # a batch was being run: ask what it still lacks, as the uninterrupted run would have
                key = whole[-1].user_attrs["batch"]
                asked = sum(1 for t in trials if t.user_attrs.get("batch") == key and t.state != TrialState.FAIL)
                batch += _ask(study, sweep, key, key[1] - asked)
            else:
                finished = sum(1 for t in trials if t.state.name in DONE)
                if finished >= n:
                    break
                size = min(sweep.spec.batch, n - finished)
                batch = _ask(study, sweep, [len(trials), size], size)
            counts["ran"] += _run_batch(study, sweep, batch, shared, out, executor, trial_fn)
        trials = study.get_trials(deepcopy=False)
        outcome = Outcome(
            out=str(out), finished=sum(1 for t in trials if t.state.name in DONE),
            completed=sum(1 for t in trials if t.state == TrialState.COMPLETE),
            pruned=sum(1 for t in trials if t.state == TrialState.PRUNED), seconds=time.perf_counter() - t0,
            workers=executor.workers, where=type(executor).__name__, **counts)
        write_results(study, sweep, out)
        return outcome
    finally:
        lock.release()


def open_study(sweep: Sweep, out: Path) -> Any:
    """OUT's study (made on first use); one made for another config or [sweep] table is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(f"sqlite:///{out.resolve() / 'study.sqlite'}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(storage=storage, study_name=STUDY, load_if_exists=True,
                                direction=OBJECTIVES[sweep.spec.objective].direction)
    made_for = study.user_attrs.get("fingerprint")
    if made_for is None:
        if study.get_trials(deepcopy=False):
            raise ConfigError(f"{out}: holds a study without a sweep's fingerprint; choose another --out")
        study.set_user_attr("fingerprint", sweep.fingerprint)
        study.set_user_attr("config", sweep.path)
    elif made_for != sweep.fingerprint:
        raise ConfigError(f"{out}: holds a sweep of another config or [sweep] table (made from "
                          f"{study.user_attrs.get('config')}); choose another --out, or remove it")
    return study


def _is_whole(sweep: Sweep, trial: Any) -> bool:
    return set(trial.params) == set(sweep.space) and "batch" in trial.user_attrs


def _ask(study: Any, sweep: Sweep, key: list[int], count: int) -> list[Any]:
    """``count`` new trials of batch ``key`` ([first number, size]), each with a fresh seeded sampler."""
    from optuna.trial import TrialState

    out = []
    trials = study.get_trials(deepcopy=False)
    index = sum(1 for t in trials if t.state != TrialState.FAIL)
    for k in range(max(0, count)):
        number = len(trials) + k  # a study numbers its trials 0, 1, 2...
        study.sampler = _sampler(sweep, number, index)
        trial = study.ask(fixed_distributions=sweep.space)
        trial.set_user_attr("batch", key)
        out.append(study._storage.get_trial(trial._trial_id))
        index += 1
    return out


def _run_batch(study: Any, sweep: Sweep, batch: Sequence[Any], shared: SharedFile, out: Path, executor: Executor,
               trial_fn: Callable[[TrialTask, SharedFile], TrialResult]) -> int:
    """Run the batch's trials (a combination the strategy refuses is pruned without a replay), telling each
    result as it arrives; returns how many were replayed."""
    import optuna
    from optuna.trial import TrialState

    tasks, texts = [], {}
    for t in batch:
        try:
            config = trial_config(sweep, t.params)
        except Invalid as exc:
            study._storage.set_trial_user_attr(t._trial_id, "error", f"refused: {exc}")
            study.tell(t.number, state=TrialState.PRUNED)
            continue
        texts[t.number] = config_toml(config)
        tasks.append(TrialTask(number=t.number, config_toml=texts[t.number], instance=sweep.instance.name,
                               baseline_runs=sweep.spec.baseline_runs if sweep.spec.max_p_value else 0,
                               keep_journal=sweep.spec.keep_journals,
                               seed=_seed_for(sweep.spec.seed, t.number)))
    by_number = {t.number: t for t in batch}
    for _, result in executor.map(trial_fn, tasks, shared=shared):
        trial = by_number[result.number]
        _keep(out, result, texts[result.number])
        storage = study._storage
        if result.error is not None:
            storage.set_trial_user_attr(trial._trial_id, "error", result.error)
            study.tell(trial.number, state=TrialState.PRUNED)
            continue
        storage.set_trial_user_attr(trial._trial_id, "figures", result.figures)
        if sweep.spec.max_p_value is not None:  # feasible when <= 0
            optuna.Trial(study, trial._trial_id).set_constraint("p_value", result.figures["p_value"] -
                                                                sweep.spec.max_p_value)
        study.tell(trial.number, result.figures[OBJECTIVES[sweep.spec.objective].figure])
    return len(tasks)


def trial_dir(out: Path, number: int) -> Path:
    return out / "trials" / f"{number:05d}"


def _keep(out: Path, result: TrialResult, text: str) -> None:
    """The trial's config, journal and figures under OUT/trials/NNNNN, whole or not at all (written aside, then
    renamed; a re-run's replaces a killed run's)."""
    final = trial_dir(out, result.number)
    new = final.with_name(final.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    (new / "state").mkdir(parents=True)
    (new / "config.toml").write_text(text)
    for name, data in result.files.items():
        (new / "state" / name).write_bytes(data)
    (new / "result.json").write_bytes(msgspec.json.format(msgspec.json.encode(
        {"trial": result.number, "figures": result.figures, "error": result.error, "seconds": result.seconds})))
    shutil.rmtree(final, ignore_errors=True)
    new.rename(final)


# --- the results --------------------------------------------------------------------------------------------

FIGURES = ("oos_return_pct", "oos_drawdown_pct", "oos_sharpe", "oos_net", "trades", "win_rate", "p_value")


def table_rows(study: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """Every finished trial in number order: its state, objective, parameters, figures, rank."""
    spec = sweep.spec
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in DONE:
            continue
        figures = t.user_attrs.get("figures", {})
        p = figures.get("p_value")
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(),
                               "objective": None if t.value is None else t.value}
        row |= {name: t.params.get(name) for name in sweep.space}
        row |= {name: figures.get(name) for name in FIGURES}
        row["feasible"] = t.value is not None and (spec.max_p_value is None or (p is not None and
                                                                              p <= spec.max_p_value))
        row["error"] = t.user_attrs.get("error")
        rows.append(row)
    sign = -1.0 if OBJECTIVES[spec.objective].direction == "maximize" else 1.0
    ranked = sorted(rows, key=lambda r: (not r["feasible"], r["objective"] is None,
                                         sign * (r["objective"] or 0.0), r["trial"]))
    for rank, row in enumerate(ranked, 1):
        row["rank"] = rank
    return rows


def write_results(study: Any, sweep: Sweep, out: Path) -> list[dict[str, Any]]:
    rows = table_rows(study, sweep)
    columns = ["trial", "rank", "state", "objective", *sweep.space, *FIGURES, "feasible", "error"]
    buf = io.StringIO()
    writer = csv_module.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in columns})
    _atomic(out / "sweep.csv", buf.getvalue().encode())
    _atomic(out / "sweep.json", msgspec.json.format(msgspec.json.encode(
        {"objective": sweep.spec.objective, "direction": OBJECTIVES[sweep.spec.objective].direction,
         "sampler": sweep.spec.sampler, "seed": sweep.spec.seed, "batch": sweep.spec.batch,
         "instance": sweep.instance.name, "strategy": sweep.instance.strategy, "trials": rows})))
    for old in out.glob("best-*.toml"):
        old.unlink()
    best = [r for r in sorted(rows, key=lambda r: r["rank"]) if r["feasible"]][:sweep.spec.best]
    for row in best:
        raw = msgspec.toml.decode((trial_dir(out, row["trial"]) / "config.toml").read_bytes())
        raw["state_dir"] = f"best-{row['rank']}"
        _atomic(out / f"best-{row['rank']}.toml",
                f"# trial {row['trial']} of the sweep {sweep.path}: {sweep.spec.objective} = {row['objective']!r}\n"
                .encode() + msgspec.toml.encode(raw))
    return rows


def importances(study: Any) -> dict[str, float] | str:
    """Optuna's parameter importances (its default evaluator) over the completed trials, or why there are none."""
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError) as exc:
        return f"no parameter importances: {str(exc).splitlines()[0]}"


def plot_importances(found: dict[str, float], path: Path) -> bool:
    """A bar per parameter; False without matplotlib (the plot extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(found)[::-1]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(names)))
    ax.barh(names, [found[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (Optuna, normalised)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)
    return True


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def format_table(rows: list[dict[str, Any]], sweep: Sweep, top: int = 10) -> str:
    names = list(sweep.space)
    head = ["rank", "trial", sweep.spec.objective, *names, "oos_ret%", "dd%", "trades"]
    if sweep.spec.max_p_value is not None:
        head.append("p")
    lines = [head]
    for r in sorted(rows, key=lambda r: r["rank"])[:top]:
        line = [str(r["rank"]), str(r["trial"]), _short(r["objective"]), *(_short(r[n]) for n in names),
                _short(r["oos_return_pct"]), _short(r["oos_drawdown_pct"]), _short(r["trades"])]
        if sweep.spec.max_p_value is not None:
            line.append(_short(r["p_value"]))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def _short(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


# --- the command --------------------------------------------------------------------------------------------


def cmd_sweep(args: Any) -> int:
    """``gatebot sweep CONFIG --candles CSV [--trials N] [--workers N] [--ray ADDRESS] [--out DIR]``."""
    from gatebot.app.exit_codes import EXIT_BAD_INPUT
    from gatebot.core.market import read_candles

    sweep = load_sweep(args.config, trials=args.trials)
    read_candles(args.candles)  # a bad candle file is refused once, before any trial (CandleFileError)
    out = args.out or Path(sweep.base.state_dir) / "sweep"
    try:
        with executor_for(args.ray, args.workers) as executor:
            outcome = run_sweep(sweep, args.candles, out, executor)
    except ExecutorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    study = open_study(sweep, out)
    rows = table_rows(study, sweep)
    objective = OBJECTIVES[sweep.spec.objective]
    where = f"Ray at {args.ray}" if args.ray else f"{outcome.workers} local process(es)"
    resumed = (f"; resumed: {outcome.rerun} interrupted trial(s) run again, {outcome.replaced} replaced"
               if outcome.rerun or outcome.replaced else "")
    print(f"sweep of {sweep.instance.name} ({sweep.instance.strategy}) over {args.candles.name}: {outcome.finished} "
          f"trials ({outcome.completed} completed, {outcome.pruned} pruned), sampler {sweep.spec.sampler} seed "
          f"{sweep.spec.seed}, objective {sweep.spec.objective} ({objective.direction}: {objective.meaning}); "
          f"{outcome.ran} replayed now on {where} in {outcome.seconds:.1f} s{resumed}")
    print(format_table(rows, sweep))
    print(f"table: {out / 'sweep.csv'}, {out / 'sweep.json'}")
    found = importances(study)
    if isinstance(found, str):
        print(f"note: {found}")
    else:
        _atomic(out / "importance.json", msgspec.json.format(msgspec.json.encode(found)))
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()) + f" ({out / 'importance.json'})")
        if plot_importances(found, out / "importance.png"):
            print(f"chart: {out / 'importance.png'}")
        else:
            print("note: no importance plot: it needs matplotlib (pip install 'gatebot[plot]')")
    best = sorted(out.glob("best-*.toml"), key=lambda p: int(p.stem.partition("-")[2]))
    if best:
        print("best configs: " + ", ".join(str(p) for p in best) + f" (gatebot replay {best[0]} --candles "
              f"{args.candles})")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sweep", help="search parameters: one replay per trial, an Optuna study on disk (resumable)")
    p.add_argument("config", type=Path, help="a replay config with a [sweep] table")
    p.add_argument("--candles", type=Path, required=True, help="candle CSV every trial replays")
    p.add_argument("--trials", type=int, help="trials to finish (overrides [sweep].trials; more extends a sweep)")
    p.add_argument("--workers", type=int, help="local processes (default: every core); with --ray local: its CPUs")
    p.add_argument("--ray", metavar="ADDRESS", help="run the trials on Ray: a cluster's address (ray://host:10001, "
                                                    "auto), or 'local' for one started here on loopback")
    p.add_argument("--out", type=Path, help="the sweep's folder (default: STATE_DIR/sweep); the same one resumes")
    p.set_defaults(func=cmd_sweep)
