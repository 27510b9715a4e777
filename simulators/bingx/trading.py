"""Order endpoints (protocol page §3.9-§3.17, §7): BingX's order rules turned into matching-core commands.

One-way mode: ``positionSide=BOTH``; ``reduceOnly=true`` closes, otherwise an opposite order nets.
Hedge mode: ``LONG``/``SHORT``; ``SELL``+``LONG`` and ``BUY``+``SHORT`` close; ``reduceOnly`` is refused.
Protective orders (STOP_MARKET, TAKE_PROFIT_MARKET) always reduce the position their side closes; LIMIT
and TRIGGER_MARKET orders open or reduce as a MARKET order with the same side / positionSide / reduceOnly
would, and rest in the matching core until the price reaches them.
A ``stopLoss`` JSON on a MARKET entry becomes a STOP_MARKET whose client id is the JSON's own
``clientOrderId`` (either spelling) when present, else ``<entry client id>-sl`` (``takeProfit``: ``-tp``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from gatebot.core.events import (
    AnyEvent,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    Side,
    StopSpec,
    SubmitClose,
    SubmitEntry,
    SubmitStop,
)
from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import SigningError, fmt
from gatebot.exchanges.paper.matching import Order
from gatebot.simulators.bingx.auth_check import ApiError
from gatebot.simulators.bingx.views import (
    Wire,
    bracket_decoder,
    fill_order_row,
    fill_row,
    order_view,
    placed_view,
    rest_status,
)

if TYPE_CHECKING:
    from gatebot.simulators.bingx.rest import Handler, Params
    from gatebot.simulators.bingx.server import BingXSimulator

_anon = itertools.count(1)
SEVEN_DAYS_MS = 7 * 86_400_000
THIRTY_DAYS_MS = 30 * 86_400_000
MAX_BATCH_ORDERS = 5
MAX_BATCH_CANCELS = 10


def flag(value: str | None) -> bool:
    return str(value).lower() == "true"


def decimal(p: Params, key: str, *, required: bool, what: str = "") -> Decimal | None:
    text = p.get(key)
    if text is None or text == "":
        if required:
            raise ApiError(109400, f"parameter {key} is must{what}")
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApiError(109400, f"parameter {key} is not a number: {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ApiError(109400, f"parameter {key} must be positive")
    return value


def known_symbol(sim: BingXSimulator, p: Params) -> str:
    """The request's symbol; §0: an unknown one is 109425 "<symbol> not exist"."""
    symbol = p.get("symbol", "")
    if symbol not in sim.markets:
        raise ApiError(109425, f"{symbol} not exist")
    return symbol


def client_id(p: Params | dict[str, Any]) -> str:
    """``clientOrderId`` or ``clientOrderID`` (any casing of the key), lower-cased as BingX stores it."""
    for key, value in p.items():
        if key.lower() == "clientorderid" and value:
            cid = str(value).lower()
            if len(cid) > 40:
                raise ApiError(109400, "clientOrderId length must be 1-40")
            return cid
    return ""


class Kind(NamedTuple):
    protective: bool
    """Always reduces the position its side closes (a stop or take-profit)."""
    price: bool
    """Needs ``price``."""
    stop: bool
    """Needs ``stopPrice``."""


KINDS: dict[str, Kind] = {
    "MARKET": Kind(protective=False, price=False, stop=False),
    "LIMIT": Kind(protective=False, price=True, stop=False),
    "STOP_MARKET": Kind(protective=True, price=False, stop=True),
    "TAKE_PROFIT_MARKET": Kind(protective=True, price=False, stop=True),
    "TRIGGER_MARKET": Kind(protective=False, price=False, stop=True),
}
TIME_IN_FORCE = ("GTC", "IOC", "FOK", "PostOnly")


