"""The simulator's payloads (simulators/bingx/views.py) in each of BingX's wire dialects: one era per message,
and in each era the JSON types of that era's real captures."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import CAPTURES
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, run, sl_json, user_stream, with_sim


@pytest.mark.parametrize("wire", ["numeric", "string", "mixed"])
def test_each_wire_dialect_speaks_one_era_per_message(wire: Any) -> None:
    """Protocol §0: ``numeric`` and ``string`` speak one era throughout (the client checks every message's
    forms: ids, times, codes, numbers, the bare or wrapped place reply, brackets); ``mixed`` draws an era
    per message from generators seeded with the simulator's seed: both appear, and the same seed gives
    the same sequence. Era-independent facts of the captures hold in each dialect."""
    options = SimOptions(history_bars=5, symbols=["BTC-USDT", "ETH-USDT"], restricted_symbols=["ETH-USDT"],
                         wire=wire)
    seen: list[dict[str, Any]] = []

    async def body(sim: BingXSimulator, c: Client) -> None:
        seen.append(await dialect_scenario(sim, c))

    run(lambda: with_sim(options, body))
    out = seen[0]
    placed, stop = out["placed"], out["stop"]
    assert placed["clientOrderID"] == "w-1" and placed["orderId"] > 2**53 and placed["status"] == "FILLED"
    def bracket(b: dict[str, Any]) -> tuple[str, Decimal, str]:
        return b["type"], D(str(b["stopPrice"])), b["workingType"]
    assert bracket(placed["stopLoss"]) == bracket(out["entered"]["stopLoss"]) == ("STOP_MARKET", D(stop["stopPrice"]),
                                                                                  "MARK_PRICE")
    assert placed["takeProfit"] is None and out["entered"]["takeProfit"] is None and stop["stopLoss"] is None
    assert out["test"]["clientOrderId"] == "w-t" and out["test"]["orderId"] == 0
    assert stop == {**out["queried"], "updateTime": stop["updateTime"]} and stop["status"] == "NEW"
    assert (stop["triggerOrderId"], stop["positionID"]) == (0, 0) and stop["time"] == placed["time"]
    assert (out["long"]["leverage"], out["long"]["liquidationPrice"]) == (5, 0)
    assert [(k["symbol"], k["quantityPrecision"], k["pricePrecision"], k["apiStateOpen"]) for k in out["contracts"]] \
        == [("BTC-USDT", 4, 1, "true"), ("ETH-USDT", 4, 1, "false")]
    assert out["unknown"] == [109425] * 4
    restricted = out["restricted"]
    assert (restricted["code"], restricted["msg"]) == (100421, "This pair is currently restricted from API trading")
    # one-way: the net position, BOTH, negative for the short the reversal left
    positions = [p for u in out["pushes"] if u.get("e") == "ACCOUNT_UPDATE" for p in u["a"]["P"]]
    assert [(p["ps"], p["pa"]) for p in positions] == [("BOTH", "0.01"), ("BOTH", "-0.02")]
    # T never goes back within one order (ccxt drops an update whose T does)
    times: dict[int, list[int]] = {}
    for u in out["pushes"]:
        if u.get("e") == "ORDER_TRADE_UPDATE":
            times.setdefault(u["o"]["i"], []).append(u["o"]["T"])
            assert u["T"] == u["o"]["T"]
    assert len(times) == 3 and all(t == sorted(t) and t[0] > 0 for t in times.values())
    eras = set(out["rest_eras"]) | set(out["push_eras"])
    if wire != "mixed":
        assert eras == {wire}
        return
    assert eras == {"numeric", "string"} and set(out["push_eras"]) == {"numeric", "string"}
    run(lambda: with_sim(options, body))
    assert (seen[1]["rest_eras"], seen[1]["push_eras"]) == (out["rest_eras"], out["push_eras"]), "seeded"
    run(lambda: with_sim(msgspec.structs.replace(options, seed=7), body))
    assert (seen[2]["rest_eras"], seen[2]["push_eras"]) != (out["rest_eras"], out["push_eras"])


ERA_CAPTURES: dict[str, dict[str, str]] = {
    "numeric": {"place": "rest/place-wrapped-numbers-jkorf", "query": "rest/query-numbers-pending-jkorf",
                "open": "rest/open_orders-jkorf", "cancel": "rest/cancel-jkorf",
                "contracts": "rest/contracts-numbers-jkorf", "positions": "rest/positions-numbers-one-way-ccxt"},
    "string": {"place": "rest/place-bare-unified-stoploss-static", "query": "rest/query-string-ids-static",
               "stop": "rest/query-stop-market-new-static", "all": "rest/all_orders-string-ids-static",
               "contracts": "rest/contracts-strings-ccxt", "positions": "rest/positions-string-leverage-static",
               "margin": "rest/margin_type-string-code-static", "mode": "rest/position_mode-string-code-ccxt",
               "fill": "user/order_trade_update-fill-one-way-ccxt-issue",
               "position": "user/account_update-position-ccxt-pro"},
}
"""Per era, what the simulator says -> a real capture of that era saying it (tests/captures)."""
ERA_OVERLAP = {("string", "contracts", ".code")}
"""ccxt's contracts sample has string fields under a numeric code: BingX's eras overlap; the simulator's
two do not reproduce every mix of them (the codec reads any)."""


def json_kinds(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where ours and a capture differ in JSON type, over the keys both have (first rows of lists)."""
    def kind(v: Any) -> str:
        return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else type(v).__name__
    if kind(ours) != kind(theirs):
        return [path]
    if isinstance(ours, dict):
        return [p for k in sorted(ours.keys() & theirs.keys()) for p in json_kinds(ours[k], theirs[k], f"{path}.{k}")]
    if isinstance(ours, list) and ours and theirs:
        return json_kinds(ours[0], theirs[0], f"{path}[0]")
    return []


