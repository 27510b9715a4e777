"""Registers the paper exchange as exchange type ``paper``."""

from __future__ import annotations

from gatebot.exchanges.paper.exchange import PaperPlugin
from gatebot.plugins.hookspecs import hookimpl


@hookimpl
def gatebot_exchanges() -> dict[str, type[PaperPlugin]]:
    return {"paper": PaperPlugin}