class Plan(msgspec.Struct, kw_only=True):
    """A validated order request, before the matching core sees it."""

    symbol: str
    side: str
    type: str
    position_side: str
    pos: Side
    """The position side the order opens or reduces."""
    opening: bool
    qty: Decimal | None
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    working_type: str
    close_position: bool
    client_id: str
    stop_loss: dict[str, Any] | None
    take_profit: dict[str, Any] | None
    stop_loss_text: str
    take_profit_text: str


def plan(sim: BingXSimulator, p: Params) -> Plan:
    symbol = known_symbol(sim, p)
    if symbol in sim.options.restricted_symbols:
        raise ApiError(100421, "This pair is currently restricted from API trading")
    inst = sim.core.instruments[symbol]
    side = p.get("side", "").upper()
    if side not in ("BUY", "SELL"):
        raise ApiError(109400, "Invalid parameters, side: This field is required.")
    kind = p.get("type", "").upper()
    spec_kind = KINDS.get(kind)
    if spec_kind is None:
        raise ApiError(109400, f"order type {kind or '(none)'} is not supported by the simulator")
    tif = p.get("timeInForce") or "GTC"
    if tif not in TIME_IN_FORCE:
        raise ApiError(109400, f"timeInForce {tif} is not one of {', '.join(TIME_IN_FORCE)}")
    ps = (p.get("positionSide") or "LONG").upper()  # BingX's default when omitted (§3.9)
    hedge = sim.core.account.hedge_mode
    if hedge and ps not in ("LONG", "SHORT"):
        raise ApiError(109400, "In the Hedge mode, the 'PositionSide' field can only be set to LONG or SHORT.")
    if not hedge and ps != "BOTH":
        raise ApiError(109400, "In the One-way mode, the 'PositionSide' field can only be set to BOTH.")
    reduce_only = flag(p.get("reduceOnly"))
    if hedge and reduce_only:
        raise ApiError(109400, "In the Hedge mode, the 'ReduceOnly' field can not be filled.")
    conditional = spec_kind.protective
    if hedge:
        pos: Side = "long" if ps == "LONG" else "short"
        opening = (side == "BUY") == (ps == "LONG")
    elif conditional or reduce_only:
        pos, opening = ("long" if side == "SELL" else "short"), False
    else:
        pos, opening = ("long" if side == "BUY" else "short"), True
    if conditional and opening:
        raise ApiError(109400, "conditional orders that open a position are not supported by the simulator")
    close_position = flag(p.get("closePosition"))
    if close_position and not conditional:
        raise ApiError(109400, "closePosition is only for STOP_MARKET / TAKE_PROFIT_MARKET")
    qty = decimal(p, "quantity", required=not close_position)
    if qty is not None:
        qty = inst.floor_qty(qty)  # BingX truncates over-precise values silently (§7.4)
        if qty <= 0:
            raise ApiError(101400, f"quantity below the minimum {inst.min_qty}")
    stop_price = decimal(p, "stopPrice", required=spec_kind.stop)
    if stop_price is not None:
        stop_price = inst.round_price(stop_price, up=False)
    price = decimal(p, "price", required=spec_kind.price) if spec_kind.price else None
    if price is not None:
        price = inst.round_price(price, up=False)
    working_type = (p.get("workingType") or "MARK_PRICE").upper()
    if working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
        raise ApiError(109400, f"workingType {working_type} is not supported")
    brackets: dict[str, dict[str, Any] | None] = {}
    for key, expected in (("stopLoss", "STOP_MARKET"), ("takeProfit", "TAKE_PROFIT_MARKET")):
        text = p.get(key) or ""
        brackets[key] = None
        if not text:
            continue
        if kind != "MARKET" or not opening:
            raise ApiError(109400, f"{key} can only be attached to an opening MARKET order in the simulator")
        try:
            spec = bracket_decoder.decode(text)
            price = inst.round_price(Decimal(str(spec["stopPrice"])), up=False)
        except (msgspec.DecodeError, KeyError, TypeError, InvalidOperation):
            raise ApiError(109400, f"{key} must be JSON with a stopPrice") from None
        if str(spec.get("type", expected)).upper() != expected:
            raise ApiError(109400, f"{key} type must be {expected} in the simulator")
        spec["stopPrice"] = price
        brackets[key] = spec
    return Plan(symbol=symbol, side=side, type=kind, position_side=ps, pos=pos, opening=opening, qty=qty,
                price=price, stop_price=stop_price, time_in_force=tif, working_type=working_type,
                close_position=close_position,
                client_id=client_id(p), stop_loss=brackets["stopLoss"], take_profit=brackets["takeProfit"],
                stop_loss_text=p.get("stopLoss") or "", take_profit_text=p.get("takeProfit") or "")


