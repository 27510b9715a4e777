"""Named crash points for the kill -9 tests: ``GATEBOT_CRASH_AT=name[:n]`` SIGKILLs the process the
n-th time (default first) execution passes ``name``. Unarmed, a crash point costs one comparison."""

from __future__ import annotations

import os
import signal

POINTS = (
    "entry_intent_committed",
    "entry_sent",
    "fill_journaled",
    "stop_intent_committed",
    "stop_sent",
    "stop_confirmed",
    "exit_intent_committed",
    "exit_sent",
    "cancel_intent_committed",
    "before_settle",
    "take_profit_intent_committed",
    "take_profit_sent",
    "move_stop_intent_committed",
    "move_stop_sent",
    "move_stop_confirmed",
)
"""``<role>_intent_committed``: the command is in the journal and not sent yet (recovery must send it,
once); ``<role>_sent``: sent, its answer not handled yet. ``move_stop_*``: the new stop of a move (trailing,
break-even, MoveStop); ``move_stop_confirmed``: a replacement stop confirmed, the cancel of the one it
replaces committed and not sent (two stops live on the exchange)."""

TAKE_PROFIT_POINTS = ("take_profit_intent_committed", "take_profit_sent")
MOVE_POINTS = ("move_stop_intent_committed", "move_stop_sent", "move_stop_confirmed")
"""Reached only with a take-profit configured / with the stop moving (a chaos run without skips them)."""

_name, _, _nth = (os.environ.get("GATEBOT_CRASH_AT") or "").partition(":")
_armed: str | None = _name or None
_remaining = int(_nth or 1)


def crashpoint(name: str) -> None:
    global _remaining
    if name != _armed:
        return
    _remaining -= 1
    if _remaining <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
