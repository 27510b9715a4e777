"""The strategy port: the plugin protocol (candles in, decisions out, no I/O) and its optional capabilities.

A strategy never sees the exchange, the journal or the clock. It updates its indicators on each
closed candle (:meth:`Strategy.on_candle`) and, when asked, says what it wants
(:meth:`Strategy.decide`): enter a side with a margin fraction, exit with a reason, move the stop, or nothing. The
engine owns sizing to the instrument, the stop (always an exchange order at
``leveraged_sl_pct / leverage``), risk checks, journaling and execution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from gatebot.core.events import CandleClosed, Side


class Enter(msgspec.Struct, frozen=True, kw_only=True):
    side: Side
    fraction: float
    """Share of the available balance used as margin (quantity = balance*fraction*leverage/price)."""
    info: dict[str, Any] = msgspec.field(default_factory=dict)
    """What the decision was based on (probabilities, gate value...); journaled with the entry."""


class Exit(msgspec.Struct, frozen=True, kw_only=True):
    reason: str
    info: dict[str, Any] = msgspec.field(default_factory=dict)


class MoveStop(msgspec.Struct, frozen=True, kw_only=True):
    """Move the position's exchange stop to ``price`` (break-even, trailing, any rule): the engine places the new
    stop first and cancels the old one once the new one is confirmed, at most once per candle. A price farther
    from the entry than the configured stop (``leveraged_sl_pct``) is held to it unless ``widen``."""

    price: float
    widen: bool = False
    reason: str = ""


Decision = Enter | Exit | MoveStop | None


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """What a strategy may know of its position."""

    state: str
    side: Side | None = None
    qty: float = 0.0
    avg_entry: float = 0.0
    bars_held: int = 0
    """Closed candles since the entry, counted in exchange candle time (survives restarts)."""
    stop_price: float = 0.0
    """The live exchange stop (0 when none): where a MoveStop rule starts from."""


class StrategyContext(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    symbol: str
    interval: str
    leverage: int


class Strategy(Protocol):
    Params: ClassVar[type[msgspec.Struct]]
    """The strategy's own parameter Struct; the config's ``[instances.params]`` is validated by it."""

    history: int
    """Closed candles needed before the first decision (fetched from the exchange at start)."""

    def __init__(self, params: Any, context: StrategyContext) -> None: ...

    def on_candle(self, candle: CandleClosed) -> None:
        """Update indicators with one more closed candle (called exactly once per candle, in order)."""

    def decide(self, view: PositionView) -> Decision:
        """What to do now. May be called twice on one candle: again after an exit settled, so a
        reversal can enter on the same candle."""


# --- optional capabilities: what a strategy may offer beyond the protocol ---------------------------------


@runtime_checkable
class Prepares(Protocol):
    """Receives the whole candle series when a replay knows it in advance (an (n, 6) array: open time ms, open,
    high, low, close, volume), so causal features can be computed at once instead of per candle. It must change
    no decision (a test per strategy proves it); candles it did not see are handled as usual."""

    def prepare(self, rows: Any) -> None: ...


@runtime_checkable
class JournalMeta(Protocol):
    """What the journal's meta should record about the strategy (model hashes...)."""

    def journal_meta(self) -> dict[str, str]: ...


@runtime_checkable
class EvaluationMeta(Protocol):
    """The ``strategy_meta`` of a replay's evaluation text (the model card)."""

    def evaluation_meta(self) -> dict[str, Any]: ...


@runtime_checkable
class ExposesFeatures(Protocol):
    """This candle's features by name (after :meth:`Strategy.on_candle`, before or after :meth:`Strategy.decide`,
    changing neither): ``gatebot check-lookahead`` proves each of them causal, not only the decisions."""

    def features(self) -> dict[str, float]: ...


@runtime_checkable
class Trains(Protocol):
    """Can be retrained from candles (``gatebot walk-forward``: retrained on each rolling window, replayed on the
    next). A classmethod, as training comes before any instance exists. It fits on the candles of ``rows`` (an
    (n, 6) array as :func:`gatebot.core.market.load_csv` gives it) whose open time is at most ``until`` (ms) and on
    nothing later: no label, feature or threshold may look past ``until``. The artifacts (model files...) go into
    the folder ``out``; it returns ``params`` changed to use them (e.g. its ``models_dir``). The same rows give the
    same artifacts, byte for byte (seeded, single-threaded): a walk-forward run repeats itself."""

    @classmethod
    def train(cls, rows: Any, until: int, out: Path, params: Any) -> Any: ...
