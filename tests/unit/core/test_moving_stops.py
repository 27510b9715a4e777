"""Moving stops on the engine bench (paper exchange, virtual clock, stops filled exactly at their price): the
built-in trailing and break-even rules and a strategy's MoveStop, each new stop placed before the old one is
canceled, at most one move per candle, never wider than the configured stop unless asked. Prices by hand: a long
entered at 100, the configured stop 1% below (99.0), the tick 0.1 (a long's stop rounds up, toward the price)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.core.strategy import Decision, Enter, MoveStop
from tests.bench import Bench, Killed, Killing, candle, exact, run

D = Decimal
ENTER: dict[int, Decision] = {2: Enter(side="long", fraction=0.5)}


def stops(bench: Bench) -> list[tuple[str, Decimal]]:
    return sorted((o.client_id, o.stop_price) for o in bench.exchange.core.open_orders("BTC-USDT") if o.role == "stop")


def stop_intents(bench: Bench) -> list[tuple[str, str]]:
    """Each stop placed and each cancel, in journal order: the place-then-cancel sequence."""
    rows = bench.journal.conn.execute("SELECT client_id, command FROM intents WHERE status = 'pending' ORDER BY seq")
    return [("cancel" if "CancelOrder" in command else "place", cid) for cid, command in rows if "-s" in cid]


def test_a_trailing_stop_follows_the_closes_never_back_and_ends_the_trade(tmp_path: Path) -> None:
    async def go() -> Bench:
        bench = Bench(tmp_path, dict(ENTER), moves={"trailing_pct": D("0.01")})
        await bench.start()
        await bench.bars(100.0, 100.0)
        assert stops(bench) == [("t-1-s1", D("99.0"))]
        await bench.bars(102.0)  # 102 x 0.99 = 100.98 -> 101.0
        assert stops(bench) == [("t-1-s2", D("101.0"))]
        assert bench.engine.view().stop_price == 101.0  # what a strategy's own rule starts from
        await bench.bars(104.0)  # 102.96 -> 103.0
        assert stops(bench) == [("t-1-s3", D("103.0"))]
        await bench.bars(103.5)  # 102.465 -> 102.5: farther from the price than 103.0, so not moved
        assert stops(bench) == [("t-1-s3", D("103.0"))]
        qty = bench.engine.pos.rec.open_qty
        await bench.candles(candle(6, 103.5, h=103.5, lo=102.5, c=102.8))
        assert bench.engine.pos.state == "flat" and stops(bench) == []
        fills = await bench.exchange.order_fills("BTC-USDT", "t-1-s3")
        assert [(f.price, f.realized_pnl) for f in fills] == [(D("103.0"), qty * D("3.0"))]
        assert await bench.violations() == []
        return bench

    bench = run(go())
    assert stop_intents(bench) == [("place", "t-1-s1"), ("place", "t-1-s2"), ("cancel", "t-1-s1"),
                                   ("place", "t-1-s3"), ("cancel", "t-1-s2")]
    assert bench.transitions().count(("protected", "move_stop", "protected")) == 2


def test_break_even_moves_the_stop_to_the_entry_once(tmp_path: Path) -> None:
    async def go() -> None:
        bench = Bench(tmp_path, dict(ENTER), moves={"break_even_at_pct": D("0.01")})
        await bench.start()
        await bench.bars(100.0, 100.0, 100.9)  # 0.9% in profit: not yet
        assert stops(bench) == [("t-1-s1", D("99.0"))]
        await bench.bars(101.0, 102.0)  # 1%: to the entry; later closes change nothing
        assert stops(bench) == [("t-1-s2", D("100.0"))]
        assert await bench.violations() == []

    run(go())


def test_a_strategy_moves_its_stop_held_to_the_configured_loss_unless_it_says_widen(tmp_path: Path) -> None:
    async def go() -> None:
        script: dict[int, Decision] = {**ENTER, 3: MoveStop(price=95.0), 4: MoveStop(price=99.55),
                                       5: MoveStop(price=101.0), 6: MoveStop(price=95.0, widen=True)}
        bench = Bench(tmp_path, script)
        await bench.start()
        await bench.bars(100.0, 100.0, 100.0)  # 95 is wider than the configured 99.0: held there, no move
        assert stops(bench) == [("t-1-s1", D("99.0"))]
        await bench.bars(100.0)  # 99.55 rounds up to 99.6
        assert stops(bench) == [("t-1-s2", D("99.6"))]
        await bench.bars(100.0)  # above the price: a stop there would fire at once, so no move
        assert stops(bench) == [("t-1-s2", D("99.6"))]
        await bench.bars(100.0)  # widen: explicitly asked
        assert stops(bench) == [("t-1-s3", D("95.0"))]
        assert await bench.violations() == []

    run(go())


def test_a_strategys_move_and_the_built_in_rules_make_one_move_on_a_candle(tmp_path: Path) -> None:
    async def go() -> None:
        bench = Bench(tmp_path, {**ENTER, 3: MoveStop(price=99.5)}, moves={"trailing_pct": D("0.01")})
        await bench.start()
        await bench.bars(100.0, 100.0)
        before = len(bench.transitions())
        await bench.bars(101.0)  # the strategy's 99.5, then the trailing rule's 99.99 -> 100.0: one move
        moves = [t for t in bench.transitions()[before:] if t[1] == "move_stop"]
        assert moves == [("protected", "move_stop", "protected")]
        assert stops(bench) == [("t-1-s2", D("100.0"))]
        assert await bench.violations() == []

    run(go())


@pytest.mark.parametrize("when", ["before", "after"])
def test_killed_in_the_middle_of_a_stop_move_the_restart_finishes_it(tmp_path: Path, when: str) -> None:
    async def go() -> None:
        ex = Killing(exact())
        ex.kill_at = (when, "t-1-s2")  # the moved stop: committed and not sent, or placed and its ack lost
        bench = Bench(tmp_path, dict(ENTER), moves={"trailing_pct": D("0.01")}, exchange=ex)
        await bench.start()
        await bench.bars(100.0, 100.0)
        with pytest.raises(Killed):
            await bench.bars(102.0)
        assert stops(bench) == ([("t-1-s1", D("99.0"))] if when == "before"
                                else [("t-1-s1", D("99.0")), ("t-1-s2", D("101.0"))])  # never without one
        bench.engine.close()
        await bench.start()  # recovery: the new stop placed (or found live), then the old one canceled
        assert stops(bench) == [("t-1-s2", D("101.0"))]
        assert bench.engine.pos.rec.stop_id == "t-1-s2" and ex.order_count("t-1-s2") == 1
        assert await bench.violations() == []

    run(go())
