"""pluggy hook specifications: how exchanges, strategies, observers and risk checks plug in.

Exchanges and strategies register by name; observers see every transition and fill after it is
journaled; a risk check may veto an entry. Plugins come from the entry-point group ``gatebot`` and
from dotted module paths in the TOML ``[plugins]`` table.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import pluggy

PROJECT = "gatebot"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class ExchangePlugin(Protocol):
    """What ``gatebot_exchanges`` returns for each exchange type."""

    Options: type[msgspec.Struct]
    """The Struct that validates ``[exchanges.<name>.options]`` (with ``forbid_unknown_fields``)."""

    def factory(self, options: Any, *, hedge_mode: bool, clock: Any, state_dir: Any, account: str) -> Any:
        """Build the adapter of one account."""


@hookspec
def gatebot_exchanges() -> dict[str, ExchangePlugin]:  # type: ignore[empty-body]
    """Exchange types this plugin provides: type name -> ExchangePlugin."""


@hookspec
def gatebot_strategies() -> dict[str, type]:  # type: ignore[empty-body]
    """Strategies this plugin provides: name -> class following ``core.strategy.Strategy``."""


@hookspec
def gatebot_on_transition(instance: str, position: int, src: str, trigger: str, dst: str, record: Any) -> None:
    """A transition was journaled (observers: logging, notifications, metrics)."""


@hookspec
def gatebot_on_fill(instance: str, fill: Any) -> None:
    """A fill was journaled."""


@hookspec(firstresult=True)
def gatebot_risk_check(instance: str, decision: Any, view: Any) -> str | None:  # type: ignore[empty-body]
    """Return a reason to veto this entry, or None to let it through."""
