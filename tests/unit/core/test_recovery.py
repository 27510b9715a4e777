"""The last step of a recovery round (core.recovery.TABLE, decided by core.recovery.decide): the one
docs/architecture.md shows, and every row reached by facts of its own and answering what the row says.

    python -m tests.unit.core.test_recovery     # rewrite the table in docs/architecture.md from the code
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gatebot.core.position import EXITED, STATES, PositionRecord
from gatebot.core.recovery import ACTIONS, TABLE, ExchangeFacts, Step, decide, table_markdown

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- recovery-table:begin -->\n)(.*?)(<!-- recovery-table:end -->)", re.DOTALL)
S, X = "sma-ab1cd-3-s1", "sma-ab1cd-3-x1"
Q = Decimal("0.02")


def key(step: Step) -> str:
    states = "any" if step.states == STATES else "exited" if step.states == EXITED else "+".join(step.states)
    return f"{states}/{' and '.join(step.when)}"


def rec(state: str, **kw: Any) -> PositionRecord:
    return PositionRecord(state=state, seq=3, symbol="BTC-USDT", **{"side": "long", **kw})


PROTECTED = rec("protected", filled_qty=Q, stop_id=S, working=[S])
# One case per row: (state, record, facts) -> the row that must answer.
EXAMPLES: dict[str, tuple[str, PositionRecord, ExchangeFacts]] = {
    "entering+protected+exiting/missed_booked": ("protected", PROTECTED,
                                                  ExchangeFacts(exchange_qty=Decimal(0), missed_booked=True)),
    "any/missed_booked": ("exited_sl", rec("exited_sl", filled_qty=Q, closed_qty=Q, working=[X]),
                           ExchangeFacts(exchange_qty=Decimal(0), missed_booked=True)),
    "exited/not working": ("exited_exit", rec("exited_exit", filled_qty=Q, closed_qty=Q), ExchangeFacts()),
    "exited/": ("exited_manual", rec("exited_manual", filled_qty=Q, working=[S]), ExchangeFacts()),
    "flat/": ("flat", PositionRecord(seq=3), ExchangeFacts()),
    "any/no_side": ("entering", rec("entering", side=None), ExchangeFacts()),
    "any/unasked": ("entering", rec("entering", entry_qty=Q), ExchangeFacts()),
    "entering/unfilled and entry_unseen and no_position": (
        "entering", rec("entering", entry_qty=Q), ExchangeFacts(entry_seen=False, exchange_qty=Decimal(0))),
    "entering/unfilled": ("entering", rec("entering", entry_qty=Q), ExchangeFacts(entry_seen=False, exchange_qty=Q)),
    "any/no_position": ("exiting", rec("exiting", filled_qty=Q, stop_id=S, close_id=X, working=[S, X]),
                         ExchangeFacts(exchange_qty=Decimal(0))),
    "protected/no_stop": ("protected", rec("protected", filled_qty=Q), ExchangeFacts(exchange_qty=Q)),
    "protected/qty_differs": ("protected", PROTECTED, ExchangeFacts(exchange_qty=Decimal("0.03"))),
    "protected/stop_unasked": ("protected", PROTECTED, ExchangeFacts(exchange_qty=Q)),
    "protected/stop_short": ("protected", PROTECTED, ExchangeFacts(exchange_qty=Q, stop_asked=True,
                                                           stop_live_qty=Decimal("0.01"))),
    "exiting/close_lost": ("exiting", rec("exiting", filled_qty=Q, stop_id=S, close_id=X, working=[S]),
                           ExchangeFacts(exchange_qty=Q)),
    "any/": ("protected", PROTECTED, ExchangeFacts(exchange_qty=Q, stop_asked=True, stop_live_qty=Q)),
}


def test_the_documented_recovery_table_is_the_code_table() -> None:
    match = BLOCK.search(DOC.read_text())
    assert match, f"{DOC} has lost its recovery-table markers"
    assert match.group(2).strip() == table_markdown().strip(), "run: python -m tests.unit.core.test_recovery"


def test_every_row_has_an_example_and_no_example_is_stale() -> None:
    keys = [key(s) for s in TABLE]
    assert len(set(keys)) == len(keys), "two rows with one key: tell them apart"
    assert set(keys) == set(EXAMPLES)


@pytest.mark.parametrize("i", range(len(TABLE)), ids=[key(s) for s in TABLE])
def test_each_row_answers_its_own_facts(i: int) -> None:
    state, record, facts = EXAMPLES[key(TABLE[i])]
    d = decide(state, record, facts)
    assert (d.step, d.then, d.drain) == (i, TABLE[i].then, TABLE[i].drain)
    assert (d.data == {}) == (d.then in ACTIONS)


def test_a_resize_follows_the_exchange_and_on_a_shared_symbol_never_grows() -> None:
    d = decide("protected", PROTECTED, ExchangeFacts(exchange_qty=Decimal("0.015")))
    assert d.data == {"qty": Decimal("0.015"), "detail": {"journal_qty": "0.02", "exchange_qty": "0.015"}}
    shared = ExchangeFacts(exchange_qty=Decimal("0.05"), shares_symbol=True)  # two instances' sum: bounds ours
    assert decide("protected", PROTECTED, shared).then == "ask stop"
    shared = ExchangeFacts(exchange_qty=Decimal("0.01"), shares_symbol=True)
    assert decide("protected", PROTECTED, shared).data["qty"] == Decimal("0.01")


def test_a_position_emptied_on_the_exchange_books_missed_fills_before_it_is_called_gone() -> None:
    facts = ExchangeFacts(exchange_qty=Decimal(0))
    assert decide("protected", PROTECTED, facts).then == "book missed fills"
    assert decide("protected", PROTECTED, facts._replace(missed_booked=True)).data == {
        "reason": "no position on the exchange"}


if __name__ == "__main__":
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + table_markdown().strip() + "\n" + m.group(3), DOC.read_text()))
