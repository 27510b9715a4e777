"""The engine bench: one engine against the paper exchange on a virtual clock, driven candle by candle with a
scripted strategy (the engine, recovery, ownership and fault tests share it)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from gatebot.core.clock import VirtualClock
from gatebot.core.engine import Engine
from gatebot.core.events import (
    CancelOrder,
    CandleClosed,
    SubmitEntry,
    SubmitStop,
)
from gatebot.core.invariants import check
from gatebot.core.journal import Journal
from gatebot.core.position import Protection
from gatebot.core.strategy import Decision, PositionView
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions

SYMBOL = "BTC-USDT"
STEP_MS = 300_000


def exact(**options: Any) -> PaperOptions:
    """A paper account whose stops fill exactly at their price (stop slippage 0): these tests check prices."""
    return PaperOptions(stop_slippage_bps=Decimal(0), **options)


class Scripted:
    """Says what the script says on the n-th candle, nothing otherwise."""

    Params: ClassVar[type[msgspec.Struct]] = msgspec.Struct
    history = 1

    def __init__(self, script: dict[int, Decision]) -> None:
        self.script = script
        self.n = 0

    def on_candle(self, candle: CandleClosed) -> None:
        self.n += 1

    def decide(self, view: PositionView) -> Decision:
        return self.script.pop(self.n, None)


def candle(i: int, o: float, h: float | None = None, lo: float | None = None, c: float | None = None) -> CandleClosed:
    c = o if c is None else c
    return CandleClosed(symbol=SYMBOL, interval="5m", open_time=i * STEP_MS, open=o, high=h or max(o, c),
                        low=lo or min(o, c), close=c, volume=1.0)


class Bench:
    def __init__(self, tmp: Path, script: dict[int, Decision], *, exchange: PaperExchange | None = None,
                 plugins: Any = None, timeout_ms: int = 10_000, foreign_policy: str = "adopt",
                 attached: bool = False, sent: tuple[str, ...] = (), epoch: str = "", adopt: bool = False,
                 tp_pct: Decimal | None = None, moves: dict[str, Decimal] | None = None) -> None:
        """``tp_pct``: the take-profit's distance from the fill (None: no take-profit); ``moves``: the stop's
        built-in moves (``trailing_pct``, ``break_even_at_pct``); ``sent``: client ids the
        journal sent before this start (it is not a fresh journal then);
        ``epoch``: a new journal's (the legacy one by default: ids as ``t-1-e1``); ``adopt``: as
        ``gatebot run --adopt``."""
        self.adopt = adopt
        self.clock = VirtualClock(0)
        self.exchange = exchange or PaperExchange(exact(), clock=self.clock)
        self.exchange.clock = self.clock
        self.path = tmp / "t.sqlite"
        self.journal = Journal(self.path, synchronous="OFF", epoch=epoch)
        with self.journal.transaction():
            for cid in sent:
                self.journal.add_intent(0, 0, CancelOrder(client_id=cid, symbol=SYMBOL))
        self.script = script
        self.plugins = plugins
        self.timeout_ms = timeout_ms
        self.foreign_policy = foreign_policy
        self.attached = attached
        self.tp_pct = tp_pct
        self.moves = moves or {}
        self.i = 0

    async def start(self) -> Engine:
        ex = self.exchange
        inst = await ex.instrument(SYMBOL)
        await ex.configure(SYMBOL, 4, False)
        self.engine = Engine(name="t", symbol=SYMBOL, interval="5m", leverage=4, strategy=Scripted(self.script),
                             adapter=ex, journal=self.journal, clock=self.clock,
                             protection=Protection(instrument=inst, price_sl_pct=Decimal("0.01"),
                                                   price_tp_pct=self.tp_pct, attached_stop=self.attached,
                                                   **self.moves),
                             protection_timeout_ms=self.timeout_ms, plugins=self.plugins,
                             foreign_policy=self.foreign_policy)  # type: ignore[arg-type]
        self.engine.may_adopt = self.adopt
        await ex.start(self.engine.post)
        await self.engine.start()
        return self.engine

    async def candles(self, *candles: CandleClosed) -> None:
        for c in candles:
            self.clock.advance_to(c.open_time + STEP_MS)
            self.exchange.on_candle(c)
            self.engine.post(c)
            await self.engine.drain()

    async def bars(self, *prices: float) -> None:
        for p in prices:
            self.i += 1
            await self.candles(candle(self.i, p))

    def transitions(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.journal.conn.execute("SELECT src, trigger, dst FROM transitions ORDER BY seq")]

    def rejections(self) -> list[tuple[str, str]]:
        return list(self.journal.conn.execute("SELECT state, trigger FROM rejections ORDER BY rowid"))

    async def violations(self) -> list[Any]:
        return await check(self.journal, self.exchange, instance="t", symbol=SYMBOL)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _exchange_with(position_qty: str, *, side: str = "long", extra_stop: str | None = None) -> PaperExchange:
    """A paper account that already holds a position (and maybe an order of ours) before the bot starts."""
    ex = PaperExchange(exact())
    await ex.configure(SYMBOL, 4, False)
    ex.on_candle(candle(0, 100.0))
    await ex.submit(SubmitEntry(client_id="someone-1", symbol=SYMBOL, side=side, qty=Decimal(position_qty)))
    if extra_stop:
        await ex.submit(SubmitStop(client_id=extra_stop, symbol=SYMBOL, side=side, qty=Decimal(position_qty),
                                   stop_price=Decimal(90)))
    return ex


class Deaf(PaperExchange):
    """A paper exchange whose user stream can go deaf: events are applied on its books but never pushed."""

    deaf = False

    def _deliver(self, events: list[Any]) -> None:
        if self.deaf:
            self._save()
        else:
            super()._deliver(events)


class Killed(BaseException):
    """The process died here (a kill -9 in-process: nothing after it runs, the journal and the account stay)."""


class Killing(PaperExchange):
    """A paper exchange at which the bot dies once, while sending the order ``kill_at`` names: ``before`` it
    reaches the exchange (the intent committed, nothing sent) or ``after`` (placed, its answers never handled)."""

    kill_at: tuple[str, str] | None = None

    async def submit(self, command: Any) -> None:
        if self.kill_at is not None and self.kill_at[1] == command.client_id:
            when, self.kill_at = self.kill_at[0], None
            if when == "after":
                self._deliver = lambda events: self._save()  # type: ignore[method-assign]
                await super().submit(command)
                del self._deliver
            raise Killed(f"{when} {command.client_id}")
        await super().submit(command)
