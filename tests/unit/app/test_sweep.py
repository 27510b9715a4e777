"""gatebot sweep without replays: the [sweep] table's checks (one line per mistake), the grid, the trial configs
(TOML that reads back as the same config), and the resume bookkeeping on a driver that dies mid-batch: every
trial finished exactly once, the table the same as an uninterrupted run's."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gatebot.app.executors import SharedFile
from gatebot.app.sweep import (
    Sweep,
    TrialResult,
    TrialTask,
    config_toml,
    load_sweep,
    open_study,
    run_sweep,
    trial_config,
)
from gatebot.core.config import ConfigError, config_hash, load_config
from gatebot.core.journal import JournalLocked, StateDirLock
from tests.helpers import example_text, sma_replay_text

EXAMPLE = example_text("sweep_sma_cross", "state")
BASE = sma_replay_text("state") + "\n"
"""The example without its [sweep] table: a replay of sma_cross(10, 30) 4x on paper."""
SWEEP = "[sweep]\ntrials = 30\nseed = 3\nbatch = 8\n" + EXAMPLE[EXAMPLE.index("[sweep.params]"):]
"""The example's search space (fast 3..20, slow 25..120 by 5, the stop 0.02..0.3 on a log scale), 30 trials."""


def write(tmp: Path, sweep: str = SWEEP, base: str = BASE) -> Path:
    path = tmp / "sweep.toml"
    path.write_text(base + sweep)
    return path


# --- the [sweep] table ----------------------------------------------------------------------------------------

MISTAKES = [
    ("", "$.sweep: no [sweep] table"),
    ("[sweep]\ntrials = 5\n", "$.sweep: nothing to sweep"),
    ("[sweep]\ntrials = 5\ntrails = 3\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.trails: unknown field"),
    ("[sweep]\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.trials: how many trials?"),
    ("[sweep]\ntrials = 0\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.trials: Expected `int` >= 1"),
    ("[sweep]\ntrials = 5\nsampler = \"anneal\"\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.sampler: Invalid enum"),
    ("[sweep]\ntrials = 5\nobjective = \"profit\"\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.objective: Invalid"),
    ("[sweep]\ntrials = 5\ninstance = \"eth\"\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.instance: no instance"),
    ("[sweep]\ntrials = 5\nmax_p_value = 0\n[sweep.params]\nfast = [5, 6]\n", "$.sweep.max_p_value: Expected"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfst = [5, 6]\n", "$.sweep.params.fst: sma_cross has no parameter 'fst'"),
    ("[sweep]\ntrials = 5\n[sweep.protection]\nsl = [0.1]\n", "$.sweep.protection.sl: [protection] has no parameter"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = { low = 9, high = 3 }\n", "fast: low (9) must be below high (3)"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = { low = 3, high = 9, stp = 1 }\n",
     "$.sweep.params.fast.stp: unknown field"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = { low = 3, high = 9, step = 2, log = true }\n",
     "log and step cannot go together"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfraction = { low = 0.0, high = 0.5, log = true }\n", "log needs low > 0"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = { low = 3, high = 10, step = 2 }\n",
     "3..10 is not a whole number of steps of 2"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = []\n", "fast: no choices"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = [5, 5]\n", "fast: a choice is given twice"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = { low = 3, high = 2000 }\n",
     "$.sweep.params.fast.high: 2000: Expected `int` <= 1000"),
    ("[sweep]\ntrials = 5\n[sweep.protection]\nleveraged_sl_pct = [0.1, 2.0]\n",
     "$.sweep.protection.leveraged_sl_pct[1]: 2.0: Expected `float` <= 1.0"),
    ("[sweep]\ntrials = 5\n[sweep.params]\nfast = [5, \"six\"]\n", "$.sweep.params.fast[1]: 'six': Expected `int`"),
    ("[sweep]\nsampler = \"grid\"\n[sweep.params]\nfraction = { low = 0.1, high = 0.5 }\n",
     "$.sweep.params.fraction: a grid needs choices or a range with a step"),
    ("[sweep]\nsampler = \"grid\"\ntrials = 7\n[sweep.params]\nfast = [5, 6, 7]\nslow = [40, 50]\n",
     "$.sweep.trials: 7 trials, but the grid has 6 points"),
]


@pytest.mark.parametrize(("table", "message"), MISTAKES, ids=[m for _, m in MISTAKES])
def test_each_mistake_is_one_line_naming_it(tmp_path: Path, table: str, message: str) -> None:
    path = write(tmp_path, table)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") or text.startswith("--trials"), text
    assert message in text, text


def test_a_live_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\.mode: mode = \"live\" trades real money"):
        load_sweep(write(tmp_path, base=BASE.replace('mode = "replay"', 'mode = "live"')))


