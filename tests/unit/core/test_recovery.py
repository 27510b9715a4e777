"""Recovery (core/recovery.py): the last step of a recovery round (core.recovery.TABLE, decided by
core.recovery.decide), the one docs/architecture.md shows, every row reached by facts of its own and answering
what the row says; then recovery run by an engine on the paper bench (foreign positions, leftovers, resizes,
restarts, funding missed while down) and the regressions the chaos suite found in it.

    python -m tests.unit.core.test_recovery     # rewrite the table in docs/architecture.md from the code
"""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gatebot.core.engine import InstanceHalted
from gatebot.core.events import (
    CancelOrder,
    FundingPaid,
    StreamUp,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    Timer,
)
from gatebot.core.exchange import ExchangeError, OrderUnknown
from gatebot.core.position import EXITED, STATES, PositionRecord
from gatebot.core.recovery import ACTIONS, TABLE, ExchangeFacts, Step, decide, table_markdown
from gatebot.core.strategy import Enter, Exit
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from tests.bench import STEP_MS, SYMBOL, Bench, Deaf, _exchange_with, candle, exact, run

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


# --- recovery ends only when every intent is definite, and says so (regressions the chaos suite found) -----


class _Flaky(PaperExchange):
    """A paper exchange whose order queries fail ``query_failures`` times (a 5xx, a timeout under load) and
    whose next stop submissions are lost on the way (``lost_stops``: outcome unknown, never placed)."""

    def __init__(self) -> None:
        super().__init__(PaperOptions())
        self.query_failures = 0
        self.lost_stops = 0

    async def query_order(self, symbol: str, client_id: str) -> Any:
        if self.query_failures:
            self.query_failures -= 1
            raise ExchangeError("GET /openApi/swap/v2/trade/order: HTTP 500")
        return await super().query_order(symbol, client_id)

    async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
        if isinstance(command, SubmitStop) and self.lost_stops:
            self.lost_stops -= 1
            raise OrderUnknown(command.client_id, "TimeoutError")
        await super().submit(command)


async def _protected_bench(tmp: Path) -> Bench:
    bench = Bench(tmp, {2: Enter(side="long", fraction=0.5)}, exchange=_Flaky())
    await bench.start()
    await bench.bars(100.0, 100.0)
    assert bench.engine.pos.state == "protected"
    bench.engine.close()
    return bench


async def _restart(bench: Bench) -> dict[str, Any]:
    """Start a new engine on the journal, the virtual clock moving while recovery backs off (as wall time
    would: so the engine may wait on it)."""
    bench.clock.advances_alone = True
    task = asyncio.create_task(bench.start())
    while not task.done():
        await asyncio.sleep(0)
        bench.clock.advance_to(bench.clock.now_ms() + 10)
    await task
    return json.loads(bench.journal.meta()["reconciled"])


def test_a_transient_error_during_recovery_is_retried_instead_of_failing_the_instance(tmp_path: Path) -> None:
    """Fault soak, 96 simulated hours: one 5xx or timeout met by a recovery query failed the instance, which
    came back only after a backoff counted in candles, growing with every such failure: from candle 100 to
    900 the bot made one trade. A transient error now costs a recovery round, not the instance."""

    async def go() -> tuple[Bench, dict[str, Any]]:
        bench = await _protected_bench(tmp_path)
        bench.exchange.query_failures = 2  # type: ignore[attr-defined]
        row = await _restart(bench)
        assert await bench.violations() == []
        return bench, row

    bench, row = run(go())
    assert bench.engine.pos.state == "protected"
    assert row["rounds"] == 3 and row["intents"] >= 1 and row["state"] == "protected"


