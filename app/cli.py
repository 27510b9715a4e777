"""``gatebot``: run, replay, record, import-candles, report, evaluate, sweep, walk-forward, status, check-config, sim,
check-invariants, check-lookahead, download-candles, download-funding, dashboard; and to a running bot: close, pause,
resume, halt, flatten.

One parser; each subcommand is bound to the function that runs it whole (``set_defaults(func=...)``), which
returns the exit status (app/exit_codes.py); the errors every command may meet are mapped to a status here.

Exit status 1: a session replay diverged from the live session, or check-invariants found a violation.
Exit status 2: the configuration (or another input) is wrong and nothing was started (a new journal on an
account that holds a position or orders of its instance, without ``run --adopt``, included).
Exit status 3: the run finished but an instance halted (a damaged journal, a halt policy); the
message names it and why. Exit status 4: an exchange could not be used (credentials refused, connection).
``status`` and ``report``: 0 when every journal was read; 2 when there is none (or no such folder) or one
is damaged (each named, the readable ones still shown).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec

from gatebot.app import baseline, check_invariants, check_lookahead, download, logs, operator, sweep, walkforward
from gatebot.app.embedded import EmbeddedSimulators, simulator_table
from gatebot.app.exit_codes import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_DIVERGED, EXIT_EXCHANGE, EXIT_HALTED
from gatebot.app.report import (
    candle_file_line,
    evaluation_text,
    format_report,
    format_summary,
    report_data,
    report_dir,
)
from gatebot.core.config import Config, ConfigError, load_config
from gatebot.core.exchange import ExchangeError
from gatebot.core.journal import Journal, JournalError, check_state_dir
from gatebot.core.market import CandleFileError
from gatebot.core.recording import Recording, RecordingError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatebot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the instances of CONFIG")
    p.add_argument("config", type=Path)
    p.add_argument("--live", action="store_true", help='required (with mode = "live") to trade real money')
    p.add_argument("--record", type=Path, metavar="FILE", help="record the whole session's exchange traffic")
    p.add_argument("--adopt", action="store_true",
                   help="a new (or empty) journal adopts the position and orders the account holds of its instance "
                        "(without it, such a start is refused)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("replay", help="replay candles or a recording through CONFIG's instances")
    p.add_argument("config", type=Path)
    p.add_argument("recording", type=Path, nargs="?",
                   help="a recording (gatebot record / run --record / import-candles)")
    p.add_argument("--candles", type=Path, help="candle CSV (timestamp,open,high,low,close,volume)")
    p.set_defaults(func=_cmd_replay)
    p = sub.add_parser("record", help="record CONFIG's market data (no trading) into a recording")
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--candles", type=int, help="stop after this many closed candles")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(func=_cmd_record)
    p = sub.add_parser("import-candles", help="turn a candle CSV into a market recording of kline frames")
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, required=True, metavar="FILE")
    p.add_argument("--symbol", default="BTC-USDT")
    p.add_argument("--interval", default="5m")
    p.add_argument("--gzip", action="store_true", help="gzip each frame as BingX does (slower to replay)")
    p.set_defaults(func=_cmd_import_candles)
    p = sub.add_parser("report", help="trades, equity, drawdown, exits, fees, protection gaps: text, JSON, PNG")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p.add_argument("--out", type=Path, help="folder for report.json and report.png (default: STATE_DIR)")
    p.add_argument("--candles", type=Path, help="candle CSV to mark equity at (default: the file a replay "
                   "recorded in the journal, when still there)")
    p.add_argument("--no-png", action="store_true")
    p.set_defaults(func=lambda args: write_report(args.state_dir, args.out, png=not args.no_png,
                                                  candles=args.candles))
    p = sub.add_parser("status", help="each instance's state, position and last transitions (from the running "
                                      "bot's API, else from the journals)")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p.set_defaults(func=lambda args: _status(args.state_dir))
    p = sub.add_parser("check-config", help="validate CONFIG and exit")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_cmd_check_config)
    p = sub.add_parser("sim", help="run the BingX simulator alone on loopback (gatebot sim --help)", add_help=False,
                       prefix_chars="+")  # no options of its own: every argument goes to the simulator
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_sim)
    check_invariants.add_parser(sub)
    check_lookahead.add_parser(sub)
    download.add_parser(sub)
    operator.add_parsers(sub)
    baseline.add_parser(sub)
    sweep.add_parser(sub)
    walkforward.add_parser(sub)
    parser.add_argument("--version", action="version", version=f"gatebot {version('gatebot')}")
    parser.add_argument("-v", "--verbose", action="store_true")
    for name, command in sub.choices.items():  # -v after the subcommand too (SUPPRESS: absent keeps the top's)
        if name != "sim":  # sim passes every argument on to the simulator
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.verbose)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except BrokenPipeError:  # ``gatebot status | head -1``: the reader has gone; exit quietly, as a Unix tool
        # the Python docs' recipe (signal module): stdout to devnull so the final flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (JournalError, CandleFileError, RecordingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExchangeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_EXCHANGE


def _plugins(config: Config) -> Any:
    from gatebot.plugins.manager import make_plugin_manager

    return make_plugin_manager(config.plugins.modules, config.plugins.disable)


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config, allow_live=True)
    EmbeddedSimulators(config)  # an embedded simulator's table is checked too
    check_state_dir(config.state_dir)
    print(f"{args.config}: ok ({len(config.instances)} instance(s), mode {config.mode})")
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from gatebot.simulators.bingx.__main__ import main as sim_main

    return sim_main(args.sim_args) or 0


def _cmd_import_candles(args: argparse.Namespace) -> int:
    from gatebot.app.replayer import import_candles

    n = import_candles(args.csv, args.out, symbol=args.symbol, interval=args.interval, gzip=args.gzip)
    print(f"{args.out}: {n:,} frames from {args.csv}")
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from gatebot.app.replayer import record_market

    config = load_config(args.config)
    seen = asyncio.run(record_market(config, _plugins(config), args.out, candles=args.candles, seconds=args.seconds))
    print(f"{args.out}: market data of {seen} closed candle(s) recorded")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """``run CONFIG [--record FILE]``: a paper or live session, its exchange traffic recorded when asked."""
    if args.record is not None:
        return _run_recorded(args)
    config = _load_run_config(args)
    check_state_dir(config.state_dir, create=True)  # the log file goes there: a bad folder is refused first
    logs.for_run(config.state_dir)
    return _run(config, candles=None, adopt=args.adopt)


def _load_run_config(args: argparse.Namespace) -> Config:
    """The config of ``run``; ``--live`` with a config that is not live is a mistake, refused, not ignored."""
    config = load_config(args.config, allow_live=args.live)
    if args.live and config.mode != "live":
        raise ConfigError(f"{args.config}: --live: this config has mode = {config.mode!r}; --live only "
                          f"confirms a mode = \"live\" config (drop --live, or set the mode)")
    if args.live and config.exchanges and all(ex.type == "paper" for ex in config.exchanges.values()):
        raise ConfigError(f"{args.config}: --live: every account of this config is a paper one; --live only "
                          "confirms trading on a real exchange")
    return config


def _cmd_replay(args: argparse.Namespace) -> int:
    """``replay CONFIG [RECORDING | --candles CSV]``: a recording, or candles on the paper exchange."""
    if args.recording is not None:
        if args.candles is not None:
            raise ConfigError("replay: give a RECORDING or --candles CSV, not both")
        return _replay(args)
    from gatebot.app.replayer import candle_replay_config

    return _run(candle_replay_config(args.config), candles=args.candles)


EXCHANGE_NAMES = {"bingx": "BingX"}
"""How the summary line names an exchange type."""


def run_label(config: Config) -> str:
    """The mode, and where the instances traded unless only on the paper exchange: ``paper, on the embedded
    BingX simulator`` (the demo), ``live, on BingX``."""

    venues = []
    for name in dict.fromkeys(i.exchange for i in config.instances):
        ex = config.exchanges[name]
        if ex.type == "paper":
            continue
        shown = EXCHANGE_NAMES.get(ex.type, ex.type)
        venues.append(f"the embedded {shown} simulator" if simulator_table(ex.options) is not None else shown)
    return ", ".join([config.mode, *(f"on {v}" for v in dict.fromkeys(venues))])


def _run(config: Config, *, candles: Path | None, adopt: bool = False) -> int:
    from gatebot.app.runner import Runner
    plugins = _plugins(config)
    runner = Runner(config, plugins, candles_csv=candles, progress=sys.stderr.isatty(), adopt=adopt)
    asyncio.run(runner.run())
    if runner.refused:  # the user must act (a fresh journal on a used account): nothing traded
        for reason in runner.refused.values():
            print(f"error: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{runner.bars} candles processed ({run_label(config)})")
    for spacing in runner.spacing:
        print(candle_file_line(runner.candle_file_summary(spacing.interval)))
    if config.mode == "replay":  # the evaluation, out of sample first; the report files refreshed
        print(evaluation_text(config.state_dir, candles))
        _refresh_report(Path(config.state_dir))
    else:
        errors: list[str] = []
        for summary in report_dir(config.state_dir, errors):
            print(format_summary(summary))
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
    for name, reason in runner.halted.items():
        print(f"instance {name} halted: {reason}", file=sys.stderr)
    return EXIT_HALTED if runner.halted else 0


def journal_paths(state_dir: Path) -> list[Path]:
    """The journals of a state folder, for status and report alike; none is bad input (JournalError)."""
    if not state_dir.is_dir():
        raise JournalError(f"state folder {state_dir} does not exist" if not state_dir.exists()
                           else f"state_dir {state_dir} is not a folder")
    paths = sorted(state_dir.glob("*.sqlite"))
    if not paths:
        raise JournalError(f"no journals in {state_dir}")
    return paths


def _status(state_dir: Path) -> int:
    from gatebot.app.operator import status_cmd

    return status_cmd(state_dir, journal_paths(state_dir))


def _run_recorded(args: argparse.Namespace) -> int:
    from gatebot.app.runner import Runner
    from gatebot.core.recording import Header, Recorder, session_hash, strategy_hashes

    config = _load_run_config(args)
    if config.mode == "replay":
        raise ConfigError(f"{args.config}: $.mode: --record records a paper or live session, not a replay")
    check_state_dir(config.state_dir, create=True)
    logs.for_run(config.state_dir)
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
    print(f"{runner.bars} candles processed ({run_label(config)}); {recorder.count:,} records in {args.record}")
    for summary in report_dir(config.state_dir):
        print(format_summary(summary))
    for name, reason in runner.halted.items():
        print(f"instance {name} halted: {reason}", file=sys.stderr)
    return EXIT_HALTED if runner.halted else 0


def _replay(args: argparse.Namespace) -> int:
    from gatebot.app.replayer import replay

    config = load_config(args.config)
    if config.mode == "live":
        raise ConfigError(f"{args.config}: $.mode: replay never uses a live config")
    config = msgspec.structs.replace(config, mode="replay")
    Recording(args.recording)  # a file that is no recording at all is refused before anything starts
    from gatebot.app.runner import check_replay_target

    check_replay_target(config)
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
    print(evaluation_text(config.state_dir))
    _refresh_report(Path(config.state_dir))
    for name, reason in result.halted.items():
        print(f"instance {name} halted: {reason}", file=sys.stderr)
    if result.divergence is not None:
        print(result.divergence.text())
        return EXIT_DIVERGED
    if result.kind == "session":
        print("replay repeated every live command")
    return EXIT_HALTED if result.halted else 0


def _refresh_report(state_dir: Path) -> None:
    """After a replay: report.json and report.png of these journals, never an earlier run's beside them."""
    if any(state_dir.glob("*.sqlite")):
        write_report(state_dir, None, quiet=True)
    else:
        for name in ("report.json", "report.png"):
            (state_dir / name).unlink(missing_ok=True)


