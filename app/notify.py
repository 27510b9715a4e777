"""Notifications to the bot's owner through apprise (Telegram, Discord, Slack, e-mail, a JSON webhook, ...).

What is said: an entry filled (side, quantity, price, stop), a stop that fired, an exit (PnL, fees, funding), a
stop the exchange refused, a position unprotected longer than ``[notify] unprotected_s``, an instance's error or
halt, a reconciliation that found the journal and the exchange apart, a stream silent longer than
``stale_stream_s``, the operator's commands (a risk guard's pause included), and a daily summary.

The targets' URLs hold tokens: they come from the env ``GATEBOT_NOTIFY_URLS`` (separated by spaces, commas or
new lines) or a file named by ``GATEBOT_NOTIFY_URLS_FILE`` that only its owner may read (0600), never from the
TOML, and are never logged. A message is put on a bounded queue on the engine's path and nothing more: a worker
thread sends it (apprise blocks), retried ``retries`` times; a slow or failing target never delays an order. A
message repeating one of the last ``dedupe_s`` seconds is dropped, and at most ``max_per_minute`` go out (both
by the bot's clock); a failed or dropped notification is logged, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import stat
import threading
from collections import deque
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from gatebot.app.views import plain
from gatebot.core.config import ConfigError, NotifyConfig
from gatebot.core.events import ZERO
from gatebot.core.position import EXITED
from gatebot.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from gatebot.app.runner import Instance, Runner
    from gatebot.core.clock import Clock

log = logging.getLogger("gatebot.notify")

URLS_ENV = "GATEBOT_NOTIFY_URLS"
URLS_FILE_ENV = "GATEBOT_NOTIFY_URLS_FILE"
QUEUE_MAX = 1000
RETRY_FIRST_S = 1.0
DAY_MS = 86_400_000
EXIT_KIND = {"exited_sl": "stop", "exited_exit": "exit", "exited_manual": "manual"}


def _n(value: Decimal | None) -> str:
    """A quantity or price as the views print it (never an exponent a journal row may carry: "0E-8")."""
    return "none" if value is None else plain(value)


class Message(msgspec.Struct, frozen=True):
    kind: str
    """entry, stop, exit, stop_refused, unprotected, error, halt, mismatch, stale, command, summary."""
    title: str
    body: str
    key: str
    """Two messages with the same key within ``dedupe_s`` are one."""


def load_urls(env: dict[str, str] | None = None) -> list[str]:
    """The targets' URLs (none: notifications are off); ConfigError, one line naming no URL, when they are
    unusable: a file others may read, an empty file, a URL apprise does not know."""
    env = dict(os.environ) if env is None else env
    text = env.get(URLS_ENV, "")
    where = f"the env {URLS_ENV}"
    if not text and env.get(URLS_FILE_ENV):
        path = Path(env[URLS_FILE_ENV])
        where = f"{URLS_FILE_ENV} {path}"
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise ConfigError(f"{where} has mode {mode:04o}: it holds tokens and must be readable by its owner "
                                  f"alone (chmod 600 {path})")
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
        if not text.strip():
            raise ConfigError(f"{where} is empty")
    urls = [u for u in re.split(r"[\s,]+", text) if u and not u.startswith("#")]
    apprise = _apprise() if urls else None
    for n, url in enumerate(urls, start=1):
        if not apprise.Apprise().add(url):  # type: ignore[union-attr]
            scheme = url.partition("://")[0] if "://" in url else "?"
            raise ConfigError(f"notification URL {n} of {where} ({scheme}://...) is not one apprise can send to")
    return urls


def _apprise() -> Any:
    """apprise, imported when notifications are on (its import costs every command otherwise), its own logger
    silenced: its messages may name a target's URL, a token in it."""
    import apprise

    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    return apprise


