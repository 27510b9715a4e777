"""Fault injection: what a real exchange does to a bot on a bad day, on demand.

Usable in-process (``sim.faults.fail_next(...)``) and over HTTP (``POST {rest_url}/__sim/fault`` with
``{"op": "<method name>", ...kwargs}``; ``{"op": "advance", "candles": n}`` plays the market too).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from gatebot.core.events import AnyEvent, CandleClosed, Side
from gatebot.core.instrument import to_decimal

if TYPE_CHECKING:
    from gatebot.simulators.bingx.server import BingXSimulator

FailKind = Literal["5xx", "timeout", "rate_limit", "busy"]


class Faults:
    def __init__(self, sim: BingXSimulator) -> None:
        self.sim = sim
        self._fail: dict[str, deque[tuple[FailKind, bool]]] = {}
        self.stop_rejection: int | None = None
        self.duplicate = False
        self.reorder = False

    # --- streams -------------------------------------------------------------------------------

    def drop_market_streams(self) -> None:
        """Close every market connection (code 1012), mid-candle allowed."""
        self.sim.streams.drop("market")

    def drop_user_streams(self) -> None:
        self.sim.streams.drop("user")

    def silence_user_streams(self) -> None:
        """The open user sockets stay up and keep pinging, but no account push reaches them any more
        (fills, ACCOUNT_CONFIG_UPDATE): only a bot that judges the stream by its data notices."""
        self.sim.streams.silence("user")

    def freeze_user_streams(self) -> None:
        """The open user sockets go half-open: nothing arrives, not even ``Ping``, and nothing closes them."""
        self.sim.streams.freeze("user")

    def stall_streams(self, seconds: float) -> None:
        """Send nothing (not even ``Ping``) on any connection for ``seconds``; frames queue meanwhile."""
        self.sim.streams.stall(seconds)

    def expire_listen_key(self) -> None:
        """Push ``listenKeyExpired`` on every live key's sockets, then refuse the keys (404 on PUT)."""
        self.sim.streams.keys.expire_all()

    def duplicate_user_events(self, on: bool = True) -> None:
        self.duplicate = on

    def reorder_user_events(self, on: bool = True) -> None:
        """Each batch of pushes (one order operation or one market tick) goes out in reverse order."""
        self.reorder = on

    # --- REST ----------------------------------------------------------------------------------

    def fail_next(self, path: str, kind: FailKind, count: int = 1, *, after_effect: bool = False) -> None:
        """The next ``count`` requests to ``path`` fail: ``5xx`` (HTTP 500), ``timeout`` (never answered),
        ``rate_limit`` (100410 / HTTP 429 per switch), ``busy`` (100500 in an HTTP 200 body).
        ``after_effect``: the request is executed first and only its reply is lost."""
        if kind not in ("5xx", "timeout", "rate_limit", "busy"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self._fail.setdefault(path, deque()).extend([(kind, after_effect)] * count)

    def pending(self) -> int:
        """REST failures still waiting for their request (a soak waits for them before the next fault)."""
        return sum(len(q) for q in self._fail.values())

    def take_failure(self, path: str) -> tuple[FailKind, bool] | None:
        queue = self._fail.get(path)
        return queue.popleft() if queue else None

    def reject_next_stop(self, code: int = 110411) -> None:
        """The next stop placement (stand-alone, or attached to an entry) is refused with ``code``."""
        self.stop_rejection = code

    # --- the account and the market ------------------------------------------------------------

    def partial_fills(self, parts: int) -> None:
        """The next MARKET order fills in ``parts`` trades."""
        self.sim.core.split_next_market = max(1, int(parts))

    def close_by_hand(self, symbol: str, side: str, qty: Decimal | None = None) -> None:
        """The operator closes (part of) a position in BingX's UI: an order with an empty client id."""
        pos: Side = "long" if side.lower() in ("long", "sell") else "short"
        self.sim.emit(self.sim.core.close_by_hand(symbol, pos, self.sim.now_ms(), qty))

    def cancel_by_hand(self, client_id: str) -> None:
        """The operator cancels one working order in BingX's UI (a take-profit, a stop): the bot learns it
        from the push, or from the order's status when it was down."""
        self.sim.emit(self.sim.core.cancel(client_id, self.sim.now_ms()))

    def set_mark_price(self, symbol: str, price: Decimal | float) -> None:
        """Move the mark price to ``price`` now (inside the forming candle): stops crossed on the way fire
        at their stop price, a markPrice push goes out, MARKET orders fill there until the next tick.
        With no client connected this is "a stop fires while the bot is down"."""
        old = float(self.sim.mark_price(symbol))
        new = float(price)
        self._segment(symbol, min(old, new), max(old, new), new)

    def wick_through_triggers(self, symbol: str) -> None:
        """One tick whose wicks reach every working stop and take-profit of ``symbol`` and close where it
        opened: a position's stop and take-profit touched on one candle (the matching core fills the stop,
        the worse case; the take-profit then triggers with nothing to close)."""
        levels = [o.stop_price for o in self.sim.core.open_orders(symbol)
                  if o.type in ("STOP_MARKET", "TAKE_PROFIT_MARKET")]
        if not levels:
            return
        old = float(self.sim.mark_price(symbol))
        tick = float(self.sim.core.instruments[symbol].tick)
        self._segment(symbol, min(old, float(min(levels)) - tick), max(old, float(max(levels)) + tick), old)

    def _segment(self, symbol: str, low: float, high: float, close: float) -> None:
        """A path segment inside the forming candle from the mark price through ``low`` and ``high`` to
        ``close``: the conditional orders it touches trigger, a markPrice push goes out."""
        market = self.sim.markets[symbol]
        old = float(self.sim.mark_price(symbol))
        t = market.market_time
        seg = CandleClosed(symbol=symbol, interval=self.sim.options.interval, open_time=t, open=old,
                           high=max(old, high), low=min(old, low), close=close, volume=0.0, ts=t)
        events: list[AnyEvent] = self.sim.core.on_candle(seg, self.sim.now_ms())
        self.sim.core.set_price(symbol, to_decimal(close))
        self.sim.emit(events)
        tick = market.first_tick()
        if tick is not None:
            self.sim.push_market(tick, mark=close)

    def fire_stops_now(self, symbol: str) -> None:
        """Move the mark price just through every working stop of ``symbol`` (a one-tick crash/spike)."""
        stops = [o for o in self.sim.core.open_orders(symbol) if o.type == "STOP_MARKET"]
        tick = self.sim.core.instruments[symbol].tick
        for o in stops:
            self.set_mark_price(symbol, o.stop_price - tick if o.side == "long" else o.stop_price + tick)

    def apply(self, op: str, args: dict[str, Any]) -> None:
        """The HTTP form: ``{"op": name, **args}`` (``qty``/``price`` decoded as Decimal)."""
        public = {"drop_market_streams", "drop_user_streams", "silence_user_streams", "freeze_user_streams",
                  "stall_streams", "expire_listen_key",
                  "duplicate_user_events", "reorder_user_events", "fail_next", "reject_next_stop", "partial_fills",
                  "close_by_hand", "cancel_by_hand", "set_mark_price", "fire_stops_now", "wick_through_triggers"}
        if op not in public:
            raise ValueError(f"unknown fault op {op!r}")
        for key in ("qty", "price"):
            if args.get(key) is not None:
                args[key] = Decimal(str(args[key]))
        getattr(self, op)(**args)
