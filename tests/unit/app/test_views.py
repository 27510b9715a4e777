"""The views render every Decimal as a plain fixed-point string: a journal's or the arithmetic's exponent form
("1.0000E+5", "0E-8") never reaches the API, the dashboard or ``gatebot status``."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from gatebot.app import views
from gatebot.app.operator import status_cmd
from gatebot.core import ids
from gatebot.core.events import OrderFilled
from gatebot.core.journal import Journal
from gatebot.core.position import PositionRecord


@pytest.mark.parametrize(("value", "text"), [
    (D("1.0000E+5"), "100000"), (D("0E-8"), "0.00000000"), (D("1E-8"), "0.00000001"), (D("1E+16"), "1" + "0" * 16),
    (D("12.50"), "12.50"), (D("-0.5"), "-0.5"), (D(0), "0"),
])
def test_plain_is_fixed_point_and_exact(value: D, text: str) -> None:
    assert views.plain(value) == text
    assert D(views.plain(value)) == value


def strings(tree: Any) -> list[str]:
    if isinstance(tree, dict):
        return [s for v in tree.values() for s in strings(v)]
    if isinstance(tree, list):
        return [s for v in tree for s in strings(v)]
    return [tree] if isinstance(tree, str) else []


def exponent_journal(path: Path) -> tuple[Journal, PositionRecord]:
    """A protected long whose journal rows and arithmetic carry exponents (as str(Decimal) writes them)."""
    journal = Journal(path)
    journal.set_meta({"instance": "x", "initial_balance": "1E+4"})
    entry = ids.make("x", ids.LEGACY, 1, "e", 1)
    rec = PositionRecord(state="protected", seq=1, symbol="BTC-USDT", side="long", filled_qty=D("1E+1"),
                         entry_cost=D("1.0000E+6"), stop_id=ids.make("x", ids.LEGACY, 1, "s", 1),
                         stop_price=D("9.5E+4"))
    with journal.transaction():
        journal.add_fill(1_000, 1, OrderFilled(ts=1_000, client_id=entry, trade_id="t1", qty=D("1E+1"),
                                               price=D("1.0000E+5"), fee=D("1E-8"), realized_pnl=D("0E-8"),
                                               cum_qty=D("1E+1")))
        journal.add_transition(1_000, "flat", "entry_filled", rec)
    return journal, rec


def test_no_view_shows_an_exponent(tmp_path: Path) -> None:
    journal, rec = exponent_journal(tmp_path / "x.sqlite")
    try:
        v = views.JournalViews(journal)
        inst = v.instance(rec=rec, mark=D("1.00001E+5"))
        shown = strings(inst) + strings(v.trades()) + strings(v.equity())
        assert not [s for s in shown if "E" in s.replace("BTC-USDT", "")], shown
        assert inst["position"] is not None
        figures = (inst["balance"], inst["fees"], inst["realized_pnl"], inst["position"]["qty"],
                   inst["position"]["entry_price"], inst["position"]["stop"]["price"],
                   inst["position"]["unrealized_pnl"])
        assert [D(f) for f in figures] == [D("9999.99999999"), D("1E-8"), 0, 10, 100_000, 95_000, 10], "exact"
        (marker,) = v.trades()
        assert (marker["price"], marker["qty"]) == ("100000", "10")
    finally:
        journal.close()


def test_status_shows_no_exponent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exponent_journal(tmp_path / "x.sqlite")[0].close()
    assert status_cmd(tmp_path, [tmp_path / "x.sqlite"]) == 0
    out = capsys.readouterr().out
    assert "position 1: long 10 @ 100000.00  stop 95000 " in out, out
    assert "balance 9999.99999999  realized 0.00000000  fees 0.00000001" in out, out
    assert "E+" not in out and "E-" not in out, out
