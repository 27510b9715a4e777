"""The recording commands of ``gatebot``: record, run --record, import-candles, replay RECORDING, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec

from gatebot.core.config import ConfigError, load_config
from gatebot.core.recording import Recording, RecordingError


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("record", help="record CONFIG's market data (no trading) into a recording")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--candles", type=int, help="stop after this many closed candles")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p = sub.add_parser("import-candles", help="turn a candle CSV into a market recording of kline frames")
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--symbol", default="BTC-USDT")
    p.add_argument("--interval", default="5m")
    p.add_argument("--gzip", action="store_true", help="gzip each frame as BingX does (slower to replay)")
    p = sub.add_parser("report", help="trades, equity, drawdown, exits, fees, protection gaps: text, JSON, PNG")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p.add_argument("--out", type=Path, help="folder for report.json and report.png (default: STATE_DIR)")
    p.add_argument("--no-png", action="store_true")


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a recording command; None when ``args`` is another command."""
    from gatebot.core.cli import EXIT_BAD_INPUT

    try:
        if args.command == "import-candles":
            from gatebot.core.replayer import import_candles

            n = import_candles(args.csv, args.out, symbol=args.symbol, interval=args.interval, gzip=args.gzip)
            print(f"{args.out}: {n:,} frames from {args.csv}")
            return 0
        if args.command == "report":
            return report(args.state_dir, args.out, png=not args.no_png)
        if args.command == "record":
            return _record(args)
        if args.command == "run" and getattr(args, "record", None) is not None:
            return _run_recorded(args)
        if args.command == "replay" and getattr(args, "recording", None) is not None:
            if args.candles is not None:
                raise ConfigError("replay: give a RECORDING or --candles CSV, not both")
            return _replay(args)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return None


def _plugins(config: Any) -> Any:
    from gatebot.plugins.manager import make_plugin_manager

    return make_plugin_manager(config.plugins.modules, config.plugins.disable)


def _record(args: argparse.Namespace) -> int:
    from gatebot.core.replayer import record_market

    config = load_config(args.config)
    seen = asyncio.run(record_market(config, _plugins(config), args.out, candles=args.candles, seconds=args.seconds))
    print(f"{args.out}: market data of {seen} closed candle(s) recorded")
    return 0


def _run_recorded(args: argparse.Namespace) -> int:
    from gatebot.core.cli import EXIT_BAD_INPUT, EXIT_HALTED
    from gatebot.core.recording import Header, Recorder, session_hash, strategy_hashes
    from gatebot.core.report import format_summary, report_dir
    from gatebot.core.runner import Runner

    config = load_config(args.config, allow_live=args.live)
    if config.mode == "replay":
        raise ConfigError(f"{args.config}: $.mode: --record records a paper or live session, not a replay")
    plugins = _plugins(config)
    header = Header(kind="session", config_hash=session_hash(config), models=strategy_hashes(config, plugins),
                    meta={"mode": config.mode})
    with Recorder(args.record, header) as recorder:
        runner = Runner(config, plugins, recorder=recorder, progress=sys.stderr.isatty(),
                        adopt=getattr(args, "adopt", False))
        try:
            asyncio.run(runner.run())
        except ValueError as exc:
            raise ConfigError(f"{args.config}: --record: {exc}") from None
    if runner.refused:
        for reason in runner.refused.values():
            print(f"error: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{runner.bars} candles processed ({config.mode}); {recorder.count:,} records in {args.record}")
    for summary in report_dir(config.state_dir):
        print(format_summary(summary))
    for name, reason in runner.halted.items():
        print(f"instance {name} halted: {reason}", file=sys.stderr)
    return EXIT_HALTED if runner.halted else 0


def _replay(args: argparse.Namespace) -> int:
    from gatebot.core.cli import EXIT_BAD_INPUT, EXIT_HALTED
    from gatebot.core.replayer import replay
    from gatebot.core.report import format_summary, report_dir

    config = load_config(args.config)
    if config.mode == "live":
        raise ConfigError(f"{args.config}: $.mode: replay never uses a live config")
    config = msgspec.structs.replace(config, mode="replay")
    Recording(args.recording)  # a file that is no recording at all is refused before anything starts
    try:
        result = asyncio.run(replay(config, _plugins(config), args.recording, progress=sys.stderr.isatty()))
    except RecordingError as exc:  # damage further in: the records before it were replayed and journaled
        print(f"error: {exc}\nthe replay stopped there; the journals in {config.state_dir} hold what came before "
              f"the damage (gatebot report {config.state_dir})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not result.config_matches:
        print(f"note: {args.recording} was recorded under another configuration (config hash differs)",
              file=sys.stderr)
    print(f"{result.bars} candles from {result.frames:,} frames replayed ({result.kind} recording)")
    for summary in report_dir(config.state_dir):
        print(format_summary(summary))
    for name, reason in result.halted.items():
        print(f"instance {name} halted: {reason}", file=sys.stderr)
    if result.divergence is not None:
        print(result.divergence.text())
        return 1
    if result.kind == "session":
        print("replay repeated every live command")
    return EXIT_HALTED if result.halted else 0


def report(state_dir: Path, out: Path | None, *, png: bool = True) -> int:
    from gatebot.core.cli import EXIT_BAD_INPUT, journal_paths
    from gatebot.core.journal import Journal, JournalError
    from gatebot.core.report import format_report, report_data

    paths = journal_paths(state_dir)  # none: JournalError, exit status 2 (as for status)
    reports, errors = [], []
    for path in paths:
        try:
            journal = Journal(path, readonly=True)
        except JournalError as exc:
            errors.append(str(exc))
            continue
        try:
            reports.append(report_data(journal))
        finally:
            journal.close()
    for r in reports:
        print(format_report(r))
    out = out or state_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(msgspec.json.format(msgspec.json.encode({"instances": reports})))
    print(f"metrics: {out / 'report.json'}")
    if png and reports:
        from gatebot.core.plot import PlotUnavailable, plot_report

        try:
            plot_report(reports, out / "report.png")
            print(f"chart: {out / 'report.png'}")
        except PlotUnavailable as exc:
            print(f"note: {exc}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT if errors else 0
