"""Registers the BingX adapter as exchange type ``bingx``."""

from __future__ import annotations

from exchanges.bingx.adapter import BingXPlugin
from plugins.hookspecs import hookimpl


@hookimpl
def gatebot_exchanges() -> dict[str, type[BingXPlugin]]:
    return {"bingx": BingXPlugin}
