"""Logs a person can read: on the terminal, warnings and (during ``run``) one line per transition, order and
fill (the engine's ``gatebot.trade`` logger); ``-v`` adds everything at INFO; ``run`` also writes JSON lines to a
rotating file in the state dir. The ``transitions`` library's own lines (callbacks, state exits) never show,
at any level: the state table and the trade lines say what happened.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import msgspec

TRADE = "gatebot.trade"
OPERATOR = frozenset((TRADE, "gatebot.api", "gatebot.control"))
"""Loggers whose INFO lines the terminal shows by default: trades, the API's address, operators' commands."""
LOG_FILE = "gatebot.log.jsonl"
MAX_BYTES = 10_000_000
BACKUPS = 5
"""The file rotates at 10 MB, five older files kept (60 MB at most)."""
_enc = msgspec.json.Encoder()


class _Terminal(logging.Filter):
    """Warnings and worse; the operator's lines; everything when verbose."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.WARNING or record.name in OPERATOR


class JsonLines(logging.Formatter):
    """One JSON object a line: time (epoch ms), level, logger, message (and the exception's type and text)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time_ms": int(record.created * 1000), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
        return _enc.encode(line).decode()


def setup(verbose: bool) -> None:
    """The terminal's logging, for every command (called once by the CLI)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO if verbose else logging.WARNING)  # INFO records not even made unless wanted
    for h in list(root.handlers):
        if getattr(h, "_gatebot", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Terminal(verbose))
    handler._gatebot = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    logging.getLogger(TRADE).setLevel(logging.WARNING)  # off but for run: a replay's millions of lines
    for name in OPERATOR - {TRADE}:
        logging.getLogger(name).setLevel(logging.INFO)
    quiet = logging.getLogger("transitions")
    quiet.setLevel(logging.CRITICAL + 1)
    quiet.propagate = False


def for_run(state_dir: str | Path) -> Path:
    """``run``: the trade lines on; JSON lines to the rotating file in the state dir (its path returned)."""
    logging.getLogger(TRADE).setLevel(logging.INFO)
    path = Path(state_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(JsonLines())
    handler.setLevel(logging.INFO)
    handler._gatebot = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    root.setLevel(min(root.level, logging.INFO))  # the file keeps the INFO lines the terminal does not show
    root.addHandler(handler)
    return path
