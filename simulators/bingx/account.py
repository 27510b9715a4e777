"""Account endpoints (protocol page §3.6-§3.8, §3.15, §3.16, §6.1): position mode, leverage, margin
type, positions, balance, and the listenKey lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx.auth_check import ApiError
from gatebot.simulators.bingx.trading import known_symbol
from gatebot.simulators.bingx.views import (
    INCOME_TYPES,
    Bare,
    balance_row,
    code,
    income_rows,
    num,
    position_rows,
)

if TYPE_CHECKING:
    from gatebot.simulators.bingx.rest import Handler, Params
    from gatebot.simulators.bingx.server import BingXSimulator


def _busy(sim: BingXSimulator, symbol: str | None = None) -> bool:
    """Positions or working orders (of ``symbol``, or anywhere): mode and margin changes are refused."""
    acct = sim.core.account
    return any(h.qty > 0 and (symbol is None or h.symbol == symbol) for h in acct.positions) or any(
        o.status in ("new", "partially_filled") and (symbol is None or o.symbol == symbol) for o in acct.orders)


async def get_mode(sim: BingXSimulator, p: Params) -> Any:
    return {"dualSidePosition": "true" if sim.core.account.hedge_mode else "false"}


async def set_mode(sim: BingXSimulator, p: Params) -> Any:
    value = p.get("dualSidePosition", "").lower()
    if value not in ("true", "false"):
        raise ApiError(109400, "dualSidePosition must be true or false")
    hedge = value == "true"
    if hedge != sim.core.account.hedge_mode:
        if _busy(sim):
            raise ApiError(109400, "the account has positions or pending orders")
        sim.core.account.hedge_mode = hedge
    return {"dualSidePosition": value}


async def get_leverage(sim: BingXSimulator, p: Params) -> Any:
    symbol = known_symbol(sim, p)
    long_lev, short_lev = sim.leverage_sides[symbol]
    top = sim.options.max_leverage
    return {"longLeverage": long_lev, "shortLeverage": short_lev, "maxLongLeverage": top, "maxShortLeverage": top,
            "availableLongVol": "0", "availableShortVol": "0", "availableLongVal": "0", "availableShortVal": "0",
            "maxPositionLongVal": "0", "maxPositionShortVal": "0"}


async def set_leverage(sim: BingXSimulator, p: Params) -> Any:
    symbol = known_symbol(sim, p)
    side = p.get("side", "").upper()
    if sim.core.account.hedge_mode and side not in ("LONG", "SHORT"):
        raise ApiError(109400, "In the Hedge mode, the 'Side' field can only be set to LONG or SHORT.")
    if not sim.core.account.hedge_mode and side != "BOTH":
        raise ApiError(109400, "In the One-way mode, the 'Side' field can only be set to BOTH.")
    try:
        lev = int(p.get("leverage", ""))
    except ValueError:
        raise ApiError(109400, "leverage must be an integer") from None
    if not 1 <= lev <= sim.options.max_leverage:
        raise ApiError(101414, f"leverage must be within 1..{sim.options.max_leverage}")
    long_lev, short_lev = sim.leverage_sides[symbol]
    long_lev = lev if side in ("LONG", "BOTH") else long_lev
    short_lev = lev if side in ("SHORT", "BOTH") else short_lev
    sim.leverage_sides[symbol] = (long_lev, short_lev)
    sim.core.account.leverage[symbol] = min(long_lev, short_lev)  # the core keeps one: the stricter margin
    sim.streams.publish_user(sim.config_pushes([symbol]))
    return {"leverage": lev, "symbol": symbol, "availableLongVol": "0", "availableShortVol": "0"}


async def get_margin_type(sim: BingXSimulator, p: Params) -> Any:
    return {"marginType": sim.margin_type.get(known_symbol(sim, p), "CROSSED")}


async def set_margin_type(sim: BingXSimulator, p: Params) -> Any:
    symbol = known_symbol(sim, p)
    kind = p.get("marginType", "").upper()
    if kind not in ("ISOLATED", "CROSSED", "SEPARATE_ISOLATED"):
        raise ApiError(109400, "marginType must be ISOLATED, CROSSED or SEPARATE_ISOLATED")
    if kind != sim.margin_type.get(symbol, "CROSSED"):
        if _busy(sim, symbol):
            raise ApiError(109400, "the account has positions or pending orders")
        sim.margin_type[symbol] = kind
        sim.streams.publish_user(sim.config_pushes([symbol]))
    return Bare(code(0))


async def positions(sim: BingXSimulator, p: Params) -> Any:
    return position_rows(sim, known_symbol(sim, p) if p.get("symbol") else None)


async def balance_v3(sim: BingXSimulator, p: Params) -> Any:
    return [balance_row(sim)]


async def balance_v2(sim: BingXSimulator, p: Params) -> Any:
    return {"balance": balance_row(sim)}


async def income(sim: BingXSimulator, p: Params) -> Any:
    kind = p.get("incomeType") or None
    if kind is not None and kind not in INCOME_TYPES:
        raise ApiError(109400, f"incomeType {kind!r} is not served (simulated: {', '.join(INCOME_TYPES)})")
    try:
        start = int(p["startTime"]) if p.get("startTime") else None
        end = int(p["endTime"]) if p.get("endTime") else None
        limit = min(int(p.get("limit") or 100), 1000)
    except ValueError:
        raise ApiError(109400, "invalid startTime/endTime/limit") from None
    return income_rows(sim, p.get("symbol") or None, kind, start, end, limit)


async def listen_key_create(sim: BingXSimulator, p: Params) -> Any:
    return Bare({"listenKey": sim.streams.keys.create()})


def _on_listen_key(p: Params, act: Any) -> Any:
    """PUT / DELETE of a listenKey: 204 without one, 404 when it does not exist (BingX's bare replies)."""
    key = p.get("listenKey", "")
    if not key:
        return Bare(code(0, "no request parameters"), 204)
    if not act(key):
        return Bare(code(100404, "listenKey does not exist"), 404)
    return Bare(code(0))


async def listen_key_extend(sim: BingXSimulator, p: Params) -> Any:
    return _on_listen_key(p, sim.streams.keys.extend)


async def listen_key_delete(sim: BingXSimulator, p: Params) -> Any:
    return _on_listen_key(p, sim.streams.keys.delete)


async def commission_rate(sim: BingXSimulator, p: Params) -> Any:
    """The account's fee rates: one rate for takers and makers in this simulator (numbers, as captured)."""
    rate = msgspec.Raw(num(sim.options.fee_rate).encode())
    return {"commission": {"takerCommissionRate": rate, "makerCommissionRate": rate}}


ROUTES: dict[tuple[str, str], tuple[Handler, Any]] = {
    ("GET", C.POSITION_MODE): (get_mode, "signed"),
    ("POST", C.POSITION_MODE): (set_mode, "signed"),
    ("GET", C.LEVERAGE): (get_leverage, "signed"),
    ("POST", C.LEVERAGE): (set_leverage, "signed"),
    ("GET", C.MARGIN_TYPE): (get_margin_type, "signed"),
    ("POST", C.MARGIN_TYPE): (set_margin_type, "signed"),
    ("GET", C.POSITIONS): (positions, "signed"),
    ("GET", C.BALANCE): (balance_v3, "signed"),
    ("GET", "/openApi/swap/v2/user/balance"): (balance_v2, "signed"),
    ("GET", "/openApi/swap/v2/user/commissionRate"): (commission_rate, "signed"),
    ("GET", C.INCOME): (income, "signed"),
    ("POST", C.LISTEN_KEY): (listen_key_create, "key"),
    ("PUT", C.LISTEN_KEY): (listen_key_extend, "key"),
    ("DELETE", C.LISTEN_KEY): (listen_key_delete, "key"),
}