def test_a_protection_deadline_that_passes_during_recovery_closes_the_position_without_waiting_for_it(
        tmp_path: Path) -> None:
    """Decisions wait for recovery to end; the protection timeout must not. Here every stop is lost on the way
    (no definite answer): recovery backs off round after round (about 5 s in all) while the filled entry waits.
    Held with the decisions, the timeout would have fired only after recovery gave up; it closes the position
    at the first round after its deadline."""

    async def go() -> Bench:
        ex = _Flaky()
        ex.lost_stops = 1_000
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=ex, timeout_ms=2_000)
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering" and bench.engine.pos.rec.entry_complete
        filled_at = bench.clock.now_ms()
        bench.engine.close()
        row = await _restart(bench)
        assert bench.engine.pos.state == "flat" and row["state"] == "flat"
        closed_at = bench.journal.conn.execute(
            "SELECT ts FROM transitions WHERE trigger = 'protection_timeout'").fetchone()[0]
        assert 2_000 <= closed_at - filled_at < 2_000 + 2_000  # at most one backoff (2 s) after the deadline
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("entering", "protection_timeout", "exiting") in bench.transitions()


def test_reconciled_is_journaled_only_once_a_command_recovery_sent_has_a_definite_outcome(tmp_path: Path) -> None:
    """Chaos suite on a loaded machine: the driver took the market subscription for the end of recovery and
    judged the invariants on a clock (I4/I5 failed: the close was booked 5.1 s later). The bot now journals
    ``reconciled`` once every intent is definite; here the stop recovery places is lost on the way first."""

    async def go() -> tuple[Bench, dict[str, Any], list[Any]]:
        bench = await _protected_bench(tmp_path)
        ex = bench.exchange
        await ex.cancel(CancelOrder(client_id="t-1-s1", symbol=SYMBOL))  # canceled by hand while the bot was down
        ex.lost_stops = 1  # type: ignore[attr-defined]
        row = await _restart(bench)
        return bench, row, await bench.violations()  # judged at that point, no waiting

    bench, row, violations = run(go())
    assert violations == []
    assert row["rounds"] == 2 and row["state"] == "protected"
    assert bench.engine.pos.rec.stop_id == "t-1-s2"  # sent again: it never arrived
    assert row["journal"] == bench.journal.high_water()


def test_recovery_adopts_a_foreign_position_and_protects_it(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {}, exchange=await _exchange_with("3"), sent=("t-0-x1",))
        await bench.start()
        r = bench.engine.pos.rec
        assert bench.engine.pos.state == "protected" and r.side == "long" and r.open_qty == 3
        assert r.stop_price == Decimal(99)
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert bench.transitions()[0] == ("flat", "adopt", "entering")


def test_recovery_flattens_a_foreign_position_when_told_to(tmp_path: Path) -> None:
    async def go() -> None:
        ex = await _exchange_with("3", side="short")
        engine = await Bench(tmp_path, {}, exchange=ex, foreign_policy="flatten", sent=("t-0-x1",)).start()
        assert engine.pos.state == "flat"
        assert (await ex.position(SYMBOL, "short")).qty == 0 and await ex.open_orders(SYMBOL) == []

    run(go())


def test_recovery_halts_on_a_foreign_position_when_told_to(tmp_path: Path) -> None:
    async def go() -> None:
        ex = await _exchange_with("3")
        with pytest.raises(InstanceHalted, match="this journal did not open"):
            await Bench(tmp_path, {}, exchange=ex, foreign_policy="halt", sent=("t-0-x1",)).start()
        assert (await ex.position(SYMBOL, "long")).qty == 3, "halt touches nothing"

    run(go())


def test_recovery_cancels_leftover_orders_of_ours_when_flat(tmp_path: Path) -> None:
    async def go() -> None:
        ex = await _exchange_with("3", extra_stop="t-7-s1")
        ex._deliver(ex.core.close_by_hand(SYMBOL, "long", 0))  # the position went; our stop stayed
        bench = Bench(tmp_path, {}, exchange=ex, sent=("t-7-s1",))
        await bench.start()
        assert await ex.open_orders(SYMBOL) == []
        assert bench.engine.pos.state == "flat"

    run(go())