def _rejected(events: list[AnyEvent], cid: str) -> None:
    for ev in events:
        if isinstance(ev, OrderRejected) and ev.client_id == cid:
            raise ApiError(ev.code, ev.reason)


async def place_order(sim: BingXSimulator, p: Params) -> Any:
    pl = plan(sim, p)
    now = sim.now_ms()
    core = sim.core
    cid = pl.client_id or f"~{next(_anon)}"  # the core needs an id; "~..." shows as "" on the wire

    def registered(events: list[AnyEvent]) -> None:
        _rejected(events, cid)
        _register_for(sim, events, pl, cid, now)
        sim.emit(events)

    if pl.type == "MARKET" and pl.opening:
        stop = None
        if pl.stop_loss is not None:
            if sim.faults.stop_rejection is not None:
                code, sim.faults.stop_rejection = sim.faults.stop_rejection, None
                raise ApiError(code, "Stop Loss price should be lower than the current price")
            sl_id = client_id(pl.stop_loss) or f"{cid}-sl"
            stop = StopSpec(client_id=sl_id, price=pl.stop_loss["stopPrice"])
        assert pl.qty is not None
        events = core.submit(SubmitEntry(client_id=cid, symbol=pl.symbol, side=pl.pos, qty=pl.qty, stop=stop), now)
        _rejected(events, cid)
        if pl.take_profit is not None:
            tp_id = client_id(pl.take_profit) or f"{cid}-tp"
            events += core.submit_take_profit(tp_id, pl.symbol, pl.pos, pl.qty, pl.take_profit["stopPrice"], now)
        registered(events)
    elif pl.type in ("LIMIT", "TRIGGER_MARKET"):
        registered(_resting(sim, pl, cid, now))
    elif pl.type == "MARKET":
        held = core.holding(pl.symbol, pl.pos)
        if held is None and core.holding(pl.symbol, "short" if pl.pos == "long" else "long") is not None:
            raise ApiError(101290, "Reduce Only order can only decrease the position")
        assert pl.qty is not None
        registered(core.submit(SubmitClose(client_id=cid, symbol=pl.symbol, side=pl.pos, qty=pl.qty), now))
    else:
        held = core.holding(pl.symbol, pl.pos)
        if pl.close_position:
            if held is None:
                raise ApiError(101205, "No position to close")
            for o in core.open_orders(pl.symbol):
                m = sim.meta.get(o.order_id)
                if m and m.close_position and o.side == pl.pos and o.type == pl.type:
                    raise (ApiError(110406, "Position SL order already exists") if pl.type == "STOP_MARKET"
                           else ApiError(110407, "Position TP order already exists"))
        qty = held.qty if pl.close_position and held is not None else pl.qty
        assert qty is not None and pl.stop_price is not None
        if pl.type == "STOP_MARKET":
            if sim.faults.stop_rejection is not None:
                code, sim.faults.stop_rejection = sim.faults.stop_rejection, None
                raise ApiError(code, "Stop Loss price should be lower than the current price")
            cmd = SubmitStop(client_id=cid, symbol=pl.symbol, side=pl.pos, qty=qty, stop_price=pl.stop_price)
            registered(core.submit(cmd, now))
        else:
            registered(core.submit_take_profit(cid, pl.symbol, pl.pos, qty, pl.stop_price, now))
    order = core.order(cid)
    assert order is not None
    return placed_view(sim, order)


