"""The account's state as BingX's REST payloads: orders, positions, balance, fills (protocol page §3), and
the one place that decides the JSON type of every value whose type changed across BingX's eras (§0).

Decimals go out as plain strings (never exponents). Ids, times, envelope codes, a few numbers, the
place-order reply and attached stopLoss/takeProfit are :class:`Wire` values: :class:`Dialect` renders them
through :data:`DIALECT` when a reply or push is encoded, in one era for the whole message. Order sides are
derived from the matching core's position side: an order opening a long or reducing a short buys.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from gatebot.core.events import ZERO, OrderFilled
from gatebot.exchanges.paper.matching import Order

if TYPE_CHECKING:
    from gatebot.simulators.bingx.options import Wire as WireOption
    from gatebot.simulators.bingx.server import BingXSimulator

REST_STATUS = {"new": "PENDING", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED",
               "canceled": "CANCELLED", "expired": "EXPIRED"}
WORKING = {"STOP_MARKET": "NEW", "TAKE_PROFIT_MARKET": "NEW"}
"""§0: a working conditional order reads NEW on REST (a working LIMIT reads PENDING)."""
WS_STATUS = {"new": "NEW", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED", "canceled": "CANCELED",
             "expired": "EXPIRED"}
INTERNAL_PREFIXES = ("~", "manual-")
"""Core client ids the simulator made up for orders that carried none: shown as "" on the wire."""


def num(value: Decimal | float | int, places: int | None = None) -> str:
    """A plain decimal string without trailing zeros: exact (money the core booked goes out unrounded, so a
    client summing fees and PnL from the wire agrees with the account to the last digit), or rounded to
    ``places`` for derived figures (unrealised PnL, ratios, averages)."""
    d = value if isinstance(value, Decimal) else Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if places is not None:
        d = d.quantize(Decimal(1).scaleb(-places))
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --- the dialect (protocol §0) ---------------------------------------------------------------------

Era = Literal["numeric", "string"]
ERAS: tuple[Era, ...] = ("numeric", "string")
Kind = Literal["id", "time", "code", "number", "flag", "order", "bracket", "placed_bracket"]


class Wire:
    """A value whose JSON form depends on the era, rendered when its message is encoded."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: Kind, value: Any) -> None:
        self.kind, self.value = kind, value


bracket_decoder = msgspec.json.Decoder(float_hook=Decimal)
"""An attached stopLoss / takeProfit: its prices exact (a JSON number never passes through a float)."""


def _bracket(text: str, number: Callable[[Decimal], Any]) -> dict[str, Any]:
    """An attached stopLoss/takeProfit as an object (``number`` renders its prices and quantity), empty
    fields when none was attached (the request's JSON was validated when the order was placed)."""
    spec: dict[str, Any] = bracket_decoder.decode(text) if text else {}
    return {"type": str(spec.get("type", "")), "quantity": number(Decimal(spec.get("quantity", 0))),
            "stopPrice": number(Decimal(spec.get("stopPrice", 0))), "price": number(Decimal(0)),
            "workingType": str(spec.get("workingType", "")), "stopGuaranteed": ""}


def _json_number(value: Decimal) -> msgspec.Raw:
    """A JSON number with the value's own digits (never through a float)."""
    return msgspec.Raw(num(value).encode())


DIALECT: dict[Era, dict[Kind, Callable[[Any], Any]]] = {
    "numeric": {"id": int, "time": int, "code": int, "number": lambda v: v, "flag": bool,
                "order": lambda o: {"order": o}, "bracket": lambda t: _bracket(t, _json_number), "placed_bracket": str},
    "string": {"id": str, "time": str, "code": str, "number": num, "flag": lambda v: "true" if v else "false",
               "order": lambda o: o, "bracket": lambda t: _bracket(t, num),
               "placed_bracket": lambda t: _bracket(t, num) if t else ""},
}
"""What each kind of :class:`Wire` value looks like in each era (as tests/captures show them): ids
(orderId, o.i, triggerOrderId, positionID), times (an order's time/updateTime), envelope codes, numbers
(position leverage and liquidationPrice, contract fields, priceRate), flags (an order's stopGuaranteed),
the place-order reply (``data.order`` or bare ``data``), an order's stopLoss/takeProfit (an object, its
numbers as numbers or strings) and the place reply's (JSON text; an object of strings, "" for none)."""


