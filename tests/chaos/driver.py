"""The seeded kill -9 chaos driver: the bot (``python -m gatebot.app.cli run CONFIG``) as a child process against a
BingX simulator that outlives it, killed at every named crash point and at random instants, restarted on the
same journal, and checked against I1-I5 once its recovery completed.

``python -m tests.chaos.driver --kills 300 --seed 1 [--attached] [--take-profit] [--workdir DIR] [--json OUT]`` prints
``RESULT kills=… recoveries=… violations=… recovery_ms_p50=… p90=… max=…``.

One cycle: start the bot; wait until it journals that it is reconciled (meta ``reconciled``, written when
recovery has made every intent definite: core/engine.py) and judge the invariants once, at that point (the
time from ``Popen`` to that row, interpreter start included, is the recovery time; no wall-clock window
decides a verdict, so a loaded machine gives the same one); then either arm a crash point and play candles
until it fires, or play candles and kill at a random instant (faults - stream drops, duplicated and reordered
events - fired meanwhile); while the bot is down the simulator fires its stop, closes it by hand, plays
candles, or primes a rejected stop or a partial fill for the restart. With ``--take-profit`` (a take-profit and a
trailing stop on) the take-profit is also canceled by hand, and one tick reaches both the stop and the take-profit,
while the bot is down and while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from gatebot.core.crashpoints import MOVE_POINTS, POINTS, TAKE_PROFIT_POINTS
from gatebot.core.journal import Journal, JournalError
from gatebot.exchanges.paper.funding import FundingOptions
from gatebot.simulators.bingx import SimOptions
from tests.chaos.simthread import SimThread, wait_for

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC-USDT"
INSTANCE = "ch"
RECOVERY_LIMIT_S = 60.0
FUNDING = FundingOptions(rate=Decimal("0.0001"), interval_h=1)
"""Hourly funding (12 candles): many funding times per run, some of them while the bot is down, so that I5
checks funding booked from pushes and, after restarts and reconnects, from the income history."""

CONFIG = """
mode = "paper"
state_dir = "{state}"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
rest_url = "{rest}"
ws_url = "{ws}"
attached_stop = {attached}
close_candles_by_clock = false
request_timeout_s = 1.0
api_key_env = "CHAOS_BINGX_KEY"
secret_env = "CHAOS_BINGX_SECRET"
rate_limits = {{ market = 50.0, order = 50.0, query = 50.0, account = 50.0 }}
[[instances]]
name = "{instance}"
exchange = "bx"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {{ every = 2, fraction = 0.5 }}
protection = {{ leveraged_sl_pct = 0.04, protection_timeout_s = 2 }}
"""
TAKE_PROFIT_AND_MOVES = {
    "every = 2": "every = 4, hold = 3",
    "leveraged_sl_pct = 0.04,": "leveraged_sl_pct = 0.04, leveraged_tp_pct = 0.03, trailing_pct = 0.004,",
}
"""``--take-profit``: a take-profit 0.75 % from the entry (3 % of margin at 4x) and a stop trailing 0.4 % behind
each close, the position held three candles: with the simulator's 0.3 % candles most positions see their stop
move, and many end at the take-profit or at the trailed stop before their exit signal."""
COUNTED = ("move_stop", "tp_confirmed", "tp_filled", "tp_canceled", "tp_rejected", "stop_filled", "exit_signal")
"""The journal's transitions counted at the end of a run: how often the stop moved and the take-profit did what."""