def _resting(sim: BingXSimulator, pl: Plan, cid: str, now: int) -> list[AnyEvent]:
    """A LIMIT or TRIGGER_MARKET order into the core, with its time in force: PostOnly refuses a LIMIT that
    would take; IOC / FOK cancel what did not fill at once (the core has no depth: a marketable LIMIT fills
    whole, so the two are the same here)."""
    core = sim.core
    level = pl.price if pl.type == "LIMIT" else pl.stop_price
    assert level is not None and pl.qty is not None
    if pl.type == "LIMIT" and pl.time_in_force == "PostOnly":
        last = sim.mark_price(pl.symbol)
        if (level >= last) if pl.side == "BUY" else (level <= last):
            raise ApiError(101215, "Post Only order would be filled immediately")
    events = core.submit_resting(cid, pl.symbol, pl.type, pl.pos, pl.qty, level, now,  # type: ignore[arg-type]
                                 reduce_only=not pl.opening)
    order = core.order(cid)
    if pl.time_in_force in ("IOC", "FOK") and order is not None and order.status == "new":
        events += core.cancel(cid, now, "time in force")
    return events


def _register_for(sim: BingXSimulator, events: list[AnyEvent], pl: Plan, core_id: str, now: int) -> None:
    """Keep what BingX echoes (position side as sent, working type, TP/SL JSON) for each new order."""
    from gatebot.simulators.bingx.server import OrderMeta

    for ev in events:
        if not isinstance(ev, OrderAccepted) or ev.order_id in sim.meta:
            continue
        order = sim.core.order(ev.client_id)
        if order is None:
            continue
        main = ev.client_id == core_id
        spec = pl.stop_loss if order.type == "STOP_MARKET" else pl.take_profit
        wt = pl.working_type if main else str((spec or {}).get("workingType", "MARK_PRICE")).upper()
        sim.meta[ev.order_id] = OrderMeta(
            position_side=pl.position_side, working_type=wt if order.stop_price else "",
            close_position=pl.close_position and main, stop_loss=pl.stop_loss_text if main else "",
            take_profit=pl.take_profit_text if main else "", update_time=now)


async def test_order(sim: BingXSimulator, p: Params) -> Any:
    pl = plan(sim, p)
    return Wire("order", {"symbol": pl.symbol, "orderId": Wire("id", 0), "side": pl.side,
                          "positionSide": pl.position_side, "type": pl.type, "clientOrderId": pl.client_id,
                          "clientOrderID": pl.client_id, "workingType": pl.working_type,
                          "quantity": str(pl.qty or 0), "stopPrice": str(pl.stop_price or 0)})


def find(sim: BingXSimulator, p: Params) -> tuple[Order, int | None]:
    """The order a query/cancel names (``orderId`` or ``clientOrderId``); 109421 when there is none.
    The second value is the derived MARKET order id when ``orderId`` named one."""
    symbol = known_symbol(sim, p) if p.get("symbol") else ""
    order: Order | None = None
    derived = None
    if p.get("orderId"):
        try:
            oid = int(p["orderId"])
        except ValueError:
            raise ApiError(109400, "orderId must be an integer") from None
        if oid in sim.derived:
            derived, oid = oid, sim.derived[oid]
        order = next((o for o in sim.core.account.orders if o.order_id == oid), None)
    elif client_id(p):
        order = sim.core.order(client_id(p))
    else:
        raise ApiError(109400, "orderId or clientOrderId is required")
    if order is None or (symbol and order.symbol != symbol):
        raise ApiError(109421, "order not exist")
    return order, derived