class Dialect:
    """Encodes replies and pushes in the configured era; ``mixed`` draws one era per message from a
    generator per channel (a REST path, the user stream) seeded with the simulator's seed, so the same
    requests get the same forms whatever else runs in between. A message without :class:`Wire` values
    draws nothing."""

    def __init__(self, wire: WireOption, seed: int) -> None:
        self.wire = wire
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._channel = ""
        self._row: dict[Kind, Callable[[Any], Any]] | None = None
        self._encoder = msgspec.json.Encoder(enc_hook=self._render)

    def era(self, channel: str) -> Era:
        if self.wire != "mixed":
            return self.wire
        rng = self._rngs.get(channel)
        if rng is None:
            rng = self._rngs[channel] = random.Random(f"{self.seed}:{channel}")
        return rng.choice(ERAS)

    def encode(self, obj: Any, channel: str) -> bytes:
        """``obj`` as JSON, every :class:`Wire` value in it rendered in one era."""
        self._channel, self._row = channel, None
        try:
            return self._encoder.encode(obj)
        finally:
            self._row = None

    def _render(self, obj: Any) -> Any:
        if not isinstance(obj, Wire):
            raise NotImplementedError(f"cannot encode {type(obj).__name__}")
        if self._row is None:
            self._row = DIALECT[self.era(self._channel)]
        return self._row[obj.kind](obj.value)


class Bare:
    """A reply that is not wrapped in the envelope (listenKey POST, marginType POST)."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body = body
        self.status = status


def code(value: int, msg: str = "", **rest: Any) -> dict[str, Any]:
    """An envelope (or its data-less form): ``code`` 0 or "0" by era (protocol §0)."""
    return {"code": Wire("code", value), "msg": msg, **rest}


# --- payloads -------------------------------------------------------------------------------------


def wire_cid(client_id: str) -> str:
    return "" if client_id.startswith(INTERNAL_PREFIXES) else client_id


def wire_side(order: Order) -> str:
    return "BUY" if (order.side == "long") != order.reduce_only else "SELL"


def wire_position_side(sim: BingXSimulator, order: Order) -> str:
    meta = sim.meta.get(order.order_id)
    if meta is not None:
        return meta.position_side
    return order.side.upper() if sim.core.account.hedge_mode else "BOTH"


def fill_totals(fills: list[OrderFilled]) -> tuple[Decimal, Decimal, Decimal]:
    """(quote value, realised PnL, fees paid) of an order's fills."""
    return (sum((f.qty * f.price for f in fills), ZERO), sum((f.realized_pnl for f in fills), ZERO),
            sum((f.fee for f in fills), ZERO))


def order_view(sim: BingXSimulator, order: Order) -> dict[str, Any]:
    meta = sim.meta.get(order.order_id)
    quote, pnl, fees = fill_totals(sim.core.fills_of(order.client_id))
    cid = wire_cid(order.client_id)
    return {
        "symbol": order.symbol, "orderId": Wire("id", order.order_id), "side": wire_side(order),
        "positionSide": wire_position_side(sim, order), "type": order.type, "origQty": num(order.qty),
        "price": num(order.price or order.avg_price), "executedQty": num(order.filled_qty),
        "avgPrice": num(order.avg_price),
        "cumQuote": num(quote), "stopPrice": num(order.stop_price) if order.stop_price else "",
        "profit": num(pnl), "commission": num(-fees), "status": rest_status(order),
        "time": Wire("time", order.time),
        "updateTime": Wire("time", meta.update_time if meta and meta.update_time else order.time),
        "clientOrderId": cid, "leverage": f"{sim.core.leverage(order.symbol)}X",
        "workingType": meta.working_type if meta else ("MARK_PRICE" if order.stop_price else ""),
        "reduceOnly": order.reduce_only and not sim.core.account.hedge_mode,
        "closePosition": "true" if meta and meta.close_position else "false",
        "triggerOrderId": Wire("id", meta.derived_id if meta else 0), "stopGuaranteed": Wire("flag", False),
        "positionID": Wire("id", 0), "stopLoss": Wire("bracket", meta.stop_loss if meta else ""),
        "takeProfit": Wire("bracket", meta.take_profit if meta else ""),
    }


