"""A sweep's throughput on 1 and 2 local worker processes, and what one trial costs against a plain replay.

    python benchmarks/sweep.py [CSV] [--trials N] [--rounds R] [--repeat P]

The same sweep of sma_cross (a seeded random sampler, one batch: the same N trials each time, default 40) runs with
1 worker and with 2, alternated for R rounds in this one run (the best of each kept), each timed whole: worker
start, every replay, the study's asks and tells, the trials' files and the table (fixed costs, which a second worker
does not halve, spread over N trials as a real sweep of hundreds spreads them). Then a 1-trial sweep (its worker
process started for it) against ``gatebot replay`` of that trial's config.toml in a subprocess (interpreter start,
replay, evaluation, report), the median of P pairs. Prints ``RESULT name=sweep trials_per_s_1=… trials_per_s_2=…
ratio=… trial_s=… replay_s=… trial_over_replay=… driver_cpu_ms_per_trial=… load_1m=…`` (the driver's own CPU per
trial: what it takes from the workers' cores; the machine's load average at the start: on a machine others are
using, the 2-worker rate says more about them than about the sweep); the targets: ratio >= 1.8 on 2 free cores,
trial_over_replay <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatebot.app.executors import LocalExecutor
from gatebot.app.sweep import load_sweep, run_sweep

SHARED_5M = Path(__file__).resolve().parents[2] / "shared" / "data" / "bingx_btcusdt_5m_2025-08-06_2025-10-14.csv"
EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "sweep_sma_cross.toml").read_text()
CONFIG = (EXAMPLE.partition("\n[sweep]\n")[0].replace('state_dir = "../state/sweep_sma_cross"', 'state_dir = "state"')
          + '\n[sweep]\nsampler = "random"\nseed = 1\nbatch = 100000\n' + EXAMPLE[EXAMPLE.index("[sweep.params]"):])
"""The README's example sweep (examples/sweep_sma_cross.toml: its config and search space), sampled at random in one
batch: the same N trials every time."""


DRIVER_CPU_S: list[float] = []
"""The driver's own CPU time (this process, workers excluded) per sweep, per trial; the N-trial sweeps' come first
(their least is printed: its imports, the study's creation and the table are amortised over N trials)."""


def sweep_seconds(config: Path, csv: Path, out: Path, trials: int, workers: int) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    with LocalExecutor(workers) as executor:
        outcome = run_sweep(load_sweep(config, trials=trials), csv, out, executor)
    seconds = time.perf_counter() - start
    DRIVER_CPU_S.append((time.process_time() - cpu) / trials)
    assert outcome.completed == trials, outcome
    return seconds


def replay_seconds(config: Path, csv: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gatebot.app.cli", "replay", str(config), "--candles", str(csv)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="?", type=Path, default=SHARED_5M)
    parser.add_argument("--trials", type=int, default=40,
                        help="trials per sweep; a sweep's fixed costs (worker start, the table) amortised over them")
    parser.add_argument("--repeat", type=int, default=3, help="1-trial sweep / replay pairs (the median is kept)")
    parser.add_argument("--rounds", type=int, default=2, help="1- and 2-worker sweeps, alternated (the best kept)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gatebot-bench-sweep-") as tmp:
        root = Path(tmp)
        config = root / "sweep.toml"
        config.write_text(CONFIG)
        s1 = s2 = float("inf")
        for k in range(args.rounds):  # alternated, the best of each kept: a neighbour's burst hits both alike
            s1 = min(s1, sweep_seconds(config, args.csv, root / f"w1-{k}", args.trials, 1))
            s2 = min(s2, sweep_seconds(config, args.csv, root / f"w2-{k}", args.trials, 2))
        trials, replays = [], []
        for k in range(args.repeat):
            trials.append(sweep_seconds(config, args.csv, root / f"one{k}", 1, 1))
            replays.append(replay_seconds(root / f"one{k}" / "trials" / "00000" / "config.toml", args.csv))
    rate1, rate2 = args.trials / s1, args.trials / s2
    trial_s, replay_s = statistics.median(trials), statistics.median(replays)
    print(f"RESULT name=sweep trials_per_s_1={rate1:.3f} trials_per_s_2={rate2:.3f} ratio={rate2 / rate1:.2f} "
          f"trial_s={trial_s:.2f} replay_s={replay_s:.2f} trial_over_replay={trial_s / replay_s:.2f} "
          f"driver_cpu_ms_per_trial={min(DRIVER_CPU_S[:2 * args.rounds]) * 1000:.0f} load_1m={load:.2f}")


if __name__ == "__main__":
    main()