async def query_order(sim: BingXSimulator, p: Params) -> Any:
    order, derived = find(sim, p)
    view = order_view(sim, order)
    if derived is not None:
        view.update(orderId=Wire("id", derived), type="MARKET", stopPrice="", clientOrderId="",
                    triggerOrderId=Wire("id", order.order_id))
    return {"order": view}


async def cancel_order(sim: BingXSimulator, p: Params) -> Any:
    order, _ = find(sim, p)
    if order.status not in ("new", "partially_filled"):
        raise ApiError(109421, "order not exist")
    sim.emit(sim.core.cancel(order.client_id, sim.now_ms()))
    return {"order": order_view(sim, order)}


async def cancel_all(sim: BingXSimulator, p: Params) -> Any:
    symbols = [known_symbol(sim, p)] if p.get("symbol") else list(sim.markets)
    done = []
    for s in symbols:
        for o in list(sim.core.open_orders(s)):
            if p.get("type") and o.type != p["type"].upper():
                continue
            sim.emit(sim.core.cancel(o.client_id, sim.now_ms()))
            done.append(order_view(sim, o))
    return {"success": done, "failed": None}


async def open_orders(sim: BingXSimulator, p: Params) -> Any:
    symbols = [known_symbol(sim, p)] if p.get("symbol") else list(sim.markets)
    orders = [o for s in symbols for o in sim.core.open_orders(s)]
    if p.get("type"):
        orders = [o for o in orders if o.type == p["type"].upper()]
    return {"orders": [order_view(sim, o) for o in orders]}


def _window(p: Params, start_key: str, end_key: str, max_ms: int = SEVEN_DAYS_MS) -> tuple[int, int]:
    try:
        start = int(p[start_key]) if p.get(start_key) else 0
        end = int(p[end_key]) if p.get(end_key) else 2**62
    except ValueError:
        raise ApiError(109400, f"{start_key}/{end_key} must be integers") from None
    if p.get(start_key) and p.get(end_key) and end - start > max_ms:
        raise ApiError(109400, f"the query range is more than {max_ms // 86_400_000} days")
    return start, end


async def all_orders(sim: BingXSimulator, p: Params) -> Any:
    start, end = _window(p, "startTime", "endTime")
    limit = min(int(p.get("limit") or 500), 1000)
    orders = [o for o in sim.core.account.orders
              if o.status not in ("new", "partially_filled") and start <= o.time <= end
              and (not p.get("symbol") or o.symbol == p["symbol"])
              and (not p.get("orderId") or o.order_id >= int(p["orderId"]))]
    return {"orders": [order_view(sim, o) for o in orders[-limit:]]}


def _fills(sim: BingXSimulator, p: Params, start: int, end: int) -> Iterator[tuple[Order, OrderFilled]]:
    """The fills ``startTs < time <= endTs`` of the request's symbol / orderId (a derived MARKET id names its
    stop) after ``lastFillId``, oldest first."""
    want = int(p["orderId"]) if p.get("orderId") else None
    if want is not None and want in sim.derived:
        want = sim.derived[want]
    for f in sim.core.account.fills:
        order = sim.core.order(f.client_id)
        if order is None or not start < f.ts <= end or (p.get("symbol") and order.symbol != p["symbol"]):
            continue
        if want is not None and order.order_id != want:
            continue
        if p.get("lastFillId") and int(f.trade_id) <= int(p["lastFillId"]):
            continue
        yield order, f


async def fill_history(sim: BingXSimulator, p: Params) -> Any:
    start, end = _window(p, "startTs", "endTs")
    rows = [fill_row(sim, order, f) for order, f in _fills(sim, p, start, end)]
    size = min(int(p.get("pageSize") or 100), 1000)
    page = max(int(p.get("pageIndex") or 1), 1)
    return {"fill_history_orders": rows[(page - 1) * size: page * size], "total": len(rows)}