def rest_status(order: Order) -> str:
    return WORKING.get(order.type, "PENDING") if order.status == "new" else REST_STATUS[order.status]


def placed_view(sim: BingXSimulator, order: Order) -> Wire:
    """The place-order reply (``data.order`` or bare ``data`` by era): the request echoed (``clientOrderID``
    spelling, the attached brackets as sent)."""
    meta = sim.meta.get(order.order_id)
    view = order_view(sim, order)
    view.update(quantity=num(order.qty), clientOrderID=view["clientOrderId"], timeInForce="GTC",
                priceRate=Wire("number", 0), stopLoss=Wire("placed_bracket", meta.stop_loss if meta else ""),
                takeProfit=Wire("placed_bracket", meta.take_profit if meta else ""), orderID=str(order.order_id))
    return Wire("order", view)


def unrealized(sim: BingXSimulator, symbol: str, side: str, qty: Decimal, entry: Decimal) -> Decimal:
    price = sim.core.sync().last_price.get(symbol, entry)
    return (price - entry) * qty if side == "long" else (entry - price) * qty


def position_rows(sim: BingXSimulator, symbol: str | None) -> list[dict[str, Any]]:
    core = sim.core
    rows = []
    for h in core.account.positions:
        if h.qty <= 0 or (symbol and h.symbol != symbol):
            continue
        lev = core.leverage(h.symbol)
        mark = core.sync().last_price.get(h.symbol, h.entry_price)
        upnl = unrealized(sim, h.symbol, h.side, h.qty, h.entry_price)
        margin = h.qty * h.entry_price / lev
        rows.append({
            "positionId": str(zlib.crc32(f"{h.symbol}:{h.side}".encode())), "symbol": h.symbol, "currency": "USDT",
            "positionAmt": num(h.qty), "availableAmt": num(h.qty), "positionSide": h.side.upper(),
            "isolated": sim.margin_type.get(h.symbol, "CROSSED") != "CROSSED", "avgPrice": num(h.entry_price),
            "initialMargin": num(margin, 4), "margin": num(margin, 4), "leverage": Wire("number", lev),
            "unrealizedProfit": num(upnl, 4),
            "realisedProfit": num(sim.mapper.realised.get((h.symbol, h.side), ZERO), 4),
            "liquidationPrice": Wire("number", 0), "pnlRatio": num(upnl / margin if margin else ZERO, 4),
            "maxMarginReduction": "0", "riskRate": "0", "markPrice": num(mark), "positionValue": num(h.qty * mark, 4),
            "onlyOnePosition": not core.account.hedge_mode, "updateTime": sim.now_ms(),
        })
    return rows


def balance_row(sim: BingXSimulator) -> dict[str, Any]:
    core = sim.core
    acct = core.sync()
    upnl = sum((unrealized(sim, h.symbol, h.side, h.qty, h.entry_price) for h in acct.positions), ZERO)
    return {
        "userId": "1", "asset": "USDT", "balance": num(acct.balance, 4), "equity": num(acct.balance + upnl, 4),
        "unrealizedProfit": num(upnl, 4), "realisedProfit": num(sum(sim.mapper.realised.values(), ZERO), 4),
        "availableMargin": num(core.available(), 4), "usedMargin": num(core.used_margin(), 4),
        "freezedMargin": num(core.frozen_margin(), 4), "shortUid": "1",
    }


BEIJING = timezone(timedelta(hours=8))


