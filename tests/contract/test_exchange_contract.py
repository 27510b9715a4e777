"""The exchange port's promises (core/exchange.py), one suite run against every adapter (after hummingbot's
connector test base): :class:`ExchangeContract` states them once; each ``Test...`` class below inherits it and
says only how to open its venue. A promise one adapter does not keep is a finding, never a skip here.

Each test opens a fresh venue (an empty account of 10,000 USDT in one-way mode at leverage 4, a market price)
and talks to it only through the adapter protocol; the venue's own side (how many orders it holds under an id,
its market) is read through :class:`Venue`, never through the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest

from gatebot.core import ids
from gatebot.core.clock import LiveClock, VirtualClock
from gatebot.core.events import (
    AnyEvent,
    CancelOrder,
    CandleClosed,
    FundingPaid,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
)
from gatebot.core.exchange import ExchangeAdapter, FundingHistory, IdTaken
from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from gatebot.exchanges.paper.funding import FundingOptions
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import until

SYMBOL = "BTC-USDT"
LEVERAGE = 4
FUNDING = FundingOptions(rate=Decimal("0.0001"), interval_h=1)
"""Hourly funding at a positive rate (longs pay): a funding time passes within a dozen 5m candles."""
ENTRY = ids.make("ct", ids.LEGACY, 1, "e", 1)
STOP = ids.make("ct", ids.LEGACY, 1, "s", 1)
TP = ids.make("ct", ids.LEGACY, 1, "t", 1)


class Venue:
    """One adapter on a fresh account, and the venue's own side of it."""

    adapter: ExchangeAdapter
    events: list[AnyEvent]
    qty: Decimal
    """An entry size the venue's minimums accept and its balance covers."""
    balance_places: int | None = None
    """Decimal places the venue reports balances with (None: exact)."""

    def price(self) -> Decimal:
        """The venue's current market (mark) price."""
        raise NotImplementedError

    def order_count(self, client_id: str) -> int:
        """How many orders the venue itself holds under ``client_id``."""
        raise NotImplementedError

    async def market(self, candles: int) -> None:
        """Play ``candles`` 5m candles of the venue's market (market time passes)."""
        raise NotImplementedError

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait, bounded, for what the adapter reports (a pushed event may come after the reply)."""
        await until(condition, what, timeout=10.0)

    def of(self, kind: type[Any], client_id: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and getattr(e, "client_id", None) == client_id]

    async def enter(self) -> OrderFilled:
        """A market long of :attr:`qty` under ENTRY, filled; its one final fill."""
        await self.adapter.submit(SubmitEntry(client_id=ENTRY, symbol=SYMBOL, side="long", qty=self.qty))
        await self.until(lambda: any(f.final for f in self.of(OrderFilled, ENTRY)), "the entry's final fill")
        (fill,) = self.of(OrderFilled, ENTRY)
        return fill

    async def stop_below(self, fraction: str = "0.99") -> SubmitStop:
        tick = (await self.adapter.instrument(SYMBOL)).tick
        price = (self.price() * Decimal(fraction)).quantize(tick, rounding=ROUND_DOWN)
        stop = SubmitStop(client_id=STOP, symbol=SYMBOL, side="long", qty=self.qty, stop_price=price)
        await self.adapter.submit(stop)
        return stop


class ExchangeContract:
    """The promises of the adapter protocol. Subclasses implement :meth:`venue` (an async context manager
    yielding a started :class:`Venue`); the class name does not start with ``Test``, so pytest collects the
    promises only through the subclasses."""

    def venue(self) -> Any:
        raise NotImplementedError

    def check(self, body: Callable[[Venue], Awaitable[None]]) -> None:
        async def go() -> None:
            async with self.venue() as v:
                await body(v)

        asyncio.run(go())

    def test_the_adapter_satisfies_the_protocol(self) -> None:
        async def body(v: Venue) -> None:
            assert isinstance(v.adapter, ExchangeAdapter)

        self.check(body)

    def test_a_market_entry_s_fill_arrives_as_an_execution_event_with_exact_decimal_qty_and_price(self) -> None:
        async def body(v: Venue) -> None:
            price = v.price()
            fill = await v.enter()
            assert type(fill.qty) is Decimal and type(fill.price) is Decimal and type(fill.fee) is Decimal
            assert (fill.qty, fill.cum_qty, fill.final) == (v.qty, v.qty, True)
            assert fill.price == price, "a market order fills at the market price (no slippage configured)"
            assert fill.fee > 0 and fill.trade_id
            assert v.of(OrderAccepted, ENTRY), "the entry was reported accepted"

        self.check(body)

    def test_an_order_placed_twice_with_the_same_client_id_exists_once(self) -> None:
        async def body(v: Venue) -> None:
            await v.enter()
            await v.adapter.submit(SubmitEntry(client_id=ENTRY, symbol=SYMBOL, side="long", qty=v.qty))
            assert v.order_count(ENTRY) == 1
            assert (await v.adapter.position(SYMBOL, "long")).qty == v.qty, "the second copy filled nothing"

        self.check(body)

    def test_an_order_resent_under_the_id_of_a_filled_one_delivers_its_fill_again(self) -> None:
        """A resend after an unknown outcome (or a restart) is idempotent by client id: the venue answers with
        what became of the order (here its fill), never a refusal that would read as "not placed"."""
        async def body(v: Venue) -> None:
            fill = await v.enter()
            seen = len(v.events)
            await v.adapter.submit(SubmitEntry(client_id=ENTRY, symbol=SYMBOL, side="long", qty=v.qty))
            await v.until(lambda: any(isinstance(e, OrderFilled) for e in v.events[seen:]), "the fill delivered again")
            again = v.events[seen:]
            assert not [e for e in again if isinstance(e, OrderRejected)], again
            fills = [(f.client_id, f.trade_id, f.qty, f.price, f.final) for f in again if isinstance(f, OrderFilled)]
            assert fills == [(ENTRY, fill.trade_id, fill.qty, fill.price, True)]
            assert not [e for e in again if isinstance(e, OrderAccepted)], "a filled order is not working"
            assert v.order_count(ENTRY) == 1

        self.check(body)

    def test_another_order_under_a_taken_client_id_is_id_taken(self) -> None:
        async def body(v: Venue) -> None:
            await v.enter()
            with pytest.raises(IdTaken, match=f"another order under {ENTRY}"):
                await v.adapter.submit(SubmitEntry(client_id=ENTRY, symbol=SYMBOL, side="long", qty=v.qty * 2))
            assert v.order_count(ENTRY) == 1
            assert (await v.adapter.position(SYMBOL, "long")).qty == v.qty

        self.check(body)

    def test_query_by_client_id_finds_the_order_and_an_unknown_id_is_reported_unknown(self) -> None:
        async def body(v: Venue) -> None:
            fill = await v.enter()
            state = await v.adapter.query_order(SYMBOL, ENTRY)
            assert state is not None
            assert (state.client_id, state.symbol, state.role, state.side, state.status) == (
                ENTRY, SYMBOL, "entry", "long", "filled")
            assert (state.qty, state.filled_qty, state.avg_price) == (v.qty, v.qty, fill.price)
            assert [(f.trade_id, f.qty, f.price) for f in await v.adapter.order_fills(SYMBOL, ENTRY)] == [
                (fill.trade_id, fill.qty, fill.price)]
            unknown = ids.make("ct", ids.LEGACY, 9, "e", 9)
            assert await v.adapter.query_order(SYMBOL, unknown) is None
            assert await v.adapter.order_fills(SYMBOL, unknown) == []

        self.check(body)

    def test_a_reduce_only_stop_market_is_among_the_open_orders_and_can_be_canceled(self) -> None:
        async def body(v: Venue) -> None:
            await v.enter()
            stop = await v.stop_below()
            await v.until(lambda: bool(v.of(OrderAccepted, STOP)), "the stop accepted")
            (working,) = await v.adapter.open_orders(SYMBOL)
            assert (working.client_id, working.role, working.side, working.status) == (STOP, "stop", "long", "new")
            assert (working.qty, working.stop_price, working.reduce_only) == (v.qty, stop.stop_price, True)
            await v.adapter.cancel(CancelOrder(client_id=STOP, symbol=SYMBOL))
            await v.until(lambda: bool(v.of(OrderCanceled, STOP)), "the stop canceled")
            assert await v.adapter.open_orders(SYMBOL) == []
            state = await v.adapter.query_order(SYMBOL, STOP)
            assert state is not None and state.status == "canceled" and state.filled_qty == 0
            assert (await v.adapter.position(SYMBOL, "long")).qty == v.qty, "canceling the stop closed nothing"

        self.check(body)

    def test_a_reduce_only_take_profit_beside_the_stop_is_among_the_open_orders_and_can_be_canceled(self) -> None:
        async def body(v: Venue) -> None:
            await v.enter()
            await v.stop_below()
            tick = (await v.adapter.instrument(SYMBOL)).tick
            price = (v.price() * Decimal("1.01")).quantize(tick, rounding=ROUND_DOWN)
            await v.adapter.submit(SubmitTakeProfit(client_id=TP, symbol=SYMBOL, side="long", qty=v.qty,
                                                    stop_price=price))
            await v.until(lambda: bool(v.of(OrderAccepted, TP)), "the take-profit accepted")
            working = {o.client_id: o for o in await v.adapter.open_orders(SYMBOL)}
            assert sorted(working) == sorted([STOP, TP])
            tp = working[TP]
            assert (tp.role, tp.side, tp.status, tp.qty, tp.stop_price, tp.reduce_only) == (
                "take_profit", "long", "new", v.qty, price, True)
            await v.adapter.cancel(CancelOrder(client_id=TP, symbol=SYMBOL))
            await v.until(lambda: bool(v.of(OrderCanceled, TP)), "the take-profit canceled")
            assert [o.client_id for o in await v.adapter.open_orders(SYMBOL)] == [STOP]
            assert (await v.adapter.position(SYMBOL, "long")).qty == v.qty, "canceling it closed nothing"

        self.check(body)

    def test_a_cancel_of_an_order_that_is_already_gone_is_a_definite_answer(self) -> None:
        async def body(v: Venue) -> None:
            await v.enter()
            await v.adapter.cancel(CancelOrder(client_id=ENTRY, symbol=SYMBOL))  # filled: gone
            await v.until(lambda: bool(v.of(OrderCanceled, ENTRY)), "the filled entry's cancel answered")
            never = ids.make("ct", ids.LEGACY, 9, "s", 9)
            await v.adapter.cancel(CancelOrder(client_id=never, symbol=SYMBOL))  # never placed
            await v.until(lambda: bool(v.of(OrderCanceled, never)), "the unknown order's cancel answered")
            assert (await v.adapter.position(SYMBOL, "long")).qty == v.qty

        self.check(body)

    def test_position_and_balance_agree_with_the_fills(self) -> None:
        async def body(v: Venue) -> None:
            before = await v.adapter.balance()
            assert (await v.adapter.position(SYMBOL, "long")).qty == 0
            fill = await v.enter()
            held = await v.adapter.position(SYMBOL, "long")
            assert (held.symbol, held.side, held.qty, held.entry_price) == (SYMBOL, "long", fill.qty, fill.price)
            assert (await v.adapter.position(SYMBOL, "short")).qty == 0
            spent = fill.fee + fill.qty * fill.price / LEVERAGE  # the fee paid and the margin the position holds
            after = await v.adapter.balance()
            if v.balance_places is None:
                assert before - after == spent
            else:
                assert abs(before - after - spent) <= Decimal(1).scaleb(-v.balance_places)

        self.check(body)

    def test_funding_of_a_position_held_across_a_funding_time_is_delivered_and_listed(self) -> None:
        async def body(v: Venue) -> None:
            assert isinstance(v.adapter, FundingHistory), "both adapters declare the funding history"
            await v.enter()
            await v.market(14)  # past one hourly funding time (two, where the market starts late in an hour)
            listed = [(p.symbol, p.funding_time, p.paid) for p in await v.adapter.funding(SYMBOL, 0)]
            assert listed, "the history lists the payment"
            assert all(paid > 0 for _, _, paid in listed), "a long pays at a positive rate"

            def delivered() -> set[tuple[str, int, Decimal]]:
                return {(e.symbol, e.funding_time, e.paid) for e in v.events if isinstance(e, FundingPaid)}

            # the journal books a payment once however often it is reported: delivered as a set
            await v.until(lambda: delivered() >= set(listed), "every listed payment delivered")
            assert delivered() == set(listed)

        self.check(body)


class PaperVenue(Venue):
    qty = Decimal("0.5")

    def __init__(self) -> None:
        self.clock = VirtualClock(0)
        self.exchange = PaperExchange(PaperOptions(stop_slippage_bps=Decimal(0), funding=FUNDING), clock=self.clock)
        self.adapter = self.exchange
        self.events = []
        self.candles = 0

    def price(self) -> Decimal:
        return self.exchange.core.sync().last_price[SYMBOL]

    def order_count(self, client_id: str) -> int:
        return self.exchange.order_count(client_id)

    async def market(self, candles: int) -> None:
        for _ in range(candles):
            self.candles += 1
            open_ms = self.candles * 300_000
            self.clock.advance_to(open_ms + 300_000)
            self.exchange.on_candle(CandleClosed(symbol=SYMBOL, interval="5m", open_time=open_ms, open=100.0,
                                                 high=100.5, low=99.5, close=100.0, volume=1.0))


class TestPaperExchange(ExchangeContract):
    @asynccontextmanager
    async def venue(self) -> AsyncIterator[Venue]:
        v = PaperVenue()
        await v.exchange.configure(SYMBOL, LEVERAGE, False)
        await v.market(1)
        await v.exchange.start(v.events.append)
        try:
            yield v
        finally:
            await v.exchange.stop()


class SimulatorVenue(Venue):
    qty = Decimal("0.01")
    balance_places = 4  # the simulator renders availableMargin as BingX does, to 4 places

    def __init__(self, sim: BingXSimulator, adapter: BingXAdapter) -> None:
        self.sim, self.adapter, self.events = sim, adapter, []

    def price(self) -> Decimal:
        return self.sim.mark_price(SYMBOL)

    def order_count(self, client_id: str) -> int:
        return self.sim.account_view().order_count(client_id)

    async def market(self, candles: int) -> None:
        await self.sim.advance(candles)


class TestBingXOnTheSimulator(ExchangeContract):
    @asynccontextmanager
    async def venue(self) -> AsyncIterator[Venue]:
        options = SimOptions(mode="manual", history_bars=50, volatility=0.0005, funding=FUNDING)
        async with BingXSimulator(options) as sim:
            adapter = BingXAdapter(BingXOptions(request_timeout_s=2.0), hedge_mode=False, clock=LiveClock())
            adapter.embed(sim.rest_url, sim.ws_url, (options.api_key, options.secret), None)
            v = SimulatorVenue(sim, adapter)
            await adapter.start(v.events.append)
            try:
                await adapter.configure(SYMBOL, LEVERAGE, False)
                yield v
            finally:
                await adapter.stop()
