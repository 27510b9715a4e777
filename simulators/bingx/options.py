"""The simulator's options, and one switch per UNCONFIRMED item of the protocol page.

Switch defaults are the most plausible reading of BingX's behaviour; tests flip them to prove the
adapter survives every reading.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from gatebot.exchanges.paper.exchange import STOP_SLIPPAGE_BPS
from gatebot.exchanges.paper.funding import FundingOptions


class Switches(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    stop_fill_event: Literal["same_id", "derived_id"] = "same_id"
    """§6.4: a triggered stop fills on its own order id (``o=STOP_MARKET``), or a derived MARKET order
    with a new id carries the fill (``ti`` = the stop's id, ``c`` empty; REST ``triggerOrderId``)."""
    orphan_stops: Literal["cancel", "keep"] = "keep"
    """§7.2: stops left after their position closed are canceled, or kept and expired when triggered."""
    drop_trigger_fill_events: bool = False
    """§6.4, as one user reported it: no ORDER_TRADE_UPDATE for triggered stops (ACCOUNT_UPDATE only)."""
    kline_order: Literal["asc", "desc"] = "asc"
    """§3.4: REST kline order."""
    rate_limit_signal: Literal["body", "http429"] = "body"
    """§4: code 100410 in an HTTP 200 body, or HTTP 429 (with the same body)."""
    lenient_signature: bool = False
    """§2.4: also accept signatures computed over the percent-encoded values."""
    listen_key_repost: Literal["same", "new"] = "new"
    """§6.1: a second listenKey POST returns the live key, or a new one."""
    future_timestamp_ms: int = 1000
    """§2.4: how far in the future a request timestamp may be."""


Wire = Literal["numeric", "string", "mixed"]

START_PRICES = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "BNB": 600.0}
"""A generated market's start by base asset when the options name none, so that ETH-USDT trades near an ETH
price, not BTC's; other bases start at 100."""
OTHER_START_PRICE = 100.0
LOCKSTEP_START_MS = 1_735_689_600_000
"""2025-01-01 00:00 UTC: where a lockstep market starts unless ``start_ms`` says otherwise."""


class SimOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    api_key: str = "sim-key"
    secret: str = "sim-secret"
    """The simulator's only account."""
    balance: Decimal = Decimal(10000)
    fee_rate: Decimal = Decimal("0.0005")
    symbols: list[str] = msgspec.field(default_factory=lambda: ["BTC-USDT"])
    interval: str = "5m"
    source: Literal["generated", "csv"] = "generated"
    csv: str | None = None
    """A candle CSV (core.market.load_csv); its candles are re-timed onto the simulator's clock."""
    seed: int = 42
    start_price: float | None = None
    """Where every generated market starts; None: each symbol's typical price (``START_PRICES``)."""
    start_prices: dict[str, float] = msgspec.field(default_factory=dict)
    """Per symbol, where its generated market starts (over ``start_price``)."""
    volatility: float = 0.002
    history_bars: int = 500
    """Candles already in the past at start (served by REST klines)."""
    bars: int = 100_000
    """Live candles played after the history; then the market stops."""
    mode: Literal["manual", "auto", "lockstep"] = "manual"
    """manual: tests call ``advance()``; auto: a task plays candles at ``speed``; lockstep (embedded in the
    bot's process only, app/embedded.py): the market moves on the bot's virtual clock, one symbol's path point
    at a time, once the bot has handled everything it was sent, so a seeded run repeats itself exactly."""
    start_ms: int | None = None
    """Market time at start (ms): the first live candle opens then, floored to the interval. None: now (wall
    time), except in lockstep: ``LOCKSTEP_START_MS``."""
    speed: float = 300.0
    """Auto mode: market time runs ``speed`` x wall time (300 -> a 5m candle per second)."""
    hedge_mode: bool = False
    rest_port: int = 0
    ws_port: int = 0
    switches: Switches = Switches()
    wire: Wire = "mixed"
    """Protocol §0: the JSON types BingX sent in each era. ``numeric`` (the documentation's): ids, times
    and codes as numbers, the place-order reply in ``data.order`` with stopLoss/takeProfit as JSON text;
    ``string`` (newer captures): ids, times, codes, position leverage and contract fields as strings, the
    order bare in ``data`` with its brackets as objects; ``mixed``: one of the two per reply and per push,
    drawn from generators seeded with ``seed`` (a run is reproducible). Table: ``views.DIALECT``."""
    restricted_symbols: list[str] = msgspec.field(default_factory=list)
    """Listed symbols closed to API trading (``apiStateOpen`` false): orders refused with 100421
    "This pair is currently restricted from API trading" (protocol §0)."""
    stop_slippage_bps: Decimal = STOP_SLIPPAGE_BPS
    """Triggered stops fill this many basis points past the trigger (the paper exchange's model); 0 = exact."""
    funding: FundingOptions = FundingOptions()
    """Funding settled at every funding time of market time (pushed as ACCOUNT_UPDATE ``m=FUNDING_FEE``,
    listed in the income history, its rates in the funding-rate history)."""
    def start_price_of(self, symbol: str) -> float:
        if symbol in self.start_prices:
            return self.start_prices[symbol]
        if self.start_price is not None:
            return self.start_price
        return START_PRICES.get(symbol.partition("-")[0], OTHER_START_PRICE)

    # --- additions beyond the contract (all with defaults) ---
    price_precision: int = 1
    quantity_precision: int = 4
    min_notional: Decimal = Decimal(2)
    max_leverage: int = 125
    default_leverage: int = 5
    ping_interval_s: float = 5.0
    """Server ``Ping`` cadence; a connection is dropped after 3 unanswered pings."""
    config_push_interval_s: float = 5.0
    """ACCOUNT_CONFIG_UPDATE cadence on user streams (BingX: on connect and every 5 s); 0 = on connect only."""
    listen_key_ttl_s: float = 3600.0
    rate_limit_per_s: float = 20.0
    """Per-endpoint token bucket: generous, so a normal bot never hits it."""
    rate_limit_burst: float = 40.0
    recv_window_ms: int = 5000
    push_timeout_s: float = 5.0
    """``advance()`` waits at most this long for a socket to take its frames (a client that stopped reading)."""
