"""The engine against the paper exchange, driven candle by candle with a scripted strategy."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from gatebot.core.events import (
    CancelOrder,
    FundingPaid,
    OrderExpired,
    OrderFilled,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
)
from gatebot.core.strategy import Enter, Exit
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from gatebot.plugins.hookspecs import hookimpl
from gatebot.plugins.manager import make_plugin_manager
from tests.bench import STEP_MS, SYMBOL, Bench, Deaf, candle, exact, run


def test_a_command_is_sent_only_after_its_intent_is_committed(tmp_path: Path) -> None:
    seen: list[tuple[str, bool]] = []

    class Watching(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            other = sqlite3.connect(tmp_path / "t.sqlite")  # another connection sees committed rows only
            (n,) = other.execute("SELECT count(*) FROM intents WHERE client_id = ?", (command.client_id,)).fetchone()
            other.close()
            seen.append((command.client_id, n > 0))
            await super().submit(command)

    async def go() -> None:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 4: Exit(reason="test")},
                      exchange=Watching(exact()))
        await bench.start()
        await bench.bars(100.0, 100.0, 101.0, 102.0, 102.0)
        assert await bench.violations() == []

    run(go())
    assert seen == [("t-1-e1", True), ("t-1-s1", True), ("t-1-x1", True)]


def test_a_trigger_outside_the_table_is_refused_journaled_and_its_fill_kept(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {})
        await bench.start()
        stray = OrderFilled(client_id="t-0-s1", trade_id="x1", qty=Decimal("0.1"), price=Decimal(100),
                            cum_qty=Decimal("0.1"))
        assert bench.engine.fire("stop_filled", fill=stray) == []
        assert bench.engine.pos.state == "flat"
        return bench

    bench = run(go())
    assert bench.rejections() == [("flat", "stop_filled")]
    assert bench.journal.is_booked("t-0-s1", "x1"), "a refused trigger must not lose the fill it carried"
    assert bench.transitions() == []


def test_a_full_trade_journals_every_step(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="short", fraction=0.5), 4: Exit(reason="done")})
        await bench.start()
        await bench.bars(100.0, 100.0, 99.0, 98.0, 98.0)
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert bench.transitions() == [
        ("flat", "enter", "entering"), ("entering", "entry_filled", "entering"),
        ("entering", "stop_confirmed", "protected"), ("protected", "exit_signal", "exiting"),
        ("exiting", "close_filled", "exited_exit"), ("exited_exit", "order_gone", "exited_exit"),
        ("exited_exit", "settled", "flat")]
    pnl, fees = bench.journal.realized()
    qty = Decimal("200.000")  # 10000 * 0.5 * 4 / 100
    assert pnl == (Decimal(100) - Decimal(98)) * qty
    assert fees == qty * (Decimal(100) + Decimal(98)) * Decimal("0.0005")


def test_the_exchange_stop_fills_on_the_candle_path_and_the_gap_fills_at_the_open(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)})
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.rec.stop_price == Decimal(99)
        await bench.candles(candle(3, 98.5, 98.7, 97.0, 98.0))  # opens below the stop
        assert bench.engine.pos.state == "flat"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("protected", "stop_filled", "exited_sl") in bench.transitions()
    pnl, _ = bench.journal.realized()
    assert pnl == (Decimal("98.5") - Decimal(100)) * Decimal(200)


def test_a_stop_canceled_by_someone_else_is_replaced_at_once(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)})
        await bench.start()
        await bench.bars(100.0, 100.0)
        bench.exchange._deliver(bench.exchange.core.cancel("t-1-s1", 0, "canceled in the UI"))
        await bench.engine.drain()
        assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.stop_id == "t-1-s2"
        assert await bench.violations() == []
        return bench

    run(go())


def test_a_position_closed_by_hand_is_noticed_and_its_stop_canceled(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)})
        await bench.start()
        await bench.bars(100.0, 100.0)
        bench.exchange.close_by_hand(SYMBOL, "long")
        await bench.engine.drain()
        assert bench.engine.pos.state == "flat"
        assert await bench.exchange.open_orders(SYMBOL) == []
        return bench

    bench = run(go())
    assert ("protected", "position_gone", "exited_manual") in bench.transitions()


def test_an_entry_whose_stop_is_never_confirmed_is_closed_after_the_protection_timeout(tmp_path: Path) -> None:
    class LosingStops(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if not isinstance(command, SubmitStop):
                await super().submit(command)

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=LosingStops(exact()),
                      timeout_ms=60_000)
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering"
        await bench.bars(100.0)  # five minutes later: past the one-minute protection timeout
        assert bench.engine.pos.state == "flat"
        assert (await bench.exchange.position(SYMBOL, "long")).qty == 0
        return bench

    bench = run(go())
    assert ("entering", "protection_timeout", "exiting") in bench.transitions()


class Silent(PaperExchange):
    """Takes entries and stops without answering (their events come from the test); closes go through.
    An order's fills, when asked for, are those of ``fills`` with its client id."""

    def __init__(self, options: PaperOptions, fills: list[OrderFilled] | None = None) -> None:
        super().__init__(options)
        self.fills = fills if fills is not None else []

    async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
        if isinstance(command, SubmitClose):
            await super().submit(command)

    async def order_fills(self, symbol: str, client_id: str) -> list[OrderFilled]:
        return [f for f in self.fills if f.client_id == client_id]


