"""``gatebot check-lookahead CONFIG --candles CSV``: is each configured strategy causal, exactly?

For every instance of CONFIG (one check per strategy and parameters), the candles after each of ``--cuts``
cut points are replaced by seeded noise, and every decision and exposed feature at or before the cut must
stay what it was, through the replay's batch path and the live rolling path (gatebot.core.lookahead).

Exit status 0: no look-ahead; 1: look-ahead found (one line per strategy: the first offending candle, its
time, path and feature or decision); 2: bad input (config, candle file, or candles in which a strategy
decided nothing and exposed no feature: a pass there would prove nothing).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from gatebot.app.exit_codes import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK
from gatebot.core.config import ConfigError, load_config
from gatebot.core.lookahead import Finding, check, trace
from gatebot.core.market import load_csv
from gatebot.core.strategy import StrategyContext


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check-lookahead", help="prove each configured strategy's decisions and features causal",
                       description=__doc__)
    p.add_argument("config", type=Path)
    p.add_argument("--candles", type=Path, required=True, help="candle CSV (timestamp,open,high,low,close,volume)")
    p.add_argument("--bars", type=int, default=600, help="check the first N candles of the file (default 600)")
    p.add_argument("--cuts", type=int, default=24, help="cut points, spread evenly (default 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise that replaces the future")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gatebot.plugins.manager import make_plugin_manager

    if args.bars < 2 or args.cuts < 1:
        raise ConfigError(f"check-lookahead: --bars must be at least 2 and --cuts at least 1 "
                          f"(got {args.bars}, {args.cuts})")
    config = load_config(args.config, allow_live=True)
    strategies = make_plugin_manager(config.plugins.modules, config.plugins.disable).strategies()
    rows = load_csv(args.candles)[: args.bars]
    status = EXIT_OK
    seen: set[tuple[str, str]] = set()
    for inst in config.instances:
        key = (inst.strategy, repr(inst.params))
        if key in seen:
            continue
        seen.add(key)
        cls = strategies[inst.strategy]
        context = StrategyContext(instance=inst.name, symbol=inst.symbol, interval=inst.interval,
                                  leverage=inst.leverage)

        def make(cls: type = cls, inst: object = inst, context: StrategyContext = context) -> object:
            return cls(inst.params, context)  # type: ignore[attr-defined]

        found = check(make, rows, cuts=args.cuts, seed=args.seed, symbol=inst.symbol,  # type: ignore[arg-type]
                      interval=inst.interval)
        name = f"instance {inst.name} ({inst.strategy})"
        compared = sum(any(d is not None for d in decisions) or bool(features)  # a pass on no output proves nothing
                       for decisions, features in trace(make, rows, batch=True, symbol=inst.symbol,  # type: ignore[arg-type]
                                                        interval=inst.interval))
        if found:
            print(f"look-ahead: {name}: {describe(found[0])} ({len(found)} finding(s))")
            status = EXIT_DIVERGED
        elif not compared:
            print(f"error: {name}: nothing to compare: it decided nothing and exposed no feature in {len(rows)} "
                  "candles (a longer --bars?)", file=sys.stderr)
            status = status if status == EXIT_DIVERGED else EXIT_BAD_INPUT  # a look-ahead found says more
        else:
            print(f"{name}: no look-ahead ({len(rows)} candles, {args.cuts} cut points, batch and rolling paths; "
                  f"{compared} candles with a decision or feature)")
    return status if config.instances else EXIT_BAD_INPUT


def describe(f: Finding) -> str:
    """The finding in one line: the candle (time and index), the path, what changed and how."""
    at = datetime.fromtimestamp(f.time_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if f.path == "batch vs rolling":
        how = f"the batch path says {f.before!r}, the rolling path {f.after!r}"
    else:
        how = f"changed from {f.before!r} to {f.after!r} when the candles after #{f.cut} were replaced by noise"
    return f"candle {at} (#{f.index}), {f.path} path: {f.what} {how}"
