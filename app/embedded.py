"""Embedded simulators: an account whose options carry a ``[simulator]`` table (the demo) trades against a
BingX simulator the application starts on loopback. The production adapter never imports the simulator: the
application starts it, points the adapter at its URLs and credentials (``BingXAdapter.embed``), and closes
candles by the simulator's pushes rather than by the local clock (the adapter option ``close_candles_by_clock``,
set here), since a simulator's market clock is its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gatebot.core.config import Config, ConfigError

if TYPE_CHECKING:
    from gatebot.simulators.bingx import BingXSimulator, SimOptions


def simulator_table(options: Any) -> dict[str, Any] | None:
    """An account's ``[simulator]`` table, or None (an account of another type has none)."""
    return getattr(options, "simulator", None)


def for_embedded(options: Any) -> Any:
    """The adapter options of an account on an embedded simulator: candles close by its pushes."""
    if simulator_table(options) is None:
        return options
    return msgspec.structs.replace(options, close_candles_by_clock=False)


class EmbeddedSimulators:
    """The simulators of the accounts ``names`` of ``config`` that embed one, validated at construction (a bad
    table is a ConfigError naming it, before anything starts)."""

    def __init__(self, config: Config, names: list[str] | None = None) -> None:
        self.options: dict[str, SimOptions] = {}
        for name, ex in config.exchanges.items():
            table = simulator_table(ex.options)
            if table is None or (names is not None and name not in names):
                continue
            from gatebot.simulators.bingx import SimOptions  # only a config that embeds one loads the simulator

            try:
                sim = msgspec.convert(table, SimOptions)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"$.exchanges.{name}.options.simulator: {exc}") from None
            self.options[name] = msgspec.structs.replace(sim, hedge_mode=ex.hedge_mode)
        self.running: list[BingXSimulator] = []

    async def start(self, adapters: dict[str, Any]) -> None:
        """Start each account's simulator and point its adapter at it (before the adapter starts)."""
        for name, sim_options in self.options.items():
            if name not in adapters:
                continue
            from gatebot.simulators.bingx import BingXSimulator

            sim = BingXSimulator(sim_options)
            self.running.append(sim)
            await sim.start()
            adapters[name].embed(sim.rest_url, sim.ws_url, (sim_options.api_key, sim_options.secret), sim.finished)

    async def stop(self) -> None:
        for sim in self.running:
            await sim.stop()
        self.running.clear()
