"""BingX signing: the protocol page's vectors A-H, the official vectors, and server-side verification."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gatebot.exchanges.bingx.auth import SigningError, fmt, payload, sign, signed_query, verify

SECRET = "TEST_SECRET_456"
T = 1700000000000
STOP = {"type": "STOP_MARKET", "stopPrice": Decimal(60000), "workingType": "MARK_PRICE"}
LIMITS = [
    {"symbol": "BTC-USDT", "type": "LIMIT", "side": "BUY", "positionSide": "LONG", "quantity": Decimal("0.001"),
     "price": Decimal(50000)},
    {"symbol": "BTC-USDT", "type": "LIMIT", "side": "BUY", "positionSide": "LONG", "quantity": Decimal("0.001"),
     "price": Decimal(49000)},
]
VECTORS = {
    "A": ({"symbol": "BTC-USDT", "side": "BUY", "positionSide": "LONG", "type": "MARKET",
           "quantity": Decimal("0.001"), "timestamp": T},
          "64038ef9432856af9179612841a054e985952b8154d14bbd58f05db5a0c5ec1c"),
    "B": ({"symbol": "BTC-USDT", "side": "SELL", "positionSide": "LONG", "type": "STOP_MARKET",
           "stopPrice": Decimal(60000), "workingType": "MARK_PRICE", "closePosition": True,
           "clientOrderID": "bot-sl-0001", "timestamp": T},
          "eab756e331c2a806871f9781528f7dfc5674328a8df5ef65c7404d7f5ef9776f"),
    "C": ({"symbol": "BTC-USDT", "side": "BUY", "positionSide": "LONG", "type": "MARKET",
           "quantity": Decimal("0.001"), "stopLoss": STOP, "timestamp": T},
          "5b5a052899f05a916e50e24c9b19af0f0c00de103684f2b13cd1646f7b21cc5f"),
    "D": ({"symbol": "BTC-USDT", "recvWindow": 5000, "timestamp": T},
          "6cc3bb153e28949c62687b95f53294aceb59e905dfad1fbf6ae19d71944b9257"),
    "E": ({"batchOrders": LIMITS, "timestamp": T}, "673da022ab01c8686230af063343b8f768ef2e8df745630846d76a996f14c8a5"),
    "F": ({"timestamp": T}, "1f9a4f0b8e4853817b9ff0cebb0c30dc54958d7512c1e7b85dfae45ca7fb4bc1"),
    "G": ({"symbol": "BTC-USDT", "side": "LONG", "leverage": 10, "timestamp": T},
          "841da36cc8919d0960c4dcdbfe5e29432a500eb770a62bf26203513fca3a3811"),
    "H": ({"symbol": "BTC-USDT", "clientOrderId": "bot-entry-0001", "timestamp": T},
          "f22c7c8b5d74f9b40bb01409653f47c7aa7232a5bb5d6f857b7591eba0e6a33c"),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_protocol_vectors(name: str) -> None:
    params, expected = VECTORS[name]
    assert sign(SECRET, payload(params)) == expected
    query = signed_query(params, SECRET)
    assert query.endswith(f"&signature={expected}")
    assert verify(SECRET, query)


def test_vector_c_is_sent_url_encoded_and_signed_raw() -> None:
    query = signed_query(VECTORS["C"][0], SECRET)
    assert "stopLoss=%7B%22type%22%3A%22STOP_MARKET%22%2C%22stopPrice%22%3A60000%2C" in query
    assert payload(VECTORS["C"][0]).count('"stopPrice":60000') == 1


def test_official_vectors_including_query_plus_body_concatenation() -> None:
    secret = "mheO6dR8ovSsxZQCOYEFCtelpuxcWGTfHw7te326y6jOwq5WpvFQ9JNljoTwBXZGv5It07m9RXSPpDQEK2w"
    assert sign(secret, "symbol=BTC-USDT&timestamp=1667872120843&side=LONG&leverage=6") == (
        "4f581ecdb1fa09b9d6e57886b6f70cffed17f82b93399722939e49a38edec2bf")
    sig = "8b756b01e7a30f02e19c58a91ab01b29528694316b08a51ecb8dd072942bd47d"
    assert verify(secret, f"symbol=BTC-USDT&timestamp=1668159715051&signature={sig}", "side=LONG&leverage=6")
    assert sign(secret, "leverage=6&side=LONG&symbol=BTC-USDT&timestamp=1667872120843") == (
        "feef56d6d6e5c9bbd6d5bcf10743cd993db26cd88d8f9ee4fe9aa8fb49407dff")


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("1E-5"), "0.00001"), (1e-05, "0.00001"), (Decimal("60000.0"), "60000.0"), (True, "true"),
    (False, "false"), (12, "12"), (0.1, "0.1"), ({"a": Decimal("1E-7")}, '{"a":0.0000001}'),
])
def test_numbers_are_plain_decimals(value: object, text: str) -> None:
    assert fmt(value) == text
    assert "e" not in fmt(value).lower().replace("true", "").replace("false", "")


@pytest.mark.parametrize("bad", ["a&b=c", "x=1", "id?", "#x", "line\nbreak"])
def test_values_that_would_inject_parameters_are_refused(bad: str) -> None:
    with pytest.raises(SigningError):
        signed_query({"clientOrderId": bad, "timestamp": T}, SECRET)


