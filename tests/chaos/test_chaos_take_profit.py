"""The kill -9 chaos suite with a take-profit and a trailing stop on (``make chaos``): >= 300 SIGKILLs as in
test_chaos.py, two seeded drivers side by side (the stop separate, the stop attached), I7 judged with I1-I5."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatebot.core.crashpoints import MOVE_POINTS, TAKE_PROFIT_POINTS
from tests.chaos.driver import run_drivers

pytestmark = pytest.mark.chaos


def test_300_kills_with_a_take_profit_and_a_trailing_stop_leave_every_invariant_holding(tmp_path: Path) -> None:
    """The same with a take-profit and a trailing stop on (driver ``--take-profit``): every take-profit and
    stop-move crash point >= 10 times (a kill between placing a moved stop and canceling the old one among
    them), the take-profit canceled by hand and one tick through both the stop and the take-profit, while the
    bot is down and while it runs; I7 (at most one take-profit, never larger than the position) with the rest.
    The crash points without a take-profit are covered ten times each above: here each once per driver."""
    total, outputs = run_drivers(tmp_path, [
        ("tp-separate", ["--seed", "21", "--kills", "150", "--per-point", "1", "--new-per-point", "6",
                         "--take-profit"]),
        ("tp-attached", ["--seed", "22", "--kills", "150", "--per-point", "1", "--new-per-point", "5",
                         "--take-profit", "--attached"])])
    assert total.violations == [], "\n".join(outputs)
    assert total.unexpected_exits == [], total.unexpected_exits[:3]
    assert total.kills >= 300
    assert min(total.point_kills[p] for p in (*TAKE_PROFIT_POINTS, *MOVE_POINTS)) >= 10, total.point_kills
    assert min(total.point_kills.values()) >= 1, total.point_kills
    assert total.recoveries >= 200
    moved, filled, canceled = (total.transitions.get(k, 0) for k in ("move_stop", "tp_filled", "tp_canceled"))
    assert moved >= 100 and filled >= 10 and canceled >= 10, total.transitions  # the features were exercised
    assert total.down_actions.get("cancel_tp_by_hand", 0) >= 8, total.down_actions
    assert total.down_actions.get("wick_through_stop_and_tp", 0) >= 8, total.down_actions
