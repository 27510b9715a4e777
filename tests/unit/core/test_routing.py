"""The routing table (core/routing.py): docs/architecture.md shows the one the engine routes by, and every
row is reached by an event of its own and answers what the row says.

    python -m tests.unit.core.test_routing     # rewrite the table in docs/architecture.md from core.routing.TABLE
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gatebot.core.events import OrderAccepted, OrderCanceled, OrderExpired, OrderFilled, OrderRejected
from gatebot.core.position import PositionRecord
from gatebot.core.routing import ACTIONS, TABLE, Facts, Rule, route, table_markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- routing-table:begin -->\n)(.*?)(<!-- routing-table:end -->)", re.DOTALL)

E, S, X, OLD = "sma-ab1cd-3-e1", "sma-ab1cd-3-s1", "sma-ab1cd-3-x1", "sma-ab1cd-2-s1"
T = "sma-ab1cd-3-t1"


def key(rule: Rule) -> str:
    return f"{rule.events[0].__name__}/{rule.role}/{' and '.join(rule.when)}"


def rec(**kw: Any) -> PositionRecord:
    return PositionRecord(seq=3, symbol="BTC-USDT", side="long", **kw)


def fill(cid: str) -> OrderFilled:
    return OrderFilled(client_id=cid, trade_id="t1", qty=Decimal("0.01"), price=Decimal("100"),
                       cum_qty=Decimal("0.01"))


ENTERING = rec(state="entering", entry_qty=Decimal("0.02"), working=[E, S], pending_stop_id=S)
PROTECTED = rec(state="protected", filled_qty=Decimal("0.02"), stop_id=S, working=[S])
EXITING = rec(state="exiting", filled_qty=Decimal("0.02"), stop_id=S, close_id=X, working=[S, X])
EXITED = rec(state="exited_sl", filled_qty=Decimal("0.02"), closed_qty=Decimal("0.02"), working=[S])
CANCELING = rec(state="protected", filled_qty=Decimal("0.02"), stop_id="sma-ab1cd-3-s2", working=[S],
                canceling=[S])
WITH_TP = rec(state="protected", filled_qty=Decimal("0.02"), stop_id=S, tp_id=T, working=[S, T])
FULL = rec(state="entering", entry_qty=Decimal("0.02"), filled_qty=Decimal("0.02"), working=[E])

# One event per row: (event, role, position record, state, other facts) -> the row that must answer it.
EXAMPLES: dict[str, tuple[Any, str | None, PositionRecord, str, dict[str, Any]]] = {
    "OrderFilled/*/booked": (fill(E), "e", ENTERING, "entering", {"booked": True}),
    "OrderFilled/e/": (fill(E), "e", ENTERING, "entering", {}),
    "OrderFilled/s/": (fill(S), "s", PROTECTED, "protected", {}),
    "OrderFilled/x/": (fill(X), "x", EXITING, "exiting", {}),
    "OrderFilled/t/": (fill(T), "t", WITH_TP, "protected", {}),
    "OrderFilled/*/": (fill(OLD), None, PROTECTED, "protected", {}),
    "OrderAccepted/-/": (OrderAccepted(client_id=OLD), None, PROTECTED, "protected", {}),
    "OrderAccepted/*/pending_stop": (OrderAccepted(client_id=S), "s", ENTERING, "entering", {}),
    "OrderAccepted/t/pending_tp and not exited": (OrderAccepted(client_id=T), "t", WITH_TP, "protected", {}),
    "OrderAccepted/*/": (OrderAccepted(client_id=E), "e", ENTERING, "entering", {}),
    "OrderRejected/x/held": (OrderRejected(client_id=X), "x", EXITING, "exiting", {"position_gone": False}),
    "OrderRejected/x/gone and exiting": (OrderRejected(client_id=X), "x", EXITING, "exiting",
                                         {"position_gone": True}),
    "OrderRejected/x/gone": (OrderRejected(client_id=X), "x", EXITED, "exited_sl", {"position_gone": True}),
    "OrderRejected/*/exited and working": (OrderRejected(client_id=S), "s", EXITED, "exited_sl", {}),
    "OrderRejected/*/exited": (OrderRejected(client_id=X), "x", EXITED, "exited_sl", {}),
    "OrderRejected/e/entering": (OrderRejected(client_id=E, code=80001, reason="no"), "e", ENTERING, "entering",
                                 {}),
    "OrderRejected/s/its_stop": (OrderRejected(client_id=S), "s", PROTECTED, "protected", {}),
    "OrderRejected/t/its_tp": (OrderRejected(client_id=T, code=110413, reason="past"), "t", WITH_TP, "protected",
                               {}),
    "OrderRejected/x/its_close and exiting": (OrderRejected(client_id=X), "x", EXITING, "exiting", {}),
    "OrderRejected/*/working": (OrderRejected(client_id=E), "e", rec(state="protected", working=[E]),
                                "protected", {}),
    "OrderRejected/*/": (OrderRejected(client_id=E), "e", PROTECTED, "protected", {}),
    "OrderCanceled/e/fetched and short": (OrderCanceled(client_id=E, filled_qty=Decimal("0.03")), "e", FULL,
                                          "entering", {"fetched": True}),
    "OrderCanceled/e/fetched and not entering": (OrderCanceled(client_id=E, filled_qty=Decimal("0.02")), "e",
                                                 PROTECTED, "protected", {"fetched": True}),
    "OrderCanceled/e/fetched and not working": (OrderCanceled(client_id=E, filled_qty=Decimal("0.02")), "e",
                                                rec(state="entering", filled_qty=Decimal("0.02")), "entering",
                                                {"fetched": True}),
    "OrderCanceled/e/fetched": (OrderCanceled(client_id=E, filled_qty=Decimal("0.02")), "e", FULL, "entering",
                                {"fetched": True}),
    "OrderCanceled/*/canceling and working": (OrderCanceled(client_id=S), "s", CANCELING, "protected", {}),
    "OrderCanceled/*/canceling": (OrderCanceled(client_id=S), "s",
                                  rec(state="protected", stop_id="sma-ab1cd-3-s2", canceling=[S]), "protected", {}),
    "OrderCanceled/*/exited and working": (OrderExpired(client_id=S), "s", EXITED, "exited_sl", {}),
    "OrderCanceled/*/exited": (OrderCanceled(client_id=X), "x", EXITED, "exited_sl", {}),
    "OrderCanceled/e/entering and working and fuller": (OrderCanceled(client_id=E, filled_qty=Decimal("0.01")), "e",
                                                        ENTERING, "entering", {}),
    "OrderCanceled/e/entering and working and has_fills": (
        OrderCanceled(client_id=E, filled_qty=Decimal("0.01")), "e",
        rec(state="entering", filled_qty=Decimal("0.01"), working=[E]), "entering", {}),
    "OrderCanceled/e/entering and working": (OrderExpired(client_id=E), "e", ENTERING, "entering", {}),
    "OrderCanceled/s/its_stop": (OrderCanceled(client_id=S), "s", PROTECTED, "protected", {}),
    "OrderCanceled/t/its_tp": (OrderCanceled(client_id=T), "t", WITH_TP, "protected", {}),
    "OrderCanceled/x/its_close and exiting": (OrderCanceled(client_id=X), "x", EXITING, "exiting", {}),
    "OrderCanceled/*/working": (OrderCanceled(client_id=E), "e", rec(state="protected", working=[E]),
                                "protected", {}),
    "OrderCanceled/*/": (OrderCanceled(client_id=E), "e", PROTECTED, "protected", {}),
}


def test_the_documented_routing_table_is_the_code_table() -> None:
    match = BLOCK.search(DOC.read_text())
    assert match, f"{DOC} has lost its routing-table markers"
    assert match.group(2).strip() == table_markdown().strip(), "run: python -m tests.unit.core.test_routing"


def test_every_row_has_an_example_and_no_example_is_stale() -> None:
    keys = [key(r) for r in TABLE]
    assert len(set(keys)) == len(keys), "two rows with one key: tell them apart"
    assert set(keys) == set(EXAMPLES)


@pytest.mark.parametrize("i", range(len(TABLE)), ids=[key(r) for r in TABLE])
def test_each_row_answers_its_own_event(i: int) -> None:
    rule = TABLE[i]
    event, role, record, state, extra = EXAMPLES[key(rule)]
    rt = route(event, role, Facts(event.client_id, record, state, reported_qty=getattr(event, "filled_qty", 0),
                                  **extra), bar=42)
    assert (rt.rule, rt.action) == (i, rule.then)
    if rule.then in ACTIONS:
        assert rt.data == {}
    elif isinstance(event, OrderFilled):
        assert rt.data["fill"] is event and rt.data["detail"] == {"fill": event.client_id, "qty": "0.01",
                                                                  "price": "100"}
    else:
        assert rt.data["status"] == rt.status and rt.status[0] == event.client_id


def test_the_arguments_the_triggers_are_fired_with() -> None:
    rt = route(OrderAccepted(client_id=S), "s", Facts(S, ENTERING, "entering"), bar=42)
    assert rt.data == {"client_id": S, "bar": 42, "status": (S, "acked", "")}
    rt = route(OrderRejected(client_id=E, code=80001, reason="no"), "e", Facts(E, ENTERING, "entering"))
    assert rt.data == {"reason": "80001 no", "status": (E, "failed", "80001 no")}
    rt = route(OrderExpired(client_id=E), "e", Facts(E, ENTERING, "entering"))
    assert rt.data == {"reason": "canceled", "status": (E, "gone", "")}
    rt = route(OrderCanceled(client_id=X, reason="by hand"), "x", Facts(X, EXITING, "exiting"))
    assert (rt.action, rt.data) == ("close_rejected", {"reason": "by hand", "status": (X, "gone", "by hand")})
    rt = route(OrderRejected(client_id=X, code=1, reason="none"), "x",
               Facts(X, EXITING, "exiting", position_gone=True))
    assert rt.data["reason"] == "close refused (1 none); no position on the exchange"
    rt = route(OrderCanceled(client_id=S), "s", Facts(S, PROTECTED, "protected"))
    assert rt.data == {"client_id": S, "status": (S, "gone", "")}


def test_a_fill_of_a_role_outside_the_position_is_stray() -> None:
    cid = "sma-ab1cd-3-c1"
    assert route(fill(cid), "c", Facts(cid, PROTECTED, "protected")).action == "stray"


if __name__ == "__main__":
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + table_markdown().strip() + "\n" + m.group(3), DOC.read_text()))
