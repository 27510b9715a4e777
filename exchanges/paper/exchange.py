"""The paper exchange: the matching core in-process, behind the adapter protocol.

Its account (balance, positions, working orders, fills, the last candle it lived through) can persist
in a JSON file of its own, written atomically after every change, so that it outlives a killed bot
process as a real exchange would: a restarted bot finds its stop still working, its fills still there.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from gatebot.core.clock import Clock
from gatebot.core.config import OptionFileError
from gatebot.core.events import (
    AnyEvent,
    CancelOrder,
    CandleClosed,
    FundingPaid,
    OrderFilled,
    PositionSnapshot,
    Side,
    Submission,
)
from gatebot.core.exchange import (
    Capabilities,
    EventSink,
    ExchangeError,
    OrderState,
    SettingsRefused,
    known_order,
    known_order_events,
)
from gatebot.core.instrument import Instrument
from gatebot.core.intervals import interval_ms
from gatebot.exchanges.paper.funding import FundingError, FundingOptions, FundingSchedule, load_rates
from gatebot.exchanges.paper.matching import Account, MatchingCore

STOP_SLIPPAGE_BPS = Decimal(5)
"""The default: a triggered stop is a market order into a market moving against it. On BingX's liquid
perpetuals (BTC-USDT, ETH-USDT) a stop-market order fills a few basis points past its trigger in an ordinary
market and more in a fast one; 5 bps (0.05 %) is a modest middle. A replay without it would report every stop
as filled exactly at its price, which no trader gets. Tests that need exact prices set 0."""


class PaperOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[exchanges.<name>.options]`` of a paper account."""

    balance: Decimal = Decimal(10_000)
    """Starting balance in USDT (ignored when ``state_file`` already holds an account)."""
    fee_rate: Decimal = Decimal("0.0005")
    """Taker fee on notional."""
    slippage_bps: Decimal = Decimal(0)
    """MARKET orders (entries, closes) fill this many basis points against the taker."""
    stop_slippage_bps: Decimal = STOP_SLIPPAGE_BPS
    """Triggered stops (and take-profits) fill this many basis points past the trigger (or a gap's open),
    never past the candle's extreme; 0 fills exactly at the trigger."""
    funding: FundingOptions = FundingOptions()
    """Funding settled at every funding time on the positions held then (default: rate 0, none)."""
    attached_stop: bool = False
    """Accept the stop attached to the entry (BingX ``stopLoss``) instead of a separate order."""
    orphan_stops: Literal["cancel", "keep"] = "keep"
    state_file: str | None = None
    """Persist the account here (relative paths are under the state dir); None keeps it in memory."""
    tick: Decimal = Decimal("0.1")
    step: Decimal = Decimal("0.0001")
    min_qty: Decimal = Decimal("0.0001")
    min_notional: Decimal = Decimal(2)

    def resolve_files(self, base: Path) -> PaperOptions:
        """The funding CSV resolved against the config's folder ``base`` and read now (core.config calls this at
        load), so that a missing or bad file is refused before anything starts."""
        csv = self.funding.csv
        if not csv:
            return self
        if "\x00" in csv:
            raise OptionFileError("funding.csv", "a path cannot contain a NUL character")
        resolved = base / csv
        try:
            load_rates(resolved)
        except FundingError as exc:
            raise OptionFileError("funding.csv", str(exc)) from None
        return msgspec.structs.replace(self, funding=msgspec.structs.replace(self.funding, csv=str(resolved)))

    def __post_init__(self) -> None:
        # msgspec.Meta bounds do not apply to Decimal, so the ranges are checked here.
        for name in ("balance", "tick", "step", "min_qty"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.fee_rate <= Decimal("0.01"):
            raise ValueError(f"fee_rate must be within 0..0.01, got {self.fee_rate}")
        for name in ("slippage_bps", "stop_slippage_bps"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be within 0..100, got {getattr(self, name)}")
        if self.min_notional < 0:
            raise ValueError(f"min_notional must not be negative, got {self.min_notional}")


class PaperExchange:
    """One paper account. Execution events reach the sink synchronously, in exchange order."""

    name = "paper"

    def __init__(self, options: PaperOptions | None = None, *, hedge_mode: bool = False, clock: Clock | None = None,
                 state_dir: str | Path | None = None, account: str = "paper", core: MatchingCore | None = None) -> None:
        """``core``: wrap an existing matching core (the simulator's) instead of making one: a view of
        that account through the adapter protocol, for invariant checks."""
        self.options = options = options or PaperOptions()
        self.capabilities = Capabilities(attached_stop=options.attached_stop, hedge_mode=hedge_mode)
        self.account_name = account
        self.clock = clock
        self.path: Path | None = None
        if options.state_file:
            path = Path(options.state_file)
            self.path = path if path.is_absolute() or state_dir is None else Path(state_dir) / path
        if core is not None:
            self.core = core
        else:
            acct = self._load() if self.path is not None and self.path.exists() else None
            if acct is None:
                acct = Account(balance=options.balance, hedge_mode=hedge_mode)
            self.core = MatchingCore(acct, {}, fee_rate=options.fee_rate, slippage_bps=options.slippage_bps,
                                     orphan_stops=options.orphan_stops, stop_slippage_bps=options.stop_slippage_bps,
                                     funding=FundingSchedule(options.funding))
            for symbol in {o.symbol for o in acct.orders} | {h.symbol for h in acct.positions}:
                self._instrument(symbol)  # a restored order may trigger before any instance asks for it
        self._sink: EventSink | None = None
        self._funding_step: dict[str, int] = {}
        """The shortest candle interval seen per symbol: the stream whose closes settle funding."""

    # --- persistence -------------------------------------------------------------------------

    def _load(self) -> Account:
        assert self.path is not None
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Account)
        except (OSError, msgspec.DecodeError) as exc:
            raise ExchangeError(f"paper account file {self.path} is unreadable: {exc}") from exc

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(self.core.sync()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # --- the adapter protocol ----------------------------------------------------------------

    def _now(self) -> int:
        return self.clock.now_ms() if self.clock is not None else 0

    def _deliver(self, events: list[AnyEvent]) -> None:
        self._save()
        if self._sink is not None:
            for ev in events:
                self._sink(ev)

    async def start(self, sink: EventSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None
        self._save()

    def _instrument(self, symbol: str) -> Instrument:
        inst = self.core.instruments.get(symbol)
        if inst is None:
            o = self.options
            inst = Instrument(symbol=symbol, tick=o.tick, step=o.step, min_qty=o.min_qty, min_notional=o.min_notional)
            self.core.instruments[symbol] = inst
        return inst

    async def instrument(self, symbol: str) -> Instrument:
        return self._instrument(symbol)

    async def configure(self, symbol: str, leverage: int, hedge: bool) -> list[str]:
        acct = self.core.account
        changed = []
        if acct.hedge_mode != hedge:
            if acct.positions or any(o.status in ("new", "partially_filled") for o in acct.orders):
                raise SettingsRefused(f"paper account {self.account_name}: cannot switch position mode with open "
                                      "positions or orders (104103)")
            acct.hedge_mode = hedge
            changed.append(f"position mode {'hedge' if hedge else 'one-way'}")
        if acct.leverage.get(symbol) != leverage:
            changed.append(f"{symbol} leverage {acct.leverage.get(symbol, self.core.default_leverage)}x -> {leverage}x")
            acct.leverage[symbol] = leverage
        self._instrument(symbol)
        if changed:
            self._save()
        return changed

    async def submit(self, command: Submission) -> None:
        """A resent id is answered as BingX's adapter answers it (the matching core itself refuses it with
        101481, as BingX does): what became of that order, or IdTaken where it is another."""
        self._instrument(command.symbol)
        order = self.core.order(command.client_id)
        if order is None:
            self._deliver(self.core.submit(command, self._now()))
            return
        state = known_order(order.view(), command)
        self._deliver(known_order_events(state, self.core.fills_of(command.client_id), self._now(), acked=False))

    async def cancel(self, command: CancelOrder) -> None:
        self._deliver(self.core.cancel(command.client_id, self._now()))

    async def query_order(self, symbol: str, client_id: str) -> OrderState | None:
        order = self.core.order(client_id)
        return order.view() if order is not None and order.symbol == symbol else None

    async def order_fills(self, symbol: str, client_id: str) -> list[OrderFilled]:
        order = self.core.order(client_id)
        return self.core.fills_of(client_id) if order is not None and order.symbol == symbol else []

    async def open_orders(self, symbol: str) -> list[OrderState]:
        return [o.view() for o in self.core.open_orders(symbol)]

    async def position(self, symbol: str, side: Side) -> PositionSnapshot:
        return self.core.snapshot(symbol, side, self._now())

    async def balance(self) -> Decimal:
        return self.core.available()

    async def funding(self, symbol: str, since_ms: int = 0) -> list[FundingPaid]:
        """The funding payments of ``symbol`` at funding times from ``since_ms`` on (the income history)."""
        return self.core.funding_of(symbol, since_ms)

    # --- the paper exchange's own market -----------------------------------------------------

    def on_candle(self, candle: CandleClosed) -> None:
        """The market moved by one closed candle: trigger stops and take-profits on its path, then settle
        the funding due at its close (the positions held through it pay; an order sent on it does not). With
        several intervals of one symbol (a replay feeds every stream to every paper account, each candle at its
        open time), only the shortest settles: a long candle arrives before the short ones inside it."""
        now = self._now()
        events = self.core.on_candle(candle, now)
        step = interval_ms(candle.interval)
        shortest = self._funding_step.setdefault(candle.symbol, step)
        if step <= shortest:
            self._funding_step[candle.symbol] = step
            events += self.core.settle_funding(candle.symbol, candle.open_time + step, now)
        self._deliver(events)

    def market_time(self, symbol: str) -> int | None:
        """Open time of the last candle this account lived through (a restarted run resumes after it)."""
        return self.core.account.market_time.get(symbol)

    def close_by_hand(self, symbol: str, side: Side, qty: Decimal | None = None) -> None:
        """An operator closes the position outside the bot."""
        self._instrument(symbol)
        self._deliver(self.core.close_by_hand(symbol, side, self._now(), qty))

    def order_count(self, client_id: str) -> int:
        return sum(1 for o in self.core.account.orders if o.client_id == client_id)


class PaperPlugin:
    """What the ``gatebot_exchanges`` hook returns for ``type = "paper"``."""

    Options = PaperOptions

    @staticmethod
    def factory(options: Any, *, hedge_mode: bool, clock: Clock, state_dir: Any, account: str) -> PaperExchange:
        return PaperExchange(options, hedge_mode=hedge_mode, clock=clock, state_dir=state_dir, account=account)