def test_an_entry_the_exchange_ended_after_a_partial_fill_is_closed_if_its_stop_never_confirms(
        tmp_path: Path) -> None:
    """The protection timeout guards every way a position comes to wait for its stop, not only a last
    entry fill: here the exchange ends the entry after part of it filled (entry_completed)."""

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=Silent(exact()),
                      timeout_ms=60_000)
        await bench.start()
        await bench.bars(100.0, 100.0)
        engine = bench.engine
        assert engine.pos.state == "entering" and engine.pos.rec.filled_qty == 0
        part = engine.pos.rec.entry_qty / 2
        engine.post(OrderFilled(client_id="t-1-e1", trade_id="p1", qty=part, cum_qty=part, price=Decimal(100),
                                final=False))
        engine.post(OrderExpired(client_id="t-1-e1", filled_qty=part, reason="the rest outside the price band"))
        await engine.drain()
        assert engine.pos.state == "entering" and engine.pos.rec.entry_complete and engine.pos.rec.filled_qty == part
        await bench.bars(100.0)  # five minutes later: past the one-minute protection timeout
        return bench

    bench = run(go())
    assert ("entering", "entry_completed", "entering") in bench.transitions()
    assert ("entering", "protection_timeout", "exiting") in bench.transitions()


def test_an_entry_s_end_pushed_before_its_fills_books_the_fills_instead_of_dropping_the_position(
        tmp_path: Path) -> None:
    """BingX ends a market order's unfilled rest (price band) and the pushes come reordered: the
    expiry, saying part filled, arrives before the fill. The fill is asked for and booked, and the part
    that filled is protected; the entry is not taken for unfilled (that would leave the position to the
    foreign-position policy)."""
    fills: list[OrderFilled] = []

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=Silent(exact(), fills),
                      foreign_policy="halt")
        await bench.start()
        await bench.bars(100.0, 100.0)
        engine = bench.engine
        part = engine.pos.rec.entry_qty / 2
        fill = OrderFilled(client_id="t-1-e1", trade_id="p1", qty=part, cum_qty=part, price=Decimal(100), final=False)
        fills.append(fill)
        engine.post(OrderExpired(client_id="t-1-e1", filled_qty=part, reason="the rest outside the price band"))
        engine.post(fill)  # the fill's own push, late: booked once already
        await engine.drain()
        assert engine.pos.state == "entering" and engine.pos.rec.filled_qty == part
        assert engine.pos.rec.pending_stop_id == "t-1-s1"
        return bench

    bench = run(go())
    assert bench.transitions()[-2:] == [("entering", "entry_filled", "entering"),
                                        ("entering", "entry_completed", "entering")]
    assert bench.rejections() == []


class Veto:
    @hookimpl
    def gatebot_risk_check(self, instance: str, decision: Any, view: Any) -> str | None:
        return "no shorts today" if decision.side == "short" else None


class Recorder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def gatebot_on_transition(self, instance: str, trigger: str) -> None:
        self.seen.append(trigger)


class Raising:
    @hookimpl
    def gatebot_on_transition(self, instance: str) -> None:
        raise RuntimeError("observer down")

    @hookimpl
    def gatebot_on_fill(self, fill: Any) -> None:
        raise RuntimeError("observer down")


