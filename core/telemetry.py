"""How the domain and the adapters report what the metrics (app/metrics.py) show, without knowing about them.

Counters and timestamps are plain attributes the metrics read when scraped; a duration that a histogram needs
every sample of is handed to an :data:`Observe` callable, which does nothing until the application sets one.
Durations are measured with ``time.perf_counter`` (the work's own cost; the injected clock may be virtual and
stand still meanwhile) and never journaled, so replays stay byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable

Observe = Callable[[str, float], None]
"""(what, seconds): ``decision`` (a closed candle handled by the strategy and the orders it sent), ``commit``
(a journal transaction's COMMIT)."""


def ignore(what: str, seconds: float) -> None:
    """The default :data:`Observe`: nobody is looking."""
