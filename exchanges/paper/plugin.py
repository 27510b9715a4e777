"""Registers the paper exchange as exchange type ``paper``."""

from __future__ import annotations

from exchanges.paper.exchange import PaperPlugin
from plugins.hookspecs import hookimpl


@hookimpl
def gatebot_exchanges() -> dict[str, type[PaperPlugin]]:
    return {"paper": PaperPlugin}