def test_recovery_resizes_the_stop_when_the_exchange_quantity_differs(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)})
        await bench.start()
        await bench.bars(100.0, 100.0)
        bench.exchange.close_by_hand(SYMBOL, "long", Decimal(50))  # a partial close in the exchange's UI
        await bench.engine.drain()
        r = bench.engine.pos.rec
        assert bench.engine.pos.state == "protected" and r.stop_id == "t-1-s2"
        (stop,) = await bench.exchange.open_orders(SYMBOL)
        assert stop.client_id == "t-1-s2" and stop.qty == Decimal(150)
        assert r.open_qty == Decimal(150) and r.avg_entry == Decimal(100)
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("protected", "stop_resize", "protected") in bench.transitions()


def test_a_decision_that_arrives_during_recovery_waits_for_it(tmp_path: Path) -> None:
    """Chaos run: recovery (after a stream reconnect) drained its inbox between asking for the orders and
    for the position; a candle in it sent an exit whose close filled unheard, and recovery then saw no
    position and called it closed by hand: the close's fill was never booked (I5). Decisions now wait
    until recovery has finished, and a position found empty has its own orders' fills booked first."""
    order: list[str] = []

    class Interrupting(Deaf):
        bench: Bench

        async def query_order(self, symbol: str, client_id: str) -> Any:
            if client_id == "t-1-s1" and not order:
                order.append("recovery asks")
                self.bench.i += 1
                self.bench.clock.advance_to(self.bench.i * STEP_MS + STEP_MS)
                self.bench.engine.post(candle(self.bench.i, 101.0))  # the exit's candle arrives meanwhile
            return await super().query_order(symbol, client_id)

        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if isinstance(command, SubmitClose):
                order.append("close sent")
                self.deaf = True  # its fill is never pushed
            await super().submit(command)

    async def go() -> Bench:
        exchange = Interrupting(exact())
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5), 3: Exit(reason="signal")}, exchange=exchange)
        exchange.bench = bench
        await bench.start()
        await bench.bars(100.0, 100.0)
        bench.engine.post(StreamUp(stream="user"))  # a reconnect: recovery runs
        await bench.engine.drain()
        assert order == ["recovery asks", "close sent"]
        assert bench.engine.pos.state == "exiting"  # the close filled unheard; the next reconcile books it
        exchange.deaf = False
        bench.engine.post(StreamUp(stream="user"))
        await bench.engine.drain()
        assert bench.engine.pos.state == "flat"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("exiting", "close_filled", "exited_exit") in bench.transitions()
    assert ("exiting", "position_gone", "exited_manual") not in bench.transitions()


def test_a_restarted_engine_keeps_the_protection_timeout_of_a_filled_entry_without_its_stop(tmp_path: Path) -> None:
    """Fault soak: the stop's submission timed out, then the instance failed and was rebuilt (repeatedly);
    each new engine forgot the protection deadline, and the position went without a stop for 20 s against
    a 5 s timeout. The deadline now counts from the journal's last move of the position."""
    class LosingStops(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if not isinstance(command, SubmitStop):
                await super().submit(command)

        async def query_order(self, symbol: str, client_id: str) -> Any:
            return None if "-s" in client_id else await super().query_order(symbol, client_id)

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=LosingStops(exact()),
                      timeout_ms=60_000)
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering" and bench.engine.pos.rec.entry_complete
        filled_at = bench.clock.now_ms()
        bench.engine.close()  # the instance fails; a new engine is built on the same journal
        await bench.start()
        bench.clock.advance_to(filled_at + 59_000)
        bench.engine.post(Timer(ts=bench.clock.now_ms(), name="tick"))
        await bench.engine.drain()
        assert bench.engine.pos.state == "entering"
        bench.clock.advance_to(filled_at + 60_000)
        bench.engine.post(Timer(ts=bench.clock.now_ms(), name="tick"))
        await bench.engine.drain()
        assert bench.engine.pos.state == "flat"
        return bench

    bench = run(go())
    assert ("entering", "protection_timeout", "exiting") in bench.transitions()


