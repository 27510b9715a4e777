"""The kill -9 chaos suite (``make chaos``): >= 300 SIGKILLs of the bot running as a child process against a
BingX simulator that outlives it, every named crash point >= 10 times, the rest at random instants, with
stops fired, positions closed by hand, candles played and faults primed while the bot is down; I1-I5
judged at the point the bot journals that it reconciled, after every restart. Two seeded drivers run side
by side: one with the stop placed separately after the fill (the default), one with the stop attached to
the entry. The same with a take-profit and a trailing stop on: test_chaos_take_profit.py (a file of its
own, so that pytest-xdist's two workers, each taking whole files, share the two long runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.driver import Chaos, run_drivers
from tests.chaos.simthread import wait_for

pytestmark = pytest.mark.chaos


def test_300_kills_at_every_crash_point_and_at_random_leave_every_invariant_holding(tmp_path: Path) -> None:
    total, outputs = run_drivers(tmp_path, [("separate", ["--seed", "11", "--kills", "160", "--per-point", "10"]),
                                            ("attached", ["--seed", "12", "--kills", "145", "--per-point", "2",
                                                          "--attached"])])
    assert total.violations == [], "\n".join(outputs)
    assert total.unexpected_exits == [], total.unexpected_exits[:3]
    assert total.kills >= 300
    assert min(total.point_kills.values()) >= 10, total.point_kills
    assert total.recoveries >= 200
    # restart-to-reconciled (p50/p90/max) is reported in the RESULT line (target: worst 2 s on a quiet
    # machine), not asserted: it measures the machine's load as much as the bot. The verdict does not
    # depend on it: the invariants are judged when the bot journals that it reconciled, however long that
    # took; a bot that never does is a violation of its own (RECOVERY_LIMIT_S)


def test_a_close_refused_because_the_position_is_gone_ends_the_lifecycle(tmp_path: Path) -> None:
    """Chaos run (seed 3): while the bot was down the position was closed by hand and the kept stop then
    triggered and expired. Recovery saw the stop gone and placed a new one (refused: no position), closed
    at market (refused: no position), and retried the close forever, hammering the exchange into rate
    limits. A refused close is now checked against the exchange's position first."""
    chaos = Chaos(tmp_path, seed=7, attached=False)
    (tmp_path / "logs").mkdir()
    chaos.sim.start()
    try:
        chaos.write_config()
        t0 = chaos.spawn(None)
        assert chaos.recovered(t0)

        def protected() -> bool:
            chaos.sim.advance(1)
            return _state(chaos.journal) == "protected"

        assert wait_for(protected, 20, step=0.1)
        chaos.kill()
        chaos.sim.fault("close_by_hand", symbol="BTC-USDT", side="long")
        chaos.sim.fault("fire_stops_now", symbol="BTC-USDT")  # the kept stop triggers with no position: expired
        t0 = chaos.spawn(None)
        assert chaos.recovered(t0), chaos.result.violations
        assert wait_for(lambda: _state(chaos.journal) == "flat", 10)
        assert chaos.alive()
        chaos.kill()
        log = (tmp_path / "logs" / f"bot-{chaos.cycle:04d}.log").read_text()
        assert "rate-limited" not in log and log.count("No position to close") <= 2, log[-2000:]
        assert chaos.sim.violations(chaos.journal, instance="ch", symbol="BTC-USDT") == []
    finally:
        if chaos.alive():
            chaos.kill()
        chaos.sim.stop()


def test_an_instance_that_cannot_start_says_so_once_and_trades_as_soon_as_the_cause_clears(tmp_path: Path) -> None:
    """Fault soak: an instance that failed came back only after a backoff counted in candles (1, 2 ... 64),
    growing with every failure, so under repeated faults it stayed out for hundreds of candles, one log line
    per failure and then nothing. Live, it is now rebuilt on a timer (seconds) and says once why it cannot
    trade: here its first two builds meet HTTP 500s (every retry of the contract query), no candle is
    played, and it still reconciles by itself."""
    from gatebot.exchanges.bingx.constants import CONTRACTS

    chaos = Chaos(tmp_path, seed=5, attached=False)
    (tmp_path / "logs").mkdir()
    chaos.sim.start()
    try:
        chaos.write_config()
        chaos.sim.fault("fail_next", path=CONTRACTS, kind="5xx", count=8)  # two builds' four attempts each
        t0 = chaos.spawn(None)
        assert chaos.recovered(t0), chaos.result.violations
        assert chaos.sim.pending_failures() == 0
        chaos.kill()
    finally:
        if chaos.alive():
            chaos.kill()
        chaos.sim.stop()
    log = (tmp_path / "logs" / "bot-0001.log").read_text()
    assert log.count("cannot trade") == 1 and log.count("trading again") == 1, log[-3000:]
    from gatebot.core.journal import Journal

    journal = Journal(chaos.journal, readonly=True)
    try:
        errors = journal.conn.execute("SELECT message FROM rejections WHERE trigger = 'instance_error'").fetchall()
    finally:
        journal.close()
    assert len(errors) == 1 and "HTTP 500" in errors[0][0]


def _state(path: Path) -> str:
    from gatebot.core.journal import Journal

    if not path.exists():
        return "none"
    journal = Journal(path, readonly=True)
    try:
        rec = journal.fold()
        return rec.state if rec is not None else "flat"
    finally:
        journal.close()
