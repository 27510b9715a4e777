"""The plugin manager: loads plugins and calls their hooks with failures isolated.

Built-in plugins (the paper and BingX exchanges, sma_cross, opportunity_gating) are registered even
when the distribution's entry points are not installed (running from a plain checkout). Observer hooks
are called one implementation at a time so that a raising observer is logged and skipped, never
propagated into the engine.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
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


def import_plugin(dotted: str, folders: Iterable[Path] = ()) -> ModuleType:
    """Import ``dotted`` as Python would, else from ``folders`` (the config's folder), appended to ``sys.path`` for
    good: a plugin module beside the config loads without PYTHONPATH (its own imports of modules beside it too,
    whenever they happen), and never shadows an installed module of the same name."""
    top = dotted.partition(".")[0]
    searched = [str(f) for f in folders]
    found = _import(dotted)
    if isinstance(found, ModuleNotFoundError) and found.name == top and searched:
        sys.path.extend(f for f in searched if f not in sys.path)
        found = _import(dotted)
    if isinstance(found, ModuleType):
        return found
    if found.name != top:  # the plugin itself imports something that is missing
        raise PluginError(f"plugin module {dotted!r} cannot be imported: {found}") from found
    beside = f" nor in the config's folder {', '.join(searched)}" if searched else ""
    raise PluginError(f"plugin module {dotted!r} cannot be imported: it is not installed{beside}; put {top}.py "
                      f"(or a {top}/ package) beside the config, install it, or add its folder to PYTHONPATH"
                      ) from found


def _import(dotted: str) -> ModuleType | ModuleNotFoundError:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        return exc
    except ImportError as exc:
        raise PluginError(f"plugin module {dotted!r} cannot be imported: {exc}") from exc


def make_plugin_manager(modules: Iterable[str] = (), disable: Iterable[str] = (),
                        folders: Iterable[Path] = ()) -> PluginManager:
    """Entry points of group ``gatebot``, the built-ins, then the dotted ``modules`` (also looked for in
    ``folders``); minus ``disable``."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disable:
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    builtin = [dotted for name, dotted in BUILTIN.items() if not pm.is_blocked(name)]
    for dotted in (*builtin, *modules):
        if pm.is_blocked(dotted):
            continue
        module = import_plugin(dotted, folders)
        if not pm.is_registered(module):
            pm.register(module, name=dotted)
    return PluginManager(pm)
