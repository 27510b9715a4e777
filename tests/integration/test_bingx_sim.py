"""The bot against the BingX simulator on loopback: a full trade in each way it can end, in one-way and
hedge mode, with attached and separate stops; I1-I5 checked against the simulator's own state."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gatebot.core import ids
from gatebot.core.journal import Journal
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import until
from tests.integration.sessions import SYMBOL, bot, session


def run(coro: Any) -> Any:
    return asyncio.run(coro)


MODES = [pytest.param(False, True, id="one-way-attached"), pytest.param(False, False, id="one-way-separate"),
         pytest.param(True, True, id="hedge-attached"), pytest.param(True, False, id="hedge-separate")]


@pytest.mark.parametrize(("hedge", "attached"), MODES)
def test_a_trade_that_ends_by_exit_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hedge: bool,
                                          attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached) as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert (stop.role, stop.client_id, stop.stop_price) == ("stop", s.cid(1, "s"), s.engine.pos.rec.stop_price)
            await s.candles_until(lambda: s.state == "flat" and s.engine.pos.rec.seq == 1, "flat after the exit")
            assert await s.violations() == []
            assert await s.sim.account_view().open_orders(SYMBOL) == []
        assert ("exiting", "close_filled", "exited_exit") in s.transitions()

    run(go())


@pytest.mark.parametrize(("hedge", "attached"), MODES)
def test_a_trade_that_ends_at_the_exchange_stop_on_the_mark_price(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    hedge: bool, attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            stop = s.engine.pos.rec.stop_price
            s.sim.faults.set_mark_price(SYMBOL, stop - Decimal(50))  # the mark price falls through the stop
            await s.until(lambda: s.state == "flat", "flat after the stop")
            assert await s.violations() == []
        assert ("protected", "stop_filled", "exited_sl") in s.transitions()

    run(go())


@pytest.mark.parametrize(("hedge", "attached"), MODES[:1] + MODES[3:])
def test_a_position_closed_by_hand_on_the_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hedge: bool,
                                                   attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            s.sim.faults.close_by_hand(SYMBOL, "long")
            await s.until(lambda: s.state == "flat", "flat after the manual close")
            assert await s.violations() == []
            assert await s.sim.account_view().open_orders(SYMBOL) == [], "the orphaned stop is canceled"
        assert ("protected", "position_gone", "exited_manual") in s.transitions()

    run(go())


@pytest.mark.parametrize("hedge", [False, True], ids=["one-way", "hedge"])
def test_a_rejected_stop_closes_the_position_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     hedge: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=False,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            s.sim.faults.reject_next_stop()
            await s.candles_until(lambda: s.engine.pos.rec.seq == 1 and s.state == "flat", "flat after the rejection")
            assert await s.violations() == []
        assert ("entering", "stop_rejected", "exiting") in s.transitions()

    run(go())


def test_short_positions_in_hedge_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=True, attached=False,
                           params='{ side = "short", enter_on = 1, exit_on = 3 }') as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert stop.side == "short" and stop.stop_price > s.engine.pos.rec.avg_entry
            await s.candles_until(lambda: s.state == "flat" and s.engine.pos.rec.seq == 1, "flat")
            assert await s.violations() == []

    run(go())


@pytest.mark.parametrize("wire", ["numeric", "string", "mixed"])
def test_a_one_way_short_stopped_out_in_each_wire_dialect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          wire: str) -> None:
    """Protocol §0: BingX's eras (numeric or string ids, times and codes, wrapped or bare order replies,
    brackets as text or objects) and one-way pushes (``ps=BOTH``, ``pa`` negative for a short): the bot
    enters, is protected, and is stopped out in each."""
    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, sim_options={"wire": wire},
                           params='{ side = "short", enter_on = 1, exit_on = 0 }') as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert stop.side == "short" and stop.stop_price > s.engine.pos.rec.avg_entry
            s.sim.faults.set_mark_price(SYMBOL, stop.stop_price + Decimal(50))
            await s.until(lambda: s.state == "flat", "flat after the stop")
            assert await s.violations() == []
        assert ("protected", "stop_filled", "exited_sl") in s.transitions()

    run(go())


# --- the network misbehaving ---------------------------------------------------------------------


def test_a_market_stream_dropped_mid_candle_still_yields_every_candle_once_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatebot.core.clock import LiveClock
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50)
        async with BingXSimulator(options) as sim:
            monkeypatch.setenv("BINGX_API_KEY", options.api_key)
            monkeypatch.setenv("BINGX_SECRET_KEY", options.secret)
            adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url, ws_url=sim.ws_url,
                                                close_candles_by_clock=False), hedge_mode=False, clock=LiveClock())
            await adapter.start(lambda event: None)
            try:
                history = await adapter.history(SYMBOL, "5m", 50)
                seen: list[Any] = []
                market = adapter.start_market({(SYMBOL, "5m"): history[-1].open_time}, seen.append)
                await asyncio.wait_for(market.connected.wait(), 5)
                await sim.advance(3)
                await until(lambda: len(seen) == 3, "three candles", timeout=10)
                for _ in range(3):  # mid-candle drops, with candles played while nobody listens
                    before = market.connections
                    sim.faults.drop_market_streams()
                    await sim.advance(2)
                    await until(lambda before=before: market.connections > before and market.connected.is_set(),
                                "the market stream to come back", timeout=10)
                    await sim.advance(1)
                await until(lambda: len(seen) == 12, "twelve candles", timeout=10)
                truth = await adapter.klines(SYMBOL, "5m", history[-1].open_time + 300_000, seen[-1].open_time + 1)
                assert seen == truth, "each candle once, in order, with the exchange's final values"
                assert market.connections >= 4
            finally:
                await adapter.stop()

    run(go())


def test_an_expired_listen_key_is_replaced_without_losing_the_fill(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            adapter = s.runner.adapters["bx"]
            first_key = adapter.user.key
            s.sim.faults.expire_listen_key()  # the fill of the entry below is pushed to a dead key
            await s.candles_until(lambda: s.state == "protected", "protected on the fill")
            await s.until(lambda: adapter.user.key not in (None, first_key), "a new listenKey")
            assert await s.violations() == []
        journal = Journal(s.journal_path, readonly=True)
        try:
            fills = journal.conn.execute("SELECT client_id FROM fills").fetchall()
        finally:
            journal.close()
        assert fills == [(s.cid(1, "e"),)], "the entry fill booked exactly once"

    run(go())


@pytest.mark.parametrize("executed", [True, False], ids=["order-placed-reply-lost", "order-never-placed"])
def test_a_submission_that_times_out_leaves_exactly_one_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              executed: bool) -> None:
    from gatebot.exchanges.bingx.constants import ORDER

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            s.sim.faults.fail_next(ORDER, "timeout", after_effect=executed)
            await s.sim.advance(1)
            if executed:
                await s.until(lambda: s.state == "protected", "protected after resolving the unknown entry")
            else:
                await s.until(lambda: any(t[1] == "entry_lost" for t in s.transitions()), "the entry found lost")
            await s.settle()
            view = s.sim.account_view()
            assert view.order_count(s.cid(1, "e")) == (1 if executed else 0)
            assert await s.violations() == []
        statuses = _statuses(s.journal_path, s.cid(1, "e"))
        assert "unknown" in statuses, statuses

    run(go())


def _statuses(path: Path, client_id: str) -> list[str]:
    journal = Journal(path, readonly=True)
    try:
        return [r[0] for r in journal.conn.execute("SELECT status FROM intents WHERE client_id = ? ORDER BY rowid",
                                                   (client_id,))]
    finally:
        journal.close()


@asynccontextmanager
async def fired_stop(options: SimOptions, events: list[Any]) -> AsyncIterator[Any]:
    """An adapter on the simulator's REST alone (no user stream: nothing is pushed, as while the bot is
    down, or its stream is), a long of 0.01 with its stop ``c-1-s1``, and that stop fired."""
    from gatebot.core.clock import LiveClock
    from gatebot.core.events import SubmitEntry, SubmitStop
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from gatebot.exchanges.bingx.rest import RestClient

    async with BingXSimulator(options) as sim:
        adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url), hedge_mode=False, clock=LiveClock())
        adapter.rest = RestClient(adapter.rest_url, options.api_key, options.secret, clock=adapter.clock)
        await adapter.rest.start()
        adapter._sink = events.append
        try:
            price = (await adapter.klines(SYMBOL, "5m", *_last_day(adapter)))[-1].close
            await adapter.submit(SubmitEntry(client_id="c-1-e1", symbol=SYMBOL, side="long", qty=Decimal("0.01")))
            stop_price = (Decimal(repr(price)) * Decimal("0.99")).quantize(Decimal("0.1"))
            await adapter.submit(SubmitStop(client_id="c-1-s1", symbol=SYMBOL, side="long", qty=Decimal("0.01"),
                                            stop_price=stop_price))
            sim.faults.fire_stops_now(SYMBOL)
            events.clear()
            yield adapter
        finally:
            await adapter.rest.close()


def test_chaos_regression_a_cancel_of_an_order_that_filled_first_delivers_its_fill(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos run: a replaced stop fired during a stream drop; its cancel was answered "order not exist"
    and taken for canceled, and the fill was never booked (I5). The adapter now asks for the fills of an
    order that is gone before it reports it canceled."""
    from gatebot.core.events import CancelOrder, OrderCanceled, OrderFilled

    async def go() -> None:
        events: list[Any] = []
        async with fired_stop(SimOptions(mode="manual", history_bars=50), events) as adapter:
            await adapter.cancel(CancelOrder(client_id="c-1-s1", symbol=SYMBOL))
            assert [type(e) for e in events] == [OrderFilled, OrderCanceled]
            assert events[0].client_id == "c-1-s1" and events[0].qty == Decimal("0.01")

    run(go())


