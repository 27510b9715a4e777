"""Replay candles through the full engine (journal on) with opportunity_gating at 4x, 4% leveraged stop.

    python benchmarks/replay_opportunity_gating.py [CSV]

CSV defaults to the shared BingX 5m file. Prints
``RESULT bars=… seconds=… bars_per_s=… trades=… stop_exits=… peak_rss_mb=…``. The time covers the whole
run: loading the candles and the models, features on a rolling window per candle, the four ONNX
models, the paper exchange, the state machine and the journal writes. Target: 20,000 candles/s.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.replay_sma import timed_replay  # noqa: E402
from gatebot.core.config import load_config  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "bingx_btcusdt_5m_2025-08-06_2025-10-14.csv"

CONFIG = ROOT / "examples" / "opportunity_gating.toml"
"""The README's example: the shipped models at their thresholds, 4x, 4 % leveraged stop, on a 10,000 USDT account."""


def run(csv: Path, sync: str = "OFF") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        example = load_config(CONFIG)
        config = msgspec.structs.replace(example, state_dir=str(Path(tmp) / "state"),
                                         journal=msgspec.structs.replace(example.journal, synchronous=sync))
        return timed_replay(config, csv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--sync", default="OFF", choices=["OFF", "NORMAL", "FULL"])
    args = parser.parse_args()
    if not args.csv.exists():
        sys.exit(f"{args.csv}: no such candle file")
    r = run(args.csv, args.sync)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT bars={r['bars']} seconds={r['seconds']:.3f} bars_per_s={r['bars_per_s']:.0f} "
          f"trades={r['trades']} stop_exits={r['stop_exits']} peak_rss_mb={rss:.1f}")


if __name__ == "__main__":
    main()