def write_report(state_dir: Path, out: Path | None, *, png: bool = True, candles: Path | None = None,
                 quiet: bool = False) -> int:
    """report.json and report.png of every journal (``quiet``: after a replay, which printed the evaluation
    already: only the paths); a stale PNG is removed when no new one can be drawn."""
    paths = journal_paths(state_dir)  # none: JournalError, exit status 2 (as for status)
    reports, errors = [], []
    for path in paths:
        try:
            journal = Journal(path, readonly=True)
        except JournalError as exc:
            errors.append(str(exc))
            continue
        try:
            reports.append(report_data(journal, candles=candles))
        finally:
            journal.close()
    if not quiet:
        for r in reports:
            print(format_report(r))
    out = out or state_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_bytes(msgspec.json.format(msgspec.json.encode({"instances": reports})))
    print(f"metrics: {out / 'report.json'}")
    chart = out / "report.png"
    drawn = False
    if png and reports:
        from gatebot.app.plot import PlotUnavailable, plot_report

        try:
            plot_report(reports, chart)
            drawn = True
            print(f"chart: {chart}")
        except PlotUnavailable as exc:
            print(f"note: {exc}", file=sys.stderr)
    if not drawn:
        chart.unlink(missing_ok=True)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return EXIT_BAD_INPUT if errors else 0


if __name__ == "__main__":
    sys.exit(main())
