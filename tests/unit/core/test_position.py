"""The position state machine: every row of the table, every pair outside it, and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gatebot.core.events import CancelOrder, OrderFilled, SubmitClose, SubmitEntry, SubmitStop
from gatebot.core.instrument import Instrument
from gatebot.core.position import (
    STATES,
    TABLE,
    TRIGGERS,
    InvalidTransition,
    Position,
    PositionRecord,
    Protection,
    Row,
)

D = Decimal
INSTRUMENT = Instrument(symbol="BTC-USDT", tick=D("0.1"), step=D("0.0001"), min_qty=D("0.0001"), min_notional=D("2"))
PROT = Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"))


def fill(cid: str, qty: str = "0.01", price: str = "60000", *, final: bool = True, pnl: str = "0") -> OrderFilled:
    return OrderFilled(client_id=cid, trade_id=f"t-{cid}-{qty}", qty=D(qty), price=D(price), cum_qty=D(qty),
                       final=final, fee=D("0.3"), realized_pnl=D(pnl))


def record_for(state: str, *, live_stop: bool = True, manual: bool = False, complete: bool = True) -> PositionRecord:
    """A plausible record for a position in ``state`` (seq 1, long 0.01 @ 60000)."""
    if state == "flat":
        return PositionRecord(seq=1, symbol="BTC-USDT")
    rec = PositionRecord(state=state, seq=1, symbol="BTC-USDT", side="long", entry_qty=D("0.01"),
                         filled_qty=D("0.01") if complete or state != "entering" else D("0"),
                         entry_cost=D("600") if complete or state != "entering" else D("0"),
                         entry_complete=complete, working=[], opened_at=1)
    if state == "entering" and not complete:
        rec.working = ["a-1-e1"]
    if state == "entering" and complete:
        rec.pending_stop_id, rec.pending_stop_price, rec.stop_attempt = "a-1-s1", D("59400"), 1
        rec.working = ["a-1-s1"]
    if state in ("protected", "exiting"):
        rec.stop_attempt = 1
        if live_stop:
            rec.stop_id, rec.stop_price = "a-1-s1", D("59400")
            rec.working.append("a-1-s1")
    if state == "exiting":
        rec.close_id, rec.close_attempt, rec.exit_reason = "a-1-x1", 1, "manual" if manual else "signal"
        rec.working.append("a-1-x1")
    if state.startswith("exited"):
        rec.closed_qty = rec.filled_qty
    return rec


def with_tp(rec: PositionRecord, *, live: bool = False) -> PositionRecord:
    """The record's position with its take-profit placed (and accepted when ``live``)."""
    rec.tp_id, rec.tp_price, rec.tp_qty, rec.tp_attempt, rec.tp_live = "a-1-t1", D("60600"), rec.open_qty, 1, live
    rec.working.append("a-1-t1")
    return rec


def make(state: str, **kw: bool) -> Position:
    return Position("a", "BTC-USDT", PROT, record_for(state, **kw))


def kwargs_for(row: Row, state: str) -> dict:
    final = "closes_position" in row.when or "closes_position" not in row.unless
    t = row.trigger
    if t == "enter":
        return {"side": "long", "qty": D("0.01"), "ref_price": D("60000"), "bar": 5}
    if t == "adopt":
        return {"side": "short", "qty": D("0.02"), "entry_price": D("61000")}
    if t == "entry_filled":
        return {"fill": fill("a-1-e1", final=final)}
    if t == "stop_filled":
        return {"fill": fill("a-1-s1", "0.01" if final else "0.004", final=final, price="59400", pnl="-6")}
    if t == "close_filled":
        return {"fill": fill("a-1-x1", "0.01" if final else "0.004", final=final, price="60100", pnl="1")}
    if t == "tp_filled":
        return {"fill": fill("a-1-t1", "0.01" if final else "0.004", final=final, price="60600", pnl="6")}
    if t in ("tp_confirmed", "tp_canceled", "tp_rejected"):
        return {"client_id": "a-1-t1", "reason": "test"}
    if t in ("stop_confirmed", "stop_canceled"):
        return {"client_id": "a-1-s1"}
    if t == "order_gone":
        return {"client_id": "a-1-s1"}
    if t == "move_stop":
        return {"price": D("59700")}
    if t == "stop_resize":
        return {"qty": D("0.005")}
    return {"reason": "test"}


def cases() -> list[tuple[Row, str]]:
    out = []
    for row in TABLE:
        for src in (row.source,) if isinstance(row.source, str) else row.source:
            out.append((row, src))
    return out


