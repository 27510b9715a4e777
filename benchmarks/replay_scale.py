"""Does the replay rate hold over a long run, and does memory stay bounded?

    python benchmarks/replay_scale.py [--bars N]

Runs ``replay_sma.py`` twice in fresh processes on the same generated market settings: 20,000 bars
and N bars (default 1,000,000). Both use a large balance and a small margin fraction so that fees do
not bleed the account dry over the long run (which would leave it trading less and flatter its rate).
Prints ``RESULT small_bars_per_s=… large_bars_per_s=… ratio=… large_trades=… large_peak_rss_mb=…``;
the targets are ratio >= 0.75 and large_peak_rss_mb < 300.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(bars: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(HERE / "replay_sma.py"), "--bars", str(bars), "--balance", "1e7",
                          "--fraction", "0.02"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return {k: float(v) for k, v in (pair.split("=") for pair in line.split()[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=1_000_000)
    args = parser.parse_args()
    small, large = measure(20_000), measure(args.bars)
    print(f"RESULT small_bars_per_s={small['bars_per_s']:.0f} large_bars={large['bars']:.0f} "
          f"large_bars_per_s={large['bars_per_s']:.0f} ratio={large['bars_per_s'] / small['bars_per_s']:.2f} "
          f"large_trades={large['trades']:.0f} large_peak_rss_mb={large['peak_rss_mb']:.1f}")


if __name__ == "__main__":
    main()
