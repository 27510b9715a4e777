"""The exchange take-profit end to end on the engine bench (paper exchange, virtual clock): placed once the stop
is confirmed, ending the position when it fills, canceled by an exit or by the stop, left gone when canceled by
hand, resent by recovery when its outcome was unknown. Prices by hand: entry at 100, stop 1% below (99),
take-profit 1% above (101), stops and take-profits filled exactly at their price (``exact``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from gatebot.core.events import OrderAccepted, SubmitTakeProfit
from gatebot.core.exchange import OrderUnknown, Submission
from gatebot.core.position import Position
from gatebot.core.routing import STATUS, Facts, route
from gatebot.core.strategy import Enter, Exit
from gatebot.exchanges.paper.exchange import PaperExchange
from tests.bench import Bench, Killed, Killing, candle, exact, run
from tests.unit.core.test_position import PROT, fill, record_for, with_tp

D = Decimal
TP_PCT = D("0.01")


def orders(bench: Bench) -> list[tuple[str, str, Decimal]]:
    return sorted((o.client_id, o.role, o.stop_price) for o in bench.exchange.core.open_orders("BTC-USDT"))


async def protected_long(bench: Bench) -> None:
    await bench.start()
    await bench.bars(100.0, 100.0)  # the entry fills at 100 on the second candle's close
    assert bench.engine.pos.state == "protected"
    assert orders(bench) == [("t-1-s1", "stop", D("99.0")), ("t-1-t1", "take_profit", D("101.0"))]
    r = bench.engine.pos.rec
    assert (r.tp_id, r.tp_price, r.tp_qty, r.tp_live) == ("t-1-t1", D("101.0"), r.open_qty, True)


def test_a_take_profit_goes_in_after_the_stop_and_ends_the_position_when_it_fills(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT)
        await protected_long(bench)
        qty = bench.engine.pos.rec.open_qty
        await bench.candles(candle(3, 100.0, h=101.5, lo=99.5, c=100.5))
        assert bench.engine.pos.state == "flat" and orders(bench) == []
        fills = await bench.exchange.order_fills("BTC-USDT", "t-1-t1")
        assert [(f.qty, f.price, f.realized_pnl) for f in fills] == [(qty, D("101.0"), qty * D("1.0"))]
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert bench.transitions() == [("flat", "enter", "entering"), ("entering", "entry_filled", "entering"),
                                   ("entering", "stop_confirmed", "protected"),
                                   ("protected", "tp_confirmed", "protected"),
                                   ("protected", "tp_filled", "exited_exit"),
                                   ("exited_exit", "order_gone", "exited_exit"),  # the stop canceled
                                   ("exited_exit", "settled", "flat")]
    (reason,) = bench.journal.conn.execute("SELECT json_extract(record, '$.exit_reason') FROM transitions "
                                           "WHERE trigger = 'tp_filled'").fetchone()
    assert reason == "tp"


def test_a_candle_touching_both_fills_the_stop_and_the_take_profit_is_canceled(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT)
        await protected_long(bench)
        await bench.candles(candle(3, 100.0, h=101.5, lo=98.5, c=100.0))  # the high first: still the stop
        assert bench.engine.pos.state == "flat" and orders(bench) == []
        assert [f.price for f in await bench.exchange.order_fills("BTC-USDT", "t-1-s1")] == [D("99.0")]
        assert await bench.exchange.order_fills("BTC-USDT", "t-1-t1") == []
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("protected", "stop_filled", "exited_sl") in bench.transitions()


def test_an_exit_cancels_the_take_profit_and_the_stop_guards_until_the_close_fills(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 4: Exit(reason="test")}, tp_pct=TP_PCT)
        await protected_long(bench)
        await bench.bars(100.2, 100.4)
        assert bench.engine.pos.state == "flat" and orders(bench) == []
        assert await bench.violations() == []
        return bench

    bench = run(go())
    cancels = [c for c, command in bench.journal.conn.execute(
        "SELECT client_id, command FROM intents WHERE status = 'pending' ORDER BY seq") if "CancelOrder" in command]
    assert cancels == ["t-1-t1", "t-1-s1"]  # the take-profit with the exit, the stop once the close filled


def test_a_take_profit_canceled_by_hand_stays_gone_and_the_stop_guards(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT)
        await protected_long(bench)
        bench.exchange._deliver(bench.exchange.core.cancel("t-1-t1", 0, "canceled by hand"))
        await bench.engine.drain()
        await bench.bars(100.5)
        assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.tp_id is None
        assert orders(bench) == [("t-1-s1", "stop", D("99.0"))]
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("protected", "tp_canceled", "protected") in bench.transitions()


def test_a_take_profit_whose_outcome_is_unknown_is_resolved_by_its_client_id(tmp_path: Path) -> None:
    class LosesTheFirstTakeProfit(PaperExchange):
        lost = False

        async def submit(self, command: Submission) -> None:
            if isinstance(command, SubmitTakeProfit) and not self.lost:
                self.lost = True
                raise OrderUnknown(command.client_id, "timeout")  # never reached the exchange
            await super().submit(command)

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT,
                      exchange=LosesTheFirstTakeProfit(exact()))
        await bench.start()
        await bench.bars(100.0, 100.0)
        await bench.bars(100.1)  # the next event: recovery asks about t-1-t1, finds nothing, sends it again
        assert orders(bench) == [("t-1-s1", "stop", D("99.0")), ("t-1-t1", "take_profit", D("101.0"))]
        assert bench.engine.pos.rec.tp_live
        assert bench.exchange.order_count("t-1-t1") == 1
        assert await bench.violations() == []
        return bench

    run(go())


@pytest.mark.parametrize("when", ["before", "after"])
def test_killed_while_placing_the_take_profit_the_restart_finishes_it_once(tmp_path: Path, when: str) -> None:
    async def go() -> None:
        ex = Killing(exact())
        ex.kill_at = (when, "t-1-t1")  # before: committed, never sent; after: placed, its acceptance never handled
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT, exchange=ex)
        await bench.start()
        with pytest.raises(Killed):
            await bench.bars(100.0, 100.0)
        bench.engine.close()
        await bench.start()  # a new engine on the same journal and account: recovery asks about t-1-t1
        assert orders(bench) == [("t-1-s1", "stop", D("99.0")), ("t-1-t1", "take_profit", D("101.0"))]
        assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.tp_live
        assert ex.order_count("t-1-t1") == 1
        assert await bench.violations() == []

    run(go())


def test_a_short_take_profit_sits_below_the_entry(tmp_path: Path) -> None:
    async def go() -> None:
        bench = Bench(tmp_path, {2: Enter(side="short", fraction=0.5)}, tp_pct=TP_PCT)
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert orders(bench) == [("t-1-s1", "stop", D("101.0")), ("t-1-t1", "take_profit", D("99.0"))]
        await bench.candles(candle(3, 100.0, h=100.5, lo=98.9, c=99.5))
        assert bench.engine.pos.state == "flat" and orders(bench) == []
        assert await bench.violations() == []

    run(go())


def test_the_invariant_check_sees_a_second_take_profit_and_one_larger_than_the_position(tmp_path: Path) -> None:
    async def go() -> None:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, tp_pct=TP_PCT)
        await protected_long(bench)
        qty = bench.engine.pos.rec.open_qty
        second = SubmitTakeProfit(client_id="t-1-t2", symbol="BTC-USDT", side="long", qty=qty, stop_price=D(102))
        bench.exchange._deliver(bench.exchange.core.submit(second, 0))  # not through the engine: unjournaled
        found = {(v.invariant, v.detail.split(":")[0]) for v in await bench.violations()}
        assert ("I7", "long position has 2 take-profits") in found
        bench.exchange._deliver(bench.exchange.core.cancel("t-1-t2", 0))
        bench.exchange.close_by_hand("BTC-USDT", "long", qty / 2)  # the position shrinks under its take-profit
        details = [v.detail for v in await bench.violations() if v.invariant == "I7"]
        assert details == [f"take-profit t-1-t1 closes {qty} of a {qty / 2} long position"]

    run(go())


# --- the state table's take-profit rows on a Position alone (no exchange) ----------------------------------


def _protected_with_tp() -> Position:
    prot = msgspec.structs.replace(PROT, price_tp_pct=D("0.01"))
    return Position("a", "BTC-USDT", prot, with_tp(record_for("protected"), live=True))


def test_a_refused_exit_returns_to_protected_with_a_new_take_profit() -> None:
    pos = _protected_with_tp()
    out = pos.fire("exit_signal", reason="signal")
    assert [type(c).__name__ for c in out] == ["SubmitClose", "CancelOrder"] and out[1].client_id == "a-1-t1"
    out = pos.fire("close_rejected", reason="refused")
    assert pos.state == "protected"
    assert [(type(c).__name__, c.client_id) for c in out] == [("SubmitTakeProfit", "a-1-t2")]
    assert pos.rec.tp_id == "a-1-t2" and pos.rec.tp_price == D("60600")
    pos.release()


def test_a_position_shrinking_under_its_take_profit_gets_a_smaller_one_after_the_old_is_canceled() -> None:
    pos = _protected_with_tp()
    out = pos.fire("stop_filled", fill=fill("a-1-s1", "0.004", final=False, price="59400", pnl="-2.4"))
    assert pos.state == "protected"
    assert [(type(c).__name__, c.client_id) for c in out] == [("CancelOrder", "a-1-t1"),
                                                               ("SubmitTakeProfit", "a-1-t2")]
    assert out[1].qty == D("0.006") == pos.rec.tp_qty == pos.rec.open_qty
    pos.release()


def test_recovery_resizing_the_stop_resizes_the_take_profit() -> None:
    pos = _protected_with_tp()
    out = pos.fire("stop_resize", qty=D("0.005"))
    assert [(type(c).__name__, c.client_id) for c in out] == [("SubmitStop", "a-1-s2"), ("CancelOrder", "a-1-t1"),
                                                               ("SubmitTakeProfit", "a-1-t2")]
    assert out[2].qty == D("0.005")
    pos.release()


def test_a_take_profit_accepted_after_the_position_ended_only_updates_its_status() -> None:
    pos = _protected_with_tp()
    pos.rec.tp_live = False
    pos.fire("stop_filled", fill=fill("a-1-s1", price="59400", pnl="-6"))
    assert pos.state == "exited_sl" and "a-1-t1" in pos.rec.canceling
    rt = route(OrderAccepted(client_id="a-1-t1"), "t", Facts("a-1-t1", pos.rec, pos.state))
    assert rt.action == STATUS
    pos.release()
