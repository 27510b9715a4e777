"""Property (hypothesis): candle files parse exactly, whatever valid prices they hold."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatebot.core.market import load_csv
from tests.unit.core.test_market import HEADER

_price = st.decimals(min_value="0.1", max_value="1000000", places=1, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_price, _price, _price, _price), min_size=1, max_size=40))
def test_parsing_is_exact_for_any_valid_file(tmp_path_factory: pytest.TempPathFactory,
                                             quads: list[tuple]) -> None:
    lines, expected = [], []
    for i, quad in enumerate(quads):
        o, c, a, b = quad
        h, lo = max(o, c, a, b), min(o, c, a, b)
        t = 1_700_000_000_000 + i * 300_000
        lines.append(f"{t},{o},{h},{lo},{c},1.5")
        expected.append([t, float(o), float(h), float(lo), float(c), 1.5])
    path = tmp_path_factory.mktemp("p") / "c.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    assert load_csv(path).tolist() == expected