@pytest.mark.parametrize("era", ["numeric", "string"])
def test_each_era_sends_the_json_types_of_that_eras_captures(era: Any) -> None:
    """The simulator in one era, reply by reply and push by push, against a real reply of that era: every
    field both have has the capture's JSON type (number, string, bool, object) at every depth."""
    ours: dict[str, Any] = {}

    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        price = sim.mark_price("BTC-USDT")
        steps: list[tuple[str, str, str, dict[str, Any]]] = [
            ("place", "POST", SL, entry(cid="k-1", stopLoss=sl_json(price - 100))),
            ("query", "GET", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1"}),
            ("stop", "GET", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1-sl"}),
            ("open", "GET", C.OPEN_ORDERS, {"symbol": "BTC-USDT"}),
            ("positions", "GET", C.POSITIONS, {"symbol": "BTC-USDT"}),
            ("mode", "GET", C.POSITION_MODE, {}), ("margin", "GET", C.MARGIN_TYPE, {"symbol": "BTC-USDT"}),
            ("cancel", "DELETE", SL, {"symbol": "BTC-USDT", "clientOrderId": "k-1-sl"}),
            ("all", "GET", C.ALL_ORDERS, {"symbol": "BTC-USDT"})]
        for name, method, path, params in steps:
            await c.ok(method, path, **params)
            ours[name] = c.last
        await c.raw("GET", C.CONTRACTS)
        ours["contracts"] = c.last
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" for x in m))
        ours["fill"] = next(u for u in user.raw if u.get("e") == "ORDER_TRADE_UPDATE" and u["o"]["x"] == "TRADE")
        ours["position"] = next(u for u in user.raw if u.get("e") == "ACCOUNT_UPDATE")
        await user.close()

    run(lambda: with_sim(SimOptions(history_bars=5, wire=era), body))
    differ = {}
    for name, capture in ERA_CAPTURES[era].items():
        theirs = json.loads(json.loads((CAPTURES / f"{capture}.json").read_text())["body"])
        paths = [p for p in json_kinds(ours[name], theirs) if (era, name, p) not in ERA_OVERLAP]
        if paths:
            differ[capture] = paths
    assert differ == {}


async def dialect_scenario(sim: BingXSimulator, c: Client) -> dict[str, Any]:
    """Every reply and push kind with era-dependent values once; what the client saw."""
    user = await user_stream(sim, c)
    price = sim.mark_price("BTC-USDT")
    placed = (await c.ok("POST", SL, **entry(qty="0.01", cid="w-1", stopLoss=sl_json(price - 100))))["order"]
    test = (await c.ok("POST", SL + "/test", **entry(cid="w-t")))["order"]
    (stop,) = (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]
    queried = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="w-1-sl"))["order"]
    entered = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="w-1"))["order"]
    (long,) = await c.ok("GET", C.POSITIONS, symbol="BTC-USDT")
    await c.ok("POST", SL, **entry(qty="0.03", side="SELL", cid="w-2"))  # reverses to a short of 0.02
    contracts = (await c.raw("GET", C.CONTRACTS))[1]["data"]
    unknown = [(await c.call("GET", SL, symbol="NOPE-USDT", clientOrderId="w-1"))["code"],
               (await c.call("GET", C.POSITIONS, symbol="NOPE-USDT"))["code"],
               (await c.raw("GET", C.KLINES, "symbol=NOPE-USDT&interval=5m"))[1]["code"],
               (await c.call("POST", SL, **{**entry(cid="w-3"), "symbol": "NOPE-USDT"}))["code"]]
    restricted = await c.call("POST", SL, **{**entry(cid="w-4"), "symbol": "ETH-USDT"})
    await user.wait(lambda m: sum(1 for x in m if x.get("e") == "ACCOUNT_UPDATE") >= 2)
    await user.close()
    return {"placed": placed, "test": test, "stop": stop, "queried": queried, "entered": entered, "long": long,
            "contracts": contracts, "unknown": unknown, "restricted": restricted, "pushes": user.messages,
            "rest_eras": c.eras, "push_eras": user.eras}