@pytest.mark.parametrize(("row", "src"), cases(), ids=lambda x: x if isinstance(x, str) else x.trigger)
def test_every_row_of_the_table(row: Row, src: str) -> None:
    pos = make(src, live_stop="has_live_stop" in row.when or "has_live_stop" not in row.unless,
               manual="manual" in row.when,
               complete=("entry_complete" in row.when or "entry_complete" not in row.unless)
               and "has_fill" not in row.unless)
    kwargs = kwargs_for(row, src)
    if src == "entering" and ({"protects_entry", "has_live_stop"} & set(row.when)):
        r = pos.rec  # an attached stop confirmed before the entry completed
        r.stop_id, r.stop_price, r.stop_attempt, r.working = "a-1-s1", D("59400"), 1, ["a-1-e1", "a-1-s1"]
        r.pending_stop_id = r.pending_stop_price = None
    if "confirms_our_stop" in row.when:
        r = pos.rec
        if r.pending_stop_id is None:  # a replacement stop on its way
            r.stop_attempt += 1
            r.pending_stop_id, r.pending_stop_price = f"a-1-s{r.stop_attempt}", D("59500")
            r.working.append(r.pending_stop_id)
        kwargs["client_id"] = r.pending_stop_id
    if row.trigger.startswith("tp_"):
        with_tp(pos.rec)
    pos.fire(row.trigger, **kwargs)
    assert pos.state == (src if row.dest == "=" else row.dest)
    assert pos.rec.state == pos.state
    pos.release()


def test_every_pair_outside_the_table_is_rejected_and_state_is_kept() -> None:
    allowed = {(s, r.trigger) for r in TABLE for s in ((r.source,) if isinstance(r.source, str) else r.source)}
    rejected = 0
    for state in STATES:
        for trigger in TRIGGERS:
            if (state, trigger) in allowed:
                continue
            pos = make(state)
            with pytest.raises(InvalidTransition) as info:
                pos.fire(trigger, **kwargs_for(Row(state, trigger, state, ""), state))
            assert info.value.state == state and info.value.trigger == trigger
            assert pos.state == state
            rejected += 1
            pos.release()
    assert rejected > 50  # the table is sparse: most pairs are refused


def test_unknown_trigger_is_rejected() -> None:
    pos = make("flat")
    with pytest.raises(InvalidTransition):
        pos.fire("launch_rockets")


def test_full_lifecycle_commands() -> None:
    pos = make("flat")
    cmds = pos.fire("enter", side="long", qty=D("0.01"), ref_price=D("60000"), bar=7)
    assert cmds == [SubmitEntry(client_id="a-2-e1", symbol="BTC-USDT", side="long", qty=D("0.01"))]
    assert pos.rec.seq == 2
    cmds = pos.fire("entry_filled", fill=fill("a-2-e1", price="60000.05"))
    # 60000.05 * 0.99 = 59400.0495 -> rounded toward the entry (up) to the 0.1 tick
    assert cmds == [SubmitStop(client_id="a-2-s1", symbol="BTC-USDT", side="long", qty=D("0.01"),
                               stop_price=D("59400.1"))]
    assert pos.fire("stop_confirmed", client_id="a-2-s1") == []
    assert pos.state == "protected" and pos.rec.stop_id == "a-2-s1"
    cmds = pos.fire("exit_signal", reason="cross")
    assert cmds == [SubmitClose(client_id="a-2-x1", symbol="BTC-USDT", side="long", qty=D("0.01"))]
    cmds = pos.fire("close_filled", fill=fill("a-2-x1", price="60100", pnl="0.9995"))
    assert cmds == [CancelOrder(client_id="a-2-s1", symbol="BTC-USDT")]
    assert pos.state == "exited_exit"
    pos.fire("order_gone", client_id="a-2-s1")
    assert pos.rec.working == []
    pos.fire("settled")
    assert pos.state == "flat" and pos.rec.seq == 2 and pos.rec.side is None
    pos.release()


def test_short_stop_rounds_toward_the_entry() -> None:
    pos = make("flat")
    pos.fire("enter", side="short", qty=D("0.01"), ref_price=D("60000"))
    (stop,) = pos.fire("entry_filled", fill=fill("a-2-e1", price="60000.05"))
    assert isinstance(stop, SubmitStop) and stop.stop_price == D("60600.0")  # 60600.0505 rounded down
    pos.release()