def test_a_combination_refused_only_together_is_not_a_config_mistake(tmp_path: Path) -> None:
    """fast 40 is a valid fast; only with slow 30 is it refused (fast < slow): a trial drawing it is pruned."""
    sweep = load_sweep(write(tmp_path, "[sweep]\ntrials = 4\n[sweep.params]\nfast = [5, 40]\n"))
    assert sorted(sweep.space["params.fast"].choices) == [5, 40]


def test_the_space_and_trials(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path), trials=12)
    assert sweep.spec.trials == 12
    fast, slow, sl = (sweep.space[k] for k in ("params.fast", "params.slow", "protection.leveraged_sl_pct"))
    assert (type(fast).__name__, fast.low, fast.high, fast.step) == ("IntDistribution", 3, 20, 1)
    assert (slow.low, slow.high, slow.step) == (25, 120, 5)
    assert (type(sl).__name__, sl.log) == ("FloatDistribution", True)
    with pytest.raises(ConfigError, match="--trials: must be at least 1"):
        load_sweep(write(tmp_path), trials=0)


def test_a_grid_is_every_point_once_in_a_seeded_order(tmp_path: Path) -> None:
    table = "[sweep]\nsampler = \"grid\"\nseed = {seed}\n[sweep.params]\nfast = [5, 6, 7]\nslow = {{ low = 40, " \
            "high = 60, step = 10 }}\n"
    a = load_sweep(write(tmp_path, table.format(seed=1)))
    assert a.spec.trials == 9
    assert a.grid is not None
    assert sorted((p["params.fast"], p["params.slow"]) for p in a.grid) == [(f, s) for f in (5, 6, 7)
                                                                         for s in (40, 50, 60)]
    b = load_sweep(write(tmp_path, table.format(seed=1)))
    c = load_sweep(write(tmp_path, table.format(seed=2)))
    assert a.grid == b.grid and a.grid != c.grid


def test_a_trial_config_reads_back_as_the_same_config(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path))
    config = trial_config(sweep, {"params.fast": 7, "params.slow": 45, "protection.leveraged_sl_pct": 0.05})
    (tmp_path / "t").mkdir()
    written = tmp_path / "t" / "config.toml"
    written.write_text(config_toml(config))
    back = load_config(written)
    assert back.instances[0].params.fast == 7 and back.instances[0].protection.leveraged_sl_pct == 0.05
    assert back.state_dir == str((tmp_path / "t" / "state").resolve())
    assert config_hash(msgspec.structs.replace(back, state_dir="state")) == config_hash(config)


# --- the driver's bookkeeping, with a stand-in trial and a serial executor -------------------------------------


def fake_trial(task: TrialTask, candles: SharedFile) -> TrialResult:
    """A deterministic stand-in for a replay: a smooth figure of the trial's parameters."""
    inst = msgspec.toml.decode(task.config_toml.encode())["instances"][0]
    fast, slow = inst["params"]["fast"], inst["params"]["slow"]
    sl = inst["protection"]["leveraged_sl_pct"]
    ret = -((fast - 12) ** 2) - (slow - 70) ** 2 / 50 - 100 * (sl - 0.08) ** 2
    figures: dict[str, Any] = {"oos_return_pct": ret, "oos_drawdown_pct": -ret / 2, "oos_sharpe": ret / 10,
                               "oos_net": ret * 100, "trades": fast + slow, "win_rate": 0.5, "windows": 3}
    if task.baseline_runs:
        figures["p_value"] = 0.5 if fast % 2 else 0.01  # odd fast: "no better than luck"
    return TrialResult(number=task.number, figures=figures)


