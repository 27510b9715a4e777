"""BingXSimulator: the matching core served over loopback as BingX (REST on aiohttp, streams on websockets).

It owns the account (a :class:`MatchingCore`: the simulator never matches orders itself), the market
(candles played along their path), the REST app and the stream server, and wires them: every core
event becomes user pushes, every path tick becomes kline and mark-price pushes and a sub-candle for
the core. Market time is simulated; event and order times are on the market's clock (lockstep, auto) or the wall
clock (manual), auth windows and serverTime on the clock the bot signs with (:meth:`BingXSimulator.sign_ms`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

from gatebot.core.clock import Clock
from gatebot.core.events import AnyEvent
from gatebot.core.instrument import Instrument
from gatebot.core.intervals import interval_ms
from gatebot.exchanges.bingx.auth import fmt
from gatebot.exchanges.paper.exchange import PaperExchange
from gatebot.exchanges.paper.funding import FundingSchedule
from gatebot.exchanges.paper.matching import Account, MatchingCore, Order
from gatebot.simulators.bingx.events import EventMapper
from gatebot.simulators.bingx.faults import Faults
from gatebot.simulators.bingx.market import SymbolMarket, Tick, build_market
from gatebot.simulators.bingx.options import LOCKSTEP_START_MS, SimOptions
from gatebot.simulators.bingx.rest import build_app
from gatebot.simulators.bingx.streams import StreamServer
from gatebot.simulators.bingx.views import Dialect


class OrderMeta(msgspec.Struct, kw_only=True):
    """What BingX echoes about an order that the matching core does not keep."""

    position_side: str
    working_type: str = ""
    close_position: bool = False
    stop_loss: str = ""
    take_profit: str = ""
    update_time: int = 0
    derived_id: int = 0
    """The MARKET order a triggered stop became (switch ``stop_fill_event = "derived_id"``)."""


class BingXSimulator:
    def __init__(self, options: SimOptions | None = None, clock: Clock | None = None) -> None:
        self.options = opts = options or SimOptions()
        self.clock = clock
        """The bot's virtual clock in lockstep (market time is then the clock's time); None: wall time."""
        self.lockstep = opts.mode == "lockstep"
        self._start_ms = opts.start_ms if opts.start_ms is not None or not self.lockstep else LOCKSTEP_START_MS
        self._next_symbol = 0
        self.step_ms = interval_ms(opts.interval)
        tick = Decimal(1).scaleb(-opts.price_precision)
        step = Decimal(1).scaleb(-opts.quantity_precision)
        instruments = {s: Instrument(symbol=s, tick=tick, step=step, min_qty=step, min_notional=opts.min_notional,
                                     max_leverage=opts.max_leverage) for s in opts.symbols}
        self.funding = FundingSchedule(opts.funding)
        self.core = MatchingCore(Account(balance=opts.balance, hedge_mode=opts.hedge_mode), instruments,
                                 fee_rate=opts.fee_rate, orphan_stops=opts.switches.orphan_stops,
                                 default_leverage=opts.default_leverage, stop_slippage_bps=opts.stop_slippage_bps,
                                 funding=self.funding)
        first_live = (self._start_ms if self._start_ms is not None else self.sign_ms()) // self.step_ms * self.step_ms
        self.markets: dict[str, SymbolMarket] = {
            s: build_market(s, interval=opts.interval, first_live_ms=first_live, history_bars=opts.history_bars,
                            bars=opts.bars, source=opts.source, csv=opts.csv, seed=opts.seed,
                            start_price=opts.start_price_of(s), volatility=opts.volatility)
            for s in opts.symbols
        }
        self.meta: dict[int, OrderMeta] = {}
        self.derived: dict[int, int] = {}
        """Derived MARKET order id -> the stop order it came from."""
        self.leverage_sides: dict[str, tuple[int, int]] = {s: (opts.default_leverage,) * 2 for s in opts.symbols}
        self.margin_type: dict[str, str] = {}
        self.dialect = Dialect(opts.wire, opts.seed)
        self.mapper = EventMapper(self)
        self.faults = Faults(self)
        self.streams = StreamServer(self)
        self.closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.finished = asyncio.Event()
        """Set when the market has played its last candle (a finite run ends there)."""
        self._auto: asyncio.Task[None] | None = None
        self.rest_url = ""
        self.ws_url = ""
        for m in self.markets.values():
            first = m.first_tick()
            if first is not None:
                self.core.settle_funding(m.symbol, first.open_time, self.now_ms())  # funding counts from here
                self.core.on_candle(first.segment, self.now_ms())

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.closing = asyncio.Event()
        self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.options.rest_port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.rest_url = f"http://127.0.0.1:{port}"
        ws_port = await self.streams.start(self.options.ws_port)
        self.ws_url = f"ws://127.0.0.1:{ws_port}/swap-market"
        if self.options.mode == "auto":
            self._auto = asyncio.create_task(self._play())

    async def stop(self) -> None:
        self.closing.set()
        if self._auto is not None:
            self._auto.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auto
            self._auto = None
        await self.streams.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BingXSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- views for tests -----------------------------------------------------------------------

    def account_view(self) -> PaperExchange:
        """The account through the adapter protocol (for ``core.invariants.check``)."""
        return PaperExchange(core=self.core, hedge_mode=self.core.account.hedge_mode)

    @property
    def market_time_ms(self) -> int:
        return next(iter(self.markets.values())).market_time

    def now_ms(self) -> int:
        """Event, order and reply times: the market's clock. In lockstep the shared virtual clock (the driver
        moves it to each path point); in auto mode the time of the path point last played, since market time
        runs ``speed`` x wall time and a wall-clock fill would sit on a candle long before the one it filled on;
        manual: wall time (tests move the market by hand)."""
        if self.clock is None and self.options.mode == "auto":
            return max(m.point_time for m in self.markets.values())
        return self.sign_ms()

    def sign_ms(self) -> int:
        """The clock the bot signs its requests with (the signature's time window, serverTime): the shared
        virtual clock in lockstep, else wall time."""
        return self.clock.now_ms() if self.clock is not None else int(time.time() * 1000)

    # --- the market ----------------------------------------------------------------------------

    async def advance(self, candles: int = 1) -> None:
        """Play ``candles`` complete candles along their path and the first tick of the next one; return
        once every resulting push was handed to the connected sockets."""
        for _ in range(candles * 4):
            if not self._tick():
                self.finished.set()
                break
        await self.streams.flush()

    async def _play(self) -> None:
        """Auto mode: tick at the pace that makes market time run ``speed`` x wall time, never behind it."""
        loop = asyncio.get_running_loop()
        t0, m0 = loop.time(), self.now_ms()
        quarter = self.step_ms / 4
        while True:
            m = next(iter(self.markets.values()))
            if m.current is None:
                break
            due = m.current[0] + (m.stage + 1) * quarter
            await asyncio.sleep(max(0.0, t0 + (due - m0) / 1000 / self.options.speed - loop.time()))
            if not self._tick():
                break
            await self.streams.flush()
        self.finished.set()

    def next_due_ms(self) -> int | None:
        """Lockstep: the market time of the next path point :meth:`step` plays (None: the market has ended)."""
        quarter = self.step_ms // 4
        for k in range(len(self.markets)):
            m = list(self.markets.values())[(self._next_symbol + k) % len(self.markets)]
            if m.current is not None:
                return m.current[0] + (m.stage + 1) * quarter
        return None

    def step(self) -> bool:
        """Lockstep: the next path point of one symbol (symbols take turns), its pushes held until released
        (``StreamServer.release``); False once every market has ended."""
        markets = list(self.markets.values())
        for _ in range(len(markets)):
            m = markets[self._next_symbol]
            self._next_symbol = (self._next_symbol + 1) % len(markets)
            if self._tick_one(m):
                return True
        self.finished.set()
        return False

    def _tick(self) -> bool:
        """One path point for every symbol: core first (stops fire), then the market pushes."""
        played = False
        for m in self.markets.values():
            played = self._tick_one(m) or played
        return played

    def _tick_one(self, m: SymbolMarket) -> bool:
        t = m.advance()
        if t is None:
            return False
        if m.stage == 0:  # a new candle opens: the funding due at its open time settles first
            self.emit(self.core.settle_funding(m.symbol, t.open_time, self.now_ms()))
        self.emit(self.core.on_candle(t.segment, self.now_ms()))
        self.push_market(t)
        return True

    def push_market(self, t: Tick, mark: float | None = None) -> None:
        now = self.now_ms()
        if mark is None:
            market = self.markets[t.symbol]
            for interval in self.streams.kline_intervals(t.symbol):
                topic = f"{t.symbol}@kline_{interval}"
                klines = [{"o": fmt(o), "h": fmt(h), "l": fmt(lo), "c": fmt(c), "v": fmt(v), "T": ot}
                          for ot, o, h, lo, c, v in market.changed_klines(interval, self.options.price_precision)]
                self.streams.publish_market(topic, {"code": 0, "dataType": topic, "s": t.symbol, "data": klines})
        topic = f"{t.symbol}@markPrice"
        price = t.price if mark is None else mark
        self.streams.publish_market(topic, {"code": 0, "dataType": topic, "data": {
            "e": "markPriceUpdate", "E": now, "s": t.symbol, "p": fmt(price)}})

    def mark_price(self, symbol: str) -> Decimal:
        return self.core.sync().last_price[symbol]

    # --- the account ---------------------------------------------------------------------------

    def emit(self, events: list[AnyEvent]) -> None:
        """Turn core events into user pushes (faults may duplicate or reorder them) and queue them."""
        pushes = self.mapper.map(events, self.now_ms())
        if self.faults.reorder and len(pushes) > 1:
            pushes.reverse()
        if self.faults.duplicate:
            pushes = [p for p in pushes for _ in (0, 1)]
        self.streams.publish_user(pushes)

    def touch(self, order: Order, now: int) -> None:
        meta = self.meta.get(order.order_id)
        if meta is not None:
            meta.update_time = now

    def derived_id(self, order: Order) -> tuple[int, bool]:
        """The MARKET order id a triggered stop became; True the first time."""
        meta = self.meta.setdefault(order.order_id, OrderMeta(position_side="BOTH"))
        if meta.derived_id:
            return meta.derived_id, False
        meta.derived_id = self.core.account.next_order_id
        self.core.account.next_order_id += 1
        self.derived[meta.derived_id] = order.order_id
        return meta.derived_id, True

    def config_pushes(self, symbols: list[str] | None = None) -> list[dict[str, Any]]:
        now = self.now_ms()
        out = []
        for s in symbols or self.options.symbols:
            long_lev, short_lev = self.leverage_sides[s]
            mt = "isolated" if self.margin_type.get(s, "CROSSED") != "CROSSED" else "cross"
            out.append({"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "ac": {"s": s, "l": long_lev, "S": short_lev,
                                                                         "mt": mt}})
        return out
