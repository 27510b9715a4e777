"""The random-entry baseline of opportunity gating on the shared 5m file: the strategy's replay plus N seeded
random-entry runs through the same engine and costs, in parallel processes (``gatebot evaluate --baseline N``).

    python benchmarks/baseline_opportunity_gating.py [CSV] [--n 100] [--workers K]

CSV defaults to the shared BingX 5m file; without it the benchmark says so and exits 0 without a RESULT. Prints
``RESULT n=… seconds=… workers=… strategy_return_pct=… percentile=… p_value=…``. Target: N = 100 under 120 s on
the 2-core machine (measured: 51 s at a load of 4).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatebot.app.baseline import run_baseline  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "bingx_btcusdt_5m_2025-08-06_2025-10-14.csv"
CONFIG = ROOT / "examples" / "opportunity_gating.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.csv.exists():
        print(f"skipped: {args.csv}: no such candle file (the shared 5m BingX file)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "og.toml"
        cfg.write_text(CONFIG.read_text().replace('state_dir = "../state/opportunity_gating"',
                                                  f'state_dir = "{Path(tmp) / "state"}"'))
        b = run_baseline(cfg, args.csv, args.n, workers=args.workers)
    print(b.text())
    print(f"RESULT n={args.n} seconds={b.seconds:.1f} workers={args.workers} "
          f"strategy_return_pct={b.strategy_return_pct:.2f} percentile={b.percentile:.1f} p_value={b.p_value:.3f}")


if __name__ == "__main__":
    main()