class Crash(Exception):
    """The driver dies here (as under kill -9: nothing after it touches the storage)."""


class Serial:
    """An executor in this process that runs the items in order; ``crash_after`` results it dies while the next
    result is in hand (that trial ran, its result lost)."""

    workers = 1

    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.calls: list[int] = []
        self.given = 0

    def __enter__(self) -> Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Any], items: Sequence[Any], shared: Any = None) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            result = fn(item, shared)
            self.calls.append(item.number)
            if self.crash_after is not None and self.given >= self.crash_after:
                raise Crash
            self.given += 1
            yield i, result


def _sweep(tmp: Path, table: str = SWEEP) -> tuple[Sweep, Path]:
    candles = tmp / "candles.csv"
    candles.write_text("timestamp,open,high,low,close,volume\n")
    return load_sweep(write(tmp, table)), candles


def _states(out: Path, sweep: Sweep) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in open_study(sweep, out).get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def test_a_sweep_finishes_its_trials_and_writes_the_results(tmp_path: Path) -> None:
    sweep, candles = _sweep(tmp_path)
    ex = Serial()
    outcome = run_sweep(sweep, candles, tmp_path / "out", ex, trial_fn=fake_trial)
    assert (outcome.finished, outcome.completed, outcome.ran, outcome.rerun) == (30, 30, 30, 0)
    assert sorted(ex.calls) == list(range(30))
    lines = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert len(lines) == 31 and lines[0].startswith("trial,rank,state,objective,params.fast,params.slow,")
    assert sorted(int(x.split(",")[0]) for x in lines[1:]) == list(range(30))
    best = sorted((tmp_path / "out").glob("best-*.toml"))
    assert [p.name for p in best] == [f"best-{k}.toml" for k in range(1, 6)]
    assert load_config(best[0]).state_dir == str((tmp_path / "out" / "best-1").resolve())
    assert len(list((tmp_path / "out" / "trials").iterdir())) == 30
    again = run_sweep(sweep, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)  # done: nothing to run
    assert again.ran == 0 and again.finished == 30


def test_a_driver_killed_mid_batch_resumes_each_trial_once_to_the_same_table(tmp_path: Path) -> None:
    sweep, candles = _sweep(tmp_path)
    run_sweep(sweep, candles, tmp_path / "whole", Serial(), trial_fn=fake_trial)
    first = Serial(crash_after=13)  # batch 2 (trials 8-15): 8..12 told, 13 ran but its result was lost
    with pytest.raises(Crash):
        run_sweep(sweep, candles, tmp_path / "out", first, trial_fn=fake_trial)
    assert _states(tmp_path / "out", sweep) == {"COMPLETE": 13, "RUNNING": 3}
    second = Serial()
    outcome = run_sweep(sweep, candles, tmp_path / "out", second, trial_fn=fake_trial)
    assert (outcome.rerun, outcome.replaced, outcome.finished) == (3, 0, 30)
    assert second.calls[:3] == [13, 14, 15]  # the interrupted batch first, with its stored parameters
    runs = first.calls + second.calls
    assert {n: runs.count(n) for n in set(runs) if runs.count(n) > 1} == {13: 2}  # only the lost result re-ran
    assert sorted(set(runs)) == list(range(30))
    assert _states(tmp_path / "out", sweep) == {"COMPLETE": 30}
    assert (tmp_path / "out" / "sweep.csv").read_bytes() == (tmp_path / "whole" / "sweep.csv").read_bytes()


