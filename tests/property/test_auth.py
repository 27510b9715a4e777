"""Property (hypothesis): any request BingX signing signs verifies, and any altered byte does not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gatebot.exchanges.bingx.auth import signed_query, verify
from tests.unit.exchanges.bingx.test_auth import SECRET

_key = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)


_value = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="&=?#\n\r", blacklist_categories=("Cs",)), max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**9, max_value=10**9),
    st.dictionaries(_key, st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=0,
                                      max_value=10**6), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_key.filter(lambda k: k != "signature"), _value, min_size=1, max_size=8),
       st.data())
def test_any_signed_request_verifies_and_any_altered_byte_does_not(params: dict, data: st.DataObject) -> None:
    query = signed_query(params, SECRET)
    assert verify(SECRET, query)
    i = data.draw(st.integers(min_value=0, max_value=len(query) - 1))
    original = query[i]
    replacement = data.draw(st.sampled_from([c for c in "0123456789abcdefXYZ%_-." if c != original]))
    altered = query[:i] + replacement + query[i + 1:]
    from urllib.parse import unquote

    if unquote(altered) == unquote(query):
        return  # a different percent-encoding of the same bytes is the same request
    assert not verify(SECRET, altered)
