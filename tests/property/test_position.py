"""Property (hypothesis) of the position state machine: random trigger sequences never leave a filled
position without a stop or an exit."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gatebot.core.events import OrderFilled
from gatebot.core.position import (
    STATES,
    TRIGGERS,
    InvalidTransition,
    Position,
    Protection,
    Row,
)
from tests.unit.core.test_position import INSTRUMENT, D, kwargs_for, record_for

_events = st.sampled_from(TRIGGERS)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, max_size=30), st.booleans(), st.booleans())
@example(["enter", "entry_filled", "stop_confirmed", "stop_filled"], False, True)  # the stop wins: the TP is canceled
def test_random_trigger_sequences_never_leave_a_filled_position_without_a_stop_or_an_exit(
        triggers: list[str], attached: bool, take_profit: bool) -> None:
    """Property: a refused trigger changes nothing, whenever the position is `protected` some stop is live or on
    its way, and a take-profit still working never covers more than the open quantity."""
    protection = Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"), attached_stop=attached,
                            price_tp_pct=D("0.01") if take_profit else None)
    pos = Position("a", "BTC-USDT", protection, record_for("flat"))
    for trigger in triggers:
        before = (pos.state, pos.rec.seq)
        row = Row(pos.state, trigger, pos.state, "")
        kw = kwargs_for(row, pos.state)
        if "client_id" in kw and trigger != "order_gone":
            kw["client_id"] = pos.rec.pending_stop_id or pos.rec.stop_id or "a-x-s9"
        if "fill" in kw:
            f: OrderFilled = kw["fill"]
            role = {"entry_filled": "e1", "stop_filled": "s1", "close_filled": "x1", "tp_filled": "t1"}[trigger]
            kw["fill"] = OrderFilled(client_id=f"a-{pos.rec.seq}-{role}", trade_id=f"{len(triggers)}",
                                     qty=f.qty, price=f.price, cum_qty=f.cum_qty, final=True)
        try:
            pos.fire(trigger, **kw)
        except InvalidTransition:
            assert (pos.state, pos.rec.seq) == before
            continue
        assert pos.state in STATES
        if pos.state == "protected":
            assert pos.rec.stop_id or pos.rec.pending_stop_id
        if pos.rec.tp_id is not None:  # a take-profit only where configured, never covering more than is held
            assert take_profit  # (unless it is being canceled: the position ended by another order)
            assert pos.rec.tp_qty <= pos.rec.open_qty or pos.rec.tp_id in pos.rec.canceling
    pos.release()
