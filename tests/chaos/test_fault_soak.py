"""The fault soak (``python -m tests.chaos.soak``) at its full size: simulated days against the
BingX simulator with every fault class it can inject at least 20 times, I1-I5 judged every simulated two
hours at the point the bot journals that it reconciled, the simulator's own view of naked time, and no run of
more than 24 candles without a decision or a journaled reason. Paced by simulated time (half a second of wall
time per candle), so its wall time is bounded whatever the machine's load. Its second half runs with a
take-profit and a trailing stop on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.soak import recovery_line, soak

pytestmark = pytest.mark.chaos


def test_simulated_days_with_every_fault_class_twenty_times_leave_every_invariant_holding(tmp_path: Path) -> None:
    r = soak(24, 20, 1, tmp_path, min_trades=200, idle_candles=24, take_profit_from=0.5, log=print)
    print({k: v for k, v in r.items() if k != "recovery_ms"}, recovery_line(r["recovery_ms"]))
    assert r["simulated_hours"] >= 24
    assert min(r["faults"].values()) >= 20, r["faults"]
    assert r["violations"] == []  # the invariants at every checkpoint, and no instance gone quiet
    assert r["trades"] >= 200
    assert r["naked_ms_max"] <= r["protection_timeout_ms"], "a position went without a stop for too long"
    assert r["take_profit_from_candle"] is not None  # the second half with a take-profit and a trailing stop on
    assert r["transitions"].get("move_stop", 0) >= 20 and r["transitions"].get("tp_confirmed", 0) >= 20, r