def test_a_restart_counts_the_wait_for_the_stop_from_the_journaled_fill_and_closes_one_still_without_its_stop(
        tmp_path: Path) -> None:
    """A filled entry without its stop reports, from the moment a restarted engine exists (during its recovery),
    the time since its journaled fill, the time the process was dead included; one that has waited longer than
    the protection timeout is closed once recovery's first round has asked the exchange and found no stop."""
    seen: list[tuple[str, int | None]] = []
    """(state, ms unprotected) as the engine stood at each of recovery's order queries"""
    bench: Bench

    class LosingStops(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if not isinstance(command, SubmitStop):
                await super().submit(command)

        async def query_order(self, symbol: str, client_id: str) -> Any:
            since = bench.engine.unprotected_since_ms
            seen.append((bench.engine.pos.state, None if since is None else bench.clock.monotonic_ms() - since))
            return None if "-s" in client_id else await super().query_order(symbol, client_id)

    async def go() -> None:
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering" and bench.engine.pos.rec.entry_complete
        filled_at = bench.clock.now_ms()
        assert bench.engine.unprotected_since_ms == bench.clock.monotonic_ms()
        bench.engine.close()  # down 30 s, then a restart
        bench.clock.advance_to(filled_at + 30_000)
        seen.clear()
        await bench.start()
        assert seen and set(seen) == {("entering", 30_000)}  # during recovery too
        assert bench.engine.pos.state == "entering"
        assert bench.clock.monotonic_ms() - bench.engine.unprotected_since_ms == 30_000
        bench.engine.close()  # down past the timeout
        bench.clock.advance_to(filled_at + 61_000)
        seen.clear()
        await bench.start()
        assert seen and seen[0] == ("entering", 61_000)  # the exchange asked first: the stop is not there
        assert bench.engine.pos.state == "flat"
        assert bench.engine.unprotected_since_ms is None

    bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=LosingStops(exact()), timeout_ms=60_000)
    run(go())
    assert bench.transitions().count(("entering", "protection_timeout", "exiting")) == 1


def test_a_restart_past_the_timeout_finds_the_stop_that_reached_the_exchange_and_keeps_the_position(
        tmp_path: Path) -> None:
    """Chaos (kill at stop_sent, restarted past the protection timeout): the stop had reached the exchange but
    its answer was never handled. Closing the position blind at the restart (as an overdue wait) cost a protected
    trade and once left that stop working with the position flat; the restart asks the exchange first, finds
    the stop and keeps the position, protected by exactly that stop."""

    class Crash(Exception):
        pass

    class CrashAfterStop(PaperExchange):
        crashed = False

        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            await super().submit(command)
            if isinstance(command, SubmitStop) and not self.crashed:
                self.crashed = True
                raise Crash  # the process dies with the stop on the exchange, its answer unhandled

    async def go() -> Bench:
        ex = CrashAfterStop(exact())
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=ex, timeout_ms=2_000)
        await bench.start()
        with pytest.raises(Crash):
            await bench.bars(100.0, 100.0)
        assert bench.engine.pos.state == "entering"
        sent = [o.client_id for o in await ex.open_orders(SYMBOL)]
        assert len(sent) == 1
        bench.engine.close()
        bench.clock.advance_to(bench.clock.now_ms() + 3_000)
        await bench.start()
        assert bench.engine.pos.state == "protected"
        assert [o.client_id for o in await ex.open_orders(SYMBOL)] == sent
        assert bench.engine.unprotected_since_ms is None
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert not any(t == "protection_timeout" for _, t, _ in bench.transitions())


