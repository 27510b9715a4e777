"""Unit tests of the paper exchange's matching core (``exchanges/paper/matching.py``) and of the
in-process paper exchange around it (``exchanges/paper/exchange.py``): fills, fees, BingX's refusal
codes, stops on the candle path, orphan-stop policies, position modes and persistence."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.core.events import (
    ZERO,
    AnyEvent,
    CancelOrder,
    CandleClosed,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    StopSpec,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
)
from gatebot.core.exchange import ExchangeError, IdTaken
from gatebot.core.instrument import Instrument
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from gatebot.exchanges.paper.matching import FIRST_ORDER_ID, Account, MatchingCore

SYM = "BTC-USDT"
FEE = Decimal("0.0005")
BALANCE = Decimal(10000)
D = Decimal


# --- helpers -------------------------------------------------------------------------------------


def instrument() -> Instrument:
    return Instrument(symbol=SYM, tick=D("0.1"), step=D("0.0001"), min_qty=D("0.0001"), min_notional=D("2"))


def candle(open_time: int, o: float, h: float, lo: float, c: float) -> CandleClosed:
    return CandleClosed(symbol=SYM, interval="5m", open_time=open_time, open=o, high=h, low=lo, close=c, volume=1.0)


def make_core(*, price: float = 100.0, hedge: bool = False, orphan: str = "keep", balance: Decimal = BALANCE,
              leverage: int = 4, stop_slippage_bps: Decimal = ZERO) -> MatchingCore:
    """A core whose last price is ``price`` (set through a candle, as the market would). Stops fill exactly
    at their price (stop slippage 0) unless a test asks for slippage: most tests check exact prices."""
    account = Account(balance=balance, hedge_mode=hedge)
    account.leverage[SYM] = leverage
    core = MatchingCore(account, {SYM: instrument()}, fee_rate=FEE, orphan_stops=orphan,  # type: ignore[arg-type]
                        stop_slippage_bps=stop_slippage_bps)
    if price:
        assert core.on_candle(candle(0, price, price, price, price), 0) == []
    return core


def entry(core: MatchingCore, cid: str, side: str, qty: str, now: int = 1) -> list[AnyEvent]:
    return core.submit(SubmitEntry(client_id=cid, symbol=SYM, side=side, qty=D(qty)), now)  # type: ignore[arg-type]


def stop(core: MatchingCore, cid: str, side: str, qty: str, price: str, now: int = 2) -> list[AnyEvent]:
    cmd = SubmitStop(client_id=cid, symbol=SYM, side=side, qty=D(qty), stop_price=D(price))  # type: ignore[arg-type]
    return core.submit(cmd, now)


def close(core: MatchingCore, cid: str, side: str, qty: str, now: int = 3) -> list[AnyEvent]:
    return core.submit(SubmitClose(client_id=cid, symbol=SYM, side=side, qty=D(qty)), now)  # type: ignore[arg-type]


def kinds(events: list[AnyEvent]) -> list[type]:
    """The order events, in order; the position snapshots a fill is followed by are checked apart."""
    return [type(e) for e in events if not isinstance(e, PositionSnapshot)]


def orders_only(events: list[AnyEvent]) -> list[AnyEvent]:
    return [e for e in events if not isinstance(e, PositionSnapshot)]


def snapshots(events: list[AnyEvent]) -> list[PositionSnapshot]:
    return [e for e in events if isinstance(e, PositionSnapshot)]


def fills(events: list[AnyEvent]) -> list[OrderFilled]:
    return [e for e in events if isinstance(e, OrderFilled)]


def rejection(events: list[AnyEvent]) -> OrderRejected:
    assert len(events) == 1 and isinstance(events[0], OrderRejected), events
    return events[0]


def fee(qty: str, price: str) -> Decimal:
    return D(qty) * D(price) * FEE


# --- MARKET entries -------------------------------------------------------------------------------


def test_market_entry_fills_at_last_candle_close_with_taker_fee() -> None:
    core = make_core(price=0)
    core.on_candle(candle(0, 99.0, 101.0, 98.0, 100.5), 0)
    events = entry(core, "e1", "long", "2", now=7)

    assert kinds(events) == [OrderAccepted, OrderFilled]
    accepted, fill = orders_only(events)
    assert accepted.client_id == "e1" and fill.client_id == "e1"
    assert isinstance(accepted.order_id, int) and accepted.order_id > 2**53
    assert fill.order_id == accepted.order_id
    assert fill.price == D("100.5") and fill.qty == D(2) and fill.cum_qty == D(2) and fill.final
    assert fill.fee == D("2") * D("100.5") * FEE == D("0.1005")
    assert fill.realized_pnl == 0
    assert fill.ts == 7
    assert core.account.balance == D(10000) - D("0.1005")
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(2) and held.entry_price == D("100.5")
    assert core.holding(SYM, "short") is None
    # margin in use: notional / leverage
    assert core.available() == core.account.balance - D(2) * D("100.5") / 4
    order = core.order("e1")
    assert order is not None and order.status == "filled" and order.avg_price == D("100.5")
    assert core.open_orders(SYM) == []
    assert core.fills_of("e1") == [fill]


def test_set_price_moves_the_fill_price_and_order_ids_increase() -> None:
    core = make_core()
    core.set_price(SYM, D("123.4"))
    first = entry(core, "a", "long", "1")
    second = entry(core, "b", "long", "1")
    assert fills(first)[0].price == D("123.4")
    assert second[0].order_id == first[0].order_id + 1
    assert first[0].order_id >= FIRST_ORDER_ID
    assert fills(first)[0].trade_id != fills(second)[0].trade_id
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(2) and held.entry_price == D("123.4")


def test_adding_to_a_position_averages_the_entry_price() -> None:
    core = make_core(price=100.0)
    entry(core, "a", "long", "1")
    core.set_price(SYM, D("110"))
    entry(core, "b", "long", "3")
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(4)
    assert held.entry_price == (D(100) + D(330)) / D(4)


# --- refusals ----------------------------------------------------------------------------------


def test_duplicate_client_id_is_refused_101481_and_changes_nothing() -> None:
    core = make_core()
    entry(core, "e1", "long", "1")
    balance, next_id = core.account.balance, core.account.next_order_id
    r = rejection(entry(core, "e1", "long", "1"))
    assert r.code == 101481 and r.client_id == "e1"
    # a stop reusing the client id is refused too
    assert rejection(stop(core, "e1", "long", "1", "90")).code == 101481
    assert core.account.balance == balance and core.account.next_order_id == next_id
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(1)


def test_below_min_notional_is_refused_101400() -> None:
    core = make_core(price=100.0)
    r = rejection(entry(core, "small", "long", "0.0199"))  # 1.99 USDT < 2
    assert r.code == 101400 and r.client_id == "small"
    assert core.order("small") is None and core.holding(SYM, "long") is None
    # exactly the minimum notional is accepted
    assert kinds(entry(core, "ok", "long", "0.02")) == [OrderAccepted, OrderFilled]


def test_insufficient_margin_is_refused_101204() -> None:
    core = make_core(price=100.0)
    r = rejection(entry(core, "huge", "long", "1000"))  # 100000 / 4 = 25000 > 10000
    assert r.code == 101204
    assert core.account.balance == D(10000) and core.holding(SYM, "long") is None


def test_margin_check_includes_the_fee() -> None:
    # balance 100, leverage 4, price 100: 4 BTC needs 100 margin + 0.2 fee > 100; 3.99 needs 99.75 + 0.1995
    core = make_core(price=100.0, balance=D(100))
    assert rejection(entry(core, "too-much", "long", "4")).code == 101204
    assert kinds(entry(core, "fits", "long", "3.99")) == [OrderAccepted, OrderFilled]


def test_stop_without_position_is_refused_101205() -> None:
    core = make_core()
    r = rejection(stop(core, "s1", "long", "1", "90"))
    assert r.code == 101205 and r.client_id == "s1"
    assert core.open_orders(SYM) == []


def test_close_without_position_is_refused_101205() -> None:
    core = make_core()
    assert rejection(close(core, "c1", "short", "1")).code == 101205


@pytest.mark.parametrize("price", ["100", "100.1", "150"])
def test_long_stop_at_or_above_the_market_is_refused_110411(price: str) -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    assert rejection(stop(core, "s", "long", "1", price)).code == 110411
    assert core.open_orders(SYM) == []


@pytest.mark.parametrize("price", ["100", "99.9", "50"])
def test_short_stop_at_or_below_the_market_is_refused_110412(price: str) -> None:
    core = make_core(price=100.0)
    entry(core, "e", "short", "1")
    assert rejection(stop(core, "s", "short", "1", price)).code == 110412
    assert core.open_orders(SYM) == []


def test_stops_on_the_right_side_are_accepted() -> None:
    core = make_core(price=100.0, hedge=True)
    entry(core, "el", "long", "1")
    entry(core, "es", "short", "1")
    assert kinds(stop(core, "sl", "long", "1", "99.9")) == [OrderAccepted]
    assert kinds(stop(core, "ss", "short", "1", "100.1")) == [OrderAccepted]
    assert {o.client_id for o in core.open_orders(SYM)} == {"sl", "ss"}
    assert all(o.reduce_only and o.type == "STOP_MARKET" for o in core.open_orders(SYM))


@pytest.mark.parametrize("qty", ["0.00015", "1.00001", "0", "-1"])
def test_quantity_off_the_step_is_refused_109400(qty: str) -> None:
    core = make_core()
    r = rejection(entry(core, "e", "long", qty))
    assert r.code == 109400
    assert core.order("e") is None


def test_stop_price_off_the_tick_is_refused_109400() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    assert rejection(stop(core, "s", "long", "1", "95.05")).code == 109400


def test_no_market_price_is_refused_101415() -> None:
    core = make_core(price=0)
    assert rejection(entry(core, "e", "long", "1")).code == 101415


def test_unknown_symbol_is_refused() -> None:
    core = make_core()
    events = core.submit(SubmitEntry(client_id="x", symbol="ETH-USDT", side="long", qty=D(1)), 0)
    assert rejection(events).code == 109400


def test_entry_with_an_attached_stop_on_the_wrong_side_is_refused_before_filling() -> None:
    core = make_core(price=100.0)
    cmd = SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1), stop=StopSpec(client_id="s", price=D(101)))
    assert rejection(core.submit(cmd, 0)).code == 110411
    assert core.holding(SYM, "long") is None and core.account.balance == D(10000)


def test_entry_with_an_attached_stop_places_the_stop() -> None:
    core = make_core(price=100.0)
    cmd = SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1), stop=StopSpec(client_id="s", price=D(95)))
    events = orders_only(core.submit(cmd, 0))
    assert kinds(events) == [OrderAccepted, OrderFilled, OrderAccepted]
    assert events[2].client_id == "s"
    [working] = core.open_orders(SYM)
    assert working.client_id == "s" and working.stop_price == D(95) and working.qty == D(1)


# --- stops on the candle path ------------------------------------------------------------------


def _long_with_stop(orphan: str = "keep") -> MatchingCore:
    core = make_core(price=100.0, orphan=orphan)
    entry(core, "e", "long", "1")
    assert kinds(stop(core, "s", "long", "1", "95")) == [OrderAccepted]
    return core


def _short_with_stop(orphan: str = "keep") -> MatchingCore:
    core = make_core(price=100.0, orphan=orphan)
    entry(core, "e", "short", "1")
    assert kinds(stop(core, "s", "short", "1", "105")) == [OrderAccepted]
    return core


def test_long_stop_rests_while_the_candle_stays_above_it() -> None:
    core = _long_with_stop()
    assert core.on_candle(candle(300_000, 99.0, 101.0, 95.1, 96.0), 5) == []
    assert [o.client_id for o in core.open_orders(SYM)] == ["s"]
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(1)
    assert core.sync().last_price[SYM] == D("96.0")


@pytest.mark.parametrize(("low", "expected_pnl"), [(94.0, D(-5)), (95.0, D(-5))])
def test_long_stop_triggers_when_low_reaches_it_and_fills_at_the_stop(low: float, expected_pnl: Decimal) -> None:
    core = _long_with_stop()
    balance = core.account.balance
    events = core.on_candle(candle(300_000, 99.0, 100.0, low, 96.0), 5)
    assert kinds(events) == [OrderFilled]
    [fill] = orders_only(events)
    assert fill.client_id == "s" and fill.price == D(95) and fill.qty == D(1) and fill.ts == 5
    assert fill.realized_pnl == expected_pnl == (D(95) - D(100)) * D(1)
    assert fill.fee == fee("1", "95")
    assert core.account.balance == balance + expected_pnl - fee("1", "95")
    assert core.holding(SYM, "long") is None
    assert core.snapshot(SYM, "long").qty == 0
    assert core.open_orders(SYM) == []
    order = core.order("s")
    assert order is not None and order.status == "filled" and order.filled_qty == D(1)


def test_long_stop_gapped_through_fills_at_the_open() -> None:
    core = _long_with_stop()
    [fill] = orders_only(core.on_candle(candle(300_000, 93.0, 94.0, 92.0, 93.5), 5))
    assert isinstance(fill, OrderFilled)
    assert fill.price == D(93)
    assert fill.realized_pnl == (D(93) - D(100)) * D(1) == D(-7)
    assert core.holding(SYM, "long") is None


def test_short_stop_rests_while_the_candle_stays_below_it() -> None:
    core = _short_with_stop()
    assert core.on_candle(candle(300_000, 101.0, 104.9, 100.0, 104.0), 5) == []
    held = core.holding(SYM, "short")
    assert held is not None and held.qty == D(1)


@pytest.mark.parametrize("high", [105.0, 106.0])
def test_short_stop_triggers_when_high_reaches_it_and_fills_at_the_stop(high: float) -> None:
    core = _short_with_stop()
    balance = core.account.balance
    [fill] = orders_only(core.on_candle(candle(300_000, 101.0, high, 100.0, 104.0), 5))
    assert isinstance(fill, OrderFilled) and fill.client_id == "s"
    assert fill.price == D(105)
    assert fill.realized_pnl == (D(100) - D(105)) * D(1) == D(-5)
    assert core.account.balance == balance - D(5) - fee("1", "105")
    assert core.holding(SYM, "short") is None and core.open_orders(SYM) == []


def test_short_stop_gapped_through_fills_at_the_open() -> None:
    core = _short_with_stop()
    [fill] = orders_only(core.on_candle(candle(300_000, 107.0, 108.0, 106.5, 107.5), 5))
    assert isinstance(fill, OrderFilled)
    assert fill.price == D(107)
    assert fill.realized_pnl == (D(100) - D(107)) * D(1) == D(-7)
    assert core.holding(SYM, "short") is None


def test_profitable_stop_realizes_a_gain() -> None:
    # a trailing-style stop above the entry: entry at 100, market moves to 120, stop at 110
    core = make_core(price=100.0)
    entry(core, "e", "long", "2")
    core.on_candle(candle(300_000, 100.0, 121.0, 100.0, 120.0), 1)
    stop(core, "s", "long", "2", "110")
    [fill] = orders_only(core.on_candle(candle(600_000, 119.0, 119.5, 108.0, 109.0), 2))
    assert isinstance(fill, OrderFilled) and fill.price == D(110)
    assert fill.realized_pnl == (D(110) - D(100)) * D(2) == D(20)


def test_stop_larger_than_the_position_only_closes_the_position() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    stop(core, "s", "long", "3", "95")
    [fill] = orders_only(core.on_candle(candle(300_000, 99.0, 100.0, 94.0, 96.0), 5))
    assert isinstance(fill, OrderFilled) and fill.qty == D(1)
    assert fill.realized_pnl == D(-5)
    assert core.holding(SYM, "long") is None


@pytest.mark.parametrize("open_", [96.0, 109.0])
def test_stop_and_take_profit_in_the_same_candle_the_stop_fills(open_: float) -> None:
    core = _long_with_stop()
    assert kinds(core.submit_take_profit("tp", SYM, "long", D(1), D(110), 3)) == [OrderAccepted]
    events = core.on_candle(candle(300_000, open_, 111.0, 94.0, 100.0), 5)
    filled = fills(events)
    assert [f.client_id for f in filled] == ["s"]
    assert filled[0].price == D(95) and filled[0].realized_pnl == D(-5)
    # the take-profit found nothing left to close
    assert [type(e) for e in orders_only(events) if e.client_id == "tp"] == [OrderExpired]
    tp = core.order("tp")
    assert tp is not None and tp.filled_qty == 0 and tp.status == "expired"
    assert core.open_orders(SYM) == []


def test_short_stop_and_take_profit_in_the_same_candle_the_stop_fills() -> None:
    core = _short_with_stop(orphan="cancel")
    assert kinds(core.submit_take_profit("tp", SYM, "short", D(1), D(90), 3)) == [OrderAccepted]
    events = core.on_candle(candle(300_000, 100.0, 106.0, 89.0, 100.0), 5)
    assert [f.client_id for f in fills(events)] == ["s"]
    assert fills(events)[0].price == D(105)
    assert [type(e) for e in orders_only(events) if e.client_id == "tp"] == [OrderCanceled]
    tp = core.order("tp")
    assert tp is not None and tp.status == "canceled"


def test_take_profit_alone_fills_at_its_price() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    core.submit_take_profit("tp", SYM, "long", D(1), D(110), 3)
    [fill] = orders_only(core.on_candle(candle(300_000, 101.0, 112.0, 100.0, 111.0), 5))
    assert isinstance(fill, OrderFilled) and fill.client_id == "tp"
    assert fill.price == D(110) and fill.realized_pnl == D(10)


def test_take_profit_on_the_wrong_side_is_refused() -> None:
    core = make_core(price=100.0, hedge=True)
    entry(core, "el", "long", "1")
    entry(core, "es", "short", "1")
    assert rejection(core.submit_take_profit("t1", SYM, "long", D(1), D(100), 0)).code == 110413
    assert rejection(core.submit_take_profit("t2", SYM, "short", D(1), D(100), 0)).code == 110414


# --- orphan stops ------------------------------------------------------------------------------


# --- resting LIMIT and TRIGGER_MARKET orders -----------------------------------------------------


def rest(core: MatchingCore, cid: str, kind: str, side: str, qty: str, level: str, *, reduce_only: bool = False,
         now: int = 2) -> list[AnyEvent]:
    return core.submit_resting(cid, SYM, kind, side, D(qty), D(level), now,  # type: ignore[arg-type]
                               reduce_only=reduce_only)


@pytest.mark.parametrize(("kind", "side", "level", "path", "fill"), [
    # (order, position side it opens, its level, the next candle (o, h, l, c), the fill price or None)
    ("LIMIT", "long", "99", (100, 100.5, 99.5, 100), None),       # a buy limit rests above the low
    ("LIMIT", "long", "99", (100, 100.5, 98.5, 99), D("99")),     # ... fills at its price when reached
    ("LIMIT", "long", "99", (97, 97.5, 96, 97), D("97")),         # ... at the open, better, on a gap down
    ("LIMIT", "short", "101", (100, 101.5, 99.5, 101), D("101")),  # a sell limit on the way up
    ("LIMIT", "short", "101", (103, 104, 102, 103), D("103")),    # ... better on a gap up
    ("TRIGGER_MARKET", "long", "101", (100, 100.5, 99, 100), None),     # a buy trigger above the price
    ("TRIGGER_MARKET", "long", "101", (100, 101.5, 99.5, 101), D("101")),
    ("TRIGGER_MARKET", "long", "101", (103, 104, 102, 103), D("103")),  # ... worse on a gap up
    ("TRIGGER_MARKET", "short", "99", (100, 100.5, 98, 99), D("99")),   # a sell trigger below the price
    ("TRIGGER_MARKET", "short", "99", (97, 97.5, 96, 97), D("97")),     # ... worse on a gap down
])
def test_resting_orders_fill_on_the_path_at_their_level_or_the_gap(
        kind: str, side: str, level: str, path: tuple[float, ...], fill: Decimal | None) -> None:
    core = make_core(price=100.0)
    assert kinds(rest(core, "r", kind, side, "1", level)) == [OrderAccepted]
    held = D(1) * D(level) / 4
    assert core.frozen_margin() == held and core.available() == BALANCE - held
    events = core.on_candle(candle(300_000, *path), 5)
    order = core.order("r")
    assert order is not None
    if fill is None:
        assert events == [] and order.status == "new"
        return
    [filled] = [e for e in events if isinstance(e, OrderFilled)]
    assert (filled.price, filled.qty, order.status) == (fill, D(1), "filled")
    assert core.frozen_margin() == 0 and core.snapshot(SYM, side).qty == 1  # type: ignore[arg-type]


def test_marketable_limit_fills_at_once_at_the_last_price_and_reduce_only_ones_need_a_position() -> None:
    core = make_core(price=100.0)
    events = rest(core, "buy", "LIMIT", "long", "2", "105")
    assert kinds(events) == [OrderAccepted, OrderFilled]
    assert next(e for e in events if isinstance(e, OrderFilled)).price == D(100)  # the taker's price, not 105
    assert kinds(rest(core, "tp", "LIMIT", "long", "3", "110", reduce_only=True)) == [OrderAccepted]
    assert core.frozen_margin() == 0, "a reduce-only order holds no margin"
    core.on_candle(candle(300_000, 100, 111, 99, 110), 5)
    assert core.holding(SYM, "long") is None and core.order("tp").filled_qty == 2  # type: ignore[union-attr]
    [refused] = rest(core, "none", "LIMIT", "long", "1", "110", reduce_only=True)
    assert isinstance(refused, OrderRejected) and refused.code == 101205


@pytest.mark.parametrize(("qty", "level", "code"), [
    ("1", "99.95", 109400),   # off the tick
    ("0.00001", "99", 109400),  # off the step
    ("0.01", "99", 101400),   # below the minimum notional
    ("500", "99", 101204),    # more margin than the account has
])
def test_resting_order_refusals(qty: str, level: str, code: int) -> None:
    core = make_core(price=100.0)
    [refused] = rest(core, "r", "LIMIT", "long", qty, level)
    assert isinstance(refused, OrderRejected) and refused.code == code and core.order("r") is None


def test_canceling_a_resting_order_releases_its_margin() -> None:
    core = make_core(price=100.0)
    rest(core, "r", "TRIGGER_MARKET", "short", "1", "95")
    assert core.frozen_margin() == D(95) / 4
    assert kinds(core.cancel("r", 3)) == [OrderCanceled]
    assert core.frozen_margin() == 0 and core.available() == BALANCE


def test_orphan_policy_cancel_cancels_the_stop_when_a_close_flattens() -> None:
    core = _long_with_stop(orphan="cancel")
    events = orders_only(close(core, "c", "long", "1"))
    assert kinds(events) == [OrderAccepted, OrderFilled, OrderCanceled]
    canceled = events[2]
    assert canceled.client_id == "s" and canceled.reason == "position closed"
    assert core.open_orders(SYM) == []
    order = core.order("s")
    assert order is not None and order.status == "canceled"
    # a later candle through the old stop does nothing
    assert core.on_candle(candle(300_000, 99.0, 100.0, 90.0, 92.0), 5) == []


def test_orphan_policy_cancel_keeps_the_stop_after_a_partial_close() -> None:
    core = _long_with_stop(orphan="cancel")
    events = close(core, "c", "long", "0.4")
    assert kinds(events) == [OrderAccepted, OrderFilled]
    assert [o.client_id for o in core.open_orders(SYM)] == ["s"]


def test_orphan_policy_keep_leaves_the_stop_and_expires_it_on_trigger() -> None:
    core = _long_with_stop(orphan="keep")
    assert kinds(close(core, "c", "long", "1")) == [OrderAccepted, OrderFilled]
    assert [o.client_id for o in core.open_orders(SYM)] == ["s"]
    balance = core.account.balance
    # a candle that does not reach the stop leaves it resting
    assert core.on_candle(candle(300_000, 99.0, 100.0, 96.0, 97.0), 4) == []
    events = orders_only(core.on_candle(candle(600_000, 97.0, 98.0, 90.0, 92.0), 5))
    assert kinds(events) == [OrderExpired]
    assert events[0].client_id == "s" and events[0].filled_qty == 0
    assert core.account.balance == balance
    assert core.holding(SYM, "long") is None and core.holding(SYM, "short") is None
    assert core.open_orders(SYM) == []
    order = core.order("s")
    assert order is not None and order.status == "expired"


# --- position modes ----------------------------------------------------------------------------


def test_hedge_mode_holds_long_and_short_at_once() -> None:
    core = make_core(price=100.0, hedge=True)
    entry(core, "l", "long", "1")
    events = entry(core, "s", "short", "0.5")
    assert fills(events)[0].realized_pnl == 0
    long_, short = core.holding(SYM, "long"), core.holding(SYM, "short")
    assert long_ is not None and long_.qty == D(1)
    assert short is not None and short.qty == D("0.5")
    assert core.account.balance == D(10000) - fee("1", "100") - fee("0.5", "100")
    # both sides use margin
    assert core.used_margin() == D("1.5") * D(100) / 4


def test_hedge_mode_stop_only_closes_its_own_side() -> None:
    core = make_core(price=100.0, hedge=True, orphan="cancel")
    entry(core, "l", "long", "1")
    entry(core, "s", "short", "1")
    stop(core, "ls", "long", "1", "95")
    stop(core, "ss", "short", "1", "105")
    events = core.on_candle(candle(300_000, 99.0, 100.0, 94.0, 96.0), 5)
    assert [f.client_id for f in fills(events)] == ["ls"]
    short = core.holding(SYM, "short")
    assert short is not None and short.qty == D(1)
    assert [o.client_id for o in core.open_orders(SYM)] == ["ss"]


def test_one_way_mode_nets_an_opposite_entry() -> None:
    core = make_core(price=100.0, hedge=False)
    entry(core, "l", "long", "1")
    core.set_price(SYM, D(110))
    events = entry(core, "s1", "short", "0.4")
    [fill] = fills(events)
    assert fill.realized_pnl == (D(110) - D(100)) * D("0.4") == D(4)
    long_ = core.holding(SYM, "long")
    assert long_ is not None and long_.qty == D("0.6") and long_.entry_price == D(100)
    assert core.holding(SYM, "short") is None


def test_one_way_mode_flips_through_zero() -> None:
    core = make_core(price=100.0, hedge=False)
    entry(core, "l", "long", "1")
    core.set_price(SYM, D(110))
    balance = core.account.balance
    [fill] = fills(entry(core, "s", "short", "1.5"))
    assert fill.qty == D("1.5") and fill.realized_pnl == D(10)  # only the netted 1 BTC realizes
    assert fill.fee == fee("1.5", "110")
    assert core.account.balance == balance + D(10) - fee("1.5", "110")
    assert core.holding(SYM, "long") is None
    short = core.holding(SYM, "short")
    assert short is not None and short.qty == D("0.5") and short.entry_price == D(110)


def test_one_way_mode_netting_to_zero_cancels_orphan_stop_under_cancel_policy() -> None:
    core = _long_with_stop(orphan="cancel")
    events = orders_only(entry(core, "sh", "short", "1"))
    assert kinds(events) == [OrderAccepted, OrderFilled, OrderCanceled]
    assert events[2].client_id == "s" and events[2].reason == "position closed"
    assert core.holding(SYM, "long") is None and core.holding(SYM, "short") is None
    assert core.open_orders(SYM) == []


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_of_an_unknown_order_is_already_gone() -> None:
    core = make_core()
    [ev] = core.cancel("nope", 9)
    assert isinstance(ev, OrderCanceled)
    assert ev.client_id == "nope" and ev.reason == "already gone" and ev.order_id == 0 and ev.ts == 9


def test_cancel_of_a_filled_order_is_already_gone() -> None:
    core = make_core()
    accepted = entry(core, "e", "long", "1")[0]
    [ev] = core.cancel("e", 9)
    assert isinstance(ev, OrderCanceled) and ev.reason == "already gone"
    assert ev.order_id == accepted.order_id and ev.filled_qty == D(1)
    order = core.order("e")
    assert order is not None and order.status == "filled"
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(1)


def test_cancel_of_a_working_stop_then_again() -> None:
    core = _long_with_stop()
    [ev] = core.cancel("s", 9, reason="operator")
    assert isinstance(ev, OrderCanceled) and ev.client_id == "s" and ev.reason == "operator"
    assert core.open_orders(SYM) == []
    [again] = core.cancel("s", 10)
    assert isinstance(again, OrderCanceled) and again.reason == "already gone"
    # the canceled stop no longer triggers
    assert core.on_candle(candle(300_000, 99.0, 100.0, 90.0, 92.0), 5) == []
    held = core.holding(SYM, "long")
    assert held is not None and held.qty == D(1)


# --- closes ------------------------------------------------------------------------------------


def test_close_larger_than_the_position_only_closes_the_position() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    core.set_price(SYM, D(90))
    events = orders_only(close(core, "c", "long", "5"))
    assert kinds(events) == [OrderAccepted, OrderFilled]
    fill = events[1]
    assert fill.qty == D(1) and fill.price == D(90)
    assert fill.realized_pnl == (D(90) - D(100)) * D(1)
    assert fill.fee == fee("1", "90")
    assert core.holding(SYM, "long") is None
    assert core.holding(SYM, "short") is None  # reduce-only: never flips


def test_partial_close_of_a_short_realizes_pnl_on_the_closed_part() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "short", "2")
    core.set_price(SYM, D(80))
    [fill] = fills(close(core, "c", "short", "0.5"))
    assert fill.realized_pnl == (D(100) - D(80)) * D("0.5") == D(10)
    short = core.holding(SYM, "short")
    assert short is not None and short.qty == D("1.5") and short.entry_price == D(100)


def test_close_by_hand_closes_the_whole_position() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    events = core.close_by_hand(SYM, "long", 4)
    assert kinds(events) == [OrderAccepted, OrderFilled]
    assert events[0].client_id.startswith("manual-")
    assert core.holding(SYM, "long") is None
    assert core.close_by_hand(SYM, "long", 5) == []


# --- the paper exchange: a resent client id -----------------------------------------------------


def test_a_resent_working_stop_is_reported_working_and_an_id_taken_on_another_symbol_is_id_taken() -> None:
    async def go() -> None:
        got, sink = _collecting()
        ex = PaperExchange(PaperOptions())
        await ex.start(sink)  # type: ignore[arg-type]
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(0, 100.0, 100.0, 100.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1)))
        stop = SubmitStop(client_id="s", symbol=SYM, side="long", qty=D(1), stop_price=D(95))
        await ex.submit(stop)
        got.clear()
        await ex.submit(stop)  # a resend: it is working (accepted), nothing filled, one order under the id
        assert kinds(got) == [OrderAccepted] and got[0].client_id == "s" and ex.order_count("s") == 1
        with pytest.raises(IdTaken, match=r"another order under e \(BTC-USDT entry long 1, filled; this one is "
                                          r"ETH-USDT entry long 1\)"):
            await ex.submit(SubmitEntry(client_id="e", symbol="ETH-USDT", side="long", qty=D(1)))
        assert (await ex.position("ETH-USDT", "long")).qty == 0

    asyncio.run(go())


# --- the paper exchange: persistence -----------------------------------------------------------


def _collecting() -> tuple[list[AnyEvent], object]:
    got: list[AnyEvent] = []
    return got, got.append


def test_paper_exchange_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "acct.json"
    opts = PaperOptions(state_file=str(state), stop_slippage_bps=D(0))  # exact stop prices

    async def first() -> list[AnyEvent]:
        events, sink = _collecting()
        ex = PaperExchange(opts)
        await ex.start(sink)  # type: ignore[arg-type]
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(1_000_000, 99.0, 101.0, 98.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D("0.5")))
        await ex.submit(SubmitStop(client_id="s", symbol=SYM, side="long", qty=D("0.5"), stop_price=D(95)))
        await ex.stop()
        return events

    events = orders_only(asyncio.run(first()))
    assert kinds(events) == [OrderAccepted, OrderFilled, OrderAccepted]
    assert state.exists()
    expected_balance = D(10000) - fee("0.5", "100")

    async def second() -> None:
        # the balance is ignored (the file wins)
        ex = PaperExchange(PaperOptions(state_file=str(state), balance=D(1), stop_slippage_bps=D(0)))
        got, sink = _collecting()
        await ex.start(sink)  # type: ignore[arg-type]
        assert ex.core.account.balance == expected_balance
        assert await ex.balance() == expected_balance - D("0.5") * D(100) / 4
        pos = await ex.position(SYM, "long")
        assert pos.qty == D("0.5") and pos.entry_price == D(100)
        assert (await ex.position(SYM, "short")).qty == 0
        [working] = await ex.open_orders(SYM)
        assert working.client_id == "s" and working.stop_price == D(95) and working.reduce_only
        entry_fills = await ex.order_fills(SYM, "e")
        assert len(entry_fills) == 1 and entry_fills[0] == events[1]
        assert (await ex.query_order(SYM, "e")).status == "filled"  # type: ignore[union-attr]
        assert ex.market_time(SYM) == 1_000_000
        assert ex.market_time("ETH-USDT") is None
        # the order id sequence continues and client ids stay taken: a resend is answered with its fill
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D("0.5")))
        assert got[-1] == events[1] and ex.order_count("e") == 1
        await ex.submit(SubmitEntry(client_id="e2", symbol=SYM, side="long", qty=D("0.1")))
        [e2] = [e for e in got if isinstance(e, OrderAccepted) and e.client_id == "e2"]
        assert e2.order_id == events[2].order_id + 1
        # the persisted stop still triggers after the restart
        ex.on_candle(candle(1_300_000, 99.0, 100.0, 94.0, 96.0))
        assert any(isinstance(e, OrderFilled) and e.client_id == "s" and e.price == D(95) for e in got)
        assert ex.market_time(SYM) == 1_300_000
        await ex.stop()

    asyncio.run(second())

    async def third() -> None:
        ex = PaperExchange(opts)
        assert ex.market_time(SYM) == 1_300_000
        assert await ex.open_orders(SYM) == []
        assert len(await ex.order_fills(SYM, "s")) == 1

    asyncio.run(third())


def test_paper_exchange_relative_state_file_lives_under_state_dir(tmp_path: Path) -> None:
    async def run() -> None:
        ex = PaperExchange(PaperOptions(state_file="sub/acct.json"), state_dir=tmp_path)
        await ex.configure(SYM, 3, False)

    asyncio.run(run())
    assert (tmp_path / "sub" / "acct.json").exists()
    reloaded = PaperExchange(PaperOptions(state_file="sub/acct.json"), state_dir=tmp_path)
    assert reloaded.core.account.leverage == {SYM: 3}


def test_paper_exchange_without_state_file_starts_fresh(tmp_path: Path) -> None:
    async def run() -> Decimal:
        ex = PaperExchange(PaperOptions(balance=D(500)))
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(0, 100.0, 100.0, 100.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1)))
        return await ex.balance()

    assert asyncio.run(run()) == D(500) - fee("1", "100") - D(25)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"{not json", b'{"balance": "abc"}', b"[]", b""])
def test_corrupted_state_file_raises_exchange_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    state = tmp_path / "acct.json"
    state.write_bytes(content)
    with pytest.raises(ExchangeError, match=r"acct\.json"):
        PaperExchange(PaperOptions(state_file=str(state)))


def test_paper_exchange_cancel_goes_through_the_core(tmp_path: Path) -> None:
    state = tmp_path / "acct.json"

    async def run() -> list[AnyEvent]:
        events, sink = _collecting()
        ex = PaperExchange(PaperOptions(state_file=str(state), orphan_stops="keep"))
        await ex.start(sink)  # type: ignore[arg-type]
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(0, 100.0, 100.0, 100.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1)))
        await ex.submit(SubmitStop(client_id="s", symbol=SYM, side="long", qty=D(1), stop_price=D(95)))
        await ex.cancel(CancelOrder(client_id="s", symbol=SYM))
        await ex.cancel(CancelOrder(client_id="s", symbol=SYM))
        return events

    events = asyncio.run(run())
    cancels = [e for e in events if isinstance(e, OrderCanceled)]
    assert [c.reason for c in cancels] == ["canceled", "already gone"]
    assert asyncio.run(PaperExchange(PaperOptions(state_file=str(state))).open_orders(SYM)) == []


def test_configure_refuses_a_mode_switch_with_an_open_position() -> None:
    async def run() -> None:
        ex = PaperExchange(PaperOptions())
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(0, 100.0, 100.0, 100.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1)))
        with pytest.raises(ExchangeError, match="104103"):
            await ex.configure(SYM, 4, True)
        assert ex.core.account.hedge_mode is False

    asyncio.run(run())


def test_close_by_hand_right_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "acct.json"

    async def first() -> None:
        ex = PaperExchange(PaperOptions(state_file=str(state)))
        await ex.configure(SYM, 4, False)
        ex.on_candle(candle(0, 100.0, 100.0, 100.0, 100.0))
        await ex.submit(SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1)))

    asyncio.run(first())
    ex = PaperExchange(PaperOptions(state_file=str(state)))
    ex.close_by_hand(SYM, "long")
    assert asyncio.run(ex.position(SYM, "long")).qty == 0


# --- position snapshots, slippage, symbols -----------------------------------------------------


def test_fills_are_followed_by_position_snapshots_of_the_sides_they_moved() -> None:
    core = make_core(price=100.0)
    [snap] = snapshots(entry(core, "l", "long", "1", now=11))
    assert (snap.symbol, snap.side, snap.qty, snap.entry_price, snap.ts) == (SYM, "long", D(1), D(100), 11)
    core.set_price(SYM, D(110))
    # a one-way flip reports both sides: the long gone, the short opened
    by_side = {s.side: s for s in snapshots(entry(core, "s", "short", "1.5", now=12))}
    assert by_side["long"].qty == 0 and by_side["long"].entry_price == 0
    assert by_side["short"].qty == D("0.5") and by_side["short"].entry_price == D(110)
    stop(core, "st", "short", "0.5", "115")
    [snap] = snapshots(core.on_candle(candle(300_000, 111.0, 116.0, 110.0, 114.0), 13))
    assert snap.side == "short" and snap.qty == 0


def test_rejections_and_cancels_carry_no_snapshot() -> None:
    core = make_core()
    assert snapshots(entry(core, "big", "long", "1000")) == []
    assert snapshots(core.cancel("nope", 0)) == []


def test_slippage_moves_taker_fills_against_the_taker_and_rounds_to_the_tick() -> None:
    account = Account(balance=BALANCE)
    account.leverage[SYM] = 4
    core = MatchingCore(account, {SYM: instrument()}, fee_rate=FEE, slippage_bps=D(10))
    core.set_price(SYM, D("100.03"))
    # buying 10 bps above 100.03 = 100.130030 -> rounded up to 100.2
    assert fills(entry(core, "l", "long", "1"))[0].price == D("100.2")
    # selling 10 bps below 100.03 = 99.929970 -> rounded down to 99.9
    assert fills(close(core, "c", "long", "1"))[0].price == D("99.9")
    assert fills(entry(core, "s", "short", "1"))[0].price == D("99.9")
    assert fills(close(core, "cs", "short", "1"))[0].price == D("100.2")


@pytest.mark.parametrize(("side", "bar", "price"), [
    ("long", (99.0, 100.0, 94.0, 96.0), "94.9"),  # 95 - 10 bps = 94.905, rounded down to the tick
    ("long", (93.0, 94.0, 92.0, 93.5), "92.9"),  # a gap: 10 bps below the open 93 = 92.907 -> 92.9
    ("long", (99.0, 100.0, 94.95, 96.0), "94.95"),  # never below the candle's low
    ("short", (101.0, 106.0, 100.0, 104.0), "105.2"),  # 105 + 10 bps = 105.105, rounded up
    ("short", (107.0, 108.0, 106.5, 107.5), "107.2"),  # a gap: 10 bps above the open 107 = 107.107 -> 107.2
    ("short", (101.0, 105.05, 100.0, 104.0), "105.05"),  # never above the candle's high
])
def test_a_triggered_stop_fills_at_its_price_or_worse_by_the_stop_slippage(side: str, bar: tuple[float, ...],
                                                                            price: str) -> None:
    core = make_core(price=100.0, stop_slippage_bps=D(10))
    entry(core, "e", side, "1")
    assert kinds(stop(core, "s", side, "1", "95" if side == "long" else "105")) == [OrderAccepted]
    [fill] = fills(core.on_candle(candle(300_000, *bar), 5))
    assert fill.client_id == "s" and fill.price == D(price)
    assert fill.realized_pnl == ((fill.price - 100) if side == "long" else (100 - fill.price))


def test_paper_accounts_slip_stops_by_default_and_take_the_setting() -> None:
    assert PaperOptions().stop_slippage_bps == D(5)
    ex = PaperExchange(PaperOptions(stop_slippage_bps=D(0)))
    assert ex.core.stop_slippage_bps == 0
    with pytest.raises(ValueError, match=r"stop_slippage_bps must be within 0\.\.100"):
        PaperOptions(stop_slippage_bps=D(101))


def test_take_profit_gapped_through_fills_at_the_better_open() -> None:
    core = make_core(price=100.0)
    entry(core, "e", "long", "1")
    core.submit_take_profit("tp", SYM, "long", D(1), D(110), 3)
    [fill] = fills(core.on_candle(candle(300_000, 113.0, 114.0, 112.0, 113.0), 5))
    assert fill.price == D(113) and fill.realized_pnl == D(13)


def test_a_candle_of_another_symbol_does_not_trigger_the_stop() -> None:
    core = _long_with_stop()
    other = CandleClosed(symbol="ETH-USDT", interval="5m", open_time=300_000, open=90.0, high=91.0, low=1.0,
                         close=2.0, volume=1.0)
    assert core.on_candle(other, 5) == []
    assert [o.client_id for o in core.open_orders(SYM)] == ["s"]
    assert core.sync().last_price[SYM] == D(100)
    assert core.account.market_time == {SYM: 0, "ETH-USDT": 300_000}


def test_market_time_follows_the_last_candle_even_without_orders() -> None:
    core = make_core(price=0)
    core.on_candle(candle(600_000, 1.0, 2.0, 0.5, 1.5), 0)
    core.on_candle(candle(900_000, 1.5, 2.0, 0.5, 1.25), 0)
    assert core.account.market_time[SYM] == 900_000
    assert core.sync().last_price[SYM] == D("1.25")


def test_entry_whose_attached_stop_reuses_a_client_id_is_not_left_unprotected() -> None:
    core = make_core(price=100.0)
    entry(core, "old", "long", "0.1")
    cmd = SubmitEntry(client_id="e", symbol=SYM, side="long", qty=D(1), stop=StopSpec(client_id="old", price=D(95)))
    events = orders_only(core.submit(cmd, 0))
    refused_before_fill = kinds(events) == [OrderRejected]
    stop_working = any(o.type == "STOP_MARKET" for o in core.open_orders(SYM))
    assert refused_before_fill or stop_working
