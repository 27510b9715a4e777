"""Property (hypothesis): the BingX simulator accepts every signed request and rejects any altered byte."""

from __future__ import annotations

import time
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatebot.exchanges.bingx.auth import signed_query
from gatebot.simulators.bingx import SimOptions


@settings(max_examples=150, deadline=None)
@given(params=st.dictionaries(st.sampled_from(["symbol", "side", "quantity", "clientOrderId", "stopLoss", "type"]),
                              st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                                             blacklist_characters="&=?#%+"), min_size=1,
                                      max_size=12), max_size=6),
       data=st.data())
def test_simulator_accepts_every_signed_request_and_rejects_any_altered_byte(params: dict[str, str],
                                                                            data: st.DataObject) -> None:
    from gatebot.simulators.bingx.auth_check import ApiError, check
    options = SimOptions()
    now = int(time.time() * 1000)
    query = signed_query({**params, "timestamp": now}, options.secret)
    decoded = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    check(options, api_key=options.api_key, params=decoded, query=query, body="", now_ms=now)
    i = data.draw(st.integers(0, len(query) - 1))
    new = data.draw(st.sampled_from("abcXYZ019-_.~"))
    altered = query[:i] + new + query[i + 1:]
    if urllib.parse.unquote(altered) == urllib.parse.unquote(query):
        return  # e.g. "%C2" -> "%c2": the same request once decoded, which is what BingX signs
    with pytest.raises(ApiError) as err:
        check(options, api_key=options.api_key, params=dict(urllib.parse.parse_qsl(altered, keep_blank_values=True)),
              query=altered, body="", now_ms=now)
    assert err.value.code in (100001, 100412, 100421)
