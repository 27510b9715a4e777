"""Done-when 2 of issue 3: an independent client, ccxt's ``bingx`` class, speaks to the simulator.

ccxt signs, encodes, parses and maps errors its own way (it sends everything in the query string,
``clientOrderID``, ``stopLoss`` as a JSON string, ``X-SOURCE-KEY``), so this proves the simulator speaks
BingX as a third party understands it, not only as our adapter does.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest

from exchanges.bingx.simulator import BingXSimulator, SimOptions

ccxt = pytest.importorskip("ccxt", reason="ccxt is a test-only dependency (pip install ccxt==4.5.90)")


@pytest.fixture
def sim() -> Iterator[BingXSimulator]:
    """The simulator on its own event loop in a thread: ccxt's sync client blocks."""
    loop = asyncio.new_event_loop()
    simulator = BingXSimulator(SimOptions(history_bars=300))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(simulator.start(), loop).result(10)
    try:
        yield simulator
    finally:
        asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def client(sim: BingXSimulator) -> ccxt.bingx:
    ex = ccxt.bingx({"apiKey": sim.options.api_key, "secret": sim.options.secret, "timeout": 5000,
                     "options": {"defaultType": "swap"}})
    ex.set_sandbox_mode(True)  # the demo host serves swap only: ccxt loads swap markets alone
    ex.urls["api"] = {section: f"{sim.rest_url}/openApi" for section in ex.urls["api"]}
    return ex


def test_ccxt_bingx_trades_against_the_simulator(sim: BingXSimulator) -> None:
    ex = client(sim)
    markets = ex.load_markets()
    market = markets["BTC/USDT:USDT"]
    assert market["id"] == "BTC-USDT" and market["swap"] and market["linear"]
    assert market["precision"]["price"] == 0.1 and market["precision"]["amount"] == 0.0001

    candles = ex.fetch_ohlcv("BTC/USDT:USDT", "5m", limit=100)
    assert len(candles) == 100
    assert all(b[0] - a[0] == 300_000 for a, b in itertools.pairwise(candles))
    assert candles[-1][0] == sim.market_time_ms

    ex.set_leverage(7, "BTC/USDT:USDT", params={"side": "BOTH"})
    lev = ex.fetch_leverage("BTC/USDT:USDT")
    assert lev["longLeverage"] == 7 and lev["shortLeverage"] == 7

    price = float(sim.mark_price("BTC-USDT"))
    stop_price = round(price * 0.98, 1)
    order = ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01,
                            params={"stopLoss": {"triggerPrice": stop_price}, "clientOrderId": "ccxt-entry-1"})
    assert order["id"] and order["clientOrderId"] == "ccxt-entry-1"

    positions = [p for p in ex.fetch_positions(["BTC/USDT:USDT"]) if p["contracts"]]
    assert len(positions) == 1
    assert positions[0]["side"] == "long" and positions[0]["contracts"] == 0.01

    stops = ex.fetch_open_orders("BTC/USDT:USDT")
    assert len(stops) == 1
    stop = stops[0]
    assert stop["info"]["type"] == "STOP_MARKET" and stop["side"] == "sell"  # ccxt maps the type to "market"
    assert Decimal(str(stop["stopLossPrice"])) == Decimal(str(stop_price))
    assert stop["clientOrderId"] == "ccxt-entry-1-sl"

    fetched = ex.fetch_order(order["id"], "BTC/USDT:USDT")
    assert fetched["status"] == "closed" and fetched["filled"] == 0.01

    canceled = ex.cancel_order(stop["id"], "BTC/USDT:USDT")
    assert canceled["id"] == stop["id"]
    assert ex.fetch_open_orders("BTC/USDT:USDT") == []
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(stop["id"], "BTC/USDT:USDT")

    balance = ex.fetch_balance()
    assert 0 < balance["USDT"]["total"] < 10_000
