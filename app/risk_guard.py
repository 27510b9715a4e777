"""The built-in risk guards: a plugin on the risk and transition hooks that pauses an instance's entries when one
of its ``risk`` limits (core/config.py, RiskConfig) is reached, or every instance of an account when the account's
(``risk`` on ``[exchanges.<name>]``) is: max daily loss, max drawdown from the equity peak, max consecutive
stop-outs, max trades per day.

Tripping one goes through the operator's path (app/control.py ``pause``, journaled with source ``risk-guard`` and
the reason): the ``reducing`` trading state takes no new entry while stops, exits and recovery go on, and it outlives
a restart. The pause ends with ``gatebot resume`` or, with ``resume = "next_utc_day"``, at the first candle of the
next UTC day on the bot's clock (journaled as a resume from ``risk-guard``).

Everything is counted from the journal (closed positions net of fees and funding, entries), never from memory, so
a restarted bot counts the same, and only since the last resume: a guard resumed by hand does not trip again at
once on the losses that tripped it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gatebot.app import control
from gatebot.core.events import ZERO
from gatebot.core.journal import Journal
from gatebot.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from gatebot.app.runner import Runner
    from gatebot.core.config import RiskConfig

log = logging.getLogger("gatebot.risk")

SOURCE = "risk-guard"
DAY_MS = 86_400_000
HUNDRED = Decimal(100)


def breach(risk: RiskConfig, journals: list[Journal], now_ms: int) -> str | None:
    """The first limit reached by the positions of ``journals`` (one instance's, or every instance's of an
    account, their trades merged in time order), as the one-line reason journaled with the pause; None while
    all hold. Counted since the earliest of their last resumes (an account's pause is over for the guard once
    every instance of it was resumed: one resumed alone is paused again while the account's limit is still
    reached), from the first journal's starting balance (an account's instances start from its balance)."""
    resumed = min(j.resumed_at() for j in journals)
    day = max(now_ms // DAY_MS * DAY_MS, resumed)
    equity = Decimal(journals[0].meta().get("initial_balance") or 0)
    trades: list[tuple[int, str, Decimal]] = []
    for journal in journals:
        funding = journal.funding_by_position()
        trades += [(ts, state, rec.realized_pnl - rec.fees - funding.get(rec.seq, ZERO))
                   for ts, state, rec in journal.exits()]
    trades.sort(key=lambda t: t[0])  # stable: same-time exits keep the instances' order
    day_start: Decimal | None = None
    peak: Decimal | None = None
    day_net = ZERO
    streak = 0
    for ts, state, net in trades:
        if ts >= day and day_start is None:
            day_start = equity
        if ts >= resumed and peak is None:
            peak = equity
        equity += net
        if ts >= day:
            day_net += net
        if ts >= resumed:
            peak = equity if peak is None else max(peak, equity)
            streak = streak + 1 if state == "exited_sl" else 0
    if risk.max_daily_loss_pct is not None and day_start and day_start > 0:
        loss_pct = -day_net / day_start * HUNDRED
        if loss_pct >= Decimal(repr(risk.max_daily_loss_pct)):
            return f"daily loss {loss_pct:.2f}% reached max_daily_loss_pct {risk.max_daily_loss_pct}"
    if risk.max_drawdown_pct is not None and peak and peak > 0:
        dd_pct = (peak - equity) / peak * HUNDRED
        if dd_pct >= Decimal(repr(risk.max_drawdown_pct)):
            return f"drawdown {dd_pct:.2f}% from the equity peak {peak:.2f} reached max_drawdown_pct " \
                   f"{risk.max_drawdown_pct}"
    if risk.max_consecutive_stop_outs is not None and streak >= risk.max_consecutive_stop_outs:
        return f"{streak} consecutive stop-outs reached max_consecutive_stop_outs {risk.max_consecutive_stop_outs}"
    if risk.max_trades_per_day is not None:
        entered = sum(j.entries_since(day) for j in journals)
        if entered >= risk.max_trades_per_day:
            return f"{entered} entries today reached max_trades_per_day {risk.max_trades_per_day}"
    return None


class RiskGuards:
    """The guards of one runner (registered on its plugin manager when any is configured): an instance's own
    ``risk`` counts its positions and pauses it; an account's (``[exchanges.<name>]`` ``risk``) counts the
    positions of every instance trading on that account and pauses them all (each journals the pause, reason
    prefixed ``account <name>:``, and is notified as any pause is)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        instances = runner.config.instances
        self.risk = {i.name: i.risk for i in instances if i.risk is not None}
        self.accounts = {name: x.risk for name, x in runner.config.exchanges.items() if x.risk is not None}
        self.members = {name: [i.name for i in instances if i.exchange == name] for name in self.accounts}
        self.account_of = {i.name: i.exchange for i in instances if i.exchange in self.accounts}

    @property
    def active(self) -> bool:
        return bool(self.risk or self.accounts)

    def _journal(self, instance: str) -> Journal | None:
        journal = self.runner.journals.get(instance)
        return journal if journal is not None and journal.conn is not None else None

    def check(self, instance: str) -> str | None:
        """Trip the instance's guard, then its account's, when a limit is reached (paused through app/control.py:
        the instance, or every instance of the account); the reason or None."""
        risk = self.risk.get(instance)
        journal = self._journal(instance)
        if risk is not None and journal is not None:
            reason = breach(risk, [journal], self.runner.clock.now_ms())
            if reason is not None:
                self._pause(instance, reason)
                return reason
        account = self.account_of.get(instance)
        if account is None:
            return None
        journals = [j for j in map(self._journal, self.members[account]) if j is not None]
        reason = breach(self.accounts[account], journals, self.runner.clock.now_ms()) if journals else None
        if reason is None:
            return None
        reason = f"account {account}: {reason}"
        for member in self.members[account]:
            self._pause(member, reason)
        return reason

    def _pause(self, instance: str, reason: str) -> None:
        engine = self.runner.instance(instance).engine
        if engine is not None and engine.trading_state == "active":
            log.warning("%s: risk guard tripped: %s; no new entries (stops and exits go on)", instance, reason)
            try:
                control.apply(self.runner, instance, "pause", source=SOURCE, reason=reason)
            except control.Refused as exc:  # the veto (gatebot_risk_check) still holds the entry
                log.warning("%s: risk guard could not pause: %s", instance, exc)

    def tick(self, instance: str) -> None:
        """At a candle: a pause of a guard (the instance's or its account's, told apart by the reason) ends at the
        next UTC day when that guard says ``resume = "next_utc_day"``."""
        journal = self._journal(instance)
        engine = self.runner.instance(instance).engine
        if journal is None or engine is None or engine.trading_state != "reducing":
            return
        last = journal.controls(limit=1)
        if not last or last[-1]["source"] != SOURCE:
            return  # paused by the operator: only the operator resumes it
        account = self.account_of.get(instance)
        by_account = account is not None and (last[-1]["reason"] or "").startswith(f"account {account}:")
        risk = self.accounts[account] if by_account and account is not None else self.risk.get(instance)
        if risk is None or risk.resume != "next_utc_day":
            return
        now_ms = self.runner.clock.now_ms()
        if now_ms // DAY_MS > last[-1]["ts_ms"] // DAY_MS:
            try:
                msg = control.apply(self.runner, instance, "resume", source=SOURCE, reason="next UTC day")
                log.info("%s: risk guard resumed entries at the next UTC day (%s)", instance, msg)
            except control.Refused as exc:
                log.warning("%s: risk guard could not resume: %s", instance, exc)

    @hookimpl
    def gatebot_risk_check(self, instance: str, decision: Any, view: Any) -> str | None:
        return self.check(instance)

    @hookimpl
    def gatebot_on_transition(self, instance: str, position: int, src: str, trigger: str, dst: str,
                              record: Any) -> None:
        if dst.startswith("exited_") or (src == "flat" and dst == "entering"):
            self.check(instance)