@pytest.mark.parametrize("stop_fill_event", ["same_id", "derived_id"])
def test_the_fills_of_a_stop_that_fired_are_found_under_either_order_id(monkeypatch: pytest.MonkeyPatch,
                                                                         stop_fill_event: str) -> None:
    """Whether BingX books a fired stop's fill on the stop itself or on a derived MARKET order linked by
    ``triggerOrderId`` is UNCONFIRMED (protocol §6.4): recovery asks for a stop's fills either way, and
    must find them (else a stop that fired while the bot was down is taken for a position closed by hand)."""
    from gatebot.simulators.bingx.options import Switches

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50, switches=Switches(stop_fill_event=stop_fill_event))
        async with fired_stop(options, []) as adapter:
            (fill,) = await adapter.order_fills(SYMBOL, "c-1-s1")
            assert (fill.client_id, fill.qty, fill.final) == ("c-1-s1", Decimal("0.01"), True)
            assert fill.realized_pnl < 0 and fill.fee > 0

    run(go())


def test_funding_is_booked_from_the_push_and_after_a_restart_from_the_income_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatebot.exchanges.paper.funding import FundingOptions

    def booked() -> int:
        journal = Journal(tmp_path / "state" / "it.sqlite", readonly=True)
        try:
            return journal.funding_count()
        finally:
            journal.close()

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=120, volatility=0.0005,
                             funding=FundingOptions(rate=Decimal("0.0001"), interval_h=1))
        async with BingXSimulator(options) as sim:
            paid = sim.core.account.funding
            async with session(tmp_path, monkeypatch, sim=sim, params="{ enter_on = 1 }") as s:
                await s.candles_until(lambda: s.state == "protected", "protected")
                await s.candles_until(lambda: len(paid) >= 2, "two funding times (hourly)", limit=30)
                await s.until(lambda: booked() == len(paid), "every payment booked from its push")
                assert all(p.side == "long" and p.paid > 0 for p in paid)
                assert await s.violations() == []
            down = len(paid)
            await sim.advance(14)  # a funding time passes while the bot is down: its push is lost
            assert len(paid) == down + 1
            async with session(tmp_path, monkeypatch, sim=sim, params="{ enter_on = 1 }") as s:
                assert booked() == len(paid), "recovery read the payment from the income history"
                assert await s.violations() == []
            journal = Journal(tmp_path / "state" / "it.sqlite", readonly=True)
            try:
                assert journal.funding_total() == sum((p.paid for p in paid), Decimal(0))
            finally:
                journal.close()
            # gatebot check-invariants: I5 with funding through the adapter's REST view (the income history)
            import argparse

            from gatebot.app.check_invariants import _check_all

            args = argparse.Namespace(rest=sim.rest_url, symbol=SYMBOL, api_key_env="SIM_BINGX_KEY",
                                      secret_env="SIM_BINGX_SECRET", secrets_file=None)
            assert await _check_all([tmp_path / "state" / "it.sqlite"], args) == {"it": []}
            sim.core.account.funding.append(paid[-1])  # the exchange now shows one payment the journal lacks
            [violation] = (await _check_all([tmp_path / "state" / "it.sqlite"], args))["it"]
            assert violation.invariant == "I5" and "funding" in violation.detail