class ChaosResult(msgspec.Struct, kw_only=True):
    kills: int = 0
    point_kills: dict[str, int] = {}
    random_kills: int = 0
    recoveries: int = 0
    violations: list[str] = []
    recovery_ms: list[float] = []
    trades: int = 0
    unexpected_exits: list[str] = []
    down_actions: dict[str, int] = {}
    transitions: dict[str, int] = {}
    """The journal's transitions by trigger (COUNTED), over the whole run."""

    @property
    def max_recovery_ms(self) -> float:
        return max(self.recovery_ms, default=0.0)

    def recovery_quantile(self, q: float) -> float:
        ordered = sorted(self.recovery_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    def merge(self, other: ChaosResult) -> ChaosResult:
        points = dict(self.point_kills)
        for k, v in other.point_kills.items():
            points[k] = points.get(k, 0) + v
        actions = dict(self.down_actions)
        for k, v in other.down_actions.items():
            actions[k] = actions.get(k, 0) + v
        transitions = dict(self.transitions)
        for k, v in other.transitions.items():
            transitions[k] = transitions.get(k, 0) + v
        return ChaosResult(transitions=transitions, kills=self.kills + other.kills, point_kills=points,
                           random_kills=self.random_kills + other.random_kills,
                           recoveries=self.recoveries + other.recoveries,
                           violations=self.violations + other.violations,
                           recovery_ms=self.recovery_ms + other.recovery_ms, trades=self.trades + other.trades,
                           unexpected_exits=self.unexpected_exits + other.unexpected_exits, down_actions=actions)

    def line(self) -> str:
        return (f"RESULT kills={self.kills} recoveries={self.recoveries} violations={len(self.violations)} "
                f"recovery_ms_p50={self.recovery_quantile(0.5):.0f} p90={self.recovery_quantile(0.9):.0f} "
                f"max={self.max_recovery_ms:.0f} point_kills={min(self.point_kills.values(), default=0)}"
                f"/point random_kills={self.random_kills} trades={self.trades}"
                + "".join(f" {k}={self.transitions.get(k, 0)}" for k in COUNTED if self.transitions))


def run_drivers(tmp_path: Path, runs: list[tuple[str, list[str]]]) -> tuple[ChaosResult, list[str]]:
    """Seeded drivers side by side (one per core), their results merged."""
    procs = []
    for name, args in runs:
        out = tmp_path / f"{name}.json"
        procs.append((name, out, subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.driver", *args, "--workdir", str(tmp_path / name), "--json", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    total = ChaosResult()  # the crash points the configurations reach
    outputs = []
    for name, out, proc in procs:
        text, _ = proc.communicate(timeout=900)
        outputs.append(f"--- {name}\n{text}")
        assert out.exists(), text
        total = total.merge(msgspec.json.decode(out.read_bytes(), type=ChaosResult))
    print("\n".join(outputs))
    print(total.line())
    return total, outputs


class Chaos:
    def __init__(self, workdir: Path, *, seed: int, attached: bool, take_profit: bool = False,
                 log: Any = print) -> None:
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.attached = attached
        self.take_profit = take_profit
        """A take-profit and a trailing stop (TAKE_PROFIT_AND_MOVES); without them their crash points never come."""
        self.log = log
        # an attached stop travels with the entry: no separate stop is sent but for rare replacements
        skip = {*(("stop_intent_committed", "stop_sent") if attached else ()),
                *(() if take_profit else (*TAKE_PROFIT_POINTS, *MOVE_POINTS))}
        self.points = [p for p in POINTS if p not in skip]
        self.result = ChaosResult(point_kills={p: 0 for p in self.points})
        self.options = SimOptions(mode="manual", history_bars=80, seed=seed, volatility=0.003, ping_interval_s=2.0,
                                  funding=FUNDING, wire="mixed")  # both of BingX's eras (protocol §0), drawn per reply
        self.sim = SimThread(self.options)
        self.journal = workdir / "state" / f"{INSTANCE}.sqlite"
        self.wal = workdir / "state" / f"{INSTANCE}.sqlite-wal"
        self._files: tuple[tuple[int, int], ...] | None = None
        self._row: str | None = None
        self._read_at = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self.cycle = 0

    # --- the bot ---------------------------------------------------------------------------------

    def write_config(self, name: str = "chaos.toml", **changes: str) -> None:
        """The bot's configuration against the running simulator; ``changes`` replace text in it."""
        sim = self.sim.sim
        assert sim is not None
        text = CONFIG.format(state=self.workdir / "state", rest=sim.rest_url, ws=sim.ws_url,
                             attached=str(self.attached).lower(), instance=INSTANCE)
        for old, new in {**(TAKE_PROFIT_AND_MOVES if self.take_profit else {}), **changes}.items():
            assert old in text, old
            text = text.replace(old, new)
        self.config = self.workdir / name
        self.config.write_text(text)

    def reconciled(self) -> str | None:
        """The journal's last ``reconciled`` row (None before the first): a new one means a recovery ended.
        Polled often while the simulator shares this process: read when the journal's files changed, and
        at least every 0.1 s (a file's time may not move between two writes close together)."""
        try:
            files = tuple((s.st_mtime_ns, s.st_size) for s in (self.journal.stat(), self.wal.stat()))
        except FileNotFoundError:
            files = None
        now = time.monotonic()
        if files is not None and files == self._files and now - self._read_at < 0.1:
            return self._row
        self._files, self._read_at = files, now
        self._row = self._read_reconciled()
        return self._row

    def _read_reconciled(self) -> str | None:
        try:
            journal = Journal(self.journal, readonly=True)
        except JournalError:  # not there yet, or being created
            return None
        try:
            return journal.meta().get("reconciled")
        except sqlite3.Error:
            return None
        finally:
            journal.close()

    def spawn(self, crash_at: str | None) -> float:
        env = {k: v for k, v in os.environ.items() if k != "GATEBOT_CRASH_AT"}
        env |= {"CHAOS_BINGX_KEY": self.options.api_key, "CHAOS_BINGX_SECRET": self.options.secret,
                "PYTHONPATH": str(ROOT)}
        if crash_at:
            env["GATEBOT_CRASH_AT"] = crash_at
        self.cycle += 1
        stderr = open(self.workdir / "logs" / f"bot-{self.cycle:04d}.log", "wb")  # noqa: SIM115
        self.marker = self.reconciled()
        t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "run", str(self.config)], cwd=ROOT,
                                     env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        stderr.close()
        return t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)
        # the simulator sees the sockets close: wait for it, so the next start's subscription is the new bot's
        wait_for(lambda: self.sim.connections() == 0, 5)

    def died(self) -> bool:
        if self.alive():
            return False
        assert self.proc is not None
        if self.proc.returncode != -signal.SIGKILL:
            log = (self.workdir / "logs" / f"bot-{self.cycle:04d}.log").read_text(errors="replace")[-2000:]
            self.result.unexpected_exits.append(f"cycle {self.cycle}: exit {self.proc.returncode}: {log}")
        return True

    def recovered(self, t0: float) -> bool:
        """Wait for the bot to journal that it is reconciled, book the recovery time, then judge the
        invariants once. ``RECOVERY_LIMIT_S`` only bounds a bot that never recovers (a violation of its
        own); it decides nothing about a slow one."""
        ok = wait_for(lambda: self.reconciled() != self.marker or not self.alive(), RECOVERY_LIMIT_S, step=0.005)
        if not self.alive():
            return False
        if not ok:
            self.result.violations.append(f"cycle {self.cycle}: not reconciled within {RECOVERY_LIMIT_S} s")
            return False
        self.result.recovery_ms.append((time.monotonic() - t0) * 1000)
        found = [str(v) for v in self.sim.violations(self.journal, instance=INSTANCE, symbol=SYMBOL)]
        if found and self.alive():
            self.result.violations.extend(f"cycle {self.cycle} after recovery: {v}" for v in found)
            self.log(f"  cycle {self.cycle}: " + "; ".join(found))
            return False
        if not found:
            self.result.recoveries += 1
        return not found

    # --- one cycle ---------------------------------------------------------------------------------

    def point_cycle(self, point: str) -> None:
        t0 = self.spawn(f"{point}:{self.rng.choice((1, 1, 2))}")
        if not self.recovered(t0) and not self.alive():
            self.book_kill(point)  # the crash point fired during recovery itself
            return
        for _ in range(16):
            self.sim.advance(1)
            if wait_for(lambda: not self.alive(), 0.12, step=0.005):
                break
        if self.died():
            self.book_kill(point)
        else:
            self.kill()
            self.book_kill(None)

    def random_cycle(self) -> None:
        t0 = self.spawn(None)
        early = self.rng.random() < 0.15  # sometimes during start-up and recovery itself
        if early:
            time.sleep(self.rng.uniform(0.05, 0.8))
        elif not self.recovered(t0) and self.died():
            return
        deadline = time.monotonic() + self.rng.uniform(0.0, 1.2)
        while not early and time.monotonic() < deadline and self.alive():
            r = self.rng.random()
            if r < 0.06:
                self.sim.fault("drop_user_streams")
            elif r < 0.12:
                self.sim.fault("drop_market_streams")
            elif r < 0.16:
                self.sim.fault("duplicate_user_events", on=self.rng.random() < 0.5)
            elif r < 0.20:
                self.sim.fault("reorder_user_events", on=self.rng.random() < 0.5)
            elif r < 0.25 and self.take_profit:
                self.exchange_action(self.rng.choice(("cancel_tp_by_hand", "wick_through_stop_and_tp")))
            else:
                self.sim.advance(1)
            time.sleep(self.rng.uniform(0.0, 0.06))
        if self.died():
            return
        self.kill()
        self.book_kill(None)

    def book_kill(self, point: str | None) -> None:
        self.result.kills += 1
        if point is None:
            self.result.random_kills += 1
        else:
            self.result.point_kills[point] += 1

    def while_down(self) -> None:
        """What the exchange does while nobody watches."""
        for _ in range(self.rng.choice((0, 1, 1, 2))):
            r = self.rng.random()
            long_qty = self.sim.position(SYMBOL, "long")
            if r < 0.25 and long_qty > 0:
                action = "fire_stops_now"
                self.sim.fault("fire_stops_now", symbol=SYMBOL)
            elif r < 0.45 and long_qty > 0:
                action = "close_by_hand"
                part = None
                if self.rng.random() < 0.4:
                    part = (long_qty / 2).quantize(Decimal("0.0001"))
                self.sim.fault("close_by_hand", symbol=SYMBOL, side="long", qty=str(part) if part else None)
            elif r < 0.70:
                action = "advance"
                self.sim.advance(self.rng.choice((1, 2, 3)))
            elif r < 0.80:
                action = "reject_next_stop"
                self.sim.fault("reject_next_stop")
            elif r < 0.90:
                action = "partial_fills"
                self.sim.fault("partial_fills", parts=self.rng.choice((2, 3)))
            elif r < 0.97 and self.take_profit:
                self.exchange_action(self.rng.choice(("cancel_tp_by_hand", "wick_through_stop_and_tp")))
                continue  # booked there, when there was a take-profit to act on
            else:
                action = "toggle_duplicate_reorder"
                self.sim.fault("duplicate_user_events", on=self.rng.random() < 0.5)
                self.sim.fault("reorder_user_events", on=self.rng.random() < 0.5)
            self.result.down_actions[action] = self.result.down_actions.get(action, 0) + 1

    def exchange_action(self, action: str) -> bool:
        """``cancel_tp_by_hand``: the operator cancels the working take-profit; ``wick_through_stop_and_tp``:
        one tick reaches both the stop and the take-profit. False when there is none to act on."""
        sim = self.sim.sim
        assert sim is not None
        orders = self.sim.do(lambda: [(o.client_id, o.type) for o in sim.core.open_orders(SYMBOL)])
        tps = [cid for cid, kind in orders if kind == "TAKE_PROFIT_MARKET" and cid.startswith(INSTANCE)]
        if not tps:
            return False
        if action == "cancel_tp_by_hand":
            self.sim.fault("cancel_by_hand", client_id=self.rng.choice(tps))
        else:
            self.sim.fault("wick_through_triggers", symbol=SYMBOL)
        self.result.down_actions[action] = self.result.down_actions.get(action, 0) + 1
        return True

    # --- the run -----------------------------------------------------------------------------------

    def run(self, kills: int, *, per_point: int, new_per_point: int | None = None) -> ChaosResult:
        """``kills`` in all, ``per_point`` at each crash point (``new_per_point`` at the take-profit's and the
        stop move's, when they differ), the rest at random instants."""
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.sim.start()
        try:
            sim = self.sim.sim
            assert sim is not None
            self.write_config()
            new = {*TAKE_PROFIT_POINTS, *MOVE_POINTS}
            plan = [p for p in self.points
                    for _ in range(new_per_point if new_per_point is not None and p in new else per_point)]
            self.rng.shuffle(plan)
            attempts = 0
            while self.result.kills < kills or plan:
                attempts += 1
                if attempts > kills * 3:
                    self.result.violations.append(f"gave up: crash points never reached: {sorted(set(plan))}")
                    break
                if plan and (self.rng.random() < 0.5 or self.result.kills >= kills - len(plan)):
                    point = plan.pop()
                    before = self.result.point_kills[point]
                    self.point_cycle(point)
                    if self.result.point_kills[point] == before:
                        plan.insert(0, point)  # not reached this time (e.g. no stop to send): again later
                else:
                    self.random_cycle()
                self.while_down()
                if self.result.kills % 25 == 0:
                    self.log(f"  {self.result.kills} kills, {self.result.recoveries} recoveries, "
                             f"{len(self.result.violations)} violations")
            # the last restart: recover once more, check, and stop it
            t0 = self.spawn(None)
            self.recovered(t0)
            self.kill()
        finally:
            if self.alive():
                self.kill()
            self.sim.stop()
        journal = Journal(self.journal, readonly=True)
        try:
            self.result.trades = journal.conn.execute(
                "SELECT count(*) FROM transitions WHERE trigger = 'settled'").fetchone()[0]
            rejected = journal.conn.execute("SELECT trigger, message FROM rejections").fetchall()
            self.result.transitions = dict(journal.conn.execute(
                f"SELECT trigger, count(*) FROM transitions WHERE trigger IN ({', '.join('?' * len(COUNTED))}) "
                "GROUP BY trigger", COUNTED).fetchall())
        finally:
            journal.close()
        for trigger, message in rejected:
            if trigger == "instance_halted":
                self.result.violations.append(f"instance halted: {message}")
        return self.result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--per-point", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--new-per-point", type=int, help="kills at each take-profit and stop-move crash point")
    ap.add_argument("--attached", action="store_true", help="attach the stop to the entry (default: separate)")
    ap.add_argument("--take-profit", action="store_true", help="a take-profit and a trailing stop on")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gatebot-chaos-"))
    t0 = time.monotonic()
    result = Chaos(workdir, seed=args.seed, attached=args.attached, take_profit=args.take_profit,
                   log=lambda m: print(m, file=sys.stderr, flush=True)).run(args.kills, per_point=args.per_point,
                                                                            new_per_point=args.new_per_point)
    if args.json:
        args.json.write_bytes(msgspec.json.encode(result))
    print(f"workdir {workdir}; {time.monotonic() - t0:.0f} s; crash points {json.dumps(result.point_kills)}; "
          f"while down {json.dumps(result.down_actions)}")
    for v in result.violations[:20] + result.unexpected_exits[:5]:
        print("  " + v[:400])
    print(result.line(), flush=True)
    return 0 if not result.violations and not result.unexpected_exits else 1


if __name__ == "__main__":
    raise SystemExit(main())