def test_a_risk_plugin_vetoes_and_a_raising_observer_changes_nothing(tmp_path: Path) -> None:
    manager = make_plugin_manager()
    recorder = Recorder()
    for plugin in (Veto(), recorder, Raising()):
        manager.pm.register(plugin)

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="short", fraction=0.5), 3: Enter(side="long", fraction=0.5)},
                      plugins=manager)
        await bench.start()
        await bench.bars(100.0, 100.0, 100.0)
        return bench

    bench = run(go())
    assert bench.engine.pos.rec.side == "long" and bench.engine.pos.state == "protected"
    assert recorder.seen == ["enter", "entry_filled", "stop_confirmed"]


def test_an_account_that_refuses_new_entries_still_exits_and_its_stop_still_fires(tmp_path: Path) -> None:
    """An adapter that says ``entries_blocked`` (BingX: its user stream cannot be read) gets no new entry; the open
    position still exits on its signal and the next one's stop still works once entries are allowed again."""
    sent: list[str] = []

    class Blocking(PaperExchange):
        entries_blocked: str | None = None

        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            sent.append(command.client_id)
            await super().submit(command)

    exchange = Blocking(PaperOptions())

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 4: Exit(reason="test"),
                                 5: Enter(side="long", fraction=0.5), 7: Enter(side="long", fraction=0.5)},
                      exchange=exchange)
        await bench.start()
        await bench.bars(100.0, 100.0, 100.0)
        assert bench.engine.pos.state == "protected"
        exchange.entries_blocked = "the user stream cannot be read"
        await bench.bars(101.0, 101.0)  # the exit goes out; the entry on candle 5 does not
        assert bench.engine.pos.state == "flat"
        exchange.entries_blocked = None
        await bench.bars(101.0, 101.0)
        assert bench.engine.pos.state == "protected"
        await bench.candles(candle(8, 101.0, h=101.0, lo=90.0, c=95.0))  # through the stop
        assert bench.engine.pos.state == "flat"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert sent == ["t-1-e1", "t-1-s1", "t-1-x1", "t-2-e1", "t-2-s1"]
    assert ("protected", "stop_filled", "exited_sl") in bench.transitions()


def test_every_pair_outside_the_table_is_refused_and_journaled_by_the_engine(tmp_path: Path) -> None:
    from gatebot.core.position import STATES, TABLE, TRIGGERS, Position, Row
    from tests.unit.core.test_position import PROT, kwargs_for, record_for

    allowed = {(s, r.trigger) for r in TABLE for s in ((r.source,) if isinstance(r.source, str) else r.source)}
    outside = [(s, t) for s in STATES for t in TRIGGERS if (s, t) not in allowed]

    async def go() -> Bench:
        bench = Bench(tmp_path, {})
        engine = await bench.start()
        for state, trigger in outside:
            engine.pos.release()
            engine.pos = Position("t", SYMBOL, PROT, record_for(state))
            assert engine.fire(trigger, **kwargs_for(Row(state, trigger, state, ""), state)) == []
            assert engine.pos.state == state
        return bench

    bench = run(go())
    assert bench.rejections() == outside
    assert bench.transitions() == []


def test_a_stop_fill_whose_push_was_lost_is_booked_when_the_close_is_refused(tmp_path: Path) -> None:
    """Chaos run: the stop fired while the user stream was down; the next exit's close was refused (nothing
    to close), the position was taken for one closed by hand and the stop's losing fill was never booked
    (I5). The fills of the position's own orders are now asked for before it is called gone."""
    async def go() -> Bench:
        exchange = Deaf(exact())
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 4: Exit(reason="late")}, exchange=exchange)
        await bench.start()
        await bench.bars(100.0, 100.0)
        exchange.deaf = True
        await bench.candles(candle(3, 99.5, 99.6, 98.0, 98.5))  # the stop at 99 fills, unheard
        exchange.deaf = False
        bench.i = 3
        await bench.bars(98.5)  # the exit: its close is refused, nothing is left to close
        assert bench.engine.pos.state == "flat"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("exiting", "stop_filled", "exited_sl") in bench.transitions()
    assert ("exiting", "position_gone", "exited_manual") not in bench.transitions()