def test_attached_stop_replaced_when_the_fill_moves_it() -> None:
    pos = Position("a", "BTC-USDT", Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"), attached_stop=True),
                   record_for("flat"))
    (entry,) = pos.fire("enter", side="long", qty=D("0.01"), ref_price=D("60000"))
    assert isinstance(entry, SubmitEntry) and entry.stop is not None and entry.stop.price == D("59400")
    # a fill 0.5% worse moves the stop by more than the tolerance: a new stop first...
    (new,) = pos.fire("entry_filled", fill=fill("a-2-e1", price="60300"))
    assert isinstance(new, SubmitStop) and new.client_id == "a-2-s2" and new.stop_price == D("59697")
    assert pos.fire("stop_confirmed", client_id="a-2-s1") == []  # the attached one went live: protected
    assert pos.state == "protected"
    # ...and the old one is canceled only once the new one is live
    assert pos.fire("stop_confirmed", client_id="a-2-s2") == [CancelOrder(client_id="a-2-s1", symbol="BTC-USDT")]
    assert pos.rec.stop_id == "a-2-s2"
    pos.release()


@pytest.mark.parametrize(("side", "fill_price", "kept"), [
    ("long", "59999", True),  # wanted 59399.1: the attached 59400 is 0.9 tighter, within the tolerance
    ("long", "60001", False),  # wanted 59401.0: the attached 59400 would lose 1.0 more than configured
    ("short", "60001", True),  # wanted 60601.0: the attached 60600 is tighter
    ("short", "59999", False),  # wanted 60598.9: the attached 60600 is wider
])
def test_attached_stop_kept_only_when_it_risks_no_more_than_the_fill_s_stop(side: str, fill_price: str,
                                                                             kept: bool) -> None:
    pos = Position("a", "BTC-USDT", Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"), attached_stop=True),
                   record_for("flat"))
    pos.fire("enter", side=side, qty=D("0.01"), ref_price=D("60000"))
    cmds = pos.fire("entry_filled", fill=fill("a-2-e1", price=fill_price))
    if kept:
        assert cmds == []
        pos.fire("stop_confirmed", client_id="a-2-s1")
        assert pos.state == "protected" and pos.rec.stop_id == "a-2-s1"
    else:
        (new,) = cmds
        wanted = INSTRUMENT.stop_price(side, D(fill_price), D("0.01"))  # type: ignore[arg-type]
        assert isinstance(new, SubmitStop) and new.client_id == "a-2-s2" and new.stop_price == wanted
    pos.release()


def test_stop_canceled_by_someone_else_is_replaced_with_a_new_id() -> None:
    pos = make("protected")
    (cmd,) = pos.fire("stop_canceled", client_id="a-1-s1")
    assert isinstance(cmd, SubmitStop) and cmd.client_id == "a-1-s2" and cmd.stop_price == D("59400")
    pos.release()


def test_stop_filled_while_exiting_cancels_the_close() -> None:
    pos = make("exiting")
    cmds = pos.fire("stop_filled", fill=fill("a-1-s1", price="59400", pnl="-6"))
    assert pos.state == "exited_sl" and cmds == [CancelOrder(client_id="a-1-x1", symbol="BTC-USDT")]
    pos.release()


def test_close_rejected_without_a_stop_keeps_closing() -> None:
    pos = make("exiting", live_stop=False)
    (cmd,) = pos.fire("close_rejected", reason="busy")
    assert pos.state == "exiting" and isinstance(cmd, SubmitClose) and cmd.client_id == "a-1-x2"
    pos.release()


def test_record_round_trips_through_json() -> None:
    import msgspec

    rec = record_for("exiting")
    assert msgspec.json.decode(msgspec.json.encode(rec), type=PositionRecord) == rec


# --- regressions the chaos suite found (tests/chaos/driver.py), each reduced to its core ---------------------


def _fill(trade: str, qty: str, cum: str, *, final: bool) -> OrderFilled:
    return OrderFilled(client_id="a-1-e1", trade_id=trade, qty=D(qty), price=D("60000"), cum_qty=D(cum), final=final)


def test_a_final_entry_fill_that_arrives_before_the_partial_ones_does_not_size_the_stop_to_a_part() -> None:
    """Chaos run, cycle 15: an entry filled in four trades; the last (``final``, 0.0001) reached the bot
    first (reordered pushes), the stop was placed for 0.0001 and never resized: a 0.3337 position guarded
    by a 0.0001 stop (I1). The entry is complete only once every fill up to the final one is booked."""
    pos = Position("a", "BTC-USDT", PROT)
    pos.fire("enter", side="long", qty=D("0.3337"), ref_price=D("60000"), bar=1)
    assert pos.fire("entry_filled", fill=_fill("4", "0.0001", "0.3337", final=True)) == []
    assert not pos.rec.entry_complete
    assert pos.fire("entry_filled", fill=_fill("1", "0.1112", "0.1112", final=False)) == []
    assert pos.fire("entry_filled", fill=_fill("2", "0.1112", "0.2224", final=False)) == []
    (stop,) = pos.fire("entry_filled", fill=_fill("3", "0.1112", "0.3336", final=False))
    assert isinstance(stop, SubmitStop) and stop.qty == D("0.3337")
    assert pos.rec.entry_complete