def _orders(sim: BingXSimulator) -> list[str]:
    return sorted(o.client_id for o in sim.core.open_orders(SYMBOL))


def _fill_ids(path: Path) -> list[str]:
    journal = Journal(path, readonly=True)
    try:
        return [r[0] for r in journal.conn.execute("SELECT client_id FROM fills ORDER BY seq")]
    finally:
        journal.close()


def test_a_new_journal_on_a_used_account_is_refused_and_adopts_only_with_adopt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 1: the bot against the simulator with a long open and its stop working, Ctrl-C, the state
    folder set aside (a user starting afresh), the bot started again. The new journal counted from 1 again:
    it canceled the old stop and booked the old orders' fills as its own (a naked long, a phantom trade).
    Now the start is refused (exit 2 from the CLI) and touches nothing; with --adopt the new journal takes
    the position over: its own stop first, then the old one canceled."""
    params = "{ enter_on = 1, exit_on = 0 }"

    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as sim:
            async with session(tmp_path, monkeypatch, sim=sim, attached=False, params=params) as s:
                await s.candles_until(lambda: s.state == "protected", "protected")
                old_stop = s.engine.pos.rec.stop_id
            (tmp_path / "state").rename(tmp_path / "state.bak")

            refused = bot(tmp_path, monkeypatch, sim, attached=False, params=params)
            await asyncio.wait_for(refused.run(), timeout=30)
            (reason,) = refused.refused.values()
            assert "is new, but the account holds a long position of" in reason and old_stop in reason, reason
            assert "gatebot run --adopt" in reason
            assert _orders(sim) == [old_stop], "the old stop still guards the long"

            async with session(tmp_path, monkeypatch, sim=sim, attached=False, params=params, adopt=True) as s:
                new_stop = s.cid(1, "s")
                await s.until(lambda: s.state == "protected" and s.engine.pos.rec.working == [new_stop],
                              "the adopted long protected by the new journal's stop, the old one canceled")
                assert _orders(sim) == [new_stop] and new_stop != old_stop
                assert await s.violations() == []
                assert s.transitions()[0] == ("flat", "adopt", "entering")
            assert _fill_ids(s.journal_path) == [], "no fill of the old journal's orders booked as this one's"

    run(go())


def _first_entry_in(text: str) -> bool:
    """The text names instance it's first entry (whatever its journal's epoch)."""
    return any(p is not None and (p.instance, p.seq, p.role, p.attempt) == ("it", 1, "e", 1)
               for p in map(ids.parse, re.findall(r"it-[0-9a-z-]+", text)))


def _is_first_entry(url: str) -> bool:
    match = re.search(r"clientOrderId=([^&]+)", url)
    return match is not None and _first_entry_in(match[1])


UNREADABLE_REPLIES = {
    "not-an-id": b'{"code":0,"msg":"","data":{"order":{"symbol":"BTC-USDT","orderId":"18098413796O3398656",'
                 b'"side":"BUY","positionSide":"BOTH","type":"MARKET"}}}',
    "gateway-page": b"<html><body>502 Bad Gateway</body></html>",
    "no-order": b'{"code":"0","msg":"","data":{"result":true}}',
}


@pytest.mark.parametrize("attached", [True, False], ids=["attached", "separate"])
@pytest.mark.parametrize("reply", list(UNREADABLE_REPLIES))
def test_an_entry_whose_reply_the_codec_refuses_still_ends_protected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    attached: bool, reply: str) -> None:
    """The order is placed on the exchange, but its reply cannot be read: an unknown outcome (never a crash, never
    a plain error that would leave the position without its stop), resolved by querying the client id."""
    from gatebot.exchanges.bingx.constants import ORDER
    from gatebot.exchanges.bingx.rest import RestClient

    real_send = RestClient._send
    refused: list[str] = []

    async def send(self: RestClient, method: str, url: str, path: str) -> bytes:
        body = await real_send(self, method, url, path)  # the exchange executes the order...
        if method == "POST" and path == ORDER and _is_first_entry(url):
            refused.append(url)
            return UNREADABLE_REPLIES[reply]  # ...and its reply is one the codec refuses
        return body

    monkeypatch.setattr(RestClient, "_send", send)

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=attached, params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected although the entry's reply was refused")
            await s.settle()
            view = s.sim.account_view()
            assert view.order_count(s.cid(1, "e")) == 1
            (stop,) = await view.open_orders(SYMBOL)
            assert (stop.role, stop.client_id) == ("stop", s.cid(1, "s"))
            assert await s.violations() == []
        assert len(refused) == 1
        assert "unknown" in _statuses(s.journal_path, s.cid(1, "e"))


def test_two_bots_on_one_account_and_symbol_halt_and_leave_no_part_unguarded(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2: two bots (separate state folders, one config) on one account and symbol each took the
    other's position and orders for their own. Now each sees the other's orders (another epoch of its
    instance) and halts naming them, once its own position is guarded; neither books the other's fills."""
    params = "{ enter_on = 1, exit_on = 0, fraction = 0.2 }"

    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as sim, \
                session(tmp_path, monkeypatch, sim=sim, attached=False, params=params, state="a") as a, \
                session(tmp_path, monkeypatch, sim=sim, attached=False, params=params, state="b") as b:
            for _ in range(6):
                if a.runner.halted and b.runner.halted:
                    break
                bars = a.runner.bars, b.runner.bars
                await sim.advance(1)
                await until(lambda bars=bars: (a.runner.bars, b.runner.bars) > bars, "the candle to reach both",
                            timeout=15)
                await until(lambda: all(e is None or e.idle for e in (a.engine, b.engine)), "both idle")
            # Both entered on one candle, so each met the other's orders (a bot that met the other's entry
            # while still flat halts at once, before entering: then the other is the one owner left).
            halted = [s for s in (a, b) if s.runner.halted]
            assert halted, "another journal's orders on the account went unnoticed"
            for s in halted:
                (why,) = s.runner.halted.values()
                assert "belongs to another journal of this instance" in why and "one owner" in why, why
            held = (await sim.account_view().position(SYMBOL, "long")).qty
            stops = [o for o in await sim.account_view().open_orders(SYMBOL) if o.role == "stop"]
            assert held > 0 and sum(o.qty for o in stops) >= held, "every part of the long has its stop"
            for s in (a, b):
                epoch = ids.parse(s.cid(1, "e")).epoch  # type: ignore[union-attr]
                assert all(ids.parse(c).epoch == epoch for c in _fill_ids(s.journal_path)), "only its own fills"
            if len(halted) == 1:
                (alone,) = [s for s in (a, b) if not s.runner.halted]
                assert await alone.violations() == [], "the one owner left holds the account as its journal says"

    run(go())


