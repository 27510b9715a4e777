"""BingX swap API constants: hosts, paths, rate-limit budgets. Facts: ../shared/docs/bingx-protocol.md."""

from __future__ import annotations

from typing import Final

LIVE_REST: Final = "https://open-api.bingx.com"
LIVE_WS: Final = "wss://open-api-swap.bingx.com/swap-market"
VST_REST: Final = "https://open-api-vst.bingx.com"
"""The demo ("virtual USDT") host: the default for `mode = "live"` until `host = "live"` is set."""
VST_WS: Final = "wss://vst-open-api-ws.bingx.com/swap-market"

SERVER_TIME: Final = "/openApi/swap/v2/server/time"
CONTRACTS: Final = "/openApi/swap/v2/quote/contracts"
KLINES: Final = "/openApi/swap/v3/quote/klines"
PREMIUM_INDEX: Final = "/openApi/swap/v2/quote/premiumIndex"
POSITION_MODE: Final = "/openApi/swap/v1/positionSide/dual"
LEVERAGE: Final = "/openApi/swap/v2/trade/leverage"
MARGIN_TYPE: Final = "/openApi/swap/v2/trade/marginType"
ORDER: Final = "/openApi/swap/v2/trade/order"
OPEN_ORDERS: Final = "/openApi/swap/v2/trade/openOrders"
ALL_ORDERS: Final = "/openApi/swap/v2/trade/allOrders"
FILL_HISTORY: Final = "/openApi/swap/v2/trade/fillHistory"
POSITIONS: Final = "/openApi/swap/v2/user/positions"
BALANCE: Final = "/openApi/swap/v3/user/balance"
INCOME: Final = "/openApi/swap/v2/user/income"
FUNDING_RATE: Final = "/openApi/swap/v2/quote/fundingRate"
LISTEN_KEY: Final = "/openApi/user/auth/userDataStream"

RECV_WINDOW_MS: Final = 5000
LISTEN_KEY_RENEW_S: Final = 1800
KLINE_LIMIT: Final = 1440
FUNDING_RATE_LIMIT: Final = 1000
"""The most rows one ``quote/fundingRate`` request returns (default 100)."""

RATE_LIMITS: Final[dict[str, tuple[float, float]]] = {
    # group: (requests per second, burst). BingX's own numbers are ambiguous (protocol page §4), so
    # the budget stays under the most conservative reading: ~5 order operations/s, 2-3 req/s per endpoint.
    "market": (5.0, 5.0),
    "order": (4.0, 4.0),
    "query": (5.0, 5.0),
    "account": (2.0, 2.0),
}
ENDPOINT_GROUP: Final[dict[str, str]] = {
    SERVER_TIME: "market", CONTRACTS: "market", KLINES: "market", PREMIUM_INDEX: "market", FUNDING_RATE: "market",
    INCOME: "query",
    ORDER: "order", POSITION_MODE: "account", LEVERAGE: "account", MARGIN_TYPE: "account", LISTEN_KEY: "account",
    OPEN_ORDERS: "query", ALL_ORDERS: "query", FILL_HISTORY: "query", POSITIONS: "query", BALANCE: "query",
}
