"""Regressions for bugs the chaos suite found (tests/chaos/driver.py), each reduced to its core."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from gatebot.core.events import CancelOrder, OrderFilled, SubmitClose, SubmitEntry, SubmitStop
from gatebot.core.exchange import ExchangeError, OrderUnknown
from gatebot.core.instrument import Instrument
from gatebot.core.position import Position, Protection
from gatebot.core.strategy import Enter
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from tests.bench import SYMBOL, Bench, run

D = Decimal
INSTRUMENT = Instrument(symbol="BTC-USDT", tick=D("0.1"), step=D("0.0001"), min_qty=D("0.0001"), min_notional=D("2"))
PROT = Protection(instrument=INSTRUMENT, price_sl_pct=D("0.01"))


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


# --- recovery ends only when every intent is definite, and says so ---------------------------------------


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


def test_the_soak_names_a_run_of_candles_without_a_decision_or_a_reason() -> None:
    """The soak's strategy trades on every candle it is flat: a quiet run longer than the limit fails it."""
    from tests.chaos.soak import idle_spans

    class Rows:
        def __init__(self, ts: list[int]) -> None:
            self.conn = self
            self.ts = ts

        def execute(self, _sql: str) -> list[tuple[int]]:
            return [(t,) for t in self.ts]

    candles = [i * 1000 for i in range(40)]
    busy = [t + 5 for t in candles]
    assert idle_spans(Rows(busy), candles, 5) == []  # type: ignore[arg-type]
    quiet = [t for t in busy if not 10_000 <= t < 17_000]  # candles 10..16 journal nothing
    assert idle_spans(Rows(quiet), candles, 5) == [(10, 17)]  # type: ignore[arg-type]
    assert idle_spans(Rows(quiet), candles, 7) == []  # type: ignore[arg-type]
