"""Several instances in one asyncio process.

One adapter per exchange account, shared by its instances; execution events are routed to the
instance whose name prefixes the client order id. An instance whose strategy or adapter raises is
isolated: the error is journaled, the instance is rebuilt from its journal after a backoff (crash-only:
the same path as a cold start) and the other instances keep trading. SIGINT / SIGTERM stop the loop;
nothing is canceled on the way out, so the exchange stops keep guarding the positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import signal
from collections import deque
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from gatebot.app.embedded import EmbeddedSimulators, for_embedded
from gatebot.app.metrics import Metrics
from gatebot.app.notify import Notifier, make_notifier
from gatebot.app.risk_guard import RiskGuards
from gatebot.core import ids
from gatebot.core.clock import Clock, LiveClock, VirtualClock
from gatebot.core.config import Config, InstanceConfig, MarketConfig, config_hash
from gatebot.core.engine import AdoptionRequired, Engine, InstanceHalted
from gatebot.core.events import (
    AnyEvent,
    CandleClosed,
    FundingPaid,
    PositionSnapshot,
    SettingsChanged,
    StreamUp,
    Timer,
)
from gatebot.core.exchange import (
    CandleDriven,
    CredentialsRefused,
    ExchangeAdapter,
    MarketSource,
    MarketTimed,
    Recordable,
)
from gatebot.core.intervals import interval_ms
from gatebot.core.journal import Journal, JournalError, JournalUnwritable, StateDirLock, check_state_dir
from gatebot.core.market import array_candles, check_spacing, generate, read_candles
from gatebot.core.position import Protection
from gatebot.core.strategy import EvaluationMeta, JournalMeta, Prepares, StrategyContext

log = logging.getLogger("gatebot.runner")


def _decimal_or_none(value: float | None) -> Decimal | None:
    """A protection option as the engine takes it (exact from the config's decimal text), or None when off."""
    return None if value is None else Decimal(repr(value))


def training_window(meta: dict[str, Any]) -> tuple[int, int] | None:
    """(first, last) open time of the candles a strategy was trained on, from its evaluation meta: a
    ``training_period`` of its own or its model card's (``start_ms``, ``end_ms``); None when it declares none."""
    card = meta.get("model_card") or {}
    period = meta.get("training_period") or (card.get("training_period") if isinstance(card, dict) else None)
    if not period or "start_ms" not in period or "end_ms" not in period:
        return None
    return int(period["start_ms"]), int(period["end_ms"])

MAX_BACKOFF_CANDLES = 64
YIELD_EVERY = 256
"""A replay hands the loop a turn every this many candles (nothing in it waits otherwise): SIGINT and
SIGTERM are handled within milliseconds, at no measurable cost."""
JOURNAL_RETRY_S = (1.0, 30.0)
"""First and longest wait between attempts to write a journal that could not be written (doubling)."""
MAX_RETRY_S = 60.0
"""Live: the longest wait before an instance that failed is rebuilt (1, 2, 4 ... 60 s)."""
HEALTHY_CANDLES = 12
"""Candles an instance trades without failing before its earlier failures are forgiven (backoff restarts
at one candle): sporadic errors hours apart must not keep it out for the longest backoff."""


class Instance:
    """An engine plus what is needed to rebuild it after a failure."""

    def __init__(self, cfg: InstanceConfig, runner: Runner) -> None:
        self.cfg = cfg
        self.runner = runner
        self.engine: Engine | None = None
        self.failures = 0
        self.down_until_bar = 0
        self.reason: str | None = None
        """Why the instance last failed, until it trades again (said once)."""
        self.live = False
        """Rebuilt on a timer (seconds) rather than on a candle (live: ``Runner._feed_live``)."""
        self.halted: str | None = None
        """Why the instance stopped for good (a damaged journal, a halt policy); None while it trades."""
        self.unwritable: str | None = None
        """Why the journal cannot be written now: nothing is sent until it can (then it comes back)."""
        self._retry_s = JOURNAL_RETRY_S[0]
        self.retry_at_ms = 0
        """When (the clock's monotonic reading) a suspended or (live) failed instance is tried again."""
        self._revived_at_ms = 0
        self._announced = False
        """The outage was said; "writable again" is said once the instance stayed up JOURNAL_RETRY_S[1]."""
        self.journal_path = runner.state_dir / f"{cfg.name}.sqlite"
        self.meta_written = False
        self.close_asked: tuple[int, int] | None = None
        """(engine, position) an operator's close was posted to (app/control.py: asked twice, posted once)."""

    async def build(self) -> Engine:
        r = self.runner
        cfg = self.cfg
        adapter = r.adapters[cfg.exchange]
        journal = r.journals.get(cfg.name)
        if journal is None:  # opened first: a failure to reach the exchange is journaled too
            journal = Journal(self.journal_path, synchronous=r.config.journal_synchronous,
                              group_commit=r.config.journal_group_commit, epoch=r.epoch_for(cfg.name))
            r.journals[cfg.name] = journal
            if r._observed:
                journal.observe = r.metrics.observer(cfg.name, cfg.symbol)
        instrument = await adapter.instrument(cfg.symbol)  # leverage and modes: set by recovery, every reconcile
        if not self.meta_written:  # once per process: this run's config
            meta = journal.meta()
            values = {"config_hash": r.config_hash, "instance": cfg.name, "strategy": cfg.strategy,
                      "mode": r.config.mode, "exchange": cfg.exchange, "symbol": cfg.symbol}
            if "initial_balance" not in meta:
                values["initial_balance"] = str(await r.start_balance(cfg.exchange))
            if r.candle_file is not None:  # what the report may show of the data's quality
                values["candle_file"] = msgspec.json.encode(r.candle_file_summary(cfg.interval)).decode()
            if r.candles_csv is not None or r._marks is not None:
                values["candles_csv"] = r.candles_csv or str(r.marks_path(cfg.symbol, cfg.interval).resolve())
            journal.set_meta(values)
            self.meta_written = True
        strategy_cls = r.plugins.strategies()[cfg.strategy]
        strategy = strategy_cls(cfg.params, StrategyContext(instance=cfg.name, symbol=cfg.symbol,
                                                            interval=cfg.interval, leverage=cfg.leverage))
        evaluation = {"interval_ms": str(interval_ms(cfg.interval)), "warmup_candles": str(strategy.history)}
        if isinstance(strategy, EvaluationMeta):
            r.evaluation_meta[cfg.name] = strategy.evaluation_meta()
            window = training_window(r.evaluation_meta[cfg.name])
            if window is not None:
                evaluation |= {"training_start_ms": str(window[0]), "training_end_ms": str(window[1])}
        journal.set_meta(evaluation)  # what the evaluation needs beside the trades (app/evaluation.py)
        if isinstance(strategy, JournalMeta):
            journal.set_meta(strategy.journal_meta())  # e.g. the sha256 of each model file the decisions come from
        if isinstance(strategy, Prepares) and r.market_rows is not None:
            strategy.prepare(r.market_rows)
        prot = cfg.protection
        engine = Engine(
            name=cfg.name, symbol=cfg.symbol, interval=cfg.interval, leverage=cfg.leverage, strategy=strategy,
            adapter=adapter, journal=journal, clock=r.clock,
            protection=Protection(instrument=instrument,
                                  price_sl_pct=Decimal(repr(prot.leveraged_sl_pct)) / cfg.leverage,
                                  price_tp_pct=(Decimal(repr(prot.leveraged_tp_pct)) / cfg.leverage
                                                if prot.leveraged_tp_pct is not None else None),
                                  trailing_pct=_decimal_or_none(prot.trailing_pct),
                                  break_even_at_pct=_decimal_or_none(prot.break_even_at_pct),
                                  attached_stop=adapter.capabilities.attached_stop,
                                  stop_tolerance_pct=Decimal(repr(prot.stop_tolerance_pct))),
            protection_timeout_ms=int(prot.protection_timeout_s * 1000),
            fill_timeout_ms=int(prot.fill_timeout_s * 1000), foreign_policy=prot.on_foreign_position,
            plugins=r.plugins)
        if r._observed:
            engine.observe = r.metrics.observer(cfg.name, cfg.symbol)
        engine.siblings = frozenset(i.name for i in r.config.instances if i.exchange == cfg.exchange
                                    and i.symbol == cfg.symbol and i.name != cfg.name)
        engine.may_adopt = r.adopt
        for candle in r.history(cfg.symbol, cfg.interval):
            engine.strategy.on_candle(candle)
            engine.candles_seen += 1
        self.engine = engine  # routed to from now on: recovery's own cancels and queries answer with events
        await engine.start()
        if self.reason is not None:
            log.warning("instance %s trading again (it could not: %s)", cfg.name, self.reason)
            self.reason = None
        return engine

    def deliver(self, candle: CandleClosed) -> None:
        """Hand a candle to the running engine; a long enough healthy run forgives earlier failures."""
        assert self.engine is not None
        self.check_resumed()
        if self.runner.risk.active:
            self.runner.risk.tick(self.cfg.name)  # a guard's pause may end at a new UTC day
        if self.failures and candle.open_time >= self.down_until_bar + HEALTHY_CANDLES * interval_ms(self.cfg.interval):
            self.failures = 0
        self.engine.post(candle)

    def on_error(self, exc: BaseException, bar: int) -> None:
        """What an instance's error means, in one place: credentials refused stop the run (nothing works
        until the operator acts); a damaged journal or a halt policy halts the instance; a journal that
        cannot be written suspends it until it can; anything else restarts it after a backoff."""
        if isinstance(exc, CredentialsRefused):
            self.runner.fatal(exc)
            self._drop()
        elif isinstance(exc, InstanceHalted | JournalError):
            self.halt(exc)
        elif isinstance(exc, JournalUnwritable):
            self.suspend(exc)
        else:
            self.fail(exc, bar)

    def suspend(self, exc: JournalUnwritable) -> None:
        """The journal refused a write: the commands of that write were not sent and nothing else will be
        (write-ahead), the exchange stops stay. Said once; the journal is tried again with a backoff."""
        now_ms = self.runner.clock.monotonic_ms()
        if not self._announced:
            # Said once per outage: a disk that takes the small probe but not the next real write (full,
            # a WAL that still fits) relapses quietly, its backoff kept, until it stays writable.
            log.error("instance %s: %s; sending nothing until it can be written (the exchange stops stay)",
                      self.cfg.name, exc)
            self._announced = True
            self._retry_s = JOURNAL_RETRY_S[0]
        self.unwritable = str(exc)
        self.retry_at_ms = now_ms + round(self._retry_s * 1000)
        self._retry_s = min(self._retry_s * 2, JOURNAL_RETRY_S[1])
        self._drop()

    def may_revive(self) -> bool:
        """Live: a failed instance whose backoff is over, or a suspended one whose journal takes a write again
        (tried no more often than its backoff)."""
        if self.runner.clock.monotonic_ms() < self.retry_at_ms:
            return False
        if self.unwritable is None:
            return True
        journal = self.runner.journals.get(self.cfg.name)
        if journal is None or journal.conn is None or journal.probe_write():
            return True
        self.suspend(JournalUnwritable(self.unwritable))
        return False

    def revived(self) -> None:
        if self.unwritable is not None:
            self.unwritable = None
            self._revived_at_ms = self.runner.clock.monotonic_ms()

    def check_resumed(self) -> None:
        """Say the outage is over once the instance has stayed up long enough not to be a relapse."""
        if (self._announced and self.unwritable is None and self.engine is not None
                and self.runner.clock.monotonic_ms() - self._revived_at_ms >= JOURNAL_RETRY_S[1] * 1000):
            self._announced = False
            log.warning("instance %s: journal writable again; trading resumed", self.cfg.name)

    def _drop(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None

    def fail(self, exc: BaseException, bar: int) -> None:
        """Isolate the instance: drop the engine, come back after a backoff. Said once per reason (one log
        line and one ``instance_error`` row), not once per retry: a cause that lasts is one message, and
        :meth:`build` says when trading resumes. Live, the backoff is in seconds (1, 2 ... 60 s): trading
        resumes soon after the cause clears, not candles later (the fault soak met an instance that went
        quiet for hundreds of candles under a growing candle backoff); a replay backs off in candles."""
        self.failures += 1
        step = interval_ms(self.cfg.interval)
        backoff = min(2 ** (self.failures - 1), MAX_BACKOFF_CANDLES)
        self.down_until_bar = bar + backoff * step
        retry_s = min(2 ** (self.failures - 1), MAX_RETRY_S)
        self.retry_at_ms = self.runner.clock.monotonic_ms() + round(retry_s * 1000)
        reason = f"{type(exc).__name__}: {exc}"
        if reason != self.reason:
            self.reason = reason
            when = f"in {retry_s:g} s" if self.live else f"after {backoff} candle(s)"
            log.error("instance %s cannot trade (%s); retrying %s, and saying so again only if the reason "
                      "changes", self.cfg.name, reason, when)
            self._note("instance_error", reason)
            self._tell("cannot trade (restarting)", reason)
        else:
            log.debug("instance %s still cannot trade (%s)", self.cfg.name, reason)
        self._drop()

    def halt(self, exc: BaseException) -> None:
        """Stop this instance for good: what stopped it will not heal by waiting (a damaged journal,
        a position the policy says not to touch). The other instances keep trading."""
        self.halted = str(exc)
        log.error("instance %s halted: %s", self.cfg.name, exc)
        if not isinstance(exc, JournalError):
            self._note("instance_halted", str(exc))
        self._tell("halted", str(exc))
        self._drop()

    def _tell(self, what: str, reason: str) -> None:
        notifier = getattr(self.runner, "notifier", None)
        if notifier is not None:
            notifier.instance_down(self.cfg.name, what, reason)

    def _note(self, trigger: str, message: str) -> None:
        """Journal why the instance stopped (best effort: a journal that cannot take it is said so apart)."""
        journal = self.runner.journals.get(self.cfg.name)
        if journal is None or journal.conn is None:
            return
        engine = self.engine
        try:
            with journal.transaction():
                journal.add_rejection(self.runner.clock.now_ms(), engine.pos.rec.seq if engine else 0,
                                      engine.pos.state if engine else "?", trigger, message)
        except JournalUnwritable as exc:
            log.error("instance %s: %s", self.cfg.name, exc)


class Runner:
    def __init__(self, config: Config, plugins: Any, *,
                 candles_csv: Path | None = None, progress: bool = False, recorder: Any = None,
                 adapters: dict[str, ExchangeAdapter] | None = None,
                 candle_source: AsyncIterator[CandleClosed] | None = None, clock: Clock | None = None,
                 adopt: bool = False, epochs: dict[str, str] | None = None) -> None:
        self.config = config
        self.adopt = adopt
        """``gatebot run --adopt``: a fresh journal adopts what the account holds of its instance."""
        self.epochs = epochs or {}
        """Instance -> the epoch its new journal gets (a session replay: the recorded session's)."""
        self.refused: dict[str, str] = {}
        """Instances refused at start because the user must act (a fresh journal on a used account)."""
        self.recorder = recorder
        """A core.recording.Recorder: adapters that can (BingX) tee their raw traffic into it."""
        self._given_adapters = adapters
        """Adapters to use instead of the plugins' (a recorded session's replay adapter)."""
        self._embedded = EmbeddedSimulators(config, list(dict.fromkeys(i.exchange for i in config.instances)))
        """The simulators of accounts that embed one (the demo), started before the adapters (not for given ones)."""
        self._candle_source = candle_source
        """Candles to replay instead of [market] / a CSV (frames of a market recording)."""
        self.plugins = plugins
        self.risk = RiskGuards(self)
        """The instances' risk guards (app/risk_guard.py), on the risk and transition hooks when any has one."""
        if self.risk.active and hasattr(plugins, "pm"):
            plugins.pm.register(self.risk, name=f"gatebot.risk_guard.{id(self)}")
        self.notifier: Notifier | None = None
        """Notifications (app/notify.py): made at start when GATEBOT_NOTIFY_URLS (or its file) names targets."""
        self.metrics = Metrics(self)
        """This runner's Prometheus registry (app/metrics.py), served at the API's /metrics."""
        self._observed = config.mode != "replay" and hasattr(plugins, "pm")
        """Metrics are served by the API, which a replay never runs: its engines are not slowed by them."""
        if self._observed:
            plugins.pm.register(self.metrics, name=f"gatebot.metrics.{id(self)}")
        self.state_dir = Path(config.state_dir)
        self.config_hash = config_hash(config)
        csv = candles_csv or (config.market.csv if config.market and config.market.source == "csv" else None)
        self.candle_file = read_candles(csv) if csv else None  # a bad file is refused before anything starts
        self.spacing = [check_spacing(self.candle_file, interval, config.market.max_gap_candles if config.market
                                      else MarketConfig().max_gap_candles)
                        for interval in dict.fromkeys(i.interval for i in config.instances)] if self.candle_file else []
        """The candle file's gaps per interval traded (a wrong spacing or too long a gap was refused)."""
        self._csv_rows = self.candle_file.rows if self.candle_file else None
        self.candles_csv = str(Path(csv).resolve()) if csv else None
        """The candle file replayed (journal meta, so that a report marks equity at its closes)."""
        self._start_balances: dict[str, asyncio.Future[Decimal]] = {}
        self._marks: dict[tuple[str, str], list[str]] | None = {} if config.mode == "replay" and csv is None else None
        """A replay without a candle file (a generated market, a market recording): its candles, written beside
        the journals at the end (``marks_path``), so that the evaluation marks equity at every candle."""
        self.market_rows = self._csv_rows
        """The whole candle series when it is known in advance (a CSV replay): strategies may prepare on it."""
        self.evaluation_meta: dict[str, dict[str, Any]] = {}
        """Per instance, what its strategy wants the evaluation to know (a model card...)."""
        self.first_open: int | None = None
        self.last_close: int | None = None
        """The traded period: first candle's open time, last candle's close time."""
        self.progress = progress
        self.progress_total: int | None = None
        """How many candles the replay will have (for the ETA), when known."""
        self.clock: Clock = clock or (VirtualClock() if config.mode == "replay" else
                                      VirtualClock(self._embedded.start_ms) if self._embedded.lockstep else LiveClock())
        """A replay's and a lockstep simulator's (the demo's) time is virtual: the market's, not the wall's."""
        if recorder is not None:
            recorder.clock = self.clock
        self.adapters: dict[str, ExchangeAdapter] = {}
        self.journals: dict[str, Journal] = {}
        self.instances = [Instance(i, self) for i in config.instances]
        self._history: dict[tuple[str, str], deque[CandleClosed]] = {}
        self._history_len = 0
        self._stopping = False
        self._fatal: BaseException | None = None
        self._runs: dict[str, asyncio.Task[None]] = {}
        self.bars = 0

    # --- wiring ------------------------------------------------------------------------------

    def candle_file_summary(self, interval: str) -> dict[str, Any]:
        """The candle file's counts for one interval: candles, repeated rows dropped, gaps, missing candles."""
        assert self.candle_file is not None
        spacing = next(s for s in self.spacing if s.interval == interval)
        return {"path": self.candle_file.path, "duplicates": self.candle_file.duplicates,
                **msgspec.structs.asdict(spacing)}

    def _make_adapters(self) -> None:
        if self._given_adapters is not None:
            self.adapters = dict(self._given_adapters)
            return
        exchanges = self.plugins.exchanges()
        for name in self._traded | self._markets:
            ex = self.config.exchanges[name]
            plugin = exchanges[ex.type]
            self.adapters[name] = plugin.factory(for_embedded(ex.options), hedge_mode=ex.hedge_mode,
                                                 clock=self.clock, state_dir=self.state_dir, account=name)
            if self.recorder is not None:
                adapter = self.adapters[name]
                if not isinstance(adapter, Recordable):
                    raise ValueError(f"exchange {name} ({ex.type}) cannot record its traffic")
                adapter.recorder = self.recorder

    @property
    def _traded(self) -> set[str]:
        """The accounts some instance trades on."""
        return {i.exchange for i in self.config.instances}

    @property
    def _markets(self) -> set[str]:
        """The accounts whose market feeds a paper account (``market = "<account>"``)."""
        return {ex.market for name, ex in self.config.exchanges.items() if ex.market and name in self._traded}

    def _source(self, account: str) -> str:
        """The account whose market stream an instance of ``account`` trades on: its own, or its paper account's
        ``market``."""
        return self.config.exchanges[account].market or account if account in self.config.exchanges else account

    def _router(self, account: str) -> Any:
        """Execution events go to the instance named by the client id's prefix; position snapshots and
        funding payments to every instance trading that symbol on this account."""

        def sink(ev: AnyEvent) -> None:
            cid = getattr(ev, "client_id", None)
            if cid is not None:
                inst = self._by_name.get(ids.instance_of(cid))
                if inst is not None and inst.engine is not None:
                    inst.engine.post(ev)
                return
            if isinstance(ev, PositionSnapshot | FundingPaid | SettingsChanged):
                for inst in self.instances:
                    if inst.engine is not None and inst.cfg.exchange == account and inst.cfg.symbol == ev.symbol:
                        inst.engine.post(ev)
            elif isinstance(ev, StreamUp):  # missed events are possible: everyone concerned reconciles
                symbol = getattr(ev, "symbol", None)
                for inst in self.instances:
                    if inst.engine is not None and inst.cfg.exchange == account and symbol in (None, inst.cfg.symbol):
                        inst.engine.post(ev)

        return sink

    async def start_balance(self, account: str) -> Decimal:
        """The account's balance when this process first asked, read once per account: a fresh journal of
        an instance built later on a shared account (another instance's margin in use) gets the same base,
        not whatever is available then."""
        if account not in self._start_balances:  # one read even when instances build concurrently (live)
            self._start_balances[account] = asyncio.ensure_future(self.adapters[account].balance())
        return await asyncio.shield(self._start_balances[account])

    def epoch_for(self, instance: str) -> str:
        """The epoch a new journal of ``instance`` gets: drawn from the clock and the system's randomness,
        except in a replay (whose journals never meet an exchange account), where it derives from the
        instance alone, so that the same inputs give byte-identical journals, from a CSV or a recording of
        the same candles alike; in a session replay it is the recorded session's (the same client ids)."""
        if instance in self.epochs:
            return self.epochs[instance]
        if self.config.mode == "replay":
            return ids.new_epoch(0, random.Random(f"replay:{instance}"))
        if self._embedded.lockstep is not None and self._given_adapters is None:  # the demo repeats itself too
            return ids.new_epoch(self.clock.now_ms(), random.Random(f"lockstep:{self._embedded.seed()}:{instance}"))
        return ids.new_epoch(self.clock.now_ms(), random.SystemRandom())

    def instance(self, name: str) -> Instance:
        """The instance named ``name`` (KeyError when there is none)."""
        for inst in self.instances:
            if inst.cfg.name == name:
                return inst
        raise KeyError(name)

    def history(self, symbol: str, interval: str) -> list[CandleClosed]:
        return list(self._history.get((symbol, interval), ()))

    def stop(self) -> None:
        self._stopping = True

    def fatal(self, exc: BaseException) -> None:
        """Stop the whole run: ``run()`` raises ``exc`` once everything is shut down."""
        if self._fatal is None:
            self._fatal = exc
        self.stop()

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> None:
        check_state_dir(self.state_dir, create=True)  # one line (JournalError) for a file, a read-only folder
        lock = StateDirLock(self.state_dir)  # a second process on this state refuses before touching anything
        try:
            await self._run()
        finally:
            lock.release()
        if self._fatal is not None:
            raise self._fatal

    async def _run(self) -> None:
        if self.config.mode == "replay":
            self._fresh_journals()
        self._by_name = {i.cfg.name: i for i in self.instances}
        self._make_adapters()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self.stop)
        started: list[ExchangeAdapter] = []
        api = None
        try:
            if self.config.mode != "replay":  # a replay tells nobody: it is the past
                self.notifier = make_notifier(self)
            if self.notifier is not None:
                self.plugins.pm.register(self.notifier, name=f"gatebot.notify.{id(self)}")
                self.notifier.start()
            if self.config.api.enabled and self.config.mode != "replay":
                from gatebot.app.api import serve

                api = await serve(self)  # before the instances build: the operator sees them recover
            if self._given_adapters is None:
                await self._embedded.start(self.adapters, self.clock)
            for name, adapter in self.adapters.items():
                if name in self._traded:
                    await adapter.start(self._router(name))
                else:  # only a paper account's market: public data, no credentials
                    await adapter.start(self._router(name), market_only=True)  # type: ignore[call-arg]
                started.append(adapter)
            self._history_len = max(50, *(self._strategy_history(i.cfg) for i in self.instances))
            live = {name: a for name, a in self.adapters.items() if isinstance(a, MarketSource)}
            for inst in self.instances:
                inst.live = bool(live)  # then every instance is fed by _feed_live, rebuilt on a timer
            if live:
                await self._load_history(live)
            for inst in self.instances:
                if inst.halted is not None:
                    continue
                try:
                    await inst.build()
                except AdoptionRequired as exc:
                    inst.halt(exc)
                    self.refused[inst.cfg.name] = str(exc)
                except Exception as exc:  # isolation: one instance's failure must not stop the others
                    inst.on_error(exc, 0)
            if self.refused:
                return  # the user must act before anything trades (exit status 2)
            if live:
                await self._feed_live(live)
            else:
                await self._feed()
        finally:
            if self.notifier is not None:
                self.plugins.pm.unregister(self.notifier)
                await asyncio.to_thread(self.notifier.stop)
            if api is not None:
                from gatebot.app.api import unserve

                await unserve(api, self.state_dir)
            for adapter in started:
                await adapter.stop()
            await self._embedded.stop()
            for inst in self.instances:
                if inst.engine is not None:
                    inst.engine.close()
            for journal in self.journals.values():
                journal.close()

    def marks_path(self, symbol: str, interval: str) -> Path:
        return self.state_dir / f"candles-{symbol}-{interval}.csv"

    def _write_marks(self) -> None:
        for (symbol, interval), rows in (self._marks or {}).items():
            path = self.marks_path(symbol, interval)
            path.with_suffix(".new").write_text("timestamp,open,high,low,close,volume\n" + "".join(rows))
            path.with_suffix(".new").replace(path)

    def _fresh_journals(self) -> None:
        """A replay is a pure function of its inputs: it starts from empty journals every time. Only a
        previous replay's journal is replaced; any other file in the way halts that instance."""
        if self._marks is not None:  # an earlier replay's candles are not this one's
            for inst in self.instances:
                self.marks_path(inst.cfg.symbol, inst.cfg.interval).unlink(missing_ok=True)
        for inst in self.instances:
            path = inst.journal_path
            try:
                refusal = replay_refusal(path)
            except JournalError as exc:
                inst.halt(exc)
                continue
            if refusal is not None:
                inst.halt(JournalError(refusal))
                continue
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    def _strategy_history(self, cfg: InstanceConfig) -> int:
        cls = self.plugins.strategies()[cfg.strategy]
        return int(cls(cfg.params, StrategyContext(instance=cfg.name, symbol=cfg.symbol, interval=cfg.interval,
                                                   leverage=cfg.leverage)).history)

    def _candles(self) -> Iterator[CandleClosed]:
        """Every (symbol, interval) the instances trade, merged in time order."""
        market = self.config.market
        streams = []
        for symbol, interval in dict.fromkeys((i.cfg.symbol, i.cfg.interval) for i in self.instances):
            if self._csv_rows is not None:
                streams.append(array_candles(self._csv_rows, symbol, interval))
            else:
                seed, bars = (market.seed, market.bars) if market else (42, 2000)
                kw = {"start_ms": market.start_ms, "start_price": market.start_price,
                      "volatility": market.volatility} if market else {}
                streams.append(generate(seed=seed, symbol=symbol, interval=interval, bars=bars, **kw))
        if len(streams) == 1:
            return streams[0]
        return heapq.merge(*streams, key=lambda c: (c.open_time, c.symbol))

    def _candle_total(self) -> int | None:
        """The candles the replay will feed, for the progress line's total and ETA: the source's estimate
        (a market recording's), else every stream's rows of the candle file or the generated market."""
        if self.progress_total is not None or self._candle_source is not None:
            return self.progress_total
        market = self.config.market
        per_stream = len(self._csv_rows) if self._csv_rows is not None else (market.bars if market else 2000)
        return per_stream * len(dict.fromkeys((i.cfg.symbol, i.cfg.interval) for i in self.instances))

    async def _feed(self) -> None:
        """Drive the paper exchange(s) and the instances candle by candle."""
        market_adapters = [a for a in self.adapters.values() if isinstance(a, CandleDriven)]
        speed = self.config.market.speed if self.config.market else 0.0
        clock = self.clock
        virtual = isinstance(clock, VirtualClock)
        streams: dict[tuple[str, str], _Stream] = {}
        for inst in self.instances:
            key = (inst.cfg.symbol, inst.cfg.interval)
            if key not in streams:
                streams[key] = _Stream(interval_ms(key[1]), self._resume_time(key[0]),
                                       self._history.setdefault(key, deque(maxlen=self._history_len)))
            streams[key].instances.append(inst)
        progress = _Progress(self._candle_total()) if self.progress else None
        n = 0
        async for candle in self._each_candle():
            n += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if self._stopping:
                break
            await self._feed_one(candle, streams, clock, virtual, speed, market_adapters, progress)
        if progress is not None:
            progress.done(self.bars)
        self._write_marks()

    async def _each_candle(self) -> AsyncIterator[CandleClosed]:
        """The replay's candles: the given source (a market recording's), else the config's files."""
        if self._candle_source is not None:
            async for candle in self._candle_source:
                yield candle
        else:
            for candle in self._candles():
                yield candle

    async def _feed_one(self, candle: CandleClosed, streams: dict[tuple[str, str], _Stream], clock: Clock,
                        virtual: bool, speed: float, market_adapters: list[Any], progress: _Progress | None) -> None:
        stream = streams[(candle.symbol, candle.interval)]
        if self._marks is not None:
            c = candle
            self._marks.setdefault((c.symbol, c.interval), []).append(
                f"{c.open_time},{c.open!r},{c.high!r},{c.low!r},{c.close!r},{c.volume!r}\n")
        if stream.resume is not None and candle.open_time <= stream.resume:
            stream.history.append(candle)  # the exchange lived through it before a restart: warm-up only
            for inst in stream.instances:
                if inst.engine is not None:
                    inst.engine.strategy.on_candle(candle)
                    inst.engine.candles_seen += 1
            return
        if virtual:
            clock.advance_to(candle.open_time + stream.step_ms)  # type: ignore[union-attr]
        elif speed > 0:
            await asyncio.sleep(stream.step_ms / 1000 / speed)
        if self.first_open is None:
            self.first_open = candle.open_time
        self.last_close = candle.open_time + stream.step_ms
        for adapter in market_adapters:
            adapter.on_candle(candle)  # type: ignore[attr-defined]
        for inst in stream.instances:
            await self._step(inst, candle)
        stream.history.append(candle)
        self.bars += 1
        if progress is not None:
            progress.tick(self.bars)

    # --- live: candles from the exchange's stream ---------------------------------------------

    async def _load_history(self, live: dict[str, Any]) -> None:
        """Warm-up candles from the exchange (fetched at start, never waited for)."""
        for inst in self.instances:
            key = (inst.cfg.symbol, inst.cfg.interval)
            if key not in self._history:
                candles = await live[self._source(inst.cfg.exchange)].history(*key, self._history_len)
                self._history[key] = deque(candles, maxlen=self._history_len)

    async def _feed_live(self, live: dict[str, Any]) -> None:
        """Each account streams its candles; every engine runs on its own task, woken by its events."""
        queue: asyncio.Queue[CandleClosed] = asyncio.Queue()
        for name, adapter in live.items():
            keys = {(i.cfg.symbol, i.cfg.interval) for i in self.instances if self._source(i.cfg.exchange) == name}
            adapter.start_market({k: (self._history[k][-1].open_time if self._history[k] else None) for k in keys},
                                 queue.put_nowait)
        fed = [self.adapters[n] for n, ex in self.config.exchanges.items()
               if ex.market and n in self.adapters and isinstance(self.adapters[n], CandleDriven)]
        runs = self._runs
        for inst in self.instances:
            if inst.engine is not None:
                runs[inst.cfg.name] = self._spawn(inst)
        ticker = asyncio.create_task(self._tick())
        finished = [getattr(a, "finished", None) for a in live.values()]
        driver = self._embedded.drive()  # a lockstep simulator's market moves as the bot gets through it
        if driver is not None:
            driver.add_done_callback(lambda t: None if t.cancelled() or t.exception() is None
                                     else self.fatal(t.exception()))  # type: ignore[arg-type]
        try:
            while not self._stopping:
                if queue.empty() and finished and all(f is not None and f.is_set() for f in finished):
                    await self._settle_engines()
                    if queue.empty():
                        break
                await self._revive()
                try:
                    candle = await asyncio.wait_for(queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
                self._history[(candle.symbol, candle.interval)].append(candle)
                self.bars += 1
                for paper in fed:  # a paper account on this market: its stops and take-profits first
                    paper.on_candle(candle)
                for inst in self.instances:
                    if (inst.cfg.symbol, inst.cfg.interval) != (candle.symbol, candle.interval) or inst.halted:
                        continue
                    if inst.engine is not None:
                        inst.deliver(candle)
            await self._settle_engines()
        finally:
            ticker.cancel()
            if driver is not None:
                driver.cancel()
            for task in runs.values():
                task.cancel()
            for task in runs.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _revive(self) -> None:
        """Live: rebuild the instances whose backoff is over (on time, between candles too) and those
        suspended on a journal that takes writes again."""
        for inst in self.instances:
            if inst.engine is None and inst.halted is None and inst.may_revive():
                await self._rebuild(inst, self.clock.now_ms())

    def _spawn(self, inst: Instance) -> asyncio.Task[None]:
        engine = inst.engine
        assert engine is not None

        async def run() -> None:
            try:
                await engine.run_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # isolation: the instance comes back after a backoff
                inst.on_error(exc, engine.bar)

        return asyncio.create_task(run(), name=f"engine-{inst.cfg.name}")

    async def _rebuild(self, inst: Instance, bar: int) -> None:
        """Build an instance again (live) and run it on its own task."""
        try:
            await inst.build()
        except Exception as exc:  # isolation
            inst.on_error(exc, bar)
        else:
            inst.revived()
            self._runs[inst.cfg.name] = self._spawn(inst)

    async def _tick(self) -> None:
        """Timers (the protection timeout) need a heartbeat between candles; an instance suspended on its
        journal is tried again here (seconds count, not candles: its position may be waiting for a stop)."""
        while True:
            await self.clock.sleep(1.0)
            await self._revive()
            for inst in self.instances:
                inst.check_resumed()
            for inst in self.instances:
                if inst.engine is not None:
                    inst.engine.post(Timer(ts=self.clock.now_ms(), name="tick"))
            self._watch()

    def _watch(self) -> None:
        """The notifier's look at what lasts (unprotected, stale streams, mismatches) and its daily summary."""
        if self.notifier is not None:
            for inst in self.instances:
                self.notifier.check(inst)
            self.notifier.summary(self)

    async def _settle_engines(self) -> None:
        """Let every engine work off what it was given (used before a finite market ends)."""
        for _ in range(500):
            if all(i.engine is None or i.engine.idle for i in self.instances):
                return
            await asyncio.sleep(0.01)

    def _resume_time(self, symbol: str) -> int | None:
        for adapter in self.adapters.values():
            if isinstance(adapter, MarketTimed):
                t = adapter.market_time(symbol)
                if t is not None:
                    return int(t)
        return None

    @property
    def halted(self) -> dict[str, str]:
        return {i.cfg.name: i.halted for i in self.instances if i.halted is not None}

    async def _step(self, inst: Instance, candle: CandleClosed) -> None:
        if inst.halted is not None:
            return
        try:
            if inst.engine is None:
                if candle.open_time < inst.down_until_bar:
                    return
                if inst.unwritable is not None and not inst.may_revive():
                    return
                await inst.build()
                inst.revived()
            inst.deliver(candle)
            assert inst.engine is not None
            await inst.engine.drain()
            if self.notifier is not None:
                self.notifier.check(inst)
                self.notifier.summary(self)
        except Exception as exc:  # isolation: one instance's failure must not stop the others
            inst.on_error(exc, candle.open_time)


def replay_refusal(path: Path) -> str | None:
    """Why a replay may not replace the journal at ``path``: it was written by a paper or live session (None:
    absent, or a replay's own). A damaged journal is a JournalError."""
    if not path.exists():
        return None
    journal = Journal(path, readonly=True)
    try:
        mode = journal.meta().get("mode")
    finally:
        journal.close()
    if mode == "replay":
        return None
    return (f"journal {path} was written by a {mode or 'unknown'} session; a replay does not overwrite it "
            "(choose another state_dir)")


def check_replay_target(config: Config) -> None:
    """Refuse a replay into a state folder holding another session's journals before anything runs: one line
    (JournalError, exit status 2) rather than a replay of nothing with that session's summary."""
    state_dir = Path(config.state_dir)
    refusals = [r for i in config.instances if (r := replay_refusal(state_dir / f"{i.name}.sqlite")) is not None]
    if refusals:
        raise JournalError("; ".join(refusals))


class _Stream:
    """One (symbol, interval) candle stream and the instances it drives."""

    __slots__ = ("history", "instances", "resume", "step_ms")

    def __init__(self, step_ms: int, resume: int | None, history: deque[CandleClosed]) -> None:
        self.step_ms = step_ms
        self.resume = resume
        self.history = history
        self.instances: list[Instance] = []


class _Progress:
    """A one-line progress bar with rate and ETA, only on a terminal."""

    def __init__(self, total: int | None = None, unit: str = "candles") -> None:
        import sys
        import time

        self.total = total
        self.unit = unit
        self._out = sys.stderr
        self._time = time.perf_counter
        self._start = self._time()
        self._last = 0.0

    def tick(self, bars: int) -> None:
        now = self._time()
        if now - self._last < 0.2:
            return
        self._last = now
        self._out.write(self.line(bars, now - self._start))
        self._out.flush()

    def line(self, bars: int, elapsed_s: float) -> str:
        """The line after ``bars`` in ``elapsed_s``: count, rate, and when the total is known, the total,
        a bar and the ETA."""
        rate = bars / max(elapsed_s, 1e-9)
        line = f"\r  {bars:>10,} {self.unit}  {rate:>10,.0f}/s"
        if self.total:
            done = min(bars / self.total, 1.0)
            eta_s = max(self.total - bars, 0) / rate if rate > 0 else 0.0
            bar = "#" * int(done * 20)
            line = (f"\r  {bars:>10,} of {self.total:,} {self.unit}  {rate:>10,.0f}/s  [{bar:<20}] {done:5.1%}"
                    f"  ETA {int(eta_s) // 60:d}:{int(eta_s) % 60:02d}")
        return line

    def done(self, bars: int) -> None:
        self._out.write(f"\r  {bars:>10,} {self.unit}  done{' ' * 50}\n")
        self._out.flush()