def test_a_replaced_stop_that_fired_before_its_cancel_reached_the_exchange_is_booked(tmp_path: Path) -> None:
    """Chaos run with attached stops: the stop was replaced (place the new one first, then cancel the old);
    the bot died before the cancel went out and the old stop fired while it was down. Recovery skipped
    orders whose latest intent was a cancel, found the old stop "already gone" and booked none of its
    fill (I5). Orders being canceled are now asked about like the others."""
    class LosingCancels(Deaf):
        async def cancel(self, command: CancelOrder) -> None:
            pass  # journaled, never sent: the bot died right after committing it

    async def go() -> Bench:
        exchange = LosingCancels(exact())
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=exchange)
        await bench.start()
        await bench.bars(100.0, 100.0)
        engine = bench.engine
        await engine.execute(engine.fire("stop_resize", qty=engine.pos.rec.open_qty))
        await engine.drain()
        assert engine.pos.rec.stop_id == "t-1-s2" and engine.pos.rec.canceling == ["t-1-s1"]
        engine.close()
        exchange.deaf = True  # the bot is down: both stops trigger, the old one fills, nobody hears it
        bench.clock.advance_to(4 * STEP_MS)
        exchange.on_candle(candle(3, 98.5, 98.7, 97.0, 98.0))
        exchange.deaf = False
        await bench.start()  # the restart
        assert bench.engine.pos.state == "flat"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("protected", "stop_filled", "exited_sl") in bench.transitions()


def test_funding_is_booked_once_on_the_position_held_at_its_time_and_i5_compares_it(tmp_path: Path) -> None:
    def paid(t: int, amount: str = "1.5", symbol: str = SYMBOL) -> FundingPaid:
        return FundingPaid(symbol=symbol, funding_time=t, paid=Decimal(amount))

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 5: Exit(reason="test")})
        await bench.start()
        engine = bench.engine
        engine.post(paid(0))  # before any position of this instance: not its own
        await bench.bars(100.0, 100.0)
        assert engine.pos.state == "protected" and engine.pos.rec.seq == 1
        for ev in (paid(3 * STEP_MS), paid(3 * STEP_MS), paid(3 * STEP_MS, symbol="ETH-USDT")):
            engine.post(ev)  # a duplicate push, and another symbol's payment
        await engine.drain()
        await bench.bars(100.0, 100.0, 100.0, 100.0)
        assert engine.pos.state == "flat"
        engine.post(paid(4 * STEP_MS, "-0.25"))  # reported after the position closed: still the one held then
        await engine.drain()
        return bench

    bench = run(go())
    rows = bench.journal.conn.execute("SELECT position, key, paid FROM funding ORDER BY seq").fetchall()
    assert rows == [(1, f"t:BTC-USDT:{3 * STEP_MS}", "1.5"), (1, f"t:BTC-USDT:{4 * STEP_MS}", "-0.25")]
    # the paper account charged none of it: I5 says so
    [violation] = run(bench.violations())
    assert violation.invariant == "I5" and "journal funding 1.25, exchange funding 0" in violation.detail


def test_on_a_shared_symbol_funding_is_booked_only_when_it_names_this_position_alone(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)})
        await bench.start()
        await bench.bars(100.0, 100.0, 100.0)
        engine = bench.engine
        engine.siblings = frozenset({"u"})  # another instance trades BTC-USDT on this (hedge-mode) account
        qty = engine.pos.rec.open_qty
        t = 3 * STEP_MS
        for side, q in ((None, Decimal(0)), ("short", qty), ("long", qty * 2), ("long", qty)):
            engine.post(FundingPaid(symbol=SYMBOL, funding_time=t, paid=Decimal("0.3"), side=side, qty=q))
            t += STEP_MS
        await engine.drain()
        return bench

    bench = run(go())
    # no side (BingX's income row), the other side, the sum of two instances' longs: not attributable
    assert bench.journal.conn.execute("SELECT funding_time FROM funding").fetchall() == [(6 * STEP_MS,)]


def test_a_wall_clock_stepped_back_does_not_delay_the_protection_timeout(tmp_path: Path) -> None:
    from gatebot.core.clock import VirtualClock
    from gatebot.core.events import SubmitStop
    from gatebot.core.strategy import Enter
    from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
    from tests.bench import SYMBOL as ENGINE_SYMBOL
    from tests.bench import Bench

    class LosingStops(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if not isinstance(command, SubmitStop):
                await super().submit(command)

    class WallSteps(VirtualClock):
        step_ms = 0

        def now_ms(self) -> int:
            return super().now_ms() + self.step_ms

    async def go() -> None:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=LosingStops(PaperOptions()),
                      timeout_ms=60_000)
        bench.clock = bench.exchange.clock = clock = WallSteps(0)
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering"  # filled, its stop lost
        clock.step_ms = -3_600_000  # the wall clock steps back an hour
        await bench.bars(100.0)  # five minutes later: past the one-minute protection timeout
        assert bench.engine.pos.state == "flat"
        assert (await bench.exchange.position(ENGINE_SYMBOL, "long")).qty == 0

    asyncio.run(go())
