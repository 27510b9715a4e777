"""Replay a market recording through the BingX decoder vs the same candles from the CSV, in one run.

The shared 19,967-candle 5m file is imported as the kline frames BingX pushes while each candle forms
(4 per candle, the simulator's path, plus the closing push), then replayed through MarketStream and
CandleAssembler into sma_cross(10, 30) 4x on the paper exchange; then the CSV itself. Each side is
timed from its file to the journal (the recording read and decoded; the CSV read and parsed), the
best of ``--repeat`` replays taken in turns. Prints ``RESULT frames=… frames_per_s=… csv_bars_per_s=…
frame_bars_per_s=… ratio_vs_csv=… ratio_vs_csv_rows=…`` (target ratio_vs_csv >= 0.75;
``ratio_vs_csv_rows`` leaves the CSV's parsing out of its side).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from gatebot.app.replayer import import_candles, replay
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager

SHARED = Path(__file__).resolve().parents[2] / "shared/data/bingx_btcusdt_5m_2025-08-06_2025-10-14.csv"

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweep_sma_cross.toml"
"""Its config without the [sweep] table: sma_cross(10, 30) 4x on a 10,000 USDT paper account (a replay's journal
is synchronous = OFF by default)."""


def trades(state: Path) -> int:
    j = Journal(state / "sma.sqlite", readonly=True)
    try:
        return j.conn.execute("SELECT COUNT(*) FROM transitions WHERE dst LIKE 'exited_%' "
                              "AND src NOT LIKE 'exited_%'").fetchone()[0]
    finally:
        j.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", nargs="?", type=Path, default=SHARED)
    parser.add_argument("--gzip", action="store_true", help="gzip each frame as BingX does")
    parser.add_argument("--repeat", type=int, default=3,
                        help="replays of each kind, taken in turns; each kind's fastest counts (a shared "
                             "machine's noise only ever slows a replay down)")
    args = parser.parse_args()
    if not args.csv.exists():
        sys.exit(f"{args.csv}: no such candle file")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        rec = tmp_path / "market.gbrec"
        t0 = time.perf_counter()
        frames = import_candles(args.csv, rec, gzip=args.gzip)
        import_s = time.perf_counter() - t0

        path = tmp_path / "bench.toml"
        path.write_text(EXAMPLE.read_text().partition("\n[sweep]\n")[0])
        frame_config = msgspec.structs.replace(load_config(path), state_dir=str(tmp_path / "frames"))
        csv_config = msgspec.structs.replace(frame_config, state_dir=str(tmp_path / "csv"))
        plugins = make_plugin_manager(frame_config.plugins.modules, frame_config.plugins.disable)
        frames_s = csv_s = csv_load_s = float("inf")
        for _ in range(args.repeat):
            # Both sides from the file on disk to the journal: the recording read and decoded, the CSV
            # read and parsed (in the Runner's construction, as `gatebot replay --candles` does).
            t0 = time.perf_counter()
            result = asyncio.run(replay(frame_config, plugins, rec))
            frames_s = min(frames_s, time.perf_counter() - t0)
            t0 = time.perf_counter()
            runner = Runner(csv_config, plugins, candles_csv=args.csv)
            t1 = time.perf_counter()
            asyncio.run(runner.run())
            csv_s = min(csv_s, time.perf_counter() - t0)
            csv_load_s = min(csv_load_s, t1 - t0)
        frame_bars, frame_trades = result.bars, trades(tmp_path / "frames")
        csv_bars, csv_trades = runner.bars, trades(tmp_path / "csv")

    frame_rate, csv_rate = frame_bars / frames_s, csv_bars / csv_s
    rows_rate = csv_bars / (csv_s - csv_load_s)
    print(f"import: {frames:,} frames in {import_s:.2f} s; frames: {frame_bars} candles, {frame_trades} trades; "
          f"csv: {csv_bars} candles, {csv_trades} trades, read in {csv_load_s * 1000:.0f} ms; best of {args.repeat}")
    print(f"RESULT frames={frames} frames_per_s={frames / frames_s:.0f} csv_bars_per_s={csv_rate:.0f} "
          f"frame_bars_per_s={frame_rate:.0f} ratio_vs_csv={frame_rate / csv_rate:.2f} "
          f"ratio_vs_csv_rows={frame_rate / rows_rate:.2f}")


if __name__ == "__main__":
    main()
