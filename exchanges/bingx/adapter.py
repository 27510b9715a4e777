"""The BingX USDT-M perpetual adapter: the exchange protocol of core/exchange.py over REST + websockets.

Commands become signed orders carrying the deterministic client order id; refusals come back as
``OrderRejected`` events; a submission whose reply is lost (timeout, 5xx, dropped connection) raises
``OrderUnknown`` and is never sent again blindly. Execution events come from the user stream; the
REST reply of an accepted order is delivered at once as ``OrderAccepted`` (for a stop, that is the
moment the position is guarded), and the stream's later NEW for it is dropped as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from gatebot.core import ids
from gatebot.core.clock import Clock
from gatebot.core.events import (
    ZERO,
    CancelOrder,
    CandleClosed,
    FundingPaid,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    SettingsChanged,
    Side,
    StreamUp,
    Submission,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
)
from gatebot.core.exchange import (
    Capabilities,
    EventSink,
    ExchangeError,
    OrderState,
    OrderStatus,
    OrderUnknown,
    Role,
    SettingsRefused,
    known_order,
    known_order_events,
)
from gatebot.core.instrument import Instrument
from gatebot.core.intervals import interval_ms
from gatebot.exchanges.bingx import codec, constants
from gatebot.exchanges.bingx.codec import dec
from gatebot.exchanges.bingx.errors import (
    AuthError,
    BingXError,
    InvalidRequest,
    OrderNotFound,
    RateLimited,
    Refused,
)
from gatebot.exchanges.bingx.market_stream import MarketStream
from gatebot.exchanges.bingx.rest import RestClient, TransportError
from gatebot.exchanges.bingx.user_stream import OrderBook, UserStream

log = logging.getLogger("gatebot.bingx")
HOUR_MS = 3_600_000
FUNDING_LOOKBACK_MS = HOUR_MS
"""After a FUNDING_FEE push, the payments settled this long before it are read (that funding time's)."""

_STATUS: dict[str, OrderStatus] = {
    "NEW": "new", "PENDING": "new", "RUNNING": "new", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled",
    "CANCELED": "canceled", "CANCELLED": "canceled", "FAILED": "rejected", "EXPIRED": "expired",
}
_TYPE_ROLE: dict[str, Role] = {"STOP_MARKET": "stop", "STOP": "stop", "TAKE_PROFIT_MARKET": "take_profit",
                               "TAKE_PROFIT": "take_profit"}
"""The role of an order whose client id gatebot did not make (placed by hand): from its type."""
_DUPLICATE = (101481, 109201)
USER_CONNECT_S = 30.0
"""How long start() waits for the user stream's first connection."""


class BingXOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[exchanges.<name>.options]`` of a BingX account."""

    host: Literal["vst", "live"] = "vst"
    """``vst`` is BingX's demo-money host; ``live`` trades real money (and needs mode = "live")."""
    rest_url: str | None = None
    ws_url: str | None = None
    """Override the host's URLs (another endpoint, a simulator running elsewhere)."""
    api_key_env: str = "BINGX_API_KEY"
    secret_env: str = "BINGX_SECRET_KEY"
    secrets_file: str | None = None
    """A file of ``NAME=value`` lines for the two variables above; it must be mode 0600."""
    attached_stop: bool = False
    """False (the default): a separate reduce-only STOP_MARKET the moment the fill is known (a gap of one
    loopback round trip). True: the stop travels with the entry (``stopLoss``): no gap at all. The kill -9
    chaos suite runs a driver in each mode."""
    margin_type: Literal["CROSSED", "ISOLATED"] = "CROSSED"
    rate_limits: dict[Literal["market", "order", "query", "account"], float] = {}
    """Requests per second per endpoint group, overriding the conservative defaults (constants.py)."""
    request_timeout_s: float = 10.0
    recv_window_ms: int = 5000
    user_stream_silence_s: float = 8.0
    """The user stream is taken for dead (reconnect, then reconcile over REST) after this long without a
    frame other than ``Ping``: BingX pushes ACCOUNT_CONFIG_UPDATE on connect and every 5 s, so a stream
    that goes quiet while its pings go on, or a half-open socket, is noticed in seconds (websockets' own
    pings would take 40 s). 0 turns the watch off (an exchange without such pushes)."""
    kline_grace_s: float = 5.0
    """Close a candle by the clock this long after its end when no later push came..."""
    close_candles_by_clock: bool = True
    """...unless this is false (a simulator whose market clock is not the local clock; the application sets it
    for an embedded one)."""
    unreadable_push_limit: int = 5
    """User-stream pushes that could not be read after which no new entries are taken on this account."""
    simulator: dict[str, Any] | None = None
    """The application runs an embedded BingX simulator on loopback with these options (the demo) and points
    this adapter at it (:meth:`BingXAdapter.embed`); no secrets needed. The adapter itself never starts one."""

    @property
    def real_money(self) -> bool:
        """Orders would reach BingX's live host: the config allows that only in mode = "live"."""
        return self.simulator is None and self.rest_url is None and self.host == "live"


def load_secrets(options: BingXOptions) -> tuple[str, str]:
    """The API key and secret from the environment or a 0600 file. Errors name where to put them,
    never a value."""
    values = {name: os.environ.get(name) for name in (options.api_key_env, options.secret_env)}
    if options.secrets_file and not all(values.values()):
        path = Path(options.secrets_file).expanduser()
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise ExchangeError(f"secrets file {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ExchangeError(f"secrets file {path} is readable by others: chmod 600 {path}")
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip() in values and not values[name.strip()]:
                values[name.strip()] = value.strip()
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ExchangeError(f"BingX credentials missing: set {' and '.join(missing)} in the environment"
                            + (f" or in {options.secrets_file}" if options.secrets_file else ""))
    return values[options.api_key_env] or "", values[options.secret_env] or ""


class BingXAdapter:
    name = "bingx"

    def __init__(self, options: BingXOptions, *, hedge_mode: bool, clock: Clock, account: str = "bingx") -> None:
        self.options = options
        self.hedge = hedge_mode
        self.clock = clock
        self.account = account
        self.capabilities = Capabilities(attached_stop=options.attached_stop, hedge_mode=hedge_mode)
        self.book = OrderBook()
        self.finished: asyncio.Event | None = None
        """Set when the market ends (an embedded simulator's finite market); None for a real exchange."""
        self._credentials: tuple[str, str] | None = None
        """An embedded endpoint's API key and secret (embed()); None: load_secrets()."""
        self.rest: RestClient | None = None
        self.user: UserStream | None = None
        self.market: MarketStream | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sink: EventSink | None = None
        self._instruments: dict[str, Instrument] = {}
        self._settings: dict[str, int] = {}
        """Symbol -> the leverage configure() set: a pushed config that differs is reported."""
        self._mode_checked: bool | None = None
        """The position mode configure() verified (None: not yet)."""
        self.recorder: Any = None
        """A core.recording.Recorder: every raw frame and REST reply is teed into it (set before start())."""
        self.rest_url = options.rest_url or (constants.LIVE_REST if options.host == "live" else constants.VST_REST)
        self.ws_url = options.ws_url or (constants.LIVE_WS if options.host == "live" else constants.VST_WS)

    # --- lifecycle ---------------------------------------------------------------------------

    def embed(self, rest_url: str, ws_url: str, credentials: tuple[str, str], finished: asyncio.Event | None) -> None:
        """Trade against an endpoint the application runs (an embedded simulator), before start(): its URLs, its
        credentials, and the event set when its finite market ends (which ends the run)."""
        self.rest_url, self.ws_url = rest_url, ws_url
        self._credentials = credentials
        self.finished = finished

    async def start(self, sink: EventSink, *, market_only: bool = False) -> None:
        """Connect. ``market_only``: public market data alone (no credentials, no user stream)."""
        self._sink = sink
        if self._credentials is not None:
            key, secret = self._credentials
        elif market_only:
            key, secret = "", ""
        else:
            key, secret = load_secrets(self.options)
        self.rest = RestClient(self.rest_url, key, secret, clock=self.clock, timeout_s=self.options.request_timeout_s,
                               recv_window_ms=self.options.recv_window_ms, rate_limits=dict(self.options.rate_limits),
                               recorder=self.recorder)
        try:
            await self._connect(sink, market_only)
        except BaseException:
            await self.stop()  # a refused start leaves no session or task behind
            raise

    async def _connect(self, sink: EventSink, market_only: bool) -> None:
        assert self.rest is not None
        await self.rest.start()
        if market_only:
            return
        self.user = UserStream(self.ws_url, self.rest, self.clock, self.book, hedge=self.hedge, on_event=sink,
                               on_reconnect=self._stream_came_back, on_unreadable=self._push_unreadable,
                               unreadable_limit=self.options.unreadable_push_limit, recorder=self.recorder,
                               on_funding=self._funding_pushed, silence_s=self.options.user_stream_silence_s)
        self.user.on_config = self._on_config
        stream = asyncio.create_task(self.user.run(), name=f"{self.account}-user-stream")
        self._tasks.append(stream)
        connected = asyncio.create_task(self.user.connected.wait())
        try:
            await asyncio.wait({stream, connected}, timeout=USER_CONNECT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if stream.done():
            stream.result()  # its error (a listenKey refused), as raised
        if not self.user.connected.is_set():
            raise ExchangeError(f"BingX user stream at {self.ws_url} did not connect within {USER_CONNECT_S:.0f} s")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.rest is not None:
            await self.rest.close()

    def _funding_pushed(self, push_ms: int) -> None:
        """A FUNDING_FEE push: read that funding time's payments from the income history and deliver them
        (the engines book each once). A failed query is only logged: every reconcile asks again."""

        async def read() -> None:
            try:
                for payment in await self.funding(None, push_ms - FUNDING_LOOKBACK_MS):
                    self._emit(payment)
            except ExchangeError as exc:
                log.warning("%s: funding payments not read after the push (%s); the next reconcile asks again",
                            self.account, exc)

        task = asyncio.create_task(read(), name=f"{self.account}-funding")
        self._tasks = [t for t in self._tasks if not t.done()] + [task]

    async def funding(self, symbol: str | None, since_ms: int = 0) -> list[FundingPaid]:
        """Funding payments (of ``symbol``, or all) settled from ``since_ms`` on, oldest first, from the income
        history. BingX's row names no position side; its ``time`` is a little after the funding time (ccxt's
        sample: 08:00:15), so the funding time is that time floored to the hour (funding times are whole hours)."""
        params: dict[str, Any] = {"incomeType": "FUNDING_FEE", "startTime": since_ms, "limit": 1000}
        if symbol:
            params["symbol"] = symbol
        rows = await self._rest.query(constants.INCOME, params, list[codec.Income])
        out = []
        for row in rows:
            t = int(row.time)
            funding_time = t // HOUR_MS * HOUR_MS
            if row.incomeType != "FUNDING_FEE" or funding_time < since_ms:
                continue
            out.append(FundingPaid(ts=t, symbol=row.symbol, funding_time=funding_time, paid=-dec(row.income)))
        return out

    def _stream_came_back(self) -> None:
        if self._sink is not None:
            self._sink(StreamUp(stream="user"))

    def _push_unreadable(self, symbol: str | None) -> None:
        """A push that could not be read may have been a fill: the instances it may concern (those trading
        its symbol, or all on the account when it names none) reconcile over REST."""
        if self._sink is not None:
            self._sink(StreamUp(stream="user", symbol=symbol))

    @property
    def busy(self) -> tuple[int, int]:
        """(frames read off both streams, requests in flight): what an embedded lockstep simulator compares with
        the frames it sent before it moves the market."""
        frames = (self.user.frames_read if self.user else 0) + (self.market.frames_read if self.market else 0)
        return frames, (self.rest.in_flight if self.rest else 0)

    @property
    def entries_blocked(self) -> str | None:
        """Why the engine must not open new positions on this account (None: it may); see UserStream."""
        return None if self.user is None else self.user.entries_blocked

    @property
    def _rest(self) -> RestClient:
        assert self.rest is not None, "start() first"
        return self.rest

    # --- market data ---------------------------------------------------------------------------

    async def history(self, symbol: str, interval: str, bars: int) -> list[CandleClosed]:
        """The last ``bars`` closed candles (the newest REST candle may be forming: it is dropped)."""
        rows = await self._rest.public(constants.KLINES, {"symbol": symbol, "interval": interval,
                                                          "limit": min(bars + 1, constants.KLINE_LIMIT)},
                                       list[codec.Kline])
        candles = sorted((_kline(symbol, interval, k) for k in rows), key=lambda c: c.open_time)
        return candles[:-1][-bars:]

    async def klines(self, symbol: str, interval: str, start: int, end: int) -> list[CandleClosed]:
        """Closed candles with open time in [start, end), ascending (the gap filler of the stream).

        Asked in windows that hold at most one page: BingX keeps one end of a longer range (the simulator the
        newest), so a cursor moved to the last row received would skip the rest without an error. An empty
        window (an outage) is passed over, not taken for the end."""
        step = interval_ms(interval)
        window_ms = constants.KLINE_LIMIT * step
        out: list[CandleClosed] = []
        cursor = start
        while cursor < end:
            window_end = min(end, cursor + window_ms)
            rows = await self._rest.public(constants.KLINES, {"symbol": symbol, "interval": interval,
                                                              "startTime": cursor, "endTime": window_end - 1,
                                                              "limit": constants.KLINE_LIMIT}, list[codec.Kline])
            out.extend(sorted((_kline(symbol, interval, k) for k in rows if cursor <= k.time < window_end),
                              key=lambda c: c.open_time))
            cursor = window_end
        return out

    def start_market(self, streams: dict[tuple[str, str], int | None], on_candle: Any) -> MarketStream:
        """Stream closed candles of ``streams`` ((symbol, interval) -> last history open time)."""
        by_clock = self.options.close_candles_by_clock
        grace = self.options.kline_grace_s if by_clock else None
        self.market = MarketStream(self.ws_url, list(streams), self.klines, self.clock, on_candle=on_candle,
                                   grace_s=grace, recorder=self.recorder)
        for (symbol, interval), last in streams.items():
            self.market.start_after(symbol, interval, last)
        self._tasks.append(asyncio.create_task(self.market.run(), name=f"{self.account}-market-stream"))
        return self.market

    # --- account setup -----------------------------------------------------------------------------

    async def instrument(self, symbol: str) -> Instrument:
        inst = self._instruments.get(symbol)
        if inst is None:
            contracts = await self._rest.public(constants.CONTRACTS, {"symbol": symbol}, list[codec.Contract])
            match = [c for c in contracts if c.symbol == symbol]
            if not match:
                raise ExchangeError(f"BingX has no perpetual contract {symbol}")
            c = match[0]
            if c.status != 1 or not c.api_open:
                raise ExchangeError(f"BingX {symbol} is not open for API trading (status {c.status})")
            inst = Instrument(symbol=symbol, tick=Decimal(1).scaleb(-c.pricePrecision),
                              step=Decimal(1).scaleb(-c.quantityPrecision), min_qty=dec(c.tradeMinQuantity),
                              min_notional=dec(c.tradeMinUSDT), max_leverage=min(c.maxLongLeverage,
                                                                                  c.maxShortLeverage))
            self._instruments[symbol] = inst
        return inst

    async def configure(self, symbol: str, leverage: int, hedge: bool) -> list[str]:
        """Position mode, margin type and leverage: read, set where different, read back and verified (so a
        write whose reply was lost or unreadable is settled by the read-back, never assumed). Runs at every
        reconcile (a leverage changed by hand in the app is set back before the next entry), so it writes
        only what differs. What was set back is returned; SettingsRefused when it cannot be."""
        rest = self._rest
        self._settings[symbol] = leverage
        changed: list[str] = []
        try:
            if self._mode_checked != hedge:  # account-wide, and fixed while anything is open: once a process
                mode = await rest.query(constants.POSITION_MODE, {}, codec.PositionMode)
                if str(mode.dualSidePosition).lower() != str(hedge).lower():
                    await self._setting(constants.POSITION_MODE, {"dualSidePosition": hedge}, codec.PositionMode)
                    mode = await rest.query(constants.POSITION_MODE, {}, codec.PositionMode)
                    if str(mode.dualSidePosition).lower() != str(hedge).lower():
                        raise SettingsRefused(f"BingX position mode is not {'hedge' if hedge else 'one-way'} after "
                                              "setting it")
                    changed.append(f"position mode {'hedge' if hedge else 'one-way'}")
                self._mode_checked = hedge
            margin = await rest.query(constants.MARGIN_TYPE, {"symbol": symbol}, codec.MarginType)
            if margin.marginType.upper() != self.options.margin_type:
                await self._setting(constants.MARGIN_TYPE, {"symbol": symbol, "marginType": self.options.margin_type},
                                    msgspec.Raw)
                got_margin = await rest.query(constants.MARGIN_TYPE, {"symbol": symbol}, codec.MarginType)
                if got_margin.marginType.upper() != self.options.margin_type:
                    raise SettingsRefused(f"BingX {symbol} margin type is {got_margin.marginType} after setting "
                                          f"{self.options.margin_type}")
                changed.append(f"{symbol} margin {margin.marginType} -> {self.options.margin_type}")
            got = await rest.query(constants.LEVERAGE, {"symbol": symbol}, codec.LeverageGet)
            if got.longLeverage != leverage or got.shortLeverage != leverage:
                before = f"{got.longLeverage}/{got.shortLeverage}x"
                for side in ("LONG", "SHORT") if hedge else ("BOTH",):
                    await self._setting(constants.LEVERAGE, {"symbol": symbol, "side": side, "leverage": leverage},
                                        codec.LeverageSet)
                got = await rest.query(constants.LEVERAGE, {"symbol": symbol}, codec.LeverageGet)
                if got.longLeverage != leverage or got.shortLeverage != leverage:
                    raise SettingsRefused(f"BingX {symbol} leverage is {got.longLeverage}/{got.shortLeverage}x after "
                                          f"setting {leverage}x: refusing to trade at the wrong leverage")
                changed.append(f"{symbol} leverage {before} -> {leverage}x")
        except (Refused, InvalidRequest) as exc:
            raise SettingsRefused(f"BingX refused to set {symbol} to the configured settings: {exc}") from None
        return changed

    def _on_config(self, ac: codec.ConfigData) -> None:
        """A leverage or margin mode other than configured (BingX pushes ACCOUNT_CONFIG_UPDATE on a change,
        on every connect and every few seconds) is reported as SettingsChanged."""
        leverage = self._settings.get(ac.s)
        margin = "isolated" if self.options.margin_type == "ISOLATED" else "cross"
        if leverage is not None and ((ac.l, ac.S) != (leverage, leverage) or ac.mt.lower() != margin):
            self._emit(SettingsChanged(ts=self.clock.now_ms(), symbol=ac.s,
                                       detail=f"leverage {ac.l}/{ac.S}x, margin {ac.mt}"))

    async def _setting(self, path: str, params: dict[str, Any], type: Any) -> None:
        """A settings write. A refusal is raised; an unknown outcome (lost or unreadable reply, busy) is
        logged and left to the read-back that follows every write in :meth:`configure`."""
        try:
            await self._rest.write("POST", path, params, type)
        except (AuthError, InvalidRequest, Refused):
            raise
        except (TransportError, BingXError) as exc:
            log.warning("BingX %s: outcome unknown (%s); reading the setting back", path, exc)

    # --- orders --------------------------------------------------------------------------------

    def _position_side(self, side: Side) -> str:
        return ("LONG" if side == "long" else "SHORT") if self.hedge else "BOTH"

    @staticmethod
    def _order_side(side: Side, *, opening: bool) -> str:
        return "BUY" if (side == "long") == opening else "SELL"

    def order_params(self, cmd: Submission) -> dict[str, Any]:
        """The wire parameters of a command (one-way: BOTH + reduceOnly; hedge: LONG/SHORT, no reduceOnly)."""
        opening = isinstance(cmd, SubmitEntry)
        params: dict[str, Any] = {"symbol": cmd.symbol, "side": self._order_side(cmd.side, opening=opening),
                                  "positionSide": self._position_side(cmd.side), "quantity": cmd.qty,
                                  "clientOrderId": cmd.client_id}
        if isinstance(cmd, SubmitStop | SubmitTakeProfit):
            params |= {"type": "STOP_MARKET" if isinstance(cmd, SubmitStop) else "TAKE_PROFIT_MARKET",
                       "stopPrice": cmd.stop_price, "workingType": cmd.working_type}
        else:
            params["type"] = "MARKET"
        if not opening and not self.hedge:
            params["reduceOnly"] = True
        if isinstance(cmd, SubmitEntry) and cmd.stop is not None:
            params["stopLoss"] = {"type": "STOP_MARKET", "stopPrice": cmd.stop.price,
                                  "workingType": cmd.stop.working_type, "quantity": cmd.qty,
                                  "clientOrderId": cmd.stop.client_id}
        return params

    async def submit(self, command: Submission) -> None:
        cid = command.client_id
        try:
            reply = await self._write_with_backoff("POST", self.order_params(command), command.client_id)
        except Refused as exc:
            if exc.code in _DUPLICATE:  # the exchange already has it: deliver what it knows instead
                await self._deliver_known(command)
                return
            self._emit(OrderRejected(ts=self.clock.now_ms(), client_id=cid, code=exc.code, reason=exc.msg))
            return
        except InvalidRequest as exc:
            log.error("BingX refused %s as invalid (%s): a bug or a mode mismatch", cid, exc)
            self._emit(OrderRejected(ts=self.clock.now_ms(), client_id=cid, code=exc.code, reason=exc.msg))
            return
        except AuthError:
            raise  # nothing was placed and nothing will be until the operator fixes the key
        except (TransportError, BingXError) as exc:
            # Lost, busy, rate-limited past the backoff, an unknown code, or a reply the codec cannot read:
            # the order may exist. The engine resolves it by querying the client id (the stop still goes out).
            raise OrderUnknown(cid, str(exc)) from exc
        order_id = reply.order.orderId
        self.book.remember(order_id, cid)
        if cid not in self.book.acked:
            self.book.acked.add(cid)
            self._emit(OrderAccepted(ts=self.clock.now_ms(), client_id=cid, order_id=order_id))

    async def _write_with_backoff(self, method: str, params: dict[str, Any], cid: str) -> codec.OrderReply:
        """A rate-limited order or cancel was refused unprocessed: it is sent again after a backoff (same
        client id, so even a mistaken second copy would be refused as a duplicate, or find it gone)."""
        delay = 0.1
        for attempt in range(4):
            try:
                return await self._rest.write(method, constants.ORDER, params, codec.OrderReply)
            except RateLimited:
                if attempt == 3:
                    raise
                log.warning("%s %s rate-limited; sending again in %.1f s", method, cid, delay)
                await self.clock.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _deliver_known(self, command: Submission) -> None:
        """A duplicate-id refusal: the exchange has an order under this id; what became of it is delivered
        (core.exchange.known_order_events), or IdTaken where it is another order."""
        cid = command.client_id
        try:
            state = known_order(await self.query_order(command.symbol, cid), command)
            fills = await self.order_fills(command.symbol, cid)
        except (TransportError, BingXError) as exc:  # what became of it cannot be read now: unknown, not a crash
            raise OrderUnknown(cid, f"a duplicate id, its order not readable: {exc}") from exc
        for event in known_order_events(state, fills, self.clock.now_ms(), acked=cid in self.book.acked):
            if isinstance(event, OrderAccepted):
                self.book.acked.add(cid)
            self._emit(event)

    async def cancel(self, command: CancelOrder) -> None:
        cid = command.client_id
        try:
            await self._write_with_backoff("DELETE", {"symbol": command.symbol, "clientOrderId": cid}, cid)
        except OrderNotFound:
            # Already gone: canceled, expired, or filled before the cancel arrived. A fill is delivered first
            # (its push may never come: a replaced stop can fire while the stream is down).
            try:
                for fill in await self.order_fills(command.symbol, cid):
                    self._emit(fill)
            except (TransportError, BingXError) as exc:
                raise OrderUnknown(cid, f"cancel: gone, fills unknown: {exc}") from exc
        except (AuthError, InvalidRequest):
            raise
        except (TransportError, BingXError) as exc:  # lost, busy, refused, unreadable: still working or not?
            raise OrderUnknown(cid, f"cancel: {exc}") from exc
        self._emit(OrderCanceled(ts=self.clock.now_ms(), client_id=cid, reason="canceled"))

    def _emit(self, event: Any) -> None:
        if self._sink is not None:
            self._sink(event)

    # --- queries -------------------------------------------------------------------------------

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        order = await self._order(symbol, client_id)
        return None if order is None else self._state(order, client_id)

    async def _order(self, symbol: str, client_id: str) -> codec.Order | None:
        try:
            reply = await self._rest.query(constants.ORDER, {"symbol": symbol, "clientOrderId": client_id},
                                           codec.OrderReply)
        except OrderNotFound:
            return None
        self.book.remember(reply.order.orderId, client_id)
        return reply.order

    def _state(self, o: codec.Order, client_id: str) -> OrderState:
        role = ids.role_of(client_id) or _TYPE_ROLE.get(o.type.upper(), "close" if o.reduceOnly else "entry")
        closing_side: Side = "long" if o.side == "SELL" else "short"
        opening_side: Side = "long" if o.side == "BUY" else "short"
        if o.positionSide in ("LONG", "SHORT"):
            side: Side = "long" if o.positionSide == "LONG" else "short"
        else:
            side = opening_side if role == "entry" else closing_side
        return OrderState(client_id=client_id, order_id=o.orderId, symbol=o.symbol, role=role, side=side,
                          status=_STATUS.get(o.status.upper(), "new"), qty=o.qty, filled_qty=dec(o.executedQty),
                          avg_price=dec(o.avgPrice), stop_price=dec(o.stopPrice), reduce_only=o.reduceOnly)

    async def order_fills(self, symbol: str, client_id: str) -> list[OrderFilled]:
        """The order's fills from the fill history: booked on the order itself or, for a stop that fired, on
        the MARKET order derived from it (``triggerOrderId``; which one BingX uses is UNCONFIRMED)."""
        order = await self._order(symbol, client_id)
        if order is None:
            return []
        state = self._state(order, client_id)
        if state.filled_qty == 0:
            return []
        ids = dict.fromkeys(i for i in (state.order_id, order.trigger_id) if i)
        rows: dict[str, codec.Fill] = {}
        for order_id in ids:
            history = await self._rest.query(constants.FILL_HISTORY, {"symbol": symbol, "orderId": order_id},
                                             codec.FillHistory)
            rows |= {f.key: f for f in history.rows if f.orderId in ids}
            if rows:
                break
        fills, cum = [], ZERO
        for f in rows.values():
            qty = dec(f.qty) if f.qty != "" else dec(f.volume)
            cum += qty
            fills.append(OrderFilled(client_id=client_id, order_id=state.order_id, trade_id=f.key, qty=qty,
                                     price=dec(f.price), fee=-dec(f.commission), realized_pnl=dec(f.realisedPNL),
                                     cum_qty=cum, final=cum >= state.qty))
        return fills

    async def open_orders(self, symbol: str) -> list[OrderState]:
        reply = await self._rest.query(constants.OPEN_ORDERS, {"symbol": symbol}, codec.OrderList)
        out = []
        for o in reply.orders:
            cid = o.client_id or self.book.client_of.get(o.orderId, "")
            self.book.remember(o.orderId, cid)
            out.append(self._state(o, cid))
        return out

    async def position(self, symbol: str, side: Side) -> PositionSnapshot:
        rows = await self._rest.query(constants.POSITIONS, {"symbol": symbol}, list[codec.Position])
        for p in rows:
            amount = dec(p.positionAmt)
            if p.symbol != symbol or amount == 0:
                continue
            if p.positionSide in ("LONG", "SHORT"):
                row_side = "long" if p.positionSide == "LONG" else "short"
            else:
                row_side = "short" if amount < 0 else "long"
            if row_side == side:
                return PositionSnapshot(ts=self.clock.now_ms(), symbol=symbol, side=side, qty=abs(amount),
                                        entry_price=dec(p.avgPrice))
        return PositionSnapshot(ts=self.clock.now_ms(), symbol=symbol, side=side, qty=ZERO)

    async def balance(self) -> Decimal:
        rows = await self._rest.query(constants.BALANCE, {}, list[codec.Balance])
        for b in rows:
            if b.asset in ("USDT", "VST"):
                return dec(b.availableMargin) if b.availableMargin != "" else dec(b.balance)
        return ZERO


def _kline(symbol: str, interval: str, k: codec.Kline) -> CandleClosed:
    return CandleClosed(ts=k.time, symbol=symbol, interval=interval, open_time=k.time, open=float(k.open),
                        high=float(k.high), low=float(k.low), close=float(k.close), volume=float(k.volume))


class BingXPlugin:
    """What the ``gatebot_exchanges`` hook returns for ``type = "bingx"``."""

    Options = BingXOptions

    @staticmethod
    def factory(options: Any, *, hedge_mode: bool, clock: Clock, state_dir: Any, account: str) -> BingXAdapter:
        return BingXAdapter(options, hedge_mode=hedge_mode, clock=clock, account=account)