def test_a_restart_finds_the_filled_entry_s_attached_stop_missing_and_places_a_new_one(tmp_path: Path) -> None:
    """Attached stops: the entry filled and its fill was journaled, but its stop never reached the exchange
    (or was removed before its confirmation). A restart must place a new stop, as it does when the crash
    came before the fill was booked, not leave the position to the protection timeout's market close."""

    class DroppingAttachedStops(PaperExchange):
        async def submit(self, command: SubmitEntry | SubmitStop | SubmitClose) -> None:
            if isinstance(command, SubmitEntry):
                command = msgspec.structs.replace(command, stop=None)
            await super().submit(command)

    async def go() -> Bench:
        exchange = DroppingAttachedStops(exact(attached_stop=True))
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=exchange, attached=True,
                      timeout_ms=60_000)
        await bench.start()
        await bench.bars(100.0, 100.0)
        engine = bench.engine
        assert engine.pos.state == "entering" and engine.pos.rec.entry_complete
        assert engine.pos.rec.pending_stop_id == "t-1-s1" and await exchange.open_orders(SYMBOL) == []
        engine.close()
        await bench.start()  # the restart, within the protection timeout
        assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.stop_id == "t-1-s2"
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert ("entering", "stop_canceled", "entering") in bench.transitions()
    assert ("entering", "protection_timeout", "exiting") not in bench.transitions()


def test_recovery_books_the_funding_the_exchange_charged_while_nobody_listened(tmp_path: Path) -> None:
    charged: list[FundingPaid] = []

    class Charging(PaperExchange):
        async def funding(self, symbol: str, since_ms: int = 0) -> list[FundingPaid]:
            return [p for p in charged if p.symbol == symbol and p.funding_time >= since_ms]

    async def go() -> Bench:
        bench = Bench(tmp_path, {2: Enter(side="long", fraction=0.5)}, exchange=Charging(exact()))
        await bench.start()
        await bench.bars(100.0, 100.0, 100.0)
        charged.append(FundingPaid(symbol=SYMBOL, funding_time=3 * STEP_MS, paid=Decimal("0.7"), side="long"))
        bench.engine.post(StreamUp(stream="user"))  # a reconnect: pushes may have been missed
        await bench.engine.drain()
        return bench

    bench = run(go())
    assert bench.journal.funding_total() == Decimal("0.7") and bench.journal.funding_count() == 1
    assert run(bench.violations()) == []


def test_a_cancel_whose_reply_is_lost_during_recovery_does_not_abort_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gatebot.core.engine import Engine
    from gatebot.core.events import SubmitEntry, SubmitStop
    from gatebot.core.exchange import OrderUnknown
    from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
    from tests.bench import SYMBOL as ENGINE_SYMBOL
    from tests.bench import Bench, candle

    class BusyOnce(PaperExchange):
        refused = 0

        async def cancel(self, command: CancelOrder) -> None:
            if not self.refused:
                self.refused += 1
                raise OrderUnknown(command.client_id, "cancel: BingX 100500: busy")  # as the adapter says it
            await super().cancel(command)

    async def go() -> None:
        bench = Bench(tmp_path, {}, exchange=BusyOnce(PaperOptions()), sent=("t-7-s1",))
        ex = bench.exchange
        await ex.start(lambda _e: None)
        ex.on_candle(candle(0, 60000.0))
        await ex.submit(SubmitEntry(client_id="zz-1-e1", symbol=ENGINE_SYMBOL, side="long", qty=Decimal("0.01")))
        await ex.submit(SubmitStop(client_id="t-7-s1", symbol=ENGINE_SYMBOL, side="long", qty=Decimal("0.01"),
                                   stop_price=Decimal("50000")))  # an order the journal sent left working, flat
        assert [o.client_id for o in await ex.open_orders(ENGINE_SYMBOL)] == ["t-7-s1"]
        real_start = Engine.start

        async def start(self: Engine) -> None:
            self.siblings = frozenset({"zz"})  # the position under the stop is instance zz's: left alone
            await real_start(self)

        monkeypatch.setattr(Engine, "start", start)
        engine = await bench.start()  # recovery's cancel is answered "unknown": recovery goes on
        assert engine.status == "running" and ex.refused == 1
        await bench.bars(60000.0)  # the next event reconciles: the cancel is sent again
        assert "t-7-s1" not in [o.client_id for o in await ex.open_orders(ENGINE_SYMBOL)]

    asyncio.run(go())