def test_a_driver_killed_while_asking_a_batch_asks_the_rest_of_it_the_same(tmp_path: Path) -> None:
    """Killed after the batch's first trials were asked and stored: the restart asks the rest of that batch as
    the uninterrupted run would have, so the table is the same."""
    from gatebot.app import sweep as module

    sweep, candles = _sweep(tmp_path)
    run_sweep(sweep, candles, tmp_path / "whole", Serial(), trial_fn=fake_trial)
    out = tmp_path / "out"
    out.mkdir()
    study = open_study(sweep, out)
    module._ask(study, sweep, [0, 8], 3)  # 3 of the first batch of 8 asked, then the kill
    outcome = run_sweep(sweep, candles, out, Serial(), trial_fn=fake_trial)
    assert (outcome.rerun, outcome.finished) == (3, 30)
    assert (out / "sweep.csv").read_bytes() == (tmp_path / "whole" / "sweep.csv").read_bytes()


def test_a_trial_killed_before_its_parameters_were_stored_is_replaced(tmp_path: Path) -> None:
    sweep, candles = _sweep(tmp_path)
    with pytest.raises(Crash):
        run_sweep(sweep, candles, tmp_path / "out", Serial(crash_after=10), trial_fn=fake_trial)
    open_study(sweep, tmp_path / "out").ask()  # created, no parameter stored yet: the kill came here
    outcome = run_sweep(sweep, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)
    assert (outcome.replaced, outcome.finished) == (1, 30)
    assert _states(tmp_path / "out", sweep) == {"COMPLETE": 30, "FAIL": 1}
    rows = (tmp_path / "out" / "sweep.csv").read_text().splitlines()[1:]
    assert len(rows) == 30 and len({r.split(",")[0] for r in rows}) == 30


def test_refused_combinations_are_pruned_and_count(tmp_path: Path) -> None:
    table = "[sweep]\ntrials = 12\nsampler = \"random\"\n[sweep.params]\nfast = { low = 5, high = 60 }\n" \
            "slow = [40]\n"
    sweep, candles = _sweep(tmp_path, table)
    ex = Serial()
    outcome = run_sweep(sweep, candles, tmp_path / "out", ex, trial_fn=fake_trial)
    study = open_study(sweep, tmp_path / "out")
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    assert outcome.finished == 12 and outcome.pruned == len(pruned) > 0
    assert all(t.params["params.fast"] >= 40 for t in pruned)
    assert all("must be smaller than slow" in t.user_attrs["error"] for t in pruned)
    assert sorted(ex.calls) == sorted(t.number for t in study.get_trials(deepcopy=False)
                                      if t.state.name == "COMPLETE")  # a refused one is never replayed


def test_the_p_value_constraint_ranks_luck_last_and_keeps_it_out_of_the_best(tmp_path: Path) -> None:
    sweep, candles = _sweep(tmp_path, SWEEP.replace("batch = 8", "batch = 8\nmax_p_value = 0.05"))
    run_sweep(sweep, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)
    rows = msgspec.json.decode((tmp_path / "out" / "sweep.json").read_bytes())["trials"]
    ranked = sorted(rows, key=lambda r: r["rank"])
    feasible = [r["feasible"] for r in ranked]
    assert feasible == sorted(feasible, reverse=True) and True in feasible and False in feasible
    assert all((r["p_value"] <= 0.05) == r["feasible"] for r in rows)
    for best in (tmp_path / "out").glob("best-*.toml"):
        assert load_config(best).instances[0].params.fast % 2 == 0  # never one no better than luck


def test_an_out_folder_of_another_sweep_or_in_use_is_refused(tmp_path: Path) -> None:
    sweep, candles = _sweep(tmp_path)
    run_sweep(sweep, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)
    other, _ = _sweep(tmp_path, SWEEP.replace("seed = 3", "seed = 4"))
    with pytest.raises(ConfigError, match="holds a sweep of another config"):
        run_sweep(other, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)
    lock = StateDirLock(tmp_path / "out")
    try:
        with pytest.raises(JournalLocked):
            run_sweep(sweep, candles, tmp_path / "out", Serial(), trial_fn=fake_trial)
    finally:
        lock.release()
