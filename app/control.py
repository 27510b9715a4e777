"""The operator's commands to a running instance: close, pause, resume, halt; flatten (every instance).

Each goes through the journal before it acts (the ``controls`` table: what, when, from where, why, and the
trading state it leaves), is idempotent (asked twice, the second says it is done already) and is refused with
a one-line reason where it does not apply (:class:`Refused`). The trading state is the engine's gate
(``Engine.trading_state``): ``reducing`` takes no new entry, ``halted`` no decision at all; the engine reads
it back from the journal when it is built, so a paused or halted instance stays so across a restart. A
close is the state table's ``manual_close`` (posted as a ``ManualClose`` event: it waits for recovery like
any decision, and the engine journals the transition before the close order is sent).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from gatebot.core.events import ManualClose
from gatebot.core.journal import JournalUnwritable

if TYPE_CHECKING:
    from gatebot.app.runner import Instance, Runner

log = logging.getLogger("gatebot.control")

CommandName = Literal["close", "pause", "resume", "halt"]
COMMANDS: tuple[CommandName, ...] = ("close", "pause", "resume", "halt")

TARGET: dict[str, str] = {"pause": "reducing", "resume": "active", "halt": "halted"}
"""The trading state each state command leaves."""
ALREADY: dict[str, str] = {"active": "active already", "reducing": "paused already (no new entries)",
                           "halted": "halted already (no new orders)"}
REFUSED: dict[tuple[str, str], str] = {
    ("pause", "halted"): "it is halted (no orders at all); resume it first, pausing would let exits trade",
}
"""(command, trading state) pairs a state command does not apply to, with why."""
CLOSE_REFUSED: dict[str, str] = {
    "flat": "no open position to close",
    "entering": "its entry is still in flight (entering): close it once its stop is confirmed",
}
"""Position states a close does not apply to (exiting and exited_* are closing already: idempotent)."""


class Refused(Exception):
    """A command that does not apply; the message is the one-line reason."""


def apply(runner: Runner, name: str, command: str, *, source: str, reason: str = "") -> str:
    """Carry out ``command`` on instance ``name``; the message of what was done, or :class:`Refused` (a journal
    that cannot take the command's row included: nothing is done unjournaled). KeyError: no such instance."""
    try:
        return _apply(runner, name, command, source=source, reason=reason)
    except JournalUnwritable as exc:
        raise Refused(f"{exc}; nothing done") from None


def _apply(runner: Runner, name: str, command: str, *, source: str, reason: str) -> str:
    inst = runner.instance(name)
    if command not in COMMANDS:
        raise Refused(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
    if inst.halted is not None:
        raise Refused(f"instance {name} was stopped by the bot ({inst.halted}); fix that and restart gatebot")
    journal = runner.journals.get(name)
    if journal is None or journal.conn is None:
        raise Refused(f"instance {name} has no open journal yet (still starting)")
    engine = inst.engine
    state = engine.trading_state if engine is not None else journal.trading_state()
    now_ms = runner.clock.now_ms()
    if command == "close":
        return _close(inst, state, source=source, reason=reason, now_ms=now_ms)
    target = TARGET[command]
    refusal = REFUSED.get((command, state))
    if refusal is not None:
        raise Refused(refusal)
    outcome = "unchanged" if state == target else "done"
    journal.add_control(now_ms, command, source, reason, outcome, target)  # before it acts
    if engine is not None:
        engine.trading_state = target  # type: ignore[assignment]
    if outcome == "unchanged":
        return f"{name}: {ALREADY[target]}"
    _tell(runner, name, command, source, reason, f"trading state {state} -> {target}")
    log.info("%s: %s by %s (%s): trading state %s -> %s", name, command, source, reason or "no reason given",
             state, target)
    return f"{name}: {state} -> {target}"


def _close(inst: Instance, state: str, *, source: str, reason: str, now_ms: int) -> str:
    name = inst.cfg.name
    engine = inst.engine
    if engine is None:
        raise Refused(f"instance {name} is not trading now ({inst.reason or inst.unwritable or 'restarting'}); "
                      "its exchange stop stays")
    if state == "halted":
        raise Refused("it is halted (no new orders); resume or pause it to close")
    pos = engine.pos
    refusal = CLOSE_REFUSED.get(pos.state)
    if refusal is not None:
        raise Refused(refusal)
    asked = (id(engine), pos.rec.seq)  # a rebuilt engine lost its inbox: a close posted to the old one is asked again
    if pos.state != "protected" or inst.close_asked == asked:
        why = pos.rec.exit_reason or "manual"
        return f"{name}: position {pos.rec.seq} is closing already ({why})"
    engine.journal.add_control(now_ms, "close", source, reason, "done", state)  # before it acts
    inst.close_asked = asked
    engine.post(ManualClose(ts=now_ms, reason=reason or "operator"))
    _tell(inst.runner, name, "close", source, reason, f"closing position {pos.rec.seq} at market")
    log.info("%s: close of position %d by %s (%s)", name, pos.rec.seq, source, reason or "no reason given")
    return f"{name}: closing position {pos.rec.seq} ({pos.rec.side} {pos.rec.open_qty}) at market"


def _tell(runner: Runner, name: str, command: str, source: str, reason: str, outcome: str) -> None:
    notifier = getattr(runner, "notifier", None)
    if notifier is not None:
        notifier.command(name, command, source, reason, outcome)


def flatten(runner: Runner, *, source: str, reason: str = "") -> dict[str, tuple[bool, str]]:
    """Every instance paused (no new entry: otherwise its strategy may enter again at the next candle) and its
    position closed. Per instance (ok, message or the reason it did not apply)."""
    out: dict[str, tuple[bool, str]] = {}
    for inst in runner.instances:
        name = inst.cfg.name
        try:
            done = []
            engine = inst.engine
            state = engine.trading_state if engine is not None else None
            if state != "halted":
                done.append(apply(runner, name, "pause", source=source, reason=reason or "flatten"))
            if engine is not None and engine.pos.state == "flat":
                done.append(f"{name}: flat")
            else:
                done.append(apply(runner, name, "close", source=source, reason=reason or "flatten"))
            out[name] = (True, "; ".join(done))
        except Refused as exc:
            out[name] = (False, str(exc))
    return out
