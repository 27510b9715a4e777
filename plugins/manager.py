"""The plugin manager: loads plugins and calls their hooks with failures isolated.

Built-in plugins (the paper and BingX exchanges, sma_cross, opportunity_gating) are registered even
when the distribution's entry points are not installed (running from a plain checkout). Observer hooks
are called one implementation at a time so that a raising observer is logged and skipped, never
propagated into the engine.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

import pluggy

from gatebot.plugins import hookspecs

log = logging.getLogger("gatebot.plugins")

BUILTIN = {"paper": "gatebot.exchanges.paper.plugin", "bingx": "gatebot.exchanges.bingx.plugin",
           "sma_cross": "gatebot.strategies.sma_cross.plugin",
           "opportunity_gating": "gatebot.strategies.opportunity_gating.plugin"}
"""Entry-point name -> module of the plugins that ship with gatebot."""


class PluginError(Exception):
    """A plugin could not be loaded or registers something twice."""


class PluginManager:
    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._exchanges: dict[str, Any] | None = None
        self._strategies: dict[str, type] | None = None

    def _collect(self, results: list[dict[str, Any]], what: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mapping in results:
            for name, value in mapping.items():
                if name in out and out[name] is not value:
                    raise PluginError(f"two plugins register the {what} {name!r}")
                out[name] = value
        return out

    def exchanges(self) -> dict[str, Any]:
        if self._exchanges is None:
            self._exchanges = self._collect(self.pm.hook.gatebot_exchanges(), "exchange type")
        return self._exchanges

    def strategies(self) -> dict[str, type]:
        if self._strategies is None:
            self._strategies = self._collect(self.pm.hook.gatebot_strategies(), "strategy")
        return self._strategies

    def _observe(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self.pm.hook, hook)
        for impl in caller.get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s; ignored", impl.plugin_name, hook)

    def notify_transition(self, **kwargs: Any) -> None:
        self._observe("gatebot_on_transition", **kwargs)

    def notify_fill(self, **kwargs: Any) -> None:
        self._observe("gatebot_on_fill", **kwargs)

    def risk_check(self, *, instance: str, decision: Any, view: Any) -> str | None:
        """The first veto, or None. A raising risk plugin vetoes: refusing an entry is the safe side."""
        for impl in reversed(self.pm.hook.gatebot_risk_check.get_hookimpls()):
            try:
                veto = impl.function(**{k: {"instance": instance, "decision": decision, "view": view}[k]
                                        for k in impl.argnames})
            except Exception as exc:
                log.exception("risk plugin %s failed; entry vetoed", impl.plugin_name)
                return f"risk plugin {impl.plugin_name} failed: {type(exc).__name__}"
            if veto:
                return str(veto)
        return None


def make_plugin_manager(modules: Iterable[str] = (), disable: Iterable[str] = ()) -> PluginManager:
    """Entry points of group ``gatebot``, the built-ins, then the dotted ``modules``; minus ``disable``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disable:
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    builtin = [dotted for name, dotted in BUILTIN.items() if not pm.is_blocked(name)]
    for dotted in (*builtin, *modules):
        if pm.is_blocked(dotted):
            continue
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise PluginError(f"plugin module {dotted!r} cannot be imported: {exc}") from exc
        if not pm.is_registered(module):
            pm.register(module, name=dotted)
    return PluginManager(pm)