async def all_fill_orders(sim: BingXSimulator, p: Params) -> Any:
    """§3.17 ``allFillOrders``: up to 30 days per query (ccxt asks for the last 30 days by default)."""
    if (p.get("tradingUnit") or "COIN").upper() not in ("COIN", "CONT"):
        raise ApiError(109400, "tradingUnit must be COIN or CONT")
    start, end = _window(p, "startTs", "endTs", THIRTY_DAYS_MS)
    return {"fill_orders": [fill_order_row(sim, order, f) for order, f in _fills(sim, p, start, end)]}


def _json_param(p: Params, key: str) -> list[Any]:
    """A parameter that carries a JSON array (``batchOrders``, ``orderIdList``); numbers keep their digits."""
    try:
        value = bracket_decoder.decode(p.get(key) or "")
    except msgspec.DecodeError:
        raise ApiError(109400, f"{key} must be a JSON array") from None
    if not isinstance(value, list):
        raise ApiError(109400, f"{key} must be a JSON array")
    return value


def _order_params(item: Any) -> Params:
    """One ``batchOrders`` element as the parameters of a single order: numbers as their own digits,
    booleans lower-case, a nested stopLoss / takeProfit object as JSON text."""
    if not isinstance(item, dict):
        raise ApiError(109400, "every batchOrders element must be an object")
    try:
        return {str(k): v if isinstance(v, str) else fmt(v) for k, v in item.items()}
    except SigningError as exc:
        raise ApiError(109400, f"batchOrders: {exc}") from None


async def batch_orders(sim: BingXSimulator, p: Params) -> Any:
    """§3.11: up to 5 orders, each placed as alone. Those refused are left out of ``orders`` and listed in
    ``errors`` (code, msg); when every one is refused, the first refusal is the reply (UNCONFIRMED)."""
    items = [_order_params(item) for item in _json_param(p, "batchOrders")]
    if not 1 <= len(items) <= MAX_BATCH_ORDERS:
        raise ApiError(109400, f"batchOrders takes 1 to {MAX_BATCH_ORDERS} orders")
    placed: list[Any] = []
    refused: list[ApiError] = []
    for item in items:
        try:
            placed.append((await place_order(sim, item)).value)
        except ApiError as exc:
            refused.append(exc)
    if not placed:
        raise refused[0]
    errors = [{"code": Wire("code", e.code), "msg": e.msg} for e in refused]
    return {"orders": placed, **({"errors": errors} if errors else {})}


async def cancel_batch(sim: BingXSimulator, p: Params) -> Any:
    """§3.13 ``DELETE batchOrders``: ``orderIdList`` or ``clientOrderIdList`` (either spelling), at most 10."""
    cid_key = next((k for k in p if k.lower() == "clientorderidlist"), "")
    key, values = ("clientOrderId", _json_param(p, cid_key)) if cid_key else ("orderId", _json_param(p, "orderIdList"))
    if not 1 <= len(values) <= MAX_BATCH_CANCELS:
        raise ApiError(109400, f"orderIdList / clientOrderIdList takes 1 to {MAX_BATCH_CANCELS} ids")
    success, failed = [], []
    for value in values:
        try:
            success.append((await cancel_order(sim, {"symbol": p.get("symbol", ""), key: str(value)}))["order"])
        except ApiError as exc:
            failed.append({"orderId": Wire("id", int(value)) if key == "orderId" else Wire("id", 0),
                           "clientOrderId": str(value) if key == "clientOrderId" else "",
                           "errorCode": exc.code, "errorMessage": exc.msg})
    return {"success": success, "failed": failed or None}


