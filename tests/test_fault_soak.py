"""The fault soak (``python -m tests.chaos.soak``) at the size issue 6 asks for: simulated days against the
BingX simulator with every fault class it can inject at least 20 times, I1-I5 checked every simulated two
hours, and the simulator's own view of naked time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.soak import soak

pytestmark = pytest.mark.chaos


def test_simulated_days_with_every_fault_class_twenty_times_leave_every_invariant_holding(tmp_path: Path) -> None:
    r = soak(24, 20, 1, tmp_path, min_trades=200, log=print)
    print(r)
    assert r["simulated_hours"] >= 24
    assert min(r["faults"].values()) >= 20, r["faults"]
    assert r["violations"] == []
    assert r["trades"] >= 200
    assert r["naked_ms_max"] <= r["protection_timeout_ms"], "a position went without a stop for too long"
