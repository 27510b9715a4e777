"""The simulator's order endpoints (simulators/bingx/trading.py): entries with attached stops, stops triggered on
the price path and reported under each switch, hedge and one-way rules, order errors, duplicates and cancels."""

from __future__ import annotations

from typing import Any

from gatebot.exchanges.bingx import constants as C
from gatebot.simulators.bingx import BingXSimulator, SimOptions, Switches
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, run, sl_json, user_stream, with_sim


def test_market_entry_with_attached_stop_and_stop_triggered_on_the_path() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        user = await user_stream(sim, c)
        price = sim.mark_price("BTC-USDT")
        stop = (price * D("0.999")).quantize(D("0.1"))
        placed = (await c.ok("POST", SL, **entry(qty="0.05", cid="E-1", stopLoss=sl_json(stop))))["order"]
        assert placed["clientOrderID"] == "e-1" and placed["orderId"] > 2**53 and placed["status"] == "FILLED"
        assert D(str(placed["stopLoss"]["stopPrice"])) == stop and placed["takeProfit"] is None
        pos = await c.ok("GET", C.POSITIONS, symbol="BTC-USDT")
        assert len(pos) == 1 and pos[0]["positionAmt"] == "0.05" and pos[0]["positionSide"] == "LONG"
        assert pos[0]["onlyOnePosition"] is True
        opens = (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]
        assert [(o["type"], o["clientOrderId"], o["side"], o["positionSide"], D(o["stopPrice"]), o["status"])
                for o in opens] == [("STOP_MARKET", "e-1-sl", "SELL", "BOTH", stop, "NEW")]  # §0: a working stop
        await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" for x in m))
        kinds = [(u["o"]["c"], u["o"]["x"], u["o"]["X"]) for u in user.of("ORDER_TRADE_UPDATE")]
        assert kinds == [("e-1", "NEW", "NEW"), ("e-1", "TRADE", "FILLED"), ("e-1-sl", "NEW", "NEW")]
        # play candles until the path crosses the stop
        for _ in range(200):
            if not (await c.ok("GET", C.OPEN_ORDERS, symbol="BTC-USDT"))["orders"]:
                break
            await sim.advance(1)
        stop_order = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="e-1-sl"))["order"]
        assert stop_order["status"] == "FILLED" and D(stop_order["avgPrice"]) <= stop
        await user.wait(lambda m: any(x["o"]["c"] == "e-1-sl" and x["o"]["x"] == "TRADE"
                                      for x in m if x.get("e") == "ORDER_TRADE_UPDATE"))
        fill = [u["o"] for u in user.of("ORDER_TRADE_UPDATE") if u["o"]["x"] == "TRADE"][-1]
        assert fill["o"] == "STOP_MARKET" and fill["i"] == stop_order["orderId"] and fill["X"] == "FILLED"
        assert D(fill["n"]) < 0 and fill["z"] == "0.05" and D(fill["L"]) == D(stop_order["avgPrice"])
        last_acct = user.of("ACCOUNT_UPDATE")[-1]["a"]
        assert last_acct["P"] == [{**last_acct["P"][0], "ps": "BOTH", "pa": "0"}] and last_acct["m"] == "ORDER"
        assert await c.ok("GET", C.POSITIONS, symbol="BTC-USDT") == []
        fills = (await c.ok("GET", C.FILL_HISTORY, symbol="BTC-USDT"))["fill_history_orders"]
        assert len(fills) == 2 and all(D(f["commission"]) < 0 for f in fills)
        assert [f["tradeId"] for f in fills] == ["1", "2"]
        bal = (await c.ok("GET", C.BALANCE))[0]
        total = sum(D(f["realisedPNL"]) + D(f["commission"]) for f in fills)
        assert D(bal["balance"]) == (D(10000) + total).quantize(D("0.0001"))
        assert D(last_acct["B"][0]["wb"]) == sim.core.account.balance
        # the core's own invariants-facing view agrees
        view = sim.account_view()
        assert (await view.position("BTC-USDT", "long")).qty == 0
        await user.close()
    run(lambda: with_sim(SimOptions(history_bars=5, volatility=0.004), body))


