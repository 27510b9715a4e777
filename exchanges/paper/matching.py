"""The matching core: an exchange account's orders, positions and fills, with BingX's order rules.

Pure and synchronous: commands and candles in, execution events out, no I/O and no clock of its own
(every call carries ``now``). The paper exchange wraps it in-process and the BingX simulator serves it
over loopback, so both refuse and fill orders the same way.

What it models (exchange semantics the bot must survive, not a venue's microstructure):
- MARKET orders fill at once at the last price (plus ``slippage_bps`` against the taker), with a taker
  fee on notional; an opening order needs ``notional / leverage + fee`` of available margin.
- Reduce-only STOP_MARKET and TAKE_PROFIT_MARKET orders trigger on the candle path
  open -> nearer extreme -> farther extreme -> close. When a candle touches both a position's stop and
  its take-profit, the stop fills (the worse case). A triggered order is a market order: it fills at the
  trigger price, or at the open when the candle gaps through it, then ``stop_slippage_bps`` worse (rounded
  to the tick against the taker, never past the candle's low / high). A reduce-only fill never exceeds
  the position.
- LIMIT and TRIGGER_MARKET orders (opening, or reduce-only) rest the same way: a LIMIT fills when the path
  reaches its price (at the open when it gaps past, i.e. at the limit or better, never slipped), a
  TRIGGER_MARKET (a market order once triggered, slipped as a stop) when the path crosses its trigger from
  the side it was placed on. A LIMIT already marketable fills at once at the last price. An opening
  resting order holds its margin at its level until it fills or is canceled.
- Funding (``settle_funding``, driven by whoever owns the market clock): at each funding time every
  position of the symbol pays or receives ``qty * mark * rate`` (``exchanges.paper.funding``), booked in
  the account's funding ledger and its balance.
- Rules with BingX's error codes: minimum quantity and notional (101400), duplicate client id
  (101481), nothing to reduce (101205), insufficient margin (101204), stop or take-profit on the wrong
  side of the market (110411-110414), quantity or price off the step / tick (109400).
- One-way mode (an opposite opening order nets the position) and hedge mode (long and short coexist).
- A limited order history (``history_limit`` finished orders, with their fills), as on an exchange.
- A stop left resting after its position closed: ``orphan_stops = "cancel"`` cancels it when the
  position reaches zero; ``"keep"`` leaves it resting and expires it if it triggers with nothing to
  close (BingX's behaviour is unconfirmed, so both are switches).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from gatebot.core.events import (
    ZERO,
    AnyEvent,
    CandleClosed,
    FundingPaid,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    Side,
    StopSpec,
    Submission,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
    opposite,
)
from gatebot.core.exchange import OrderState, OrderStatus, Role
from gatebot.core.instrument import Instrument, to_decimal
from gatebot.exchanges.paper.funding import FundingSchedule, payment

OrderType = Literal["MARKET", "LIMIT", "STOP_MARKET", "TAKE_PROFIT_MARKET", "TRIGGER_MARKET"]
RestingType = Literal["LIMIT", "TRIGGER_MARKET"]
OrphanPolicy = Literal["cancel", "keep"]
BPS = Decimal("0.0001")
FIRST_ORDER_ID = 1_900_000_000_000_000_001  # int64 like BingX's ids, and above 2**53: never a float


class Order(msgspec.Struct, kw_only=True):
    """One order as the exchange holds it."""

    client_id: str
    order_id: int
    symbol: str
    role: Role
    type: OrderType
    side: Side
    """The position side the order opens (entry) or reduces (everything reduce-only)."""
    qty: Decimal
    stop_price: Decimal = ZERO
    reduce_only: bool = False
    status: OrderStatus = "new"
    filled_qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    time: int = 0
    price: Decimal = ZERO
    """LIMIT: the limit price."""
    trigger_above: bool = False
    """TRIGGER_MARKET: fires when the price rises to ``stop_price`` (placed below it), else when it falls to it."""

    @property
    def buys(self) -> bool:
        return (self.side == "long") != self.reduce_only

    @property
    def level(self) -> Decimal:
        """The price the path must reach for a resting order to fill."""
        return self.price if self.type == "LIMIT" else self.stop_price

    @property
    def fires_below(self) -> bool:
        """True when the order fills on a fall to its level (a sell stop, a buy limit or take-profit)."""
        if self.type == "TRIGGER_MARKET":
            return not self.trigger_above
        return self.buys != (self.type == "STOP_MARKET")

    def view(self) -> OrderState:
        return OrderState(client_id=self.client_id, order_id=self.order_id, symbol=self.symbol, role=self.role,
                          side=self.side, status=self.status, qty=self.qty, filled_qty=self.filled_qty,
                          avg_price=self.avg_price, stop_price=self.stop_price, reduce_only=self.reduce_only)


class Holding(msgspec.Struct, kw_only=True):
    """One position side on the exchange."""

    symbol: str
    side: Side
    qty: Decimal = ZERO
    entry_price: Decimal = ZERO


class Account(msgspec.Struct, kw_only=True):
    """Everything the exchange knows of one account; what the paper exchange persists."""

    balance: Decimal
    """Wallet balance: deposits plus realised PnL minus fees."""
    hedge_mode: bool = False
    leverage: dict[str, int] = msgspec.field(default_factory=dict)
    positions: list[Holding] = msgspec.field(default_factory=list)
    orders: list[Order] = msgspec.field(default_factory=list)
    fills: list[OrderFilled] = msgspec.field(default_factory=list)
    last_price: dict[str, Decimal] = msgspec.field(default_factory=dict)
    market_time: dict[str, int] = msgspec.field(default_factory=dict)
    """Open time of the last candle the exchange lived through, per symbol."""
    funding: list[FundingPaid] = msgspec.field(default_factory=list)
    """Every funding payment settled, oldest first (the income history)."""
    funding_time: dict[str, int] = msgspec.field(default_factory=dict)
    """The market time up to which funding is settled, per symbol."""
    next_order_id: int = FIRST_ORDER_ID
    next_trade_id: int = 1


class MatchingCore:
    def __init__(self, account: Account, instruments: dict[str, Instrument], *, fee_rate: Decimal,
                 slippage_bps: Decimal = ZERO, orphan_stops: OrphanPolicy = "keep",
                 default_leverage: int = 5, history_limit: int = 1000, stop_slippage_bps: Decimal = ZERO,
                 funding: FundingSchedule | None = None) -> None:
        self.account = account
        self.stop_slippage_bps = stop_slippage_bps
        self.funding = funding
        self.history_limit = history_limit
        self.instruments = instruments
        self.fee_rate = fee_rate
        self.slippage_bps = slippage_bps
        self.orphan_stops = orphan_stops
        self.default_leverage = default_leverage
        self.split_next_market = 1
        """Fill the next MARKET order in this many trades (the simulator's partial-fill fault); back to 1 after."""
        self._orders = {o.client_id: o for o in account.orders}
        self._closes: dict[str, float] = {}
        """Last close per symbol as the feed's float; turned into ``account.last_price`` on demand."""
        self._working = [o for o in account.orders if o.status in ("new", "partially_filled")]
        self._fills: dict[str, list[OrderFilled]] = {}
        for f in account.fills:
            self._fills.setdefault(f.client_id, []).append(f)

    # --- queries -----------------------------------------------------------------------------

    def order(self, client_id: str) -> Order | None:
        return self._orders.get(client_id)

    def fills_of(self, client_id: str) -> list[OrderFilled]:
        return list(self._fills.get(client_id, ()))

    def open_orders(self, symbol: str) -> list[Order]:
        return [o for o in self._working if o.symbol == symbol]

    def holding(self, symbol: str, side: Side) -> Holding | None:
        for h in self.account.positions:
            if h.symbol == symbol and h.side == side and h.qty > 0:
                return h
        return None

    def snapshot(self, symbol: str, side: Side, ts: int = 0) -> PositionSnapshot:
        h = self.holding(symbol, side)
        return PositionSnapshot(ts=ts, symbol=symbol, side=side, qty=h.qty if h else ZERO,
                                entry_price=h.entry_price if h else ZERO)

    def leverage(self, symbol: str) -> int:
        return self.account.leverage.get(symbol, self.default_leverage)

    def used_margin(self) -> Decimal:
        return sum((h.qty * h.entry_price / self.leverage(h.symbol) for h in self.account.positions), ZERO)

    def frozen_margin(self) -> Decimal:
        """Margin held by resting orders that would open a position, at their level."""
        return sum(((o.qty - o.filled_qty) * o.level / self.leverage(o.symbol)
                    for o in self._working if not o.reduce_only), ZERO)

    def available(self) -> Decimal:
        return self.account.balance - self.used_margin() - self.frozen_margin()

    # --- commands ----------------------------------------------------------------------------

    def submit(self, cmd: Submission, now: int) -> list[AnyEvent]:
        """Accept and (for MARKET) fill an order, or refuse it with BingX's code."""
        if cmd.client_id in self._orders:
            return [self._reject(cmd.client_id, 101481, "clientOrderID cannot be repeated", now)]
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            return [self._reject(cmd.client_id, 109400, f"unknown symbol {cmd.symbol}", now)]
        price = self.sync().last_price.get(cmd.symbol)
        if price is None:
            return [self._reject(cmd.client_id, 101415, "no market price yet", now)]
        if cmd.qty <= 0 or cmd.qty % inst.step:
            return [self._reject(cmd.client_id, 109400, f"quantity {cmd.qty} is not a multiple of {inst.step}", now)]
        if isinstance(cmd, SubmitEntry):
            return self._submit_entry(cmd, inst, price, now)
        if isinstance(cmd, SubmitStop):
            return self._submit_stop(cmd.client_id, cmd.symbol, cmd.side, cmd.qty, cmd.stop_price, inst, price,
                                     now, "stop")
        if isinstance(cmd, SubmitTakeProfit):
            return self._submit_stop(cmd.client_id, cmd.symbol, cmd.side, cmd.qty, cmd.stop_price, inst, price,
                                     now, "take_profit")
        return self._submit_close(cmd, price, now)

    def _submit_entry(self, cmd: SubmitEntry, inst: Instrument, price: Decimal, now: int) -> list[AnyEvent]:
        refusal = inst.entry_refusal(cmd.qty, price)
        if refusal:
            return [self._reject(cmd.client_id, 101400, refusal, now)]
        if cmd.stop is not None:  # the attached stop is checked whole before anything fills
            if cmd.stop.client_id in self._orders or cmd.stop.client_id == cmd.client_id:
                return [self._reject(cmd.client_id, 101481, "stopLoss clientOrderID cannot be repeated", now)]
            refusal_code = self._stop_refusal(cmd.side, cmd.stop.price, price, inst)
            if refusal_code:
                return [self._reject(cmd.client_id, *refusal_code, now)]
        fill_price = self._taker_price(cmd.side, price, inst, opening=True)
        if not self._margin_for(cmd.symbol, cmd.side, cmd.qty, fill_price):
            return [self._reject(cmd.client_id, 101204, "Insufficient margin", now)]
        order = self._new_order(cmd.client_id, cmd.symbol, "entry", "MARKET", cmd.side, cmd.qty, now=now)
        events: list[AnyEvent] = [OrderAccepted(ts=now, client_id=order.client_id, order_id=order.order_id)]
        events += self._fill_market(order, cmd.qty, fill_price, inst, now)
        if cmd.stop is not None:
            events += self._attach(cmd.stop, cmd, inst, price, now)
        return events

    def _margin_for(self, symbol: str, side: Side, qty: Decimal, price: Decimal) -> bool:
        """Whether the account can open ``qty`` of ``side`` at ``price`` (margin plus fee). In one-way mode the
        part that nets an opposite position needs no margin."""
        opening = qty
        if not self.account.hedge_mode:
            against = self.holding(symbol, opposite(side))
            opening = qty - min(qty, against.qty) if against else qty
        return opening * price / self.leverage(symbol) + qty * price * self.fee_rate <= self.available()

    def submit_resting(self, client_id: str, symbol: str, kind: RestingType, side: Side, qty: Decimal,
                       level: Decimal, now: int, *, reduce_only: bool = False) -> list[AnyEvent]:
        """Place a LIMIT (``level`` = limit price) or TRIGGER_MARKET (``level`` = trigger price) order that
        opens ``side`` or, ``reduce_only``, reduces it. A LIMIT already marketable fills now as a taker."""
        if client_id in self._orders:
            return [self._reject(client_id, 101481, "clientOrderID cannot be repeated", now)]
        inst = self.instruments.get(symbol)
        price = self.sync().last_price.get(symbol)
        if inst is None or price is None:
            return [self._reject(client_id, 101415, f"no market for {symbol}", now)]
        if qty <= 0 or qty % inst.step:
            return [self._reject(client_id, 109400, f"quantity {qty} is not a multiple of {inst.step}", now)]
        if level <= 0 or level % inst.tick:
            return [self._reject(client_id, 109400, f"price {level} is not a multiple of {inst.tick}", now)]
        held = self.holding(symbol, side)
        if reduce_only and held is None:
            return [self._reject(client_id, 101205, "No position to close", now)]
        buys = (side == "long") != reduce_only
        fill_price = None  # a LIMIT already marketable fills now, as a taker, at the limit or better
        if kind == "LIMIT" and (level >= price if buys else level <= price):
            taker = self._taker_price(side, price, inst, opening=not reduce_only)
            fill_price = min(taker, level) if buys else max(taker, level)
        if not reduce_only:
            refusal = inst.entry_refusal(qty, level)
            if refusal:
                return [self._reject(client_id, 101400, refusal, now)]
            if not self._margin_for(symbol, side, qty, fill_price or level):
                return [self._reject(client_id, 101204, "Insufficient margin", now)]
        role: Role = "close" if reduce_only else "entry"
        order = self._new_order(client_id, symbol, role, kind, side, qty, now=now, reduce_only=reduce_only,
                                stop_price=level if kind == "TRIGGER_MARKET" else ZERO)
        order.price = level if kind == "LIMIT" else ZERO
        order.trigger_above = kind == "TRIGGER_MARKET" and level > price
        events: list[AnyEvent] = [OrderAccepted(ts=now, client_id=client_id, order_id=order.order_id)]
        if fill_price is not None:
            return events + self._fill_market(order, min(qty, held.qty) if held and reduce_only else qty,
                                              fill_price, inst, now)
        self._working.append(order)
        return events

    def _attach(self, stop: StopSpec, entry: SubmitEntry, inst: Instrument, price: Decimal, now: int) -> list[AnyEvent]:
        """The stop carried by an entry (BingX ``stopLoss``) goes live with the entry's fill."""
        return self._submit_stop(stop.client_id, entry.symbol, entry.side, entry.qty, stop.price, inst, price, now,
                                 "stop")

    def _submit_stop(self, client_id: str, symbol: str, side: Side, qty: Decimal, stop_price: Decimal,
                     inst: Instrument, price: Decimal, now: int, role: Role) -> list[AnyEvent]:
        if client_id in self._orders:
            return [self._reject(client_id, 101481, "clientOrderID cannot be repeated", now)]
        if self.holding(symbol, side) is None:
            return [self._reject(client_id, 101205, "No position to close", now)]
        refusal = (self._stop_refusal(side, stop_price, price, inst) if role == "stop"
                   else self._take_profit_refusal(side, stop_price, price, inst))
        if refusal:
            return [self._reject(client_id, *refusal, now)]
        kind: OrderType = "STOP_MARKET" if role == "stop" else "TAKE_PROFIT_MARKET"
        order = self._new_order(client_id, symbol, role, kind, side, qty, stop_price=stop_price, reduce_only=True,
                                now=now)
        self._working.append(order)
        return [OrderAccepted(ts=now, client_id=client_id, order_id=order.order_id)]

    def submit_take_profit(self, client_id: str, symbol: str, side: Side, qty: Decimal, price: Decimal,
                           now: int) -> list[AnyEvent]:
        inst = self.instruments.get(symbol)
        last = self.sync().last_price.get(symbol)
        if inst is None or last is None:
            return [self._reject(client_id, 101415, f"no market for {symbol}", now)]
        return self._submit_stop(client_id, symbol, side, qty, price, inst, last, now, "take_profit")

    def _submit_close(self, cmd: SubmitClose, price: Decimal, now: int) -> list[AnyEvent]:
        held = self.holding(cmd.symbol, cmd.side)
        if held is None:
            return [self._reject(cmd.client_id, 101205, "No position to close", now)]
        inst = self.instruments[cmd.symbol]  # submit() has checked it
        order = self._new_order(cmd.client_id, cmd.symbol, "close", "MARKET", cmd.side, cmd.qty, reduce_only=True,
                                now=now)
        fill_price = self._taker_price(cmd.side, price, inst, opening=False)
        return [OrderAccepted(ts=now, client_id=order.client_id, order_id=order.order_id),
                *self._fill_market(order, min(cmd.qty, held.qty), fill_price, inst, now)]

    def cancel(self, client_id: str, now: int, reason: str = "canceled") -> list[AnyEvent]:
        """Cancel a working order. An order that is already gone (or never existed) is a success."""
        order = self._orders.get(client_id)
        if order is None or order.status not in ("new", "partially_filled"):
            return [OrderCanceled(ts=now, client_id=client_id, order_id=order.order_id if order else 0,
                                  filled_qty=order.filled_qty if order else ZERO, reason="already gone")]
        return [self._finish(order, "canceled", now, reason)]

    def close_by_hand(self, symbol: str, side: Side, now: int, qty: Decimal | None = None) -> list[AnyEvent]:
        """The operator closes (part of) a position in the exchange's UI: an order the bot never sent."""
        held = self.holding(symbol, side)
        if held is None:
            return []
        client_id = f"manual-{self.account.next_order_id}"
        cmd = SubmitClose(client_id=client_id, symbol=symbol, side=side, qty=held.qty if qty is None else qty)
        return self.submit(cmd, now)

    # --- the market ----------------------------------------------------------------------------

    def on_candle(self, c: CandleClosed, now: int) -> list[AnyEvent]:
        """Walk the candle's path and trigger the conditional orders it touches."""
        self.account.market_time[c.symbol] = c.open_time
        events: list[AnyEvent] = []
        if self._working:
            for order in self._triggered(c):
                events += self._trigger(order, c, now)
        self._closes[c.symbol] = c.close
        return events

    def settle_funding(self, symbol: str, until_ms: int, now: int) -> list[AnyEvent]:
        """Settle every funding time of ``symbol`` up to market time ``until_ms`` not settled yet, on the
        positions held now, at the last (mark) price. The first call for a symbol only starts the count:
        an account pays no funding for times before it lived."""
        acct = self.account
        after = acct.funding_time.get(symbol, until_ms - 1)
        if until_ms <= after:
            return []
        acct.funding_time[symbol] = until_ms
        schedule = self.funding
        if schedule is None:
            return []
        events: list[AnyEvent] = []
        for t in schedule.times(after, until_ms):
            rate = schedule.rate_at(t)
            mark = self.sync().last_price.get(symbol)
            if not rate or mark is None:
                continue
            for h in [h for h in acct.positions if h.symbol == symbol and h.qty > 0]:
                paid = payment(symbol, h.side, h.qty, mark, rate, t)
                acct.balance -= paid.paid
                acct.funding.append(paid)
                events.append(paid)
        return events

    def funding_of(self, symbol: str, since_ms: int = 0) -> list[FundingPaid]:
        """The funding payments of ``symbol`` at funding times from ``since_ms`` on."""
        return [f for f in self.account.funding if f.symbol == symbol and f.funding_time >= since_ms]

    def set_price(self, symbol: str, price: Decimal) -> None:
        self._closes.pop(symbol, None)
        self.account.last_price[symbol] = price

    def sync(self) -> Account:
        """The account with every last price up to date (for queries and persistence)."""
        if self._closes:
            for symbol, close in self._closes.items():
                self.account.last_price[symbol] = to_decimal(close)
            self._closes.clear()
        return self.account

    def _triggered(self, c: CandleClosed) -> list[Order]:
        """Resting orders of ``c.symbol`` touched by the candle: in path order, stops before the others
        (a stop and a take-profit of the same position: the worse case first)."""
        low_first = abs(c.open - c.low) <= abs(c.high - c.open)
        hits: list[tuple[int, int, Order]] = []
        for o in self._working:
            if o.symbol != c.symbol or o.type == "MARKET":
                continue
            at_low = o.fires_below
            # Float first (rounding is monotonic, so it never misses a touch), then exact.
            level = float(o.level)
            if (c.low > level) if at_low else (c.high < level):
                continue
            if (to_decimal(c.low) > o.level) if at_low else (to_decimal(c.high) < o.level):
                continue
            leg = 0 if at_low == low_first else 1
            hits.append((0 if o.type == "STOP_MARKET" else 1, leg, o))
        hits.sort(key=lambda h: (h[0], h[1]))
        return [o for _, _, o in hits]

    def _trigger(self, order: Order, c: CandleClosed, now: int) -> list[AnyEvent]:
        if order.status not in ("new", "partially_filled"):
            return []  # canceled by an earlier trigger of this candle (orphan policy "cancel")
        held = self.holding(order.symbol, order.side)
        if order.reduce_only and held is None:
            return [self._finish(order, "expired", now, "triggered with no position to close")]
        o = to_decimal(c.open)
        # At the level, or at the open when the candle gapped past it: a stop or trigger fills worse than
        # its level then, a limit or take-profit better. A triggered order is a market order: it slips.
        price = min(o, order.level) if order.fires_below else max(o, order.level)
        if order.type != "LIMIT":
            price = self._slipped(price, not order.buys, c, self.instruments[order.symbol])
        qty = order.qty - order.filled_qty
        return self._fill(order, min(qty, held.qty) if order.reduce_only and held else qty, price, now)

    def _slipped(self, price: Decimal, sells: bool, c: CandleClosed, inst: Instrument) -> Decimal:
        """A triggered order is a market order into a moving market: ``stop_slippage_bps`` worse than its
        trigger (or the open of a gap), rounded to the tick against the taker, but never past the extreme
        the candle reached (the market traded no lower / higher than that)."""
        bps = self.stop_slippage_bps
        if not bps:
            return price
        if sells:
            return max(inst.round_price(price * (1 - bps * BPS), up=False), min(price, to_decimal(c.low)))
        return min(inst.round_price(price * (1 + bps * BPS), up=True), max(price, to_decimal(c.high)))

    # --- mechanics -----------------------------------------------------------------------------

    def _taker_price(self, side: Side, price: Decimal, inst: Instrument, *, opening: bool) -> Decimal:
        if not self.slippage_bps:
            return price
        buys = (side == "long") == opening
        worse = price * (1 + self.slippage_bps * BPS) if buys else price * (1 - self.slippage_bps * BPS)
        return inst.round_price(worse, up=buys)

    @staticmethod
    def _stop_refusal(side: Side, stop: Decimal, price: Decimal, inst: Instrument) -> tuple[int, str] | None:
        if stop <= 0 or stop % inst.tick:
            return 109400, f"stopPrice {stop} is not a multiple of {inst.tick}"
        if side == "long" and stop >= price:
            return 110411, "Stop Loss price should be lower than the current price"
        if side == "short" and stop <= price:
            return 110412, "Stop Loss price should be greater than the current price"
        return None

    @staticmethod
    def _take_profit_refusal(side: Side, tp: Decimal, price: Decimal, inst: Instrument) -> tuple[int, str] | None:
        if tp <= 0 or tp % inst.tick:
            return 109400, f"stopPrice {tp} is not a multiple of {inst.tick}"
        if side == "long" and tp <= price:
            return 110413, "Take Profit price should be greater than the current price"
        if side == "short" and tp >= price:
            return 110414, "Take Profit price should be lower than the current price"
        return None

    def _reject(self, client_id: str, code: int, reason: str, now: int) -> OrderRejected:
        return OrderRejected(ts=now, client_id=client_id, code=code, reason=reason)

    def _forget_old_orders(self) -> None:
        """Keep the newest ``history_limit`` orders (and their fills), as an exchange keeps a limited
        order history: memory and the persisted account stay bounded over any run length. Working
        orders are never forgotten. Runs in batches, so its cost per order is constant."""
        acct = self.account
        if len(acct.orders) <= self.history_limit * 3 // 2:
            return
        cut = len(acct.orders) - self.history_limit
        old, keep = acct.orders[:cut], acct.orders[cut:]
        working = [o for o in old if o.status in ("new", "partially_filled")]
        gone = {o.client_id for o in old if o.status not in ("new", "partially_filled")}
        acct.orders = working + keep
        acct.fills = [f for f in acct.fills if f.client_id not in gone]
        for cid in gone:
            del self._orders[cid]
            self._fills.pop(cid, None)

    def _new_order(self, client_id: str, symbol: str, role: Role, kind: OrderType, side: Side, qty: Decimal, *,
                   now: int, stop_price: Decimal = ZERO, reduce_only: bool = False) -> Order:
        self._forget_old_orders()
        acct = self.account
        order = Order(client_id=client_id, order_id=acct.next_order_id, symbol=symbol, role=role, type=kind,
                      side=side, qty=qty, stop_price=stop_price, reduce_only=reduce_only, time=now)
        acct.next_order_id += 1
        acct.orders.append(order)
        self._orders[client_id] = order
        return order

    def _finish(self, order: Order, status: OrderStatus, now: int, reason: str) -> AnyEvent:
        order.status = status
        if order in self._working:
            self._working.remove(order)
        cls = OrderCanceled if status == "canceled" else OrderExpired
        return cls(ts=now, client_id=order.client_id, order_id=order.order_id, filled_qty=order.filled_qty,
                   reason=reason)

    def _fill_market(self, order: Order, qty: Decimal, price: Decimal, inst: Instrument, now: int) -> list[AnyEvent]:
        """A MARKET fill, in ``split_next_market`` trades when a partial-fill fault asked for it (each part a
        multiple of the step; the last part takes the rest)."""
        parts, self.split_next_market = self.split_next_market, 1
        part = inst.floor_qty(qty / parts) if parts > 1 else qty
        if part <= 0:
            part = qty
        events: list[AnyEvent] = []
        left = qty
        while left > part:
            events += self._fill(order, part, price, now, final=False)
            left -= part
        return events + self._fill(order, left, price, now)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, now: int, *, final: bool = True) -> list[AnyEvent]:
        """Trade ``qty`` of ``order`` at ``price``: move the positions, the balance, book the fill.
        ``final=False`` books a partial fill: the order stays partially filled."""
        acct = self.account
        pnl = ZERO
        against = None
        if order.reduce_only:
            pnl = self._reduce(order.symbol, order.side, qty, price)
        else:
            rest = qty
            against = None if acct.hedge_mode else self.holding(order.symbol, opposite(order.side))
            if against is not None:
                netted = min(rest, against.qty)
                pnl = self._reduce(order.symbol, against.side, netted, price)
                rest -= netted
            if rest > 0:
                self._open(order.symbol, order.side, rest, price)
        fee = qty * price * self.fee_rate
        acct.balance += pnl - fee
        order.avg_price = (order.avg_price * order.filled_qty + price * qty) / (order.filled_qty + qty)
        order.filled_qty += qty
        order.status = "filled" if final else "partially_filled"
        if final and order in self._working:
            self._working.remove(order)
        fill = OrderFilled(ts=now, client_id=order.client_id, order_id=order.order_id,
                           trade_id=str(acct.next_trade_id), qty=qty, price=price, fee=fee, realized_pnl=pnl,
                           cum_qty=order.filled_qty, final=final)
        acct.next_trade_id += 1
        acct.fills.append(fill)
        self._fills.setdefault(order.client_id, []).append(fill)
        events: list[AnyEvent] = [fill, self.snapshot(order.symbol, order.side, now)]
        if not order.reduce_only and against is not None:
            events.append(self.snapshot(order.symbol, against.side, now))
        if order.reduce_only or against is not None:
            events += self._after_reduce(order.symbol, now)
        return events

    def _open(self, symbol: str, side: Side, qty: Decimal, price: Decimal) -> None:
        h = self.holding(symbol, side)
        if h is None:
            self.account.positions = [p for p in self.account.positions if p.qty > 0]
            self.account.positions.append(Holding(symbol=symbol, side=side, qty=qty, entry_price=price))
            return
        h.entry_price = (h.entry_price * h.qty + price * qty) / (h.qty + qty)
        h.qty += qty

    def _reduce(self, symbol: str, side: Side, qty: Decimal, price: Decimal) -> Decimal:
        h = self.holding(symbol, side)
        assert h is not None and qty <= h.qty
        pnl = (price - h.entry_price) * qty if side == "long" else (h.entry_price - price) * qty
        h.qty -= qty
        if h.qty == 0:
            h.entry_price = ZERO
            self.account.positions = [p for p in self.account.positions if p.qty > 0]
        return pnl

    def _after_reduce(self, symbol: str, now: int) -> list[AnyEvent]:
        """Orphan policy "cancel": conditional orders of a side that reached zero are canceled."""
        if self.orphan_stops != "cancel":
            return []
        return [self._finish(o, "canceled", now, "position closed")
                for o in list(self._working) if o.symbol == symbol and o.reduce_only
                and self.holding(symbol, o.side) is None]