def test_fills_in_order_still_protect_at_the_final_one() -> None:
    pos = Position("a", "BTC-USDT", PROT)
    pos.fire("enter", side="long", qty=D("0.3"), ref_price=D("60000"), bar=1)
    assert pos.fire("entry_filled", fill=_fill("1", "0.1", "0.1", final=False)) == []
    (stop,) = pos.fire("entry_filled", fill=_fill("2", "0.15", "0.25", final=True))  # the exchange ended it at 0.25
    assert isinstance(stop, SubmitStop) and stop.qty == D("0.25")


def test_an_attached_stop_confirmed_before_the_entry_fill_leaves_the_position_protected() -> None:
    """Chaos run with attached stops: BingX reported the attached stop live before the entry's fill; the
    fill completed the entry but nothing moved it on from ``entering`` (a stop confirmation was the only
    way to ``protected``), so the bot neither managed the position nor resized the stop after a partial
    close by hand (I4), and the protection timeout would have closed a guarded position at market."""
    attached = Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"), attached_stop=True)
    pos = Position("a", "BTC-USDT", attached)
    (entry,) = pos.fire("enter", side="long", qty=D("0.3"), ref_price=D("60000"), bar=1)
    assert entry.stop is not None
    assert pos.fire("stop_confirmed", client_id=entry.stop.client_id) == []
    assert pos.state == "entering"
    assert pos.fire("entry_filled", fill=_fill("1", "0.1", "0.1", final=False)) == []
    assert pos.state == "entering"
    assert pos.fire("entry_filled", fill=_fill("2", "0.2", "0.3", final=True)) == []
    assert pos.state == "protected" and pos.rec.stop_id == entry.stop.client_id


def _protected(qty: str) -> Position:
    pos = Position("a", "BTC-USDT", PROT)
    pos.fire("enter", side="long", qty=D(qty), ref_price=D("60000"), bar=1)
    pos.fire("entry_filled", fill=_fill("1", qty, qty, final=True))
    pos.fire("stop_confirmed", client_id="a-1-s1")
    assert pos.state == "protected"
    return pos


def _exit_fill(cid: str, trade: str, qty: str, cum: str, pnl: str, *, final: bool) -> OrderFilled:
    return OrderFilled(client_id=cid, trade_id=trade, qty=D(qty), price=D("60100"), cum_qty=D(cum), final=final,
                       realized_pnl=D(pnl), fee=D("0.1"))


def test_a_close_whose_final_part_arrives_first_ends_the_lifecycle_only_with_its_last_part() -> None:
    """Fault soak (partial fills, reordered pushes): the close filled in three parts, the final one reached
    the bot first and ended the lifecycle; the two earlier parts came after the position was settled and
    were booked as strays, so the trade's own PnL missed two thirds of its exit."""
    pos = _protected("0.3")
    pos.fire("exit_signal", reason="signal")
    assert pos.fire("close_filled", fill=_exit_fill("a-1-x1", "9", "0.1", "0.3", "10", final=True)) == []
    assert pos.state == "exiting"
    pos.fire("close_filled", fill=_exit_fill("a-1-x1", "7", "0.1", "0.1", "10", final=False))
    assert pos.state == "exiting"
    commands = pos.fire("close_filled", fill=_exit_fill("a-1-x1", "8", "0.1", "0.2", "10", final=False))
    assert pos.state == "exited_exit"
    assert pos.rec.realized_pnl == D(30)
    assert [type(c).__name__ for c in commands] == ["CancelOrder"]  # the stop, now that nothing is open


def test_a_stop_smaller_than_the_position_that_fills_in_full_is_replaced_for_the_rest() -> None:
    pos = _protected("0.3")
    pos.rec.filled_qty = D("0.5")  # the position grew outside the bot before a resize
    (stop,) = pos.fire("stop_filled", fill=_exit_fill("a-1-s1", "5", "0.3", "0.3", "-20", final=True))
    assert pos.state == "protected"
    assert isinstance(stop, SubmitStop) and stop.qty == D("0.2")
