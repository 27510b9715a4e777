"""``gatebot check-invariants STATE_DIR [STATE_DIR ...] --rest URL``: I1-I6 for every journal of the state
directories against a BingX endpoint's ground truth (the simulator, the VST demo host, or, read-only, a
real account), through the BingX adapter's REST queries alone. Nothing is ever sent but queries. Given
the state directories of several bots on one account, it also reports two journals that claim one
exchange position (I6).

Exit status 0: every invariant holds; 1: violations (one line each); 2: bad input (no journals, a
damaged journal); 4: the endpoint could not be used (credentials, connection).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal
from pathlib import Path

from gatebot.app.exit_codes import EXIT_DIVERGED
from gatebot.core.events import Side
from gatebot.core.invariants import Violation, check, shared_claims
from gatebot.core.journal import Journal, JournalError
from gatebot.core.position import PositionRecord


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check-invariants", help="check I1-I6 of STATE_DIR's journals against a BingX endpoint",
                       description=__doc__)
    p.add_argument("state_dir", type=Path, nargs="+")
    p.add_argument("--rest", required=True, help="the endpoint's REST URL, e.g. the simulator's http://127.0.0.1:PORT")
    p.add_argument("--symbol", default="BTC-USDT", help="for journals that never traded (default BTC-USDT)")
    p.add_argument("--api-key-env", default="BINGX_API_KEY")
    p.add_argument("--secret-env", default="BINGX_SECRET_KEY")
    p.add_argument("--secrets-file", help="a 0600 file of NAME=value lines for the two variables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The CLI entry: returns the exit status. ExchangeError and JournalError propagate to app.cli."""
    dirs = args.state_dir if isinstance(args.state_dir, list) else [args.state_dir]
    paths = [p for d in dirs for p in sorted(Path(d).glob("*.sqlite"))]
    if not paths:
        raise JournalError(f"no journals in {', '.join(map(str, dirs))}")
    found = asyncio.run(_check_all(paths, args))
    bad = 0
    for name, violations in found.items():
        if violations:
            bad += len(violations)
            for v in violations:
                print(f"{name}: {v}")
        else:
            print(f"{name}: ok (I1-I6 hold)")
    return EXIT_DIVERGED if bad else 0


async def _check_all(paths: list[Path], args: argparse.Namespace) -> dict[str, list[Violation]]:
    from gatebot.core.clock import LiveClock
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions, load_secrets
    from gatebot.exchanges.bingx.rest import RestClient

    options = BingXOptions(rest_url=args.rest, api_key_env=args.api_key_env, secret_env=args.secret_env,
                           secrets_file=args.secrets_file, request_timeout_s=10.0)
    key, secret = load_secrets(options)
    adapter = BingXAdapter(options, hedge_mode=False, clock=LiveClock())
    adapter.rest = RestClient(adapter.rest_url, key, secret, clock=adapter.clock, timeout_s=options.request_timeout_s)
    await adapter.rest.start()
    out: dict[str, list[Violation]] = {}
    claims: dict[str, tuple[str, Side, Decimal]] = {}
    held: dict[tuple[str, Side], Decimal] = {}
    several = len({p.parent for p in paths}) > 1
    names = {p: str(p.with_suffix("")) if several else p.stem for p in paths}  # a journal per line, unambiguous
    opened: list[tuple[Path, Journal, PositionRecord | None, str]] = []
    try:
        for path in paths:
            journal = Journal(path, readonly=True)
            rec = journal.fold()
            opened.append((path, journal, rec, rec.symbol if rec is not None and rec.symbol else args.symbol))
        symbols = [symbol for *_, symbol in opened]
        for path, journal, rec, symbol in opened:
            instance = journal.meta().get("instance") or path.stem
            # two journals on one symbol share its funding history: I5 compares their fills only
            out[names[path]] = await check(journal, adapter, instance=instance, symbol=symbol,
                                           shared_symbol=symbols.count(symbol) > 1)
            if rec is not None and rec.side is not None:
                claims[names[path]] = (symbol, rec.side, rec.open_qty)
                if (symbol, rec.side) not in held:
                    held[(symbol, rec.side)] = (await adapter.position(symbol, rec.side)).qty
    finally:
        for _, journal, *_ in opened:
            journal.close()
        await adapter.rest.close()
    for claimants, v in shared_claims(claims, held):
        for name in claimants:
            out[name].append(v)
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `gatebot check-invariants` is the way in
    parser = argparse.ArgumentParser(prog="gatebot")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