async def close_all_positions(sim: BingXSimulator, p: Params) -> Any:
    """§3.18: every position (of ``symbol``) closed at market; ``success`` lists the close orders' ids."""
    symbol = known_symbol(sim, p) if p.get("symbol") else None
    now = sim.now_ms()
    ids = []
    for h in list(sim.core.account.positions):
        if h.qty <= 0 or (symbol is not None and h.symbol != symbol):
            continue
        cid = f"~{next(_anon)}"
        events = sim.core.submit(SubmitClose(client_id=cid, symbol=h.symbol, side=h.side, qty=h.qty), now)
        sim.emit(events)
        order = sim.core.order(cid)
        if order is not None:
            ids.append(Wire("id", order.order_id))
    return {"success": ids, "failed": None}


CANCEL_REPLACE_MODES = ("STOP_ON_FAILURE", "ALLOW_FAILURE")


async def cancel_replace(sim: BingXSimulator, p: Params) -> Any:
    """``POST /openApi/swap/v1/trade/cancelReplace``: cancel ``cancelOrderId`` / ``cancelClientOrderId`` (only
    in a status of ``cancelRestrictions`` when given), then place the order the other parameters describe;
    with STOP_ON_FAILURE a failed cancel places nothing. Each leg reports its own result (UNCONFIRMED: a
    failed leg is reported in the reply, not as the envelope's code)."""
    mode = p.get("cancelReplaceMode", "")
    if mode not in CANCEL_REPLACE_MODES:
        raise ApiError(109400, f"cancelReplaceMode must be one of {', '.join(CANCEL_REPLACE_MODES)}")
    target = {"symbol": p.get("symbol", ""), "orderId": p.get("cancelOrderId", ""),
              "clientOrderId": next((v for k, v in p.items() if k.lower() == "cancelclientorderid"), "")}
    out: dict[str, Any] = {"cancelResult": "true", "cancelMsg": "", "cancelResponse": {}, "replaceResult": "false",
                           "replaceMsg": "", "newOrderResponse": {}}
    try:
        order, _ = find(sim, target)
        allowed = {s.strip().upper() for s in p.get("cancelRestrictions", "").split(",") if s.strip()}
        if allowed and not {rest_status(order), "NEW" if order.status == "new" else ""} & allowed:
            raise ApiError(109400, f"order status {rest_status(order)} is not in cancelRestrictions")
        view = (await cancel_order(sim, target))["order"]
        out["cancelResponse"] = {"cancelClientOrderId": view["clientOrderId"], "cancelOrderId": view["orderId"],
                                 **view}
    except ApiError as exc:
        out.update(cancelResult="false", cancelMsg=exc.msg)
        if mode == "STOP_ON_FAILURE":
            return out
    try:
        fresh = {k: v for k, v in p.items() if not k.startswith("cancel")}
        out.update(replaceResult="true", newOrderResponse=(await place_order(sim, fresh)).value)
    except ApiError as exc:
        out.update(replaceMsg=exc.msg)
    return out


ROUTES: dict[tuple[str, str], tuple[Handler, Any]] = {
    ("POST", C.ORDER): (place_order, "signed"),
    ("POST", C.ORDER + "/test"): (test_order, "signed"),
    ("GET", C.ORDER): (query_order, "signed"),
    ("DELETE", C.ORDER): (cancel_order, "signed"),
    ("DELETE", "/openApi/swap/v2/trade/allOpenOrders"): (cancel_all, "signed"),
    ("GET", C.OPEN_ORDERS): (open_orders, "signed"),
    ("GET", C.ALL_ORDERS): (all_orders, "signed"),
    ("GET", C.FILL_HISTORY): (fill_history, "signed"),
    ("GET", "/openApi/swap/v2/trade/allFillOrders"): (all_fill_orders, "signed"),
    ("POST", "/openApi/swap/v2/trade/batchOrders"): (batch_orders, "signed"),
    ("DELETE", "/openApi/swap/v2/trade/batchOrders"): (cancel_batch, "signed"),
    ("POST", "/openApi/swap/v2/trade/closeAllPositions"): (close_all_positions, "signed"),
    ("POST", "/openApi/swap/v1/trade/cancelReplace"): (cancel_replace, "signed"),
}