def test_triggered_stop_reported_under_each_switch() -> None:
    async def scenario(switches: Switches) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        async def body(sim: BingXSimulator, c: Client) -> None:
            user = await user_stream(sim, c)
            price = sim.mark_price("BTC-USDT")
            await c.ok("POST", SL, **entry(cid="e-2", stopLoss=sl_json(price - 100, clientOrderId="My-Stop")))
            sim.faults.set_mark_price("BTC-USDT", price - 150)
            await sim.streams.flush()
            await user.wait(lambda m: any(x.get("e") == "ACCOUNT_UPDATE" and x["a"]["P"][0]["pa"] == "0" for x in m))
            out.extend(u["o"] for u in user.of("ORDER_TRADE_UPDATE"))
            q = (await c.ok("GET", SL, symbol="BTC-USDT", clientOrderId="my-stop"))["order"]
            out.append({"query": q})
            fills = (await c.ok("GET", C.FILL_HISTORY, symbol="BTC-USDT"))["fill_history_orders"]
            out.append({"fills": fills})
            await user.close()
        await with_sim(SimOptions(history_bars=5, switches=switches), body)
        return out

    async def all_switches() -> None:
        same = await scenario(Switches())
        trade = [o for o in same if o.get("x") == "TRADE"][-1]
        assert trade["c"] == "my-stop" and trade["o"] == "STOP_MARKET"
        assert same[-2]["query"]["status"] == "FILLED" and same[-2]["query"]["triggerOrderId"] == 0

        derived = await scenario(Switches(stop_fill_event="derived_id"))
        trade = [o for o in derived if o.get("x") == "TRADE"][-1]
        stop_id = derived[-2]["query"]["orderId"]
        assert trade["c"] == "" and trade["o"] == "MARKET" and trade["ti"] == stop_id and trade["i"] != stop_id
        assert derived[-2]["query"]["triggerOrderId"] == trade["i"]
        assert derived[-1]["fills"][-1]["orderId"] == str(trade["i"])

        dropped = await scenario(Switches(drop_trigger_fill_events=True))
        assert not [o for o in dropped if o.get("c") == "my-stop" and o.get("x") == "TRADE"]
        assert dropped[-2]["query"]["status"] == "FILLED"
    run(all_switches)


def test_hedge_and_one_way_rules() -> None:
    async def one_way(sim: BingXSimulator, c: Client) -> None:
        r = await c.call("POST", SL, **entry(ps="LONG"))
        assert r["code"] == 109400 and "One-way" in r["msg"]
        r = await c.call("POST", SL, **{k: v for k, v in entry().items() if k != "positionSide"})
        assert r["code"] == 109400  # omitted positionSide defaults to LONG
        assert (await c.call("POST", C.LEVERAGE, symbol="BTC-USDT", side="LONG", leverage=5))["code"] == 109400
        await c.ok("POST", SL, **entry(cid="ow-1"))
        r = await c.call("POST", SL, **entry(cid="ow-2", side="BUY", reduceOnly=True))
        assert r["code"] == 101290  # reduce-only buy against a long
        closed = await c.ok("POST", SL, **entry(cid="ow-3", side="SELL", reduceOnly=True))
        assert closed["order"]["status"] == "FILLED"
        assert await c.ok("GET", C.POSITIONS) == []
        r = await c.call("POST", SL, **entry(cid="ow-4", side="SELL", reduceOnly=True))
        assert r["code"] == 101205
        # an opposite order without reduceOnly nets, then opens the other side
        await c.ok("POST", SL, **entry(cid="ow-5", qty="0.01"))
        await c.ok("POST", SL, **entry(cid="ow-6", qty="0.03", side="SELL"))
        pos = await c.ok("GET", C.POSITIONS)
        assert [(p["positionSide"], p["positionAmt"]) for p in pos] == [("SHORT", "0.02")]

    async def hedge(sim: BingXSimulator, c: Client) -> None:
        assert (await c.ok("GET", C.POSITION_MODE))["dualSidePosition"] == "true"
        r = await c.call("POST", SL, **entry(ps="BOTH"))
        assert r["code"] == 109400 and "Hedge" in r["msg"]
        r = await c.call("POST", SL, **entry(ps="LONG", reduceOnly=True))
        assert r["code"] == 109400 and "ReduceOnly" in r["msg"]
        for side in ("LONG", "SHORT"):
            assert (await c.ok("POST", C.LEVERAGE, symbol="BTC-USDT", side=side, leverage=3))["leverage"] == 3
        assert (await c.call("POST", C.LEVERAGE, symbol="BTC-USDT", side="BOTH", leverage=3))["code"] == 109400
        await c.ok("POST", SL, **entry(cid="h-1", ps="LONG"))
        await c.ok("POST", SL, **entry(cid="h-2", ps="SHORT", side="SELL"))
        pos = {p["positionSide"]: p["positionAmt"] for p in await c.ok("GET", C.POSITIONS)}
        assert pos == {"LONG": "0.01", "SHORT": "0.01"}
        price = sim.mark_price("BTC-USDT")
        stop = await c.ok("POST", SL, symbol="BTC-USDT", side="BUY", positionSide="SHORT", type="STOP_MARKET",
                          stopPrice=price + 500, quantity=D("0.01"), clientOrderId="h-sl", workingType="MARK_PRICE")
        assert stop["order"]["positionSide"] == "SHORT" and stop["order"]["side"] == "BUY"
        await c.ok("POST", SL, **entry(cid="h-3", ps="LONG", side="SELL"))  # SELL + LONG closes
        pos = {p["positionSide"]: p["positionAmt"] for p in await c.ok("GET", C.POSITIONS)}
        assert pos == {"SHORT": "0.01"}
        r = await c.call("POST", C.POSITION_MODE, dualSidePosition="false")
        assert r["code"] == 109400  # positions / orders open
        lev = await c.ok("GET", C.LEVERAGE, symbol="BTC-USDT")
        assert (lev["longLeverage"], lev["shortLeverage"]) == (3, 3)

    run(lambda: with_sim(SimOptions(history_bars=5), one_way))
    run(lambda: with_sim(SimOptions(history_bars=5, hedge_mode=True), hedge))


