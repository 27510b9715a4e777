"""Registers the BingX adapter as exchange type ``bingx``."""

from __future__ import annotations

from gatebot.exchanges.bingx.adapter import BingXPlugin
from gatebot.plugins.hookspecs import hookimpl


@hookimpl
def gatebot_exchanges() -> dict[str, type[BingXPlugin]]:
    return {"bingx": BingXPlugin}