def test_a_duplicate_id_of_a_dead_stop_is_never_taken_for_a_live_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding (a journal restored from an older backup): its stop was refused as a duplicate id and the
    adapter delivered the old, canceled stop as accepted: protected without a stop. A duplicate now
    delivers what became of the order; another order under the id is IdTaken (the engine halts)."""
    from gatebot.core.clock import LiveClock
    from gatebot.core.events import CancelOrder, OrderAccepted, OrderCanceled, SubmitEntry, SubmitStop
    from gatebot.core.exchange import IdTaken
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from gatebot.exchanges.bingx.rest import RestClient

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50)
        async with BingXSimulator(options) as sim:
            adapters = []
            for _ in range(2):  # the second: a restarted bot (its order book does not know the stop)
                adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url), hedge_mode=False, clock=LiveClock())
                adapter.rest = RestClient(adapter.rest_url, options.api_key, options.secret, clock=adapter.clock)
                await adapter.rest.start()
                adapters.append(adapter)
            events: list[Any] = []
            first, restarted = adapters
            first._sink = restarted._sink = events.append
            try:
                price = (await first.klines(SYMBOL, "5m", *_last_day(first)))[-1].close
                await first.submit(SubmitEntry(client_id="c-1-e1", symbol=SYMBOL, side="long", qty=Decimal("0.01")))
                stop = SubmitStop(client_id="c-1-s1", symbol=SYMBOL, side="long", qty=Decimal("0.01"),
                                  stop_price=(Decimal(repr(price)) * Decimal("0.99")).quantize(Decimal("0.1")))
                await first.submit(stop)
                await first.cancel(CancelOrder(client_id="c-1-s1", symbol=SYMBOL))
                events.clear()
                await restarted.submit(stop)
                assert [type(e) for e in events] == [OrderCanceled], events
                assert not any(isinstance(e, OrderAccepted) for e in events)
                with pytest.raises(IdTaken, match="another order under c-1-s1"):
                    await restarted.submit(msgspec.structs.replace(stop, qty=Decimal("0.02")))
            finally:
                for adapter in adapters:
                    await adapter.rest.close()  # type: ignore[union-attr]

    run(go())


def test_a_duplicate_id_whose_order_cannot_be_read_is_an_unknown_outcome() -> None:
    """A resend refused as a duplicate, and the order under the id then not readable (lost reply, busy): the
    outcome is unknown (OrderUnknown, resolved by the engine's query later), never a bare transport error."""
    from gatebot.core.clock import LiveClock
    from gatebot.core.events import SubmitEntry
    from gatebot.core.exchange import OrderUnknown
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from gatebot.exchanges.bingx.rest import RestClient, TransportError

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50)
        async with BingXSimulator(options) as sim:
            adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url, request_timeout_s=1.0), hedge_mode=False,
                                   clock=LiveClock())
            adapter.rest = RestClient(adapter.rest_url, options.api_key, options.secret, clock=adapter.clock)
            await adapter.rest.start()
            events: list[Any] = []
            adapter._sink = events.append
            try:
                entry = SubmitEntry(client_id="c-1-e1", symbol=SYMBOL, side="long", qty=Decimal("0.01"))
                await adapter.submit(entry)
                events.clear()
                queried: list[str] = []

                async def lost(symbol: str, client_id: str) -> None:
                    queried.append(client_id)
                    raise TransportError("the query's reply was lost")

                adapter.query_order = lost  # type: ignore[method-assign]
                with pytest.raises(OrderUnknown, match=r"c-1-e1.*the query's reply was lost"):
                    await adapter.submit(entry)
                assert queried == ["c-1-e1"], "the duplicate was asked about"
                assert events == [] and sim.account_view().order_count("c-1-e1") == 1
            finally:
                await adapter.rest.close()

    run(go())


