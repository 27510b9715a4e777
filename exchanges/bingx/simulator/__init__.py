"""A BingX-compatible exchange simulator on loopback, over the shared matching core (issue 3).

``BingXSimulator(SimOptions(...))``: REST on aiohttp, streams on websockets, faults in ``sim.faults``.
``python -m gatebot.exchanges.bingx.simulator`` runs it standalone.
"""

from gatebot.exchanges.bingx.simulator.faults import Faults
from gatebot.exchanges.bingx.simulator.options import SimOptions, Switches
from gatebot.exchanges.bingx.simulator.server import BingXSimulator

__all__ = ["BingXSimulator", "Faults", "SimOptions", "Switches"]
