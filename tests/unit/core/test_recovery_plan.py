"""Recovery as a plan (core.recovery): every row of core.recovery.RESOLUTIONS, the table docs/architecture.md
shows, fed as facts to the pure planners it names, the plan they return checked; the table kept equal to the
doc.

    python -m tests.unit.core.test_recovery_plan   # rewrite the doc's resolutions table from the code
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from gatebot.core import ids
from gatebot.core import recovery as r
from gatebot.core.events import (
    ZERO,
    AnyCommand,
    CancelOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    StopSpec,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
)
from gatebot.core.exchange import OrderState
from gatebot.core.position import PositionRecord

DOC = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- recovery-resolutions:begin -->\n)(.*?)(<!-- recovery-resolutions:end -->)", re.DOTALL)
EPOCH, SYMBOL = "ab1cd", "BTC-USDT"
WHO = r.Owner("og", EPOCH, SYMBOL)
RESOLUTIONS = r.RESOLUTIONS
Q, PRICE, STOP_PRICE = Decimal("0.02"), Decimal("100"), Decimal("99")


def cid(seq: int, role: str, *, epoch: str = EPOCH, name: str = "og") -> str:
    return ids.make(name, epoch, seq, role, 1)


E, S, X, T = cid(3, "e"), cid(3, "s"), cid(3, "x"), cid(3, "t")
OLD_STOP = cid(2, "s", epoch="old01")
ENTRY = SubmitEntry(client_id=E, symbol=SYMBOL, side="long", qty=Q)
STOP = SubmitStop(client_id=S, symbol=SYMBOL, side="long", qty=Q, stop_price=STOP_PRICE)
CLOSE = SubmitClose(client_id=X, symbol=SYMBOL, side="long", qty=Q)
TP = SubmitTakeProfit(client_id=T, symbol=SYMBOL, side="long", qty=Q, stop_price=Decimal("103"))


class Intent(NamedTuple):
    command: AnyCommand
    status: str


def rec(state: str, **kw: Any) -> PositionRecord:
    return PositionRecord(state=state, seq=3, symbol=SYMBOL, **{"side": "long", **kw})


def order(client_id: str, role: str, status: str = "new", *, side: str = "long", filled: Decimal = ZERO) -> OrderState:
    return OrderState(client_id=client_id, order_id=77, symbol=SYMBOL, role=role, side=side,  # type: ignore[arg-type]
                      status=status, qty=Q, filled_qty=filled, stop_price=STOP_PRICE)  # type: ignore[arg-type]


def fill(client_id: str) -> OrderFilled:
    return OrderFilled(client_id=client_id, trade_id=f"t-{client_id}", qty=Q, price=PRICE, cum_qty=Q)


LONG = r.Held("long", Q, PRICE)
PROTECTED = rec("protected", filled_qty=Q, entry_complete=True, stop_id=S, working=[S])
WITH_TP = rec("protected", filled_qty=Q, entry_complete=True, stop_id=S, tp_id=T, tp_price=Decimal("103"),
              tp_qty=Q, tp_attempt=1, working=[S, T])


def ask(record: PositionRecord, intents: Mapping[str, Intent],
        answers: Mapping[str, tuple[OrderState | None, list[OrderFilled]]]) -> tuple[r.Plan, r.Progress]:
    """The shell's loop over the questions, with the exchange's answers given."""
    plan: r.Plan = ()
    progress = r.Progress(entry_filled=record.filled_qty > 0)
    for q in r.questions(record, intents):
        got, progress = r.answer(q, record, E, progress, *answers[q.client_id])
        plan += got
    return plan, progress


def last_step(state: str, record: PositionRecord, facts: r.ExchangeFacts) -> r.Plan:
    return r.final_plan(r.decide(state, record, facts), record)


def entry_lost() -> r.Plan:
    record = rec("entering", entry_qty=Q, working=[E])
    plan, progress = ask(record, {E: Intent(ENTRY, "pending")}, {E: (None, [])})
    return plan + last_step("entering", record, r.ExchangeFacts(entry_seen=progress.entry_seen,
                                                                 exchange_qty=ZERO))


def stop_resent() -> r.Plan:
    record = rec("entering", filled_qty=Q, entry_complete=True, pending_stop_id=S, working=[S])
    plan, progress = ask(record, {E: Intent(ENTRY, "acked"), S: Intent(STOP, "pending")}, {S: (None, [])})
    return plan + r.resend_plan(progress.resend, record)


ATTACHED = SubmitEntry(client_id=E, symbol=SYMBOL, side="long", qty=Q, stop=StopSpec(client_id=S, price=STOP_PRICE))
ADOPTED = {"side": "long", "qty": Q, "entry_price": PRICE, "bar": 7}


class Case(NamedTuple):
    plan: Callable[[], r.Plan]
    expected: tuple[Any, ...]
    """The plan, with each Note and Halt as ``"note"`` / ``("halt", adoption)`` (their text: ``says``)."""
    says: str = ""


EXAMPLES: dict[str, Case] = {
    "behind": Case(lambda: r.probe_plan(r.next_entry_id(WHO, PROTECTED), True), (r.NotOurs(cid(4, "e")),)),
    "never-sent": Case(lambda: r.owners_plan(WHO, [order(S, "stop"), order(cid(5, "s"), "stop")], working=[S],
                                             known=frozenset(), allow_other_epochs=False),
                       (r.NotOurs(cid(5, "s")),)),
    "other-epoch": Case(lambda: r.owners_plan(WHO, [order(OLD_STOP, "stop")], working=[], known=frozenset(),
                                              allow_other_epochs=False), (r.NotOurs(OLD_STOP),)),
    "other-instance": Case(lambda: r.owners_plan(WHO, [order(cid(1, "s", name="btc"), "stop")], working=[],
                                                 known=frozenset(), allow_other_epochs=False),
                           (("halt", False),), "another gatebot instance (btc)"),
    "fresh-refused": Case(lambda: r.fresh_plan(WHO, [order(OLD_STOP, "stop")], [LONG], journal="og.sqlite",
                                               may_adopt=False, bar=7),
                          (("halt", True),), "gatebot run --adopt"),
    "fresh-adopt": Case(lambda: r.fresh_plan(WHO, [order(OLD_STOP, "stop"), order("by-hand", "stop")], [LONG],
                                             journal="og.sqlite", may_adopt=True, bar=7),
                        ("note", r.Fire("adopt", {**ADOPTED, "orders": [OLD_STOP], "stop": (OLD_STOP, STOP_PRICE),
                                                  "detail": {"policy": "--adopt", "orders": [OLD_STOP]}},
                                        drain=True)),
                        f"adopting a long position of {Q}, order {OLD_STOP} (--adopt)"),
    "fresh-adopt-flat": Case(lambda: r.fresh_plan(WHO, [order(OLD_STOP, "stop")], [], journal="og.sqlite",
                                                  may_adopt=True, bar=7),
                             ("note", "note", r.Cancel(OLD_STOP, journaled=True)), "on a flat account"),
    "fresh-two-sides": Case(lambda: r.fresh_plan(WHO, [], [LONG, r.Held("short", Q, PRICE)], journal="og.sqlite",
                                                 may_adopt=True, bar=7),
                            (("halt", False),), "both a long and a short"),
    "flat": Case(lambda: r.flat_plan(WHO, []) + r.foreign_plan(WHO, [], policy="halt", bar=7), ()),
    "flat-orders": Case(lambda: r.flat_plan(WHO, [order(cid(2, "s"), "stop"), order("by-hand", "stop")]),
                        ("note", r.Cancel(cid(2, "s"), journaled=True)), "canceling it (flat)"),
    "foreign-halt": Case(lambda: r.foreign_plan(WHO, [LONG], policy="halt", bar=7), ("note", ("halt", False)),
                         "on_foreign_position = 'halt'"),
    "foreign-adopt": Case(lambda: r.foreign_plan(WHO, [LONG], policy="adopt", bar=7),
                          ("note", r.Fire("adopt", {**ADOPTED, "detail": {"policy": "adopt"}}, drain=True)),
                          "did not open (policy adopt)"),
    "foreign-flatten": Case(lambda: r.foreign_plan(WHO, [LONG], policy="flatten", bar=7),
                            ("note", r.Fire("adopt", {**ADOPTED, "detail": {"policy": "flatten"}}, drain=True),
                             r.Fire("exit_signal", {"reason": "flatten"}, drain=True, only_in="protected"))),
    "entry-lost": Case(entry_lost, (r.Fire("entry_lost", {"reason": "the exchange never saw the entry"}),)),
    "stop-live": Case(lambda: ask(rec("entering", entry_qty=Q, pending_stop_id=S, working=[E, S]),
                                  {E: Intent(ENTRY, "pending"), S: Intent(STOP, "pending")},
                                  {E: (order(E, "entry", "filled", filled=Q), [fill(E)]),
                                   S: (order(S, "stop"), [])})[0],
                      (r.Post(fill(E)), r.Post(OrderAccepted(client_id=S, order_id=77)))),
    "stop-resent": Case(stop_resent, ("note", r.Send(STOP), r.DRAIN), "never reached the exchange"),
    "attached-stop-missing": Case(
        lambda: ask(rec("entering", filled_qty=Q, entry_complete=True, pending_stop_id=S, working=[S]),
                    {E: Intent(ATTACHED, "acked")}, {S: (None, [])})[0],
        (r.Post(OrderCanceled(client_id=S, reason="attached stop missing (found by recovery)")),)),
    "tp-live": Case(lambda: ask(WITH_TP, {S: Intent(STOP, "acked"), T: Intent(TP, "pending")},
                                {S: (order(S, "stop"), []), T: (order(T, "take_profit"), [])})[0],
                    (r.Post(OrderAccepted(client_id=T, order_id=77)),)),
    "tp-resent": Case(lambda: r.resend_plan(ask(WITH_TP, {S: Intent(STOP, "acked"), T: Intent(TP, "pending")},
                                                {S: (order(S, "stop"), []), T: (None, [])})[1].resend, WITH_TP),
                      ("note", r.Send(TP), r.DRAIN), "never reached the exchange"),
    "tp-filled": Case(lambda: ask(WITH_TP, {S: Intent(STOP, "acked"), T: Intent(TP, "acked")},
                                  {S: (order(S, "stop"), []), T: (order(T, "take_profit", "filled", filled=Q),
                                                                  [fill(T)])})[0],
                      (r.Post(fill(T)),)),
    "order-ended": Case(
        lambda: ask(rec("exiting", filled_qty=Q, stop_id=S, close_id=X, canceling=[S], working=[S, X, E]),
                    {E: Intent(ENTRY, "acked"), S: Intent(CancelOrder(client_id=S, symbol=SYMBOL), "pending"),
                     X: Intent(CLOSE, "pending")},
                    {E: (order(E, "entry", "expired", filled=Q), []), S: (order(S, "stop", "canceled"), []),
                     X: (order(X, "close", "rejected"), [])})[0],
        (r.Post(OrderExpired(client_id=E, filled_qty=Q, reason="found by recovery")),
         r.Post(OrderCanceled(client_id=S, reason="found by recovery")),
         r.Post(OrderRejected(client_id=X, reason="rejected (found by recovery)")))),
    "stop-filled": Case(lambda: ask(PROTECTED, {S: Intent(STOP, "acked")},
                                    {S: (order(S, "stop", "filled", filled=Q), [fill(S)])})[0],
                        (r.Post(fill(S)),)),
    "position-gone": Case(lambda: last_step("protected", PROTECTED,
                                            r.ExchangeFacts(exchange_qty=ZERO, missed_booked=True)),
                          (r.Fire("position_gone", {"reason": "no position on the exchange"}), r.DRAIN)),
    "stop-missing": Case(lambda: last_step("protected", rec("protected", filled_qty=Q),
                                           r.ExchangeFacts(exchange_qty=Q)),
                         (r.Fire("stop_canceled", {"client_id": "", "reason": "stop missing"}), r.DRAIN)),
    "qty-differs": Case(lambda: last_step("protected", PROTECTED, r.ExchangeFacts(exchange_qty=Decimal("0.03"))),
                        ("note", r.Fire("stop_resize", {"qty": Decimal("0.03"), "detail": {
                            "journal_qty": "0.02", "exchange_qty": "0.03"}}), r.DRAIN),
                        "exchange position 0.03 differs from the journal's 0.02"),
    "close-filled": Case(lambda: ask(rec("exiting", filled_qty=Q, stop_id=S, close_id=X, working=[S, X]),
                                     {S: Intent(STOP, "acked"), X: Intent(CLOSE, "pending")},
                                     {S: (order(S, "stop"), []),
                                      X: (order(X, "close", "filled", filled=Q), [fill(X)])})[0],
                         (r.Post(fill(X)),)),
    "close-lost": Case(lambda: last_step("exiting", rec("exiting", filled_qty=Q, stop_id=S, close_id=X, working=[S]),
                                         r.ExchangeFacts(exchange_qty=Q)),
                       (r.Fire("close_rejected", {"reason": "close lost"}), r.DRAIN)),
    "cancel-resent": Case(lambda: r.canceling_plan(S, order(S, "stop")), (r.Cancel(S),)),
    "cancel-done": Case(lambda: r.canceling_plan(S, order(S, "stop", "canceled")) + r.canceling_plan(X, None),
                        (r.Post(OrderCanceled(client_id=S, reason="already gone (found by recovery)")),
                         r.Post(OrderCanceled(client_id=X, reason="already gone (found by recovery)")))),
    "settle": Case(lambda: last_step("exited_exit", rec("exited_exit", filled_qty=Q, closed_qty=Q), r.ExchangeFacts()),
                   (r.Settle(),)),
}


def shape(plan: r.Plan) -> tuple[Any, ...]:
    return tuple("note" if isinstance(a, r.Note) else ("halt", a.adoption) if isinstance(a, r.Halt) else a
                 for a in plan)


def test_the_documented_resolutions_are_the_code_table() -> None:
    match = BLOCK.search(DOC.read_text())
    assert match, f"{DOC} has lost its recovery-resolutions markers"
    assert match.group(2).strip() == r.resolutions_markdown().strip(), \
        "run: python -m tests.unit.core.test_recovery_plan"


def test_every_row_has_an_example_naming_real_planners_and_no_example_is_stale() -> None:
    cases = [row.case for row in RESOLUTIONS]
    assert len(set(cases)) == len(cases)
    assert set(cases) == set(EXAMPLES)
    assert all(callable(getattr(r, f, None)) for row in RESOLUTIONS for f in row.by)


@pytest.mark.parametrize("row", RESOLUTIONS, ids=[row.case for row in RESOLUTIONS])
def test_each_row_plans_what_it_says(row: r.Resolution) -> None:
    case = EXAMPLES[row.case]
    plan = case.plan()
    assert shape(plan) == case.expected
    text = " / ".join(a.message for a in plan if isinstance(a, r.Note | r.Halt))
    assert case.says in text


def test_what_is_this_journals_or_no_ones_is_left_alone() -> None:
    orders = [order(S, "stop"), order(cid(2, "x"), "close"), order("by-hand", "stop"),
              order(cid(1, "s", name="sib"), "stop"), order(OLD_STOP, "stop")]
    who = WHO._replace(siblings=frozenset({"sib"}))
    kw: dict[str, Any] = {"working": [S], "known": frozenset({cid(2, "x")})}
    assert r.owners_plan(who, orders, allow_other_epochs=True, **kw) == ()  # a fresh journal: fresh_plan decides
    assert r.owners_plan(who, orders, allow_other_epochs=False, **kw) == (r.NotOurs(OLD_STOP),)
    assert r.probe_plan(cid(4, "e"), False) == ()
    assert r.fresh_plan(WHO, [order("by-hand", "stop")], [], journal="og.sqlite", may_adopt=False, bar=0) == ()


def test_an_order_asked_about_is_one_that_matters() -> None:
    record = rec("exiting", filled_qty=Q, stop_id=S, close_id=X, working=[S])
    x2 = ids.make("og", EPOCH, 3, "x", 2)
    intents = {E: Intent(ATTACHED, "acked"), X: Intent(CLOSE, "acked"), x2: Intent(CLOSE, "unknown")}
    asked = [q.client_id for q in r.questions(record, intents)]
    assert asked == [S, X, x2]  # the attached stop that works, the close, an unknown outcome (not the entry: done)


def test_a_resend_is_dropped_once_the_answers_applied_end_its_order() -> None:
    assert r.resend_plan([STOP], rec("protected", filled_qty=Q)) == (r.DRAIN,)


def test_an_attached_stop_the_exchange_does_not_know_is_missing_only_once_its_entry_filled() -> None:
    record = rec("entering", entry_qty=Q, pending_stop_id=S, working=[E, S])
    plan, progress = ask(record, {E: Intent(ATTACHED, "pending")}, {E: (order(E, "entry"), []), S: (None, [])})
    assert plan == () and progress == r.Progress()  # the entry still works: its own events decide


if __name__ == "__main__":
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + r.resolutions_markdown().strip() + "\n" + m.group(3),
                             DOC.read_text()))
