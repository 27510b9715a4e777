"""The engine of one instance: events in -> strategy -> state machine -> journal -> commands -> exchange.

The functional core (strategy decisions, the position state machine) is synchronous; this module is
the imperative shell around it. Its one rule: a transition and the commands it produced are committed
to the journal before any command is sent (write-ahead), so a crash at any instant leaves a journal
from which recovery (:mod:`gatebot.core.recovery`) can finish the job by asking the exchange about deterministic ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from decimal import Decimal
from typing import Any, Literal

from gatebot.core import ids, recovery_shell, routing
from gatebot.core.clock import Clock
from gatebot.core.crashpoints import crashpoint
from gatebot.core.events import (
    ZERO,
    AnyCommand,
    AnyEvent,
    CancelOrder,
    CandleClosed,
    FundingPaid,
    ManualClose,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionSnapshot,
    SettingsChanged,
    StreamUp,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
    SubmitTakeProfit,
    Timer,
)
from gatebot.core.exchange import ExchangeAdapter, ExchangeError, IdTaken, OrderUnknown, SettingsRefused
from gatebot.core.instrument import to_decimal
from gatebot.core.intervals import interval_ms
from gatebot.core.journal import Journal
from gatebot.core.position import EXITED, InvalidTransition, Position, Protection
from gatebot.core.recovery import AdoptionRequired, InstanceHalted
from gatebot.core.routing import ExecutionEvent
from gatebot.core.strategy import Enter, Exit, MoveStop, PositionView, Strategy
from gatebot.core.telemetry import Observe, ignore

log = logging.getLogger("gatebot.engine")
trade_log = logging.getLogger("gatebot.trade")
"""One line per transition, order and fill (on the terminal during ``gatebot run``: app/logs.py)."""

ForeignPolicy = Literal["adopt", "flatten", "halt"]
TradingState = Literal["active", "reducing", "halted"]
_ROLE_OF = {SubmitEntry: "entry", SubmitStop: "stop", SubmitTakeProfit: "take_profit", SubmitClose: "exit",
            CancelOrder: "cancel"}
_NOT_OURS = "!"
"""What _role says of an order of this instance that this journal never sent."""
_AT_REST = ("flat", "protected")
"""States in which a halt leaves nothing unguarded (an entry waiting for its stop is not one)."""
_DECISIONS = (CandleClosed, Timer, ManualClose)
"""Events that may send new orders; held while recovery runs, handled right after it."""
RECOVERY_ROUNDS = 8
RECOVERY_FIRST_DELAY_S = 0.05
RECOVERY_MAX_DELAY_S = 2.0
"""Recovery rounds until every intent is definite: 0.05, 0.1 ... 2 s apart (about 6 s in all, plus the
requests' own retries) before the instance is restarted by the runner."""

__all__ = ["AdoptionRequired", "Engine", "InstanceHalted"]


class Engine:
    """One strategy instance on one symbol: its position, journal and decisions."""

    def __init__(self, *, name: str, symbol: str, interval: str, leverage: int, strategy: Strategy,
                 adapter: ExchangeAdapter, journal: Journal, clock: Clock, protection: Protection,
                 protection_timeout_ms: int = 10_000, foreign_policy: ForeignPolicy = "halt",
                 plugins: Any = None, fill_timeout_ms: int = 3_000) -> None:
        self.name = name
        self.symbol = symbol
        self.interval = interval
        self.interval_ms = interval_ms(interval)
        self.leverage = leverage
        self.strategy = strategy
        self.adapter = adapter
        self.journal = journal
        self.clock = clock
        self.protection = protection
        self.protection_timeout_ms = protection_timeout_ms
        self.fill_timeout_ms = fill_timeout_ms
        self.foreign_policy = foreign_policy
        self.plugins = plugins
        self.status = "recovering"
        self.epoch = journal.epoch
        """Part of every client id this engine makes (core/ids.py): its journal's."""
        self.pos = Position(name, symbol, protection, journal.fold(), epoch=self.epoch)
        self.balance = ZERO
        self.last_close = 0.0
        self.bar = 0
        self.candles_seen = 0
        self._inbox: deque[AnyEvent] = deque()
        self._busy = 0
        self._wake = asyncio.Event()
        self._reconcile = False
        self._unknown: set[str] = set()
        self._protect_deadline: int | None = None
        """Deadlines are on the clock's monotonic reading: a wall clock stepped back must not delay them."""
        self._deadline_wake: asyncio.TimerHandle | None = None
        self._fill_deadline: int | None = None
        """When an entry sent and not reported complete is asked about (its fill push may be lost)."""
        self._fill_asked: str | None = None
        self._moved_bar: int | None = None
        """The candle on which the stop last moved: at most one move per candle."""
        self._recovering = False
        self._held: list[AnyEvent] = []
        self._balance_stale = True
        self._view: PositionView | None = None
        self._view_bar = -1
        self.reconciles = 0
        self.reconcile_outcomes: dict[str, int] = {"agreed": 0, "corrected": 0, "failed": 0}
        """Reconciliations by outcome: nothing to resolve, intents resolved from the exchange (the journal did
        not know how they ended), or given up (an error: the runner restarts the instance)."""
        self.observe: Observe = ignore
        """Where decision latencies go (app/metrics.py sets it)."""
        self.reconciled: dict[str, Any] | None = None
        """The last reconciliation (also the journal's meta ``reconciled``): None until the first ends."""
        self.siblings: frozenset[str] = frozenset()
        """The other instances of this config on this account and symbol (hedge mode): their orders are
        not another owner's, and a position this instance did not open is not taken for a foreign one."""
        self.may_adopt = False
        """``gatebot run --adopt``: a fresh journal adopts what the account holds of this instance."""
        self._settings_stale = False
        self._settings_checked = False
        self._halt: InstanceHalted | None = None
        """Another owner's order seen in an event: the instance halts as soon as its position is at rest."""
        self.trading_state: TradingState = journal.trading_state()  # type: ignore[assignment]
        """The operator's gate (app/control.py journals it): ``active`` trades; ``reducing`` takes no new
        entry (exits, stops and recovery go on); ``halted`` takes no decision at all (the exchange stops
        stay, and a position left unguarded is still protected or closed by the state table)."""

    @property
    def unprotected_since_ms(self) -> int | None:
        """Since when (the clock's monotonic reading) a filled entry waits for its stop; None: nothing does."""
        deadline = self._protect_deadline
        return None if deadline is None else deadline - self.protection_timeout_ms

    @property
    def shares_symbol(self) -> bool:
        return bool(self.siblings)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Crash-only start: fold the journal (done in __init__), reconcile with the exchange, trade."""
        self.status = "recovering"
        self._resume_protection()
        await self.reconcile()
        self._arm_fill_deadline(self.clock.monotonic_ms())
        self.status = "running"

    def _resume_protection(self) -> None:
        """A filled entry still waiting for its stop, found in the journal: it has been unprotected since its
        fill as journaled, not since this start (a crash or an instance restart must not buy it more time, and
        ``unprotected_since_ms`` reports the truth, the time this process was dead included). One already
        waiting longer than the protection timeout is not closed blind: the stop may have reached the exchange
        just before the crash, and closing a protected position at market costs the trade. Recovery's first
        round asks the exchange (and sends a stop only committed); if the position is still without a confirmed
        stop after it, the timeout closes it then (:meth:`reconcile`)."""
        r = self.pos.rec
        if self.pos.state != "entering" or not r.entry_complete or r.filled_qty <= 0:
            return
        waited_ms = max(0, self.clock.now_ms() - self.journal.filled_at(r.seq))
        if waited_ms >= self.protection_timeout_ms:
            log.warning("%s: a filled entry has waited %.1f s for its stop (protection timeout %.1f s): asking "
                        "the exchange, closing it unless its stop is there", self.name, waited_ms / 1000,
                        self.protection_timeout_ms / 1000)
        self._arm_protection(self.clock.monotonic_ms() - waited_ms)

    def _arm_protection(self, since_mono_ms: int) -> None:
        """The protection deadline of a filled entry unprotected since ``since_mono_ms``; live, a wake-up is
        set for it, so that the timeout is acted on at its time, not at the next heartbeat (1 s later)."""
        self._protect_deadline = since_mono_ms + self.protection_timeout_ms
        if self._deadline_wake is not None:
            self._deadline_wake.cancel()
            self._deadline_wake = None
        if not self.clock.advances_alone:
            return  # a replay's clock moves with its events: the Timer events of the feed are its heartbeat
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay_s = max(0, self._protect_deadline - self.clock.monotonic_ms()) / 1000
        self._deadline_wake = loop.call_later(
            delay_s, lambda: self.post(Timer(ts=self.clock.now_ms(), name="protection_deadline")))

    def close(self) -> None:
        if self._deadline_wake is not None:
            self._deadline_wake.cancel()
        self.pos.release()

    # --- event intake ----------------------------------------------------------------------

    def post(self, event: AnyEvent) -> None:
        self._inbox.append(event)
        self._wake.set()

    async def run_forever(self) -> None:
        """Live mode: process events as the adapter and the market feed post them."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being handled."""
        return not self._inbox and not self._busy

    async def drain(self) -> None:
        inbox = self._inbox
        self._busy += 1
        try:
            while inbox:
                await self._handle(inbox.popleft())
                if self._halt is not None and self.pos.state in _AT_REST:
                    raise self._halt
            if (self._reconcile or self._unknown) and not self._recovering:
                await self.reconcile()
        finally:
            self._busy -= 1

    async def reconcile(self) -> None:
        """Run the recovery table against the exchange (at start, after reconnects, after surprises) until
        every intent is definite, then say so (:meth:`_reconciled`).

        A round that leaves an outcome unknown (a command recovery sent got no definite reply), asks for
        another look (a surprise met meanwhile) or meets a transient exchange error is run again after a
        backoff, decisions still held; after ``RECOVERY_ROUNDS`` the error propagates (the runner restarts
        the instance, saying why). On a clock that only the feed moves (a replay, a test bench) there is no
        waiting: an outcome still unknown after a round is asked about again at the next event, and the
        instance is not declared reconciled until it is definite."""
        started_ms = self.clock.now_ms()
        delay_s = RECOVERY_FIRST_DELAY_S
        resolved = 0
        self._recovering = True
        try:
            for round_ in range(1, RECOVERY_ROUNDS + 1):
                self._reconcile = False
                self._unknown.clear()
                # Decisions wait for recovery, the protection timeout does not: a stop still not confirmed when
                # the deadline passes between rounds is given up for a close, which this round sends (as it
                # sends any command committed and never received). Not before the first round: the exchange
                # is asked first (a restart after a long outage may find the stop there).
                if round_ > 1:
                    self._protection_timed_out("stop not confirmed in time (during recovery)")
                try:
                    resolved += await recovery_shell.recover(self)
                except ExchangeError as exc:
                    if (not getattr(exc, "retryable", True) or round_ == RECOVERY_ROUNDS
                            or not self.clock.advances_alone):
                        raise
                    log.warning("%s: recovery round %d: %s; again in %.2f s", self.name, round_, exc, delay_s)
                else:
                    if not (self._unknown or self._reconcile):
                        break
                    if round_ == RECOVERY_ROUNDS:
                        raise ExchangeError(f"recovery: still indefinite after {round_} rounds: "
                                            f"{sorted(self._unknown) or 'a surprise to look at again'}")
                    if not self._unknown:
                        continue  # a surprise (a stray fill, a refused trigger): look again at once
                if not self.clock.advances_alone:
                    break  # no time passes while this waits: the unknown ids are asked about at the next event
                await self.clock.sleep(delay_s)  # the exchange did not answer definitely: give it time
                delay_s = min(delay_s * 2, RECOVERY_MAX_DELAY_S)
        except BaseException:
            self.reconcile_outcomes["failed"] += 1
            raise
        finally:
            self._recovering = False
            self._inbox.extendleft(reversed(self._held))
            self._held.clear()
        # A deadline that passed during recovery (or before it: the outage was longer than the timeout) with the
        # stop still not confirmed closes now, before the instance is declared reconciled.
        await self.execute(self._protection_timed_out("stop not confirmed in time (after recovery)"))
        if not (self._unknown or self._reconcile):
            self._reconciled(started_ms, resolved, round_)
        if self._inbox or self._reconcile:
            await self.drain()

    def _reconciled(self, started_ms: int, resolved: int, rounds: int) -> None:
        """Journal (meta ``reconciled``) and log that the journal and the exchange agree: the point at which
        harnesses judge the invariants, instead of guessing from time or from the market subscription.
        Only the injected clock's time goes in, so a replay's journal stays byte-identical."""
        now = self.clock.now_ms()
        self.reconciles += 1
        self.reconcile_outcomes["corrected" if resolved else "agreed"] += 1
        self.reconciled = {"ts_ms": now, "took_ms": now - started_ms, "intents": resolved, "rounds": rounds,
                           "count": self.reconciles, "state": self.pos.state,
                           "journal": self.journal.high_water()}
        self.journal.set_meta({"reconciled": json.dumps(self.reconciled, sort_keys=True)})
        log.info("%s: reconciled (%s, %d intents resolved in %d round(s), %d ms)", self.name, self.pos.state,
                 resolved, rounds, now - started_ms)

    async def _handle(self, ev: AnyEvent) -> None:
        t = type(ev)
        if self._recovering and t in _DECISIONS:
            # Recovery drains the inbox to apply what it learned; a decision taken meanwhile (an exit sent
            # between recovery's order queries and its position query) would make its picture stale: a
            # close that filled looked like a position closed by hand (found by the chaos suite).
            self._held.append(ev)
            return
        if t is CandleClosed:
            await self._on_candle(ev)  # type: ignore[arg-type]
        elif t in (OrderAccepted, OrderRejected, OrderFilled, OrderCanceled, OrderExpired):
            await self._on_execution(ev)  # type: ignore[arg-type]
        elif t is PositionSnapshot:
            self._on_position(ev)  # type: ignore[arg-type]
        elif t is FundingPaid:
            self.book_funding(ev)  # type: ignore[arg-type]
        elif t is ManualClose:
            if self.pos.state == "protected":
                await self.execute(self.fire("manual_close", reason=ev.reason))  # type: ignore[union-attr]
            else:
                log.warning("%s: manual close ignored in state %s", self.name, self.pos.state)
        elif t is Timer:
            await self.check_timers()
        elif t is StreamUp:
            self._reconcile = True  # the exchange does not replay what we missed
        elif t is SettingsChanged and ev.symbol == self.symbol:  # type: ignore[union-attr]
            log.warning("%s: the exchange reports %s: setting them back before any entry", self.name,
                        ev.detail)  # type: ignore[union-attr]
            self._settings_stale = self._reconcile = True

    # --- market ----------------------------------------------------------------------------

    async def _on_candle(self, c: CandleClosed) -> None:
        self.last_close = c.close
        self.bar = c.open_time
        self.strategy.on_candle(c)
        self.candles_seen += 1
        if self.status != "running" or self.candles_seen < self.strategy.history:
            return
        if self._protect_deadline is not None or self._fill_deadline is not None:
            await self.check_timers()
        started = time.perf_counter()
        if await self._decide() and self.pos.state == "flat":
            await self._decide()  # a reversal enters on the candle whose signal closed the old side
        self.observe("decision", time.perf_counter() - started)
        await self._move_stop(None)  # the built-in trailing / break-even rules

    def view(self) -> PositionView:
        """What the strategy may know; rebuilt only when the candle or the position changed."""
        if self._view is not None and self._view_bar == self.bar:
            return self._view
        r = self.pos.rec
        self._view_bar = self.bar
        self._view = PositionView(
            state=self.pos.state, side=r.side, qty=float(r.open_qty), avg_entry=float(r.avg_entry),
            bars_held=(self.bar - r.opened_at) // self.interval_ms if r.opened_at else 0,
            stop_price=float(r.stop_price) if r.stop_id is not None and r.stop_price is not None else 0.0)
        return self._view

    async def _decide(self) -> bool:
        """Ask the strategy and act. True when it closed the position on a signal: then it is asked
        again on the same candle (a reversal). Never after a stop-out or an emergency close: an entry
        refused or unprotected must not be retried in a loop on one candle."""
        state = self.pos.state
        if state not in ("flat", "protected") or self.trading_state == "halted":
            return False
        decision = self.strategy.decide(self.view())
        if decision is None:
            return False
        if isinstance(decision, Enter) and state == "flat":
            if self.trading_state == "active":  # paused (reducing): no new entry
                await self._enter(decision)
        elif isinstance(decision, MoveStop) and state == "protected":
            await self._move_stop(decision)
        elif isinstance(decision, Exit) and state == "protected":
            await self.execute(self.fire("exit_signal", reason=decision.reason,
                                           detail={"reason": decision.reason, **decision.info}))
            await self.drain()
            return True
        await self.drain()
        return False

    async def _move_stop(self, d: MoveStop | None) -> None:
        """Move the stop where the strategy's MoveStop and the protection's rules put it (Position.moved_stop):
        at most once per candle, never while halted; the new stop placed first, the old one canceled once the
        new one is confirmed (``confirm_stop``), so the position is never without a live stop."""
        if self._moved_bar == self.bar or self.trading_state == "halted" or self.pos.state != "protected":
            return
        asked = None if d is None else to_decimal(d.price)
        price = self.pos.moved_stop(to_decimal(self.last_close), asked, widen=d is not None and d.widen)
        if price is None:
            return
        self._moved_bar = self.bar
        detail = {"price": str(price), "from": str(self.pos.rec.stop_price),
                  "reason": d.reason if d is not None else "protection"}
        await self.execute(self.fire("move_stop", price=price, detail=detail), moving=True)

    async def _enter(self, d: Enter) -> None:
        # An adapter may refuse new entries on its account (BingX: its user stream cannot be read, so fills
        # might go unseen); exits and stops are never refused. Then the plugins' risk checks.
        veto = getattr(self.adapter, "entries_blocked", None)
        if veto is None and self.plugins is not None:
            veto = self.plugins.risk_check(instance=self.name, decision=d, view=self.view())
        if veto:
            log.info("%s: entry vetoed: %s", self.name, veto)
            return
        if self._settings_stale:
            await self.verify_settings()  # changed by hand: set back before this entry, never after
        if self._balance_stale:
            self.balance = await self.adapter.balance()
            self._balance_stale = False
        instrument = self.protection.instrument
        price = to_decimal(self.last_close)
        fraction = Decimal(repr(d.fraction))
        qty = instrument.floor_qty(self.balance * fraction * self.leverage / price)
        refusal = instrument.entry_refusal(qty, price)
        if refusal:
            log.info("%s: no entry: %s", self.name, refusal)
            return
        detail = {"side": d.side, "qty": str(qty), "ref_price": str(price), "fraction": d.fraction, **d.info}
        await self.execute(self.fire("enter", side=d.side, qty=qty, ref_price=price, bar=self.bar,
                                       detail=detail))

    # --- execution events ------------------------------------------------------------------

    def _role(self, client_id: str) -> str | None:
        """'e' / 's' / 'x' / 't' for an order of the current position (orders adopted from another journal
        included); None for another order this journal sent (an earlier position's). An order of this
        instance the journal never sent is ignored (nothing is booked on a guess) and halts the instance
        once its own position is at rest (:meth:`not_ours`): ``_NOT_OURS``."""
        p = ids.parse(client_id)
        if p is None or p.instance != self.name:
            return None
        r = self.pos.rec
        if p.epoch == self.epoch and p.seq == r.seq:
            if self._made(p) or self.journal.knows(client_id):
                return p.role
        elif client_id in r.working:
            return p.role
        elif self.journal.knows(client_id):
            return None
        if self._halt is None:
            self._halt = self.not_ours(client_id)
            log.warning("%s: halting once its position is at rest: %s", self.name, self._halt)
        return _NOT_OURS

    def _made(self, p: ids.ClientId) -> bool:
        """Whether the current position's counters have reached this id (no journal query needed)."""
        r = self.pos.rec
        return p.attempt <= {"e": 1, "s": r.stop_attempt, "x": r.close_attempt, "t": r.tp_attempt}.get(p.role, 0)

    def not_ours(self, client_id: str) -> InstanceHalted:
        """The halt for an order of this instance that this journal never sent: its own epoch means the
        journal is behind the exchange (restored from an older backup), another epoch another journal
        (a second process on this account and symbol, or a journal set aside)."""
        p = ids.parse(client_id)
        if p is not None and p.epoch == self.epoch:
            return InstanceHalted(
                f"{self.name}: the journal {self.journal.path} is behind the exchange: it never sent {client_id}, "
                f"which carries its epoch (it ends at position {self.pos.rec.seq}; restored from an older "
                "backup?). Halting instead of guessing: restore the latest journal")
        epoch = p.epoch if p is not None else "?"
        return InstanceHalted(
            f"{self.name}: order {client_id} on {self.symbol} belongs to another journal of this instance "
            f"(epoch {epoch or 'legacy'}, this journal's is {self.epoch or 'legacy'}): is a second gatebot "
            "process trading this account and symbol? Halting (one owner per account and symbol)")

    async def verify_settings(self) -> None:
        """Leverage, margin and position mode as configured, set back where changed (at every reconcile,
        and before an entry once the exchange reported a change); halts when they cannot be set."""
        try:
            changed = await self.adapter.configure(self.symbol, self.leverage, self.adapter.capabilities.hedge_mode)
        except SettingsRefused as exc:
            raise InstanceHalted(f"{self.name}: {exc}") from None
        self._settings_stale = False
        if changed and self._settings_checked:
            detail = "; ".join(changed)
            log.warning("%s: the exchange's settings had changed: set back (%s)", self.name, detail)
            with self.journal.transaction():
                self.journal.add_rejection(self.clock.now_ms(), self.pos.rec.seq, self.pos.state,
                                           "settings_restored", detail)
        self._settings_checked = True

    async def _on_execution(self, ev: ExecutionEvent) -> None:
        """Route an execution event of this instance's orders through the routing table (core/routing.py)
        and do what its row says; a row that needs a fact from the exchange gets it and routes again."""
        cid = ev.client_id
        if ids.instance_of(cid) != self.name:
            return
        role = self._role(cid)
        if role == _NOT_OURS:
            return
        booked = isinstance(ev, OrderFilled) and self.journal.is_booked(cid, ev.trade_id)
        reported = getattr(ev, "filled_qty", ZERO)
        fetched, gone = False, None
        while True:
            facts = routing.Facts(cid, self.pos.rec, self.pos.state, booked, reported, fetched, gone)
            rt = routing.route(ev, role, facts, bar=self.bar)
            if rt.action == routing.FETCH_FILLS:
                await self._book_fills_of(cid)
                fetched = True
            elif rt.action == routing.ASK_POSITION:
                gone = await self._position_gone()
                if gone:
                    await self.book_missed_fills()
            else:
                break
        if rt.action == routing.STATUS:
            assert rt.status is not None
            self._status(*rt.status)
        elif rt.action == routing.STRAY:
            assert isinstance(ev, OrderFilled)
            self._book_stray(ev)
        elif rt.action == routing.RECONCILE:
            self._reconcile = True
        elif rt.action != routing.IGNORE:
            commands = self.fire(rt.action, **rt.data)
            if rt.action == "stop_confirmed" and any(isinstance(c, CancelOrder) for c in commands):
                crashpoint("move_stop_confirmed")  # a replacement is live, the one it replaces not canceled yet
            await self.execute(commands)
            if rt.action in ("entry_filled", "stop_confirmed") and self.pos.state == "protected":
                crashpoint("stop_confirmed")  # protected by this confirmation (or by an attached stop's, before)

    async def _position_gone(self) -> bool:
        """True when the exchange holds nothing on this position's side (never for a shared symbol, where
        the exchange's position is several instances' sum)."""
        side = self.pos.rec.side
        if side is None or self.shares_symbol:
            return False
        return (await self.adapter.position(self.symbol, side)).qty <= 0

    async def book_missed_fills(self) -> None:
        """Book the fills of this position's orders that no push brought (the user stream was down when they
        happened), of every order it placed: one taken for canceled may have filled first. Asked before
        concluding that a position vanished: a close or stop that filled unseen is not a position closed by
        hand, and its PnL and fees belong in the journal (I5)."""
        r = self.pos.rec
        for cid in dict.fromkeys([*r.working, *self.journal.client_ids(r.seq)]):  # those thought gone too
            await self._book_fills_of(cid)

    async def _book_fills_of(self, client_id: str) -> None:
        """Ask the exchange for one order's fills and book those not booked yet."""
        for fill in await self.adapter.order_fills(self.symbol, client_id):
            if not self.journal.is_booked(client_id, fill.trade_id):
                await self._on_execution(fill)

    def book_funding(self, payment: FundingPaid) -> bool:
        """Book a funding payment on this instance's symbol once (key: instance, symbol, funding time), on the
        position opened latest at or before its funding time. True when it was booked now.

        Every payment on the symbol is this instance's (one instance per symbol and account, or the exchange
        position is a foreign one the policy adopted) but on a shared symbol, where the exchange's position is
        several instances' sum: there a payment is booked only when it names this position's side and exactly
        its quantity (one instance alone on that side); any other is logged and left unbooked."""
        if payment.symbol != self.symbol:
            return False
        key = f"{self.name}:{payment.symbol}:{payment.funding_time}"
        journal = self.journal
        if journal.funding_booked(key):
            return False
        r = self.pos.rec
        if r.side is not None and r.opened_at <= payment.funding_time:
            position: int | None = r.seq  # the usual case: the position held now (no journal scan)
        else:
            position = journal.position_opened_by(payment.funding_time)
        if position is None:
            log.info("%s: funding at %d is before any position of this instance: not booked", self.name,
                     payment.funding_time)
            return False
        if self.shares_symbol and (position != r.seq or payment.side != r.side or payment.qty != r.open_qty):
            log.warning("%s: funding %s at %d on a shared %s position cannot be attributed: not booked",
                        self.name, payment.paid, payment.funding_time, payment.side or "?")
            return False
        return journal.add_funding(self.clock.now_ms(), position, key, payment)  # one row: atomic

    async def book_missed_funding(self) -> None:
        """Ask the exchange for the funding charged since the last payment booked (at the latest since the
        latest position opened) and book what is not booked yet: pushes missed while the bot or its user stream
        was down. An exchange that cannot say (no ``funding`` query) or fails to answer is skipped: the next
        reconcile asks again."""
        query = getattr(self.adapter, "funding", None)
        since = self.journal.funding_since()
        if query is None or since is None:
            return
        try:
            payments = await query(self.symbol, since)
        except ExchangeError as exc:
            log.warning("%s: funding history not available (%s); asked again at the next reconcile", self.name, exc)
            return
        for payment in payments:
            self.book_funding(payment)

    def _book_stray(self, fill: OrderFilled) -> None:
        """A fill of an order of ours that belongs to no live position: book it, then reconcile."""
        with self.journal.transaction():
            self.journal.add_fill(self.clock.now_ms(), self.pos.rec.seq, fill)
            self.journal.add_rejection(self.clock.now_ms(), self.pos.rec.seq, self.pos.state, "stray_fill",
                                       f"fill of {fill.client_id} outside its position")
        log.warning("%s: fill of %s outside its position; reconciling", self.name, fill.client_id)
        self._reconcile = True

    def _on_position(self, snap: PositionSnapshot) -> None:
        r = self.pos.rec
        if snap.symbol != self.symbol or self.shares_symbol:
            return  # a shared symbol's position is the sum of several instances': not attributable
        expected = r.open_qty if r.side == snap.side else ZERO
        if snap.qty != expected:
            self._reconcile = True  # a change we did not cause (or have not seen yet): ask the exchange

    async def check_timers(self) -> None:
        now = self.clock.monotonic_ms()
        fill_deadline = self._fill_deadline
        if fill_deadline is not None and now >= fill_deadline:
            self._fill_deadline = now + self.fill_timeout_ms  # asked again each timeout until it is known
            if self.pos.state == "entering" and not self.pos.rec.entry_complete:
                if self._fill_asked != self.pos.entry_id:  # said once per entry
                    self._fill_asked = self.pos.entry_id
                    log.warning("%s: entry %s has no fill report after %.1f s; asking the exchange", self.name,
                                self.pos.entry_id, self.fill_timeout_ms / 1000)
                self._reconcile = True  # recovery queries the entry by its id and books what filled
        await self.execute(self._protection_timed_out("stop not confirmed in time"))

    def _protection_timed_out(self, reason: str) -> list[AnyCommand]:
        """A filled entry whose protection deadline passed is closed: the commands (journaled), none before it."""
        deadline = self._protect_deadline
        if deadline is None or self.clock.monotonic_ms() < deadline:
            return []
        self._protect_deadline = None
        if self.pos.state == "entering" and self.pos.rec.entry_complete:
            return self.fire("protection_timeout", reason=reason)
        return []

    def _arm_fill_deadline(self, ts: int) -> None:
        """An entry in flight gets a deadline for its fill report; anything else none."""
        if self.pos.state != "entering" or self.pos.rec.entry_complete:
            self._fill_deadline = None
        elif self._fill_deadline is None:
            self._fill_deadline = ts + self.fill_timeout_ms

    # --- firing and executing --------------------------------------------------------------

    def note_unknown(self, client_id: str, detail: str) -> None:
        """A command whose outcome is unknown: journaled so, and asked about by the next reconcile."""
        self._status(client_id, "unknown", detail)
        self._unknown.add(client_id)

    def _status(self, client_id: str, status: Any, detail: str) -> None:
        self.journal.add_status(self.clock.now_ms(), self.pos.rec.seq, client_id, status, detail)  # one row: atomic

    def fire(self, trigger: str, *, fill: OrderFilled | None = None,
              status: tuple[str, Any, str] | None = None, detail: dict[str, Any] | None = None,
              **data: Any) -> list[AnyCommand]:
        """Apply a trigger and commit it, with the fill it books and the commands it produced."""
        pos = self.pos
        src = pos.state
        ts = self.clock.now_ms()
        self._view = None
        journal = self.journal
        try:
            commands = pos.fire(trigger, fill=fill, **data) if fill is not None else pos.fire(trigger, **data)
        except InvalidTransition as exc:
            with journal.transaction():
                if fill is not None:
                    journal.add_fill(ts, pos.rec.seq, fill)
                journal.add_rejection(ts, pos.rec.seq, src, trigger, str(exc))
            log.warning("%s: %s; reconciling with the exchange", self.name, exc)
            self._reconcile = True
            return []
        with journal.transaction():
            if fill is not None:
                journal.add_fill(ts, pos.rec.seq, fill)
            if status is not None:
                journal.add_status(ts, pos.rec.seq, *status)
            journal.add_transition(ts, src, trigger, pos.rec, detail)
            for cmd in commands:
                journal.add_intent(ts, pos.rec.seq, cmd)
        if self.plugins is not None:
            self.plugins.notify_transition(instance=self.name, position=pos.rec.seq, src=src, trigger=trigger,
                                           dst=pos.state, record=pos.rec)
            if fill is not None:
                self.plugins.notify_fill(instance=self.name, fill=fill)
        if trade_log.isEnabledFor(logging.INFO):
            self._tell(src, trigger, fill, commands)
        if trigger == "entry_filled":
            crashpoint("fill_journaled")
        r = pos.rec
        mono = self.clock.monotonic_ms()
        self._arm_fill_deadline(mono)
        if pos.state != "entering":
            self._protect_deadline = None
        elif r.entry_complete and r.filled_qty > 0 and self._protect_deadline is None:
            # However the position came to wait for its stop (a last fill, the rest of the entry ended by the
            # exchange, a position adopted): the protection timeout counts from here, the time journaled with it
            # (the commit's own time included: the gauge of unprotected seconds agrees with the journal).
            self._arm_protection(mono - max(0, self.clock.now_ms() - ts))
        if pos.state in EXITED:
            if not pos.rec.working:
                commands = [*commands, *self.settle()]
        elif trigger == "settled":
            self._balance_stale = True
        return commands

    def _tell(self, src: str, trigger: str, fill: OrderFilled | None, commands: list[AnyCommand]) -> None:
        """The trade lines of one committed transition: the fill it booked, the move, the orders it sends."""
        name = self.name
        if fill is not None:
            trade_log.info("%s: fill %s %s @ %s (fee %s)", name, fill.client_id, fill.qty, fill.price, fill.fee)
        trade_log.info("%s: %s --%s--> %s", name, src, trigger, self.pos.state)
        for cmd in commands:
            if isinstance(cmd, CancelOrder):
                trade_log.info("%s: order cancel %s", name, cmd.client_id)
            else:
                price = f" @ {cmd.stop_price}" if isinstance(cmd, SubmitStop | SubmitTakeProfit) else ""
                trade_log.info("%s: order %s %s %s %s%s", name, _ROLE_OF[type(cmd)], cmd.client_id, cmd.side,
                               cmd.qty, price)

    def settle(self) -> list[AnyCommand]:
        """exited_* -> flat, once no order of the position is left working."""
        crashpoint("before_settle")
        return self.fire("settled")

    async def execute(self, commands: list[AnyCommand], *, moving: bool = False) -> None:
        """Send committed commands in order; ``moving``: they move the stop (its crash points are the move's)."""
        for cmd in commands:
            role = "move_stop" if moving and isinstance(cmd, SubmitStop) else _ROLE_OF[type(cmd)]
            crashpoint(f"{role}_intent_committed")
            try:
                if isinstance(cmd, CancelOrder):
                    await self.adapter.cancel(cmd)
                else:
                    await self.adapter.submit(cmd)
            except IdTaken as exc:
                raise self.not_ours(cmd.client_id) from exc
            except OrderUnknown as exc:
                self.note_unknown(cmd.client_id, str(exc))
                continue
            crashpoint(f"{role}_sent")
