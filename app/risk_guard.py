"""The built-in risk guards: a plugin on the risk and transition hooks that pauses an instance's entries when one
of its ``risk`` limits (core/config.py, RiskConfig) is reached: max daily loss, max drawdown from the equity peak,
max consecutive stop-outs, max trades per day.

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


def breach(risk: RiskConfig, journal: Journal, now_ms: int) -> str | None:
    """The first limit reached, as the one-line reason journaled with the pause; None while all hold."""
    resumed = journal.resumed_at()
    day = max(now_ms // DAY_MS * DAY_MS, resumed)
    funding = journal.funding_by_position()
    equity = Decimal(journal.meta().get("initial_balance") or 0)
    day_start: Decimal | None = None
    peak: Decimal | None = None
    day_net = ZERO
    streak = 0
    for ts, state, rec in journal.exits():
        if ts >= day and day_start is None:
            day_start = equity
        if ts >= resumed and peak is None:
            peak = equity
        net = rec.realized_pnl - rec.fees - funding.get(rec.seq, ZERO)
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
        trades = journal.entries_since(day)
        if trades >= risk.max_trades_per_day:
            return f"{trades} entries today reached max_trades_per_day {risk.max_trades_per_day}"
    return None


class RiskGuards:
    """The guards of one runner's instances that configure ``risk`` (registered on its plugin manager)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.risk = {i.name: i.risk for i in runner.config.instances if i.risk is not None}

    def _journal(self, instance: str) -> Journal | None:
        journal = self.runner.journals.get(instance)
        return journal if journal is not None and journal.conn is not None else None

    def check(self, instance: str) -> str | None:
        """Trip the instance's guard when a limit is reached (paused through app/control.py); the reason or None."""
        risk = self.risk.get(instance)
        journal = self._journal(instance)
        if risk is None or journal is None:
            return None
        reason = breach(risk, journal, self.runner.clock.now_ms())
        if reason is None:
            return None
        engine = self.runner.instance(instance).engine
        if engine is not None and engine.trading_state == "active":
            log.warning("%s: risk guard tripped: %s; no new entries (stops and exits go on)", instance, reason)
            try:
                control.apply(self.runner, instance, "pause", source=SOURCE, reason=reason)
            except control.Refused as exc:  # the veto below still holds the entry
                log.warning("%s: risk guard could not pause: %s", instance, exc)
        return reason

    def tick(self, instance: str) -> None:
        """At a candle: a pause of this guard ends at the next UTC day when ``resume = "next_utc_day"``."""
        risk = self.risk.get(instance)
        journal = self._journal(instance)
        if risk is None or risk.resume != "next_utc_day" or journal is None:
            return
        engine = self.runner.instance(instance).engine
        if engine is None or engine.trading_state != "reducing":
            return
        last = journal.controls(limit=1)
        if not last or last[-1]["source"] != SOURCE:
            return  # paused by the operator: only the operator resumes it
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
