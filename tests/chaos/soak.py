"""Fault soak: the bot (a child process, ``gatebot run``) against the BingX simulator for simulated days,
with every fault class the simulator can inject, in turn: stream drops (market, user), stalls, 5xx,
timeouts (reply lost, request lost), rate limits, rejected stops, partial fills, duplicated and reordered
events, listenKey expiry. I1-I5 are checked every simulated 2 hours and at the end; the simulator's own
view of every position (open without a working stop of its side) gives the worst naked time.

``python -m tests.chaos.soak [--hours 24] [--per-class 20] [--seed 1]`` prints
``RESULT simulated_hours=… trades=… faults=… violations=… naked_ms_max=…``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from core.journal import Journal
from exchanges.bingx.constants import ORDER
from exchanges.bingx.simulator import SimOptions
from tests.chaos.driver import CONFIG, FUNDING, INSTANCE, SYMBOL, Chaos
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


def soak(hours: float, per_class: int, seed: int, workdir: Path, *, min_trades: int = 0, log=print) -> dict:
    """At least ``hours`` simulated, each fault class ``per_class`` times and ``min_trades`` trades: the
    run goes on (up to four times ``hours``) until all three hold."""
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
    i = 0
    try:
        assert sim.sim is not None
        chaos.config = workdir / "soak.toml"
        chaos.config.write_text(CONFIG.format(state=workdir / "state", rest=sim.sim.rest_url, ws=sim.sim.ws_url,
                                              attached="false", instance=INSTANCE)
                                  .replace("protection_timeout_s = 2", "protection_timeout_s = 5")
                                  .replace("every = 2", "every = 1"))  # a new trade as soon as flat
        t0 = chaos.spawn(None)
        if not chaos.recovered(t0):
            raise RuntimeError(f"the bot did not start: {chaos.result.violations}")
        sim.watch_naked()
        order = list(FAULTS)
        toggled: dict[str, int] = {}
        owed = 0
        rest_fault = False
        while i < limit and (i < candles or min(counts.values()) < per_class or trades < min_trades):
            if i % every == every - 1:
                owed += 1
            if owed and not rest_fault:
                least = min(counts.values())
                name = next(n for n in order if counts[n] == least) if least < per_class else rng.choice(order)
                spec = dict(FAULTS[name])
                op = spec.pop("op", name)
                sim.fault(op, **spec)
                counts[name] += 1
                owed -= 1
                rest_fault = op == "fail_next"
                if name in ("duplicate_user_events", "reorder_user_events"):
                    toggled[name] = i + 3  # on for three candles
            for name, until in list(toggled.items()):
                if i >= until:
                    sim.fault(name, on=False)
                    del toggled[name]
            sim.advance(1)
            wait_for(sim.streams_up, 5, step=0.01)  # dropped streams are back, as minutes later they would be
            time.sleep(0.02)
            if rest_fault and wait_for(lambda: sim.pending_failures() == 0, 0.5, step=0.01):
                # A simulated day passes in minutes: REST failures minutes apart in real time would meet one
                # request's retries one after the other here. The next one waits until this one was met and
                # the bot is at rest again, as minutes later it would be.
                wait_for(lambda: not sim.violations(chaos.journal, instance=INSTANCE, symbol=SYMBOL), 10, step=0.05)
                rest_fault = False
            if not chaos.alive():
                violations.append(f"the bot died at candle {i}")
                break
            if i % 24 == 23:  # every simulated 2 hours: quiet, then the invariants
                for name in list(toggled):
                    sim.fault(name, on=False)
                    del toggled[name]
                found: list[str] = []

                def clean(found: list[str] = found) -> bool:
                    found[:] = [str(v) for v in sim.violations(chaos.journal, instance=INSTANCE, symbol=SYMBOL)]
                    return not found

                if not wait_for(clean, 8, step=0.05):
                    violations.extend(f"candle {i}: {v}" for v in found)
                trades = _trades(chaos.journal)
            if i % 100 == 99:
                log(f"  {i + 1} candles, {trades} trades, faults {sum(counts.values())}, "
                    f"violations {len(violations)}, naked max {sim.naked_ms_max:.0f} ms")
            i += 1
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
    finally:
        journal.close()
    if halted:
        violations.append("the instance halted")
    return {"simulated_hours": i * CANDLE_MS / 3600_000, "trades": _trades(chaos.journal), "faults": counts,
            "violations": violations, "naked_ms_max": sim.naked_ms_max, "protection_timeout_ms": 5000}


def _trades(path: Path) -> int:
    journal = Journal(path, readonly=True)
    try:
        return journal.conn.execute("SELECT count(*) FROM transitions WHERE trigger = 'settled'").fetchone()[0]
    finally:
        journal.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-trades", type=int, default=200)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gatebot-soak-"))
    t0 = time.monotonic()
    r = soak(args.hours, args.per_class, args.seed, workdir, min_trades=args.min_trades,
             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"workdir {workdir}; {time.monotonic() - t0:.0f} s wall; faults by class {r['faults']}")
    for v in r["violations"][:20]:
        print("  " + v[:300])
    print(f"RESULT simulated_hours={r['simulated_hours']:.0f} trades={r['trades']} faults={sum(r['faults'].values())} "
          f"min_per_class={min(r['faults'].values())} violations={len(r['violations'])} "
          f"naked_ms_max={r['naked_ms_max']:.0f} protection_timeout_ms={r['protection_timeout_ms']}", flush=True)
    return 0 if not r["violations"] and r["naked_ms_max"] <= r["protection_timeout_ms"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