def fill_times(ts_ms: int) -> dict[str, str]:
    """A fill's times as BingX writes them (protocol §3.17): ``filledTime`` in UTC+8 with its offset, and
    ``filledTm`` the same UTC+8 wall clock with a misleading ``Z``."""
    wall = datetime.fromtimestamp(ts_ms / 1000, tz=BEIJING)
    return {"filledTm": wall.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "filledTime": wall.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0800"}


def fill_order_row(sim: BingXSimulator, order: Order, fill: OrderFilled) -> dict[str, Any]:
    """One row of ``allFillOrders`` (§3.17): no trade id, no side."""
    meta = sim.meta.get(order.order_id)
    order_id = meta.derived_id if meta and meta.derived_id else order.order_id
    return {**fill_times(fill.ts), "volume": num(fill.qty), "price": num(fill.price),
            "amount": num(fill.qty * fill.price), "commission": num(-fill.fee), "currency": "USDT",
            "orderId": str(order_id), "liquidatedPrice": "", "liquidatedMarginRatio": "",
            "clientOrderID": wire_cid(order.client_id), "symbol": order.symbol}


INCOME_TYPES = ("FUNDING_FEE", "REALIZED_PNL", "TRADING_FEE")


def income_rows(sim: BingXSimulator, symbol: str | None, kind: str | None, start: int | None, end: int | None,
                limit: int) -> list[dict[str, Any]]:
    """The account's fund flow (``/openApi/swap/v2/user/income``, protocol page §3.1): every funding payment
    (``FUNDING_FEE``, its ``time`` the funding time) and, from the fills, ``REALIZED_PNL`` and ``TRADING_FEE``;
    ``income`` is signed as the balance moved (a payment is negative). Oldest first, at most ``limit``."""
    core = sim.core
    rows: list[dict[str, Any]] = []
    if kind in (None, "", "FUNDING_FEE"):
        for f in core.account.funding:
            rows.append({"symbol": f.symbol, "incomeType": "FUNDING_FEE", "income": num(-f.paid), "asset": "USDT",
                         "info": "Funding Fee", "time": f.funding_time,
                         "tranId": f"{f.funding_time}_{f.symbol}_{f.side}", "tradeId": f"{f.funding_time}_{f.symbol}"})
    if kind in (None, "", "REALIZED_PNL", "TRADING_FEE"):
        for fill in core.account.fills:
            order = core.order(fill.client_id)
            if order is None:
                continue
            for what, amount in (("REALIZED_PNL", fill.realized_pnl), ("TRADING_FEE", -fill.fee)):
                if kind in (None, "", what) and amount:
                    rows.append({"symbol": order.symbol, "incomeType": what, "income": num(amount), "asset": "USDT",
                                 "info": what.replace("_", " ").title(), "time": fill.ts,
                                 "tranId": f"{what[0]}{fill.trade_id}", "tradeId": fill.trade_id})
    rows = [r for r in rows if (not symbol or r["symbol"] == symbol) and (start is None or r["time"] >= start)
            and (end is None or r["time"] <= end)]
    rows.sort(key=lambda r: r["time"])
    return rows[:limit]


def funding_rate_rows(sim: BingXSimulator, symbol: str, start: int | None, end: int | None,
                      limit: int) -> list[dict[str, Any]]:
    """Funding-rate history (``/openApi/swap/v2/quote/fundingRate``): the funding times the market has
    passed, each with the rate settled (or due) then; the newest ``limit`` unless ``startTime`` is given."""
    schedule = sim.funding
    now = sim.markets[symbol].market_time
    last = schedule.last_time(now if end is None else min(end, now))
    first = start if start is not None else last - (limit - 1) * schedule.step_ms
    times = schedule.times(first - 1, last)[:limit]
    return [{"symbol": symbol, "fundingRate": num(schedule.rate_at(t)), "fundingTime": t} for t in times]


def fill_row(sim: BingXSimulator, order: Order, fill: OrderFilled) -> dict[str, Any]:
    meta = sim.meta.get(order.order_id)
    order_id = meta.derived_id if meta and meta.derived_id else order.order_id
    return {
        **fill_times(fill.ts),
        "volume": num(fill.qty), "qty": num(fill.qty), "price": num(fill.price), "quoteQty": num(fill.qty * fill.price),
        "amount": num(fill.qty * fill.price), "commission": num(-fill.fee), "commissionAsset": "USDT",
        "realisedPNL": num(fill.realized_pnl), "orderId": str(order_id), "tradeId": fill.trade_id,
        "symbol": order.symbol, "role": "taker", "side": wire_side(order).lower(),
        "positionSide": wire_position_side(sim, order).lower(), "clientOrderID": wire_cid(order.client_id),
        "ts": fill.ts,
    }