class Notifier:
    """The queue, its worker thread, and the hooks and checks that fill it."""

    def __init__(self, urls: list[str], cfg: NotifyConfig, clock: Clock, runner: Runner | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.runner = runner
        self._targets = _apprise().Apprise()
        for url in urls:
            self._targets.add(url)
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=QUEUE_MAX)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent: dict[str, int] = {}
        self._window: deque[int] = deque()
        self.sent = self.failed = self.dropped = 0
        """Messages delivered, given up after their retries, dropped (repeated, over the rate, queue full)."""
        self._reconciled: dict[str, int] = {}
        self._exits: dict[str, tuple[str, str, str]] = {}
        """An exit's message waiting for the fill that closed the position (its price)."""
        self._day: int | None = None

    # --- the queue ---------------------------------------------------------------------------------

    def send(self, kind: str, title: str, body: str, key: str | None = None) -> bool:
        """Queue a message (never blocks, never raises); False when it was dropped."""
        now = self.clock.monotonic_ms()
        key = key or f"{kind}:{title}:{body}"
        last = self._recent.get(key)
        if last is not None and now - last < self.cfg.dedupe_s * 1000:
            return False
        while self._window and now - self._window[0] >= 60_000:
            self._window.popleft()
        if len(self._window) >= self.cfg.max_per_minute:
            self.dropped += 1
            log.warning("notification dropped (more than %d a minute): %s", self.cfg.max_per_minute, title)
            return False
        try:
            self._queue.put_nowait(Message(kind, title, body, key))
        except queue.Full:
            self.dropped += 1
            log.warning("notification dropped (%d waiting to be sent): %s", QUEUE_MAX, title)
            return False
        self._recent[key] = now
        self._window.append(now)
        if len(self._recent) > 4 * QUEUE_MAX:
            horizon = now - self.cfg.dedupe_s * 1000
            self._recent = {k: t for k, t in self._recent.items() if t >= horizon}
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="gatebot-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued for up to ``timeout_s``, then give up (the thread is a daemon: it never holds the
        process)."""
        with contextlib.suppress(queue.Full):  # full: the worker stops at the timeout anyway (a daemon)
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("notifications still being sent at exit: left (%d queued)", self._queue.qsize())
        self._stopping.set()

    def _work(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            self._deliver(msg)

    def _deliver(self, msg: Message) -> None:
        delay_s = RETRY_FIRST_S
        for attempt in range(self.cfg.retries + 1):
            try:
                if self._targets.notify(title=msg.title, body=msg.body):
                    self.sent += 1
                    return
            except Exception as exc:  # a target's failure is never the bot's
                log.warning("notification %s: %s", msg.kind, type(exc).__name__)
            if attempt < self.cfg.retries and self._stopping.wait(delay_s):
                break
            delay_s *= 2
        self.failed += 1
        log.warning("notification %r not sent after %d tries (a target refused it or did not answer)", msg.title,
                    self.cfg.retries + 1)

    # --- what the engine does (its transition hook: only queueing here) -----------------------------

    @hookimpl
    def gatebot_on_transition(self, instance: str, position: int, src: str, trigger: str, dst: str,
                              record: Any) -> None:
        r = record
        where = f"{instance} {r.symbol}"
        if dst == "protected" and src == "entering":
            self.send("entry", f"{where}: entry filled", f"{r.side} {_n(r.open_qty)} @ {r.avg_entry:.8g}, stop at "
                      f"{_n(r.stop_price)}", key=f"entry:{instance}:{position}")
        elif trigger == "stop_filled" and dst == "exited_sl":
            self.send("stop", f"{where}: stop fired", f"{r.side} {_n(r.closed_qty)} stopped out at {_n(r.stop_price)}",
                      key=f"stop:{instance}:{position}")
        elif trigger == "stop_rejected":
            self.send("stop_refused", f"{where}: the exchange refused the stop",
                      f"position {position} ({r.side} {_n(r.open_qty)}): {'closing it' if dst == 'exiting' else dst}",
                      key=f"stop_refused:{instance}:{position}:{r.stop_attempt}")
        if dst in EXITED and src not in EXITED:  # the record still holds the position's figures (settled resets it)
            funding = self._funding(instance, position)
            net = r.realized_pnl - r.fees - funding
            why = EXIT_KIND[dst] + (f": {r.exit_reason}" if r.exit_reason and dst != "exited_sl" else "")
            exit_msg = (f"{where}: exit ({why})",
                        f"PnL {r.realized_pnl:.4f}, fees {r.fees:.4f}, funding {funding:.4f}, net {net:.4f}",
                        f"exit:{instance}:{position}")
            if trigger in ("stop_filled", "close_filled"):
                self._exits[instance] = exit_msg  # sent with its fill's price (the fill hook comes next)
            else:
                self.send("exit", *exit_msg)
        elif instance in self._exits:  # no fill came with the exit
            self.send("exit", *self._exits.pop(instance))

    @hookimpl
    def gatebot_on_fill(self, instance: str, fill: Any) -> None:
        pending = self._exits.pop(instance, None)
        if pending is not None:
            title, body, key = pending
            self.send("exit", title, f"{_n(fill.qty)} closed at {_n(fill.price)}; {body}", key=key)

    def _funding(self, instance: str, position: int) -> Decimal:
        journal = self.runner.journals.get(instance) if self.runner is not None else None
        if journal is None or journal.conn is None:
            return ZERO
        return journal.funding_by_position().get(position, ZERO)

    # --- what the runner says ------------------------------------------------------------------------

    def instance_down(self, name: str, what: str, reason: str) -> None:
        """An instance's error (it restarts after a backoff) or halt (it stays stopped)."""
        self.send("halt" if what == "halted" else "error", f"{name}: {what}", reason, key=f"{what}:{name}:{reason}")

    def command(self, name: str, command: str, source: str, reason: str, outcome: str) -> None:
        by = "a risk guard" if source == "risk-guard" else source
        self.send("command", f"{name}: {command} by {by}", f"{outcome}{f' ({reason})' if reason else ''}",
                  key=f"command:{name}:{command}:{self.clock.now_ms()}")

    def check(self, inst: Instance) -> None:
        """The conditions that last (run at each heartbeat and candle): unprotected, stale streams, a reconcile
        that corrected the journal, the day's summary."""
        engine = inst.engine
        name = inst.cfg.name
        now = self.clock.monotonic_ms()
        if engine is not None:
            since = engine.unprotected_since_ms
            if since is not None and now - since > self.cfg.unprotected_s * 1000:
                self.send("unprotected", f"{name}: position unprotected for {(now - since) / 1000:.0f} s",
                          f"the entry of position {engine.pos.rec.seq} filled and its stop is not confirmed; it is "
                          f"closed at the protection timeout ({engine.protection_timeout_ms / 1000:g} s)",
                          key=f"unprotected:{name}:{engine.pos.rec.seq}")
            corrected = engine.reconcile_outcomes["corrected"]
            if corrected > self._reconciled.get(name, 0):
                resolved = (engine.reconciled or {}).get("intents", "?")
                self.send("mismatch", f"{name}: recovery found the journal and the exchange apart",
                          f"{resolved} order(s) resolved from the exchange; now {engine.pos.state}",
                          key=f"mismatch:{name}:{corrected}:{id(engine)}")
            self._reconciled[name] = corrected
        if self.runner is not None:
            adapter = self.runner.adapters.get(inst.cfg.exchange)
            for stream, attr in (("market", "last_frame_ms"), ("user", "last_data_ms")):
                last = getattr(getattr(adapter, stream, None), attr, 0)
                if last and now - last > self.cfg.stale_stream_s * 1000:
                    self.send("stale", f"{inst.cfg.exchange}: {stream} stream silent for {(now - last) / 1000:.0f} s",
                              "no frame from the exchange: candles or fills may be missed (reconnecting)",
                              key=f"stale:{inst.cfg.exchange}:{stream}")

    def summary(self, runner: Runner) -> None:
        """Once per UTC day (the bot's clock): each instance's positions closed the day before, net PnL, equity."""
        day = self.clock.now_ms() // DAY_MS
        if self._day is None or not self.cfg.daily_summary:
            self._day = day
            return
        if day == self._day:
            return
        start, end = self._day * DAY_MS, day * DAY_MS
        self._day = day
        lines = []
        for inst in runner.instances:
            journal = runner.journals.get(inst.cfg.name)
            if journal is None or journal.conn is None:
                continue
            funding = journal.funding_by_position()
            closed = [(rec.realized_pnl - rec.fees - funding.get(rec.seq, ZERO))
                      for ts, _, rec in journal.exits() if start <= ts < end]
            pnl, fees = journal.realized()
            balance = Decimal(journal.meta().get("initial_balance") or 0) + pnl - fees - journal.funding_total()
            lines.append(f"{inst.cfg.name}: {len(closed)} closed, net {sum(closed, ZERO):.4f}, balance {balance:.2f}, "
                         f"{inst.engine.trading_state if inst.engine is not None else 'down'}")
        if lines:
            self.send("summary", f"gatebot daily summary ({len(lines)} instance(s))", "\n".join(lines),
                      key=f"summary:{day}")


def make_notifier(runner: Runner) -> Notifier | None:
    """The runner's notifier when URLs are configured (ConfigError when they are unusable); None otherwise."""
    urls = load_urls()
    if not urls:
        return None
    log.info("notifications to %d target(s) (%s)", len(urls), ", ".join(sorted({u.partition(":")[0] for u in urls})))
    return Notifier(urls, runner.config.notify, runner.clock, runner)
