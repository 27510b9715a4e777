"""Registers the opportunity_gating strategy."""

from __future__ import annotations

from gatebot.plugins.hookspecs import hookimpl
from gatebot.strategies.opportunity_gating.strategy import OpportunityGating


@hookimpl
def gatebot_strategies() -> dict[str, type]:
    return {"opportunity_gating": OpportunityGating}