def test_order_errors_duplicates_cancel_and_close_position_stops() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        await c.ok("POST", SL, **entry(cid="dup"))
        r = await c.call("POST", SL, **entry(cid="DUP"))
        assert r["code"] == 101481  # lower-cased by the server: the same id
        assert (await c.call("GET", SL, symbol="BTC-USDT", orderId=123))["code"] == 109421
        assert (await c.call("GET", SL, symbol="BTC-USDT", clientOrderId="nope"))["code"] == 109421
        price = sim.mark_price("BTC-USDT")
        r = await c.call("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                         stopPrice=price + 100, quantity=D("0.01"), clientOrderID="wrong-side")
        assert r["code"] == 110411
        stop = await c.ok("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                          stopPrice=price - 1000, closePosition="true", clientOrderID="whole")
        assert stop["order"]["origQty"] == "0.01" and stop["order"]["closePosition"] == "true"
        r = await c.call("POST", SL, symbol="BTC-USDT", side="SELL", positionSide="BOTH", type="STOP_MARKET",
                         stopPrice=price - 900, closePosition="true", clientOrderID="whole-2")
        assert r["code"] == 110406
        canceled = await c.ok("DELETE", SL, symbol="BTC-USDT", orderId=stop["order"]["orderId"])
        assert canceled["order"]["status"] == "CANCELLED"
        r = await c.call("DELETE", SL, symbol="BTC-USDT", orderId=stop["order"]["orderId"])
        assert r["code"] == 109421  # already gone
        r = await c.call("DELETE", SL, symbol="BTC-USDT", clientOrderId="never")
        assert r["code"] == 109421
        assert (await c.call("POST", SL, **entry(cid="tiny", qty="0.00001")))["code"] == 101400
        assert (await c.call("POST", SL, **entry(cid="huge", qty="100")))["code"] == 101204
        hist = (await c.ok("GET", C.ALL_ORDERS, symbol="BTC-USDT"))["orders"]
        assert {o["clientOrderId"]: o["status"] for o in hist} == {"dup": "FILLED", "whole": "CANCELLED"}
        test = await c.ok("POST", SL + "/test", **entry(cid="t-1"))
        assert test["order"]["clientOrderId"] == "t-1" and sim.core.order("t-1") is None
    run(lambda: with_sim(SimOptions(history_bars=5), body))
