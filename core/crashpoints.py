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
)
"""``<role>_intent_committed``: the command is in the journal and not sent yet (recovery must send it,
once); ``<role>_sent``: sent, its answer not handled yet."""

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
