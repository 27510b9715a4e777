"""The simulator's request authentication (simulators/bingx/auth_check.py) over loopback: signed requests
accepted, bad ones rejected with BingX's codes, a form body concatenated with the query verified."""

from __future__ import annotations

import time

import yarl

from gatebot.exchanges.bingx import constants as C
from gatebot.exchanges.bingx.auth import signed_query
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.unit.simulators.bingx.clients import SL, Client, D, entry, run, sl_json, with_sim


def test_signed_requests_accepted_and_bad_ones_rejected_with_bingx_codes() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        assert (await c.ok("GET", C.BALANCE))[0]["asset"] == "USDT"
        key = {"X-BX-APIKEY": sim.options.api_key}
        now = int(time.time() * 1000)
        q = signed_query({"timestamp": now, "symbol": "BTC-USDT"}, sim.options.secret)
        status, r = await c.raw("GET", C.POSITIONS, q)
        assert status == 200 and r["code"] == 100413  # no key
        status, r = await c.raw("GET", C.POSITIONS, q, {"X-BX-APIKEY": "other"})
        assert r["code"] == 100413
        status, r = await c.raw("GET", C.POSITIONS, q.rsplit("&signature=", 1)[0], key)
        assert r["code"] == 100412
        altered = q.replace("BTC-USDT", "ETH-USDT")
        assert (await c.raw("GET", C.POSITIONS, altered, key))[1]["code"] == 100001
        old = signed_query({"timestamp": now - 10_000, "symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, old, key))[1]["code"] == 100421
        future = signed_query({"timestamp": now + 5_000, "symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, future, key))[1]["code"] == 100421
        window = signed_query({"timestamp": now - 10_000, "recvWindow": 60_000}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, window, key))[1]["code"] == 0
        no_ts = signed_query({"symbol": "BTC-USDT"}, sim.options.secret)
        assert (await c.raw("GET", C.POSITIONS, no_ts, key))[1]["code"] == 100421
        # the JSON value is signed raw and sent encoded: accepted
        data = await c.ok("POST", SL, **entry(stopLoss=sl_json(D(50000))))
        assert data["order"]["clientOrderID"] == "e-1"
    run(lambda: with_sim(SimOptions(), body))


def test_form_body_and_query_concatenation_is_verified() -> None:
    async def body(sim: BingXSimulator, c: Client) -> None:
        from gatebot.exchanges.bingx.auth import sign
        now = int(time.time() * 1000)
        query, form = f"symbol=BTC-USDT&timestamp={now}", "side=BOTH&leverage=7"
        sig = sign(sim.options.secret, query + form)
        url = yarl.URL(f"{sim.rest_url}{C.LEVERAGE}?{query}", encoded=True)
        async with c.session.post(url, data=f"{form}&signature={sig}", headers={
                "X-BX-APIKEY": sim.options.api_key, "Content-Type": "application/x-www-form-urlencoded"}) as r:
            reply = await r.json()
        assert reply["code"] == 0 and reply["data"]["leverage"] == 7, reply
    run(lambda: with_sim(SimOptions(), body))
