"""Fault soak: the bot (a child process, ``gatebot run``) against the BingX simulator for simulated days,
with every fault class the simulator can inject, in turn: stream drops (market, user), stalls, 5xx,
timeouts (reply lost, request lost), rate limits, rejected stops, partial fills, duplicated and reordered
events, listenKey expiry; with ``--take-profit-from`` a take-profit and a trailing stop on for the rest of the
run from there. Paced by simulated time (one candle per ``--candle-s`` of wall time), not by
waiting on the bot. Every simulated 2 hours and at the end the bot is made to reconcile (its user stream
dropped) and I1-I5 are judged at the point it journals ``reconciled``; the simulator's own view of every
position (open without a working stop of its side) gives the worst naked time; a run of more than
``--idle-candles`` candles in which the journal shows neither a decision nor a reason fails the soak.

``python -m tests.chaos.soak [--hours 24] [--per-class 20] [--seed 1]`` prints
``RESULT simulated_hours=… trades=… faults=… violations=… naked_ms_max=… recovery_ms_p50=… wall_s=…``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from gatebot.core.journal import Journal
from gatebot.exchanges.bingx.constants import ORDER
from gatebot.simulators.bingx import SimOptions
from tests.chaos.driver import (
    COUNTED,
    FUNDING,
    INSTANCE,
    RECOVERY_LIMIT_S,
    SYMBOL,
    TAKE_PROFIT_AND_MOVES,
    Chaos,
    ChaosResult,
)
from tests.chaos.simthread import SimThread, wait_for

FAULTS: dict[str, dict] = {
    "drop_market_streams": {},
    "drop_user_streams": {},
    "stall_streams": {"seconds": 0.4},
    "5xx": {"op": "fail_next", "path": ORDER, "kind": "5xx"},
    "timeout_reply_lost": {"op": "fail_next", "path": ORDER, "kind": "timeout", "after_effect": True},
    "timeout_request_lost": {"op": "fail_next", "path": ORDER, "kind": "timeout"},
    "rate_limit": {"op": "fail_next", "path": ORDER, "kind": "rate_limit"},
    "reject_next_stop": {},
    "partial_fills": {"parts": 3},
    "duplicate_user_events": {"on": True},
    "reorder_user_events": {"on": True},
    "expire_listen_key": {},
}
CANDLE_MS = 300_000
PLAIN = {"protection_timeout_s = 2": "protection_timeout_s = 5", "every = 2": "every = 1"}  # a trade as soon as flat
WITH_TAKE_PROFIT = {**PLAIN, "every = 2": "every = 1, hold = 2",
                    "leveraged_sl_pct = 0.04,": TAKE_PROFIT_AND_MOVES["leveraged_sl_pct = 0.04,"]}
"""From ``take_profit_from`` on: a take-profit and a trailing stop, each position held two candles (its stop
moves once before the exit signal)."""
STREAM_FAULTS = ("drop_market_streams", "drop_user_streams", "stall_streams", "expire_listen_key")


def soak(hours: float, per_class: int, seed: int, workdir: Path, *, min_trades: int = 0, candle_s: float = 0.5,
         idle_candles: int = 24, rest_gap: int = 4, take_profit_from: float | None = None, log=print) -> dict:
    """At least ``hours`` simulated, each fault class ``per_class`` times and ``min_trades`` trades: the
    run goes on (up to four times ``hours``) until all three hold. ``take_profit_from`` (a share of
    ``hours``): at the first checkpoint from there on the bot is restarted with a take-profit and a trailing
    stop on (WITH_TAKE_PROFIT), for the rest of the run.

    Paced by simulated time: one candle every ``candle_s`` of wall time, whatever the bot does meanwhile,
    so the wall time is bounded (candles x ``candle_s``, plus the checkpoints). The waits on the bot are
    few and bounded: at the checkpoints, for its own ``reconciled`` row (RECOVERY_LIMIT_S is a liveness
    limit, not a verdict), and after a stream fault, for its streams to be back (5 s; five simulated
    minutes always hold a reconnect). A REST fault comes ``rest_gap`` candles after the previous one at
    the earliest, and only once that one met its request: squeezed into a second, REST faults minutes
    apart would meet one recovery's retries one after the other, which no exchange does; until then the
    class waits its turn."""
    rng = random.Random(seed)
    chaos = Chaos(workdir, seed=seed, attached=False, log=log)
    candles = int(hours * 3600_000 / CANDLE_MS)
    limit = 4 * candles
    chaos.options = SimOptions(mode="manual", history_bars=80, seed=seed, volatility=0.003, ping_interval_s=2.0,
                               bars=limit + 100, funding=FUNDING, wire="mixed")
    chaos.sim = SimThread(chaos.options)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    sim = chaos.sim.start()
    counts = {name: 0 for name in FAULTS}
    violations: list[str] = []
    every = max(1, candles // (per_class * len(FAULTS)))
    trades = 0
    checks = 0
    candle_wall_ms: list[int] = []
    i = 0
    try:
        assert sim.sim is not None
        chaos.write_config("soak.toml", **PLAIN)
        switch_at = None if take_profit_from is None else int(take_profit_from * candles)
        switched_at = None
        t0 = chaos.spawn(None)
        if not chaos.recovered(t0):
            raise RuntimeError(f"the bot did not start: {chaos.result.violations}")
        sim.watch_naked()
        order = list(FAULTS)
        toggled: dict[str, int] = {}
        owed = 0
        last_rest = -rest_gap
        streams_hit = False
        next_at = time.monotonic()
        while i < limit and (i < candles or min(counts.values()) < per_class or trades < min_trades):
            if streams_hit:  # the last candle's stream fault: back by now, as minutes later it would be
                wait_for(sim.streams_up, 5, step=0.01)
                streams_hit = False
                next_at = max(next_at, time.monotonic())
            if i % every == every - 1:
                owed += 1
            if owed:
                rest_ok = i - last_rest >= rest_gap and sim.pending_failures() == 0
                ready = [n for n in order if FAULTS[n].get("op") != "fail_next" or rest_ok]
                low = min((counts[n] for n in ready), default=0)
                due = [n for n in ready if counts[n] == low]
                if due:
                    name = due[0] if low < per_class else rng.choice(due)
                    spec = dict(FAULTS[name])
                    op = spec.pop("op", name)
                    sim.fault(op, **spec)
                    counts[name] += 1
                    owed -= 1
                    last_rest = i if op == "fail_next" else last_rest
                    streams_hit = name in STREAM_FAULTS
                    if name in ("duplicate_user_events", "reorder_user_events"):
                        toggled[name] = i + 3  # on for three candles
            for name, until in list(toggled.items()):
                if i >= until:
                    sim.fault(name, on=False)
                    del toggled[name]
            candle_wall_ms.append(time.time_ns() // 1_000_000)
            sim.advance(1)
            next_at += candle_s
            time.sleep(max(0.0, next_at - time.monotonic()))
            if not chaos.alive():
                violations.append(f"the bot died at candle {i}")
                break
            if i % 24 == 23:  # every simulated 2 hours: quiet, the bot reconciles, the invariants there
                for name in list(toggled):
                    sim.fault(name, on=False)
                    del toggled[name]
                violations.extend(f"candle {i}: {v}" for v in checkpoint(chaos))
                checks += 1
                trades = _trades(chaos.journal)
                if switch_at is not None and switched_at is None and i >= switch_at:
                    switched_at = i + 1
                    chaos.kill()  # restarted on the same journal with a take-profit and a trailing stop
                    chaos.write_config("soak.toml", **WITH_TAKE_PROFIT)
                    if not chaos.recovered(chaos.spawn(None)):
                        violations.append(f"candle {i}: no recovery with the take-profit on: {chaos.result.violations}")
                        break
                next_at = time.monotonic()
            if i % 100 == 99:
                log(f"  {i + 1} candles, {trades} trades, faults {sum(counts.values())}, "
                    f"violations {len(violations)}, naked max {sim.naked_ms_max:.0f} ms")
            i += 1
        violations.extend(f"candle {i}: {v}" for v in checkpoint(chaos))
        checks += 1
        alive = chaos.alive()
        chaos.kill()
        if not alive:
            violations.append("the bot was not running at the end")
    finally:
        if chaos.alive():
            chaos.kill()
        sim.stop()
    journal = Journal(chaos.journal, readonly=True)
    try:
        halted = journal.conn.execute("SELECT count(*) FROM rejections WHERE trigger = 'instance_halted'").fetchone()[0]
        transitions = dict(journal.conn.execute(
            f"SELECT trigger, count(*) FROM transitions WHERE trigger IN ({', '.join('?' * len(COUNTED))}) "
            "GROUP BY trigger", COUNTED).fetchall())
        idle = idle_spans(journal, candle_wall_ms, idle_candles)
    finally:
        journal.close()
    if halted:
        violations.append("the instance halted")
    violations.extend(f"candles {a}-{b}: no decision and no explanation in the journal for {b - a} candles "
                      f"(limit {idle_candles})" for a, b in idle)
    return {"simulated_hours": i * CANDLE_MS / 3600_000, "trades": _trades(chaos.journal), "faults": counts,
            "violations": violations, "naked_ms_max": sim.naked_ms_max, "protection_timeout_ms": 5000,
            "checks": checks, "recovery_ms": chaos.result.recovery_ms, "idle_spans": idle,
            "take_profit_from_candle": switched_at, "transitions": transitions}


def checkpoint(chaos: Chaos, attempts: int = 3) -> list[str]:
    """Make the bot reconcile (its user stream dropped: it cannot know what it missed) and judge I1-I5 at the
    point it journals ``reconciled``. Judged there only if the journal has not moved since that row (a
    decision held during recovery may follow it at once); otherwise once more, the bot at rest by then."""
    found: list[str] = []
    for _ in range(attempts):
        before = chaos.reconciled()
        chaos.sim.fault("drop_user_streams")
        if not wait_for(lambda b=before: chaos.reconciled() != b or not chaos.alive(), RECOVERY_LIMIT_S, step=0.01):
            return [f"not reconciled within {RECOVERY_LIMIT_S} s of a user stream drop"]
        if not chaos.alive():
            return ["the bot died"]
        row = json.loads(chaos.reconciled() or "{}")
        found = [str(v) for v in chaos.sim.violations(chaos.journal, instance=INSTANCE, symbol=SYMBOL)]
        journal = Journal(chaos.journal, readonly=True)
        try:
            moved = journal.high_water() != row.get("journal")
        finally:
            journal.close()
        if not moved:
            return found
    return found


def idle_spans(journal: Journal, candle_wall_ms: list[int], limit: int) -> list[tuple[int, int]]:
    """Runs of more than ``limit`` candles in which the journal shows no decision (a transition) and no
    explanation (a rejection row: an instance error, a refused trigger, a halt). The soak's strategy trades
    on every candle it is flat, so such a run is an instance gone quiet."""
    rows = sorted(ts for (ts,) in journal.conn.execute(
        "SELECT ts FROM transitions UNION ALL SELECT ts FROM rejections"))
    ends = [*candle_wall_ms[1:], 2**62]
    spans: list[tuple[int, int]] = []
    quiet_from = 0
    for i, (begin, end) in enumerate(zip(candle_wall_ms, ends, strict=True)):
        k = bisect.bisect_left(rows, begin)
        if k < len(rows) and rows[k] < end:  # something journaled during candle i
            if i - quiet_from > limit:
                spans.append((quiet_from, i))
            quiet_from = i + 1
    if len(candle_wall_ms) - quiet_from > limit:
        spans.append((quiet_from, len(candle_wall_ms)))
    return spans


def _trades(path: Path) -> int:
    journal = Journal(path, readonly=True)
    try:
        return journal.conn.execute("SELECT count(*) FROM transitions WHERE trigger = 'settled'").fetchone()[0]
    finally:
        journal.close()


def recovery_line(recovery_ms: list[float]) -> str:
    r = ChaosResult(recovery_ms=recovery_ms)
    return (f"recovery_ms_p50={r.recovery_quantile(0.5):.0f} p90={r.recovery_quantile(0.9):.0f} "
            f"max={r.max_recovery_ms:.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-trades", type=int, default=200)
    ap.add_argument("--candle-s", type=float, default=0.5, help="wall seconds per simulated candle")
    ap.add_argument("--idle-candles", type=int, default=24, help="most candles without a decision or a reason")
    ap.add_argument("--take-profit-from", type=float, help="from this share of the hours on: take-profit and trailing")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gatebot-soak-"))
    t0 = time.monotonic()
    r = soak(args.hours, args.per_class, args.seed, workdir, min_trades=args.min_trades, candle_s=args.candle_s,
             idle_candles=args.idle_candles, take_profit_from=args.take_profit_from,
             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"workdir {workdir}; {time.monotonic() - t0:.0f} s wall; faults by class {r['faults']}")
    for v in r["violations"][:20]:
        print("  " + v[:300])
    print(f"RESULT simulated_hours={r['simulated_hours']:.0f} trades={r['trades']} faults={sum(r['faults'].values())} "
          f"min_per_class={min(r['faults'].values())} violations={len(r['violations'])} "
          f"naked_ms_max={r['naked_ms_max']:.0f} protection_timeout_ms={r['protection_timeout_ms']} "
          f"checks={r['checks']} {recovery_line(r['recovery_ms'])} wall_s={time.monotonic() - t0:.0f} "
          f"take_profit_from_candle={r['take_profit_from_candle']} transitions={r['transitions']}", flush=True)
    return 0 if not r["violations"] and r["naked_ms_max"] <= r["protection_timeout_ms"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