def test_an_entry_fill_push_the_codec_refuses_is_found_over_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The entry's fill push arrives in a shape the codec refuses: the push is counted and logged with its raw
    frame (listenKey redacted), and the instance reconciles over REST, which finds the fill: the stop goes out."""
    import json
    import logging

    from gatebot.exchanges.bingx import codec
    from gatebot.exchanges.bingx.user_stream import UserStream

    real_handle = UserStream.handle
    mangled: list[str] = []

    async def handle(self: UserStream, ws: Any, frame: bytes | str) -> bool:
        text = codec.ungzip_frame(frame)
        if '"ORDER_TRADE_UPDATE"' in text and '"TRADE"' in text and _first_entry_in(text):
            push = json.loads(text)
            push["o"]["i"] = f"{push['o']['i']}-v2"  # an id the codec cannot read exactly: refused
            push["listenKey"] = self.key
            text = json.dumps(push)
            mangled.append(text)
        return await real_handle(self, ws, text)

    monkeypatch.setattr(UserStream, "handle", handle)
    caplog.set_level(logging.WARNING, "gatebot")

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            adapter = s.runner.adapters["bx"]
            await s.candles_until(lambda: s.state == "protected", "protected after the reconcile found the fill")
            await s.settle()
            assert mangled, "the fill push was refused by the codec"
            assert adapter.user.unreadable == len(mangled)
            assert adapter.entries_blocked is None, "one unreadable push does not stop entries"
            assert adapter.user.key not in caplog.text, "the listenKey is redacted"
            assert "unreadable user frame #1 (ORDER_TRADE_UPDATE" in caplog.text and "-v2" in caplog.text
            assert await s.violations() == []


def test_a_leverage_changed_by_hand_is_set_back_before_the_next_entry(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding: a leverage changed by hand on the exchange went unnoticed: new positions at 20x while
    configured for 4x, until the next restart. BingX pushes ACCOUNT_CONFIG_UPDATE on the change; the bot
    sets the leverage back, journals it, and only then enters."""
    from gatebot.simulators.bingx.account import set_leverage

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 2, exit_on = 0 }") as s:
            assert s.sim.leverage_sides[SYMBOL] == (4, 4)
            await set_leverage(s.sim, {"symbol": SYMBOL, "side": "BOTH", "leverage": "20"})  # in the app
            await s.until(lambda: s.sim.leverage_sides[SYMBOL] == (4, 4), "the leverage set back to 4x")
            await s.candles_until(lambda: s.state == "protected", "protected")
            assert s.sim.leverage_sides[SYMBOL] == (4, 4)
        journal = Journal(s.journal_path, readonly=True)
        try:
            restored = journal.conn.execute(
                "SELECT ts, message FROM rejections WHERE trigger = 'settings_restored'").fetchall()
            (entry_ts,) = journal.conn.execute("SELECT min(ts) FROM intents").fetchone()
        finally:
            journal.close()
        assert [m for _, m in restored] == ["BTC-USDT leverage 20/20x -> 4x"]
        assert restored[0][0] <= entry_ts

    run(go())


