"""Replay candles through the full engine (journal on) with sma_cross(10, 30) at 4x, 4% leveraged stop.

    python benchmarks/replay_sma.py [CSV] [--bars N]

Without CSV a seeded generated market of --bars candles (default 20,000) is replayed. Prints
``RESULT bars=… seconds=… bars_per_s=… trades=… stop_exits=… peak_rss_mb=… vs_nautilus=…``. The time covers the
whole run: loading the candles, the paper exchange, strategy, state machine and journal writes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gatebot.app.report import report_dir
from gatebot.app.runner import Runner
from gatebot.core.config import Config, load_config
from gatebot.plugins.manager import make_plugin_manager

NAUTILUS_BARS_PER_S = 12_000
"""NautilusTrader 1.221 on this strategy with the same exchange stop on this machine (measured
there on the shared 5m file); the target is 3x."""

CONFIG = """
mode = "replay"
state_dir = "{state}"
[journal]
synchronous = "{sync}"
[market]
source = "generated"
seed = 11
bars = {bars}
[exchanges.paper]
type = "paper"
[exchanges.paper.options]
balance = {balance}
[[instances]]
name = "sma"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ fast = 10, slow = 30, fraction = {fraction} }}
protection = {{ leveraged_sl_pct = 0.04 }}
"""


def run(csv: Path | None, bars: int, sync: str, balance: float = 10_000.0, fraction: float = 0.5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(CONFIG.format(state=Path(tmp) / "state", bars=bars, sync=sync, balance=balance,
                                          fraction=fraction))
        return timed_replay(load_config(path), csv)


def timed_replay(config: Config, csv: Path | None) -> dict[str, float]:
    """One replay of ``config``'s one instance over ``csv`` (None: its [market]), timed from the runner's start to
    its end; the candles, the rate, and the trades and stop exits its journal's report counts."""
    runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable), candles_csv=csv)
    start = time.perf_counter()
    asyncio.run(runner.run())
    seconds = time.perf_counter() - start
    (summary,) = report_dir(config.state_dir)
    return {"bars": runner.bars, "seconds": seconds, "bars_per_s": runner.bars / seconds,
            "trades": summary.trades, "stop_exits": summary.exits.get("sl", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="?", type=Path)
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--sync", default="OFF", choices=["OFF", "NORMAL", "FULL"])
    parser.add_argument("--balance", type=float, default=10_000.0,
                        help="starting balance in USDT")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="margin share per entry; fees at 0.5 bleed a long random market dry, so long runs "
                             "use a small one to keep the trade density of short runs")
    args = parser.parse_args()
    r = run(args.csv, args.bars, args.sync, args.balance, args.fraction)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT bars={r['bars']} seconds={r['seconds']:.3f} bars_per_s={r['bars_per_s']:.0f} "
          f"trades={r['trades']} stop_exits={r['stop_exits']} peak_rss_mb={rss:.1f} "
          f"vs_nautilus={r['bars_per_s'] / NAUTILUS_BARS_PER_S:.2f}")


if __name__ == "__main__":
    main()
