"""A BingX-compatible exchange simulator on loopback, over the shared matching core.

``BingXSimulator(SimOptions(...))``: REST on aiohttp, streams on websockets, faults in ``sim.faults``.
``python -m gatebot.simulators.bingx`` runs it standalone.
"""

from gatebot.simulators.bingx.faults import Faults
from gatebot.simulators.bingx.options import SimOptions, Switches
from gatebot.simulators.bingx.server import BingXSimulator

__all__ = ["BingXSimulator", "Faults", "SimOptions", "Switches"]