def test_check_invariants_reports_two_journals_that_claim_one_position(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 2: two bots on one account both claimed one short, each with a stop, and check-invariants
    said ok for both. Given both state folders it names the two journals (I6)."""
    import argparse
    import shutil

    from gatebot.app.check_invariants import _check_all

    async def go() -> None:
        async with BingXSimulator(SimOptions(mode="manual", history_bars=120)) as sim:
            async with session(tmp_path, monkeypatch, sim=sim, attached=False,
                               params="{ enter_on = 1, exit_on = 0 }") as s:
                await s.candles_until(lambda: s.state == "protected", "protected")
            shutil.copytree(tmp_path / "state", tmp_path / "copy")  # a second journal that claims the same long
            args = argparse.Namespace(rest=sim.rest_url, api_key_env="SIM_BINGX_KEY", secret_env="SIM_BINGX_SECRET",
                                      secrets_file=None, symbol=SYMBOL)
            alone = await _check_all([tmp_path / "state" / "it.sqlite"], args)
            assert alone == {"it": []}
            both = await _check_all([tmp_path / "state" / "it.sqlite", tmp_path / "copy" / "it.sqlite"], args)
            names = [str(tmp_path / "state" / "it"), str(tmp_path / "copy" / "it")]
            for name in names:
                (v,) = both[name]
                assert v.invariant == "I6" and all(n in v.detail for n in names), v
                assert "claim one long BTC-USDT" in v.detail, v

    run(go())


def _last_day(adapter: Any) -> tuple[int, int]:
    """The open-time range [now - 1 day, now] of the latest candles (the gap filler asks one page per window)."""
    now_ms = adapter.clock.now_ms()
    return now_ms - 86_400_000, now_ms


def test_gap_filler_keeps_every_candle_of_a_range_longer_than_one_page() -> None:
    """BingX answers a range longer than one page with one end of it (the simulator: the newest 1440); the gap
    filler must still return every candle of the range, in order, none twice."""
    from gatebot.core.clock import LiveClock
    from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from gatebot.exchanges.bingx.rest import RestClient

    step_ms = 300_000

    async def fetch() -> tuple[list[int], int, int]:
        options = SimOptions(mode="manual", history_bars=3200)
        async with BingXSimulator(options) as sim:
            adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url), hedge_mode=False, clock=LiveClock())
            adapter.rest = RestClient(adapter.rest_url, options.api_key, options.secret, clock=adapter.clock)
            await adapter.rest.start()
            try:
                now_ms = adapter.clock.now_ms()
                end_ms = now_ms - now_ms % step_ms - step_ms
                start_ms = end_ms - 3000 * step_ms
                candles = await adapter.klines(SYMBOL, "5m", start_ms, end_ms)
            finally:
                await adapter.rest.close()
        return [c.open_time for c in candles], start_ms, end_ms

    times, start_ms, end_ms = run(fetch())
    assert times == list(range(start_ms, end_ms, step_ms))
