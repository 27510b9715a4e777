"""``gatebot``: run, replay, record, import-candles, report, status, check-config, sim, check-invariants.

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
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from gatebot.core.config import Config, ConfigError, load_config
from gatebot.core.journal import Journal, JournalError, check_state_dir
from gatebot.core.market import CandleFileError
from gatebot.core.report import evaluation_text, format_summary, report_dir
from gatebot.exchanges.base import ExchangeError

EXIT_BAD_INPUT = 2
EXIT_HALTED = 3
EXIT_EXCHANGE = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gatebot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the instances of CONFIG")
    p.add_argument("config", type=Path)
    p.add_argument("--live", action="store_true", help='required (with mode = "live") to trade real money')
    p.add_argument("--record", type=Path, metavar="FILE", help="record the whole session's exchange traffic")
    p.add_argument("--adopt", action="store_true",
                   help="a new (or empty) journal adopts the position and orders the account holds of its instance "
                        "(without it, such a start is refused)")
    p = sub.add_parser("replay", help="replay candles or a recording through CONFIG's instances")
    p.add_argument("config", type=Path)
    p.add_argument("recording", type=Path, nargs="?",
                   help="a recording (gatebot record / run --record / import-candles)")
    p.add_argument("--candles", type=Path, help="candle CSV (timestamp,open,high,low,close,volume)")
    from gatebot.core import cli_recording

    cli_recording.add_parsers(sub)
    p = sub.add_parser("status", help="each instance's state, read from the journals alone")
    p.add_argument("state_dir", type=Path, nargs="?", default=Path("state"))
    p = sub.add_parser("check-config", help="validate CONFIG and exit")
    p.add_argument("config", type=Path)
    p = sub.add_parser("sim", help="run the BingX simulator alone on loopback (gatebot sim --help)", add_help=False,
                       prefix_chars="+")  # no options of its own: every argument goes to the simulator
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    from gatebot.core import check_invariants

    check_invariants.add_parser(sub)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "status":
            return _status(args.state_dir)
        if args.command == "sim":
            from gatebot.exchanges.bingx.simulator.__main__ import main as sim_main

            return sim_main(args.sim_args) or 0
        if args.command == "check-invariants":
            return check_invariants.run(args)
        handled = cli_recording.dispatch(args)
        if handled is not None:
            return handled
        config = load_config(args.config, allow_live=args.command == "check-config" or getattr(args, "live", False))
        if args.command == "check-config":
            check_state_dir(config.state_dir)
            print(f"{args.config}: ok ({len(config.instances)} instance(s), mode {config.mode})")
            return 0
        if args.command == "replay":
            if config.mode == "live":
                raise ConfigError(f"{args.config}: $.mode: replay never uses a live config")
            from gatebot.core.replayer import on_paper

            # candles replay on the paper exchange: each other account becomes a paper one (as for a
            # market recording), never the exchange or simulator the config trades on
            config = on_paper(msgspec.structs.replace(config, mode="replay"))
        return _run(config, candles=getattr(args, "candles", None), adopt=getattr(args, "adopt", False))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (JournalError, CandleFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExchangeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_EXCHANGE


def _run(config: Config, *, candles: Path | None, adopt: bool = False) -> int:
    from gatebot.core.runner import Runner
    from gatebot.plugins.manager import make_plugin_manager

    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    runner = Runner(config, plugins, candles_csv=candles, progress=sys.stderr.isatty(), adopt=adopt)
    asyncio.run(runner.run())
    if runner.refused:  # the user must act (a fresh journal on a used account): nothing traded
        for reason in runner.refused.values():
            print(f"error: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{runner.bars} candles processed ({config.mode})")
    errors: list[str] = []
    for summary in report_dir(config.state_dir, errors):
        print(format_summary(summary))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if config.mode == "replay" and runner.evaluation_meta:
        meta = dict(next(iter(runner.evaluation_meta.values())))
        if runner.first_open is not None and runner.last_close is not None:
            meta |= {"start_ms": runner.first_open, "end_ms": runner.last_close}
        print(evaluation_text(config.state_dir, meta))
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
    damaged = 0
    for path in journal_paths(state_dir):
        try:
            journal = Journal(path, readonly=True)
        except JournalError as exc:
            print(f"{path.stem}: ERROR {exc}")
            damaged += 1
            continue
        try:
            rec = journal.fold()
            if rec is None:
                print(f"{path.stem}: flat (no transitions yet)")
            else:
                pos = f"{rec.side} {rec.open_qty} @ {rec.avg_entry:.2f}" if rec.side else "none"
                print(f"{path.stem}: {rec.state}  position {rec.seq}: {pos}  stop {rec.stop_price or '-'}"
                      f" ({rec.stop_id or 'none'})")
            for t in journal.last_transitions(5):
                print(f"    #{t['seq']} pos {t['position']}: {t['src']} --{t['trigger']}--> {t['dst']}")
            print(f"    {_reconciled_line(journal.meta().get('reconciled'))}")
        except JournalError as exc:
            print(f"{path.stem}: ERROR {exc}")
            damaged += 1
        finally:
            journal.close()
    return EXIT_BAD_INPUT if damaged else 0


def _reconciled_line(row: str | None) -> str:
    """When recovery last made every intent definite (the engine's meta row ``reconciled``)."""
    if row is None:
        return "not reconciled yet"
    r = json.loads(row)
    at = datetime.fromtimestamp(r["ts_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"reconciled {at} ({r['state']}; {r['intents']} intents in {r['rounds']} round(s), {r['took_ms']} ms)"


if __name__ == "__main__":
    sys.exit(main())
