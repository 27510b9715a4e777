"""The fault soak's own judgement (tests/chaos/soak.py), without running a soak: a plain unit test, not marked chaos."""

from __future__ import annotations


def test_the_soak_names_a_run_of_candles_without_a_decision_or_a_reason() -> None:
    """The soak's strategy trades on every candle it is flat: a quiet run longer than the limit fails it."""
    from tests.chaos.soak import idle_spans

    class Rows:
        def __init__(self, ts: list[int]) -> None:
            self.conn = self
            self.ts = ts

        def execute(self, _sql: str) -> list[tuple[int]]:
            return [(t,) for t in self.ts]

    candles = [i * 1000 for i in range(40)]
    busy = [t + 5 for t in candles]
    assert idle_spans(Rows(busy), candles, 5) == []  # type: ignore[arg-type]
    quiet = [t for t in busy if not 10_000 <= t < 17_000]  # candles 10..16 journal nothing
    assert idle_spans(Rows(quiet), candles, 5) == [(10, 17)]  # type: ignore[arg-type]
    assert idle_spans(Rows(quiet), candles, 7) == []  # type: ignore[arg-type]
