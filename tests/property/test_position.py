"""Property (hypothesis) of the position state machine: random trigger sequences never leave a filled
position without a stop or an exit."""

from __future__ import annotations

from hypothesis import given, settings
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
@given(st.lists(_events, max_size=30), st.booleans())
def test_random_trigger_sequences_never_leave_a_filled_position_without_a_stop_or_an_exit(
        triggers: list[str], attached: bool) -> None:
    """Property: a refused trigger changes nothing, and whenever the position is `protected` some stop
    is live or on its way."""
    pos = Position("a", "BTC-USDT", Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"), attached_stop=attached),
                   record_for("flat"))
    for trigger in triggers:
        before = (pos.state, pos.rec.seq)
        row = Row(pos.state, trigger, pos.state, "")
        kw = kwargs_for(row, pos.state)
        if "client_id" in kw and trigger != "order_gone":
            kw["client_id"] = pos.rec.pending_stop_id or pos.rec.stop_id or "a-x-s9"
        if "fill" in kw:
            f: OrderFilled = kw["fill"]
            role = {"entry_filled": "e1", "stop_filled": "s1", "close_filled": "x1"}[trigger]
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
    pos.release()
