"""One owner per account and symbol, on the paper exchange: a new journal on a used account, two journals
on one account, a journal restored from an older backup, a leverage changed by hand.

Each journal here has an epoch, as the runner gives one (core/ids.py): ids are ``t-<epoch>-<seq>-<role><n>``.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from gatebot.core import ids
from gatebot.core.engine import AdoptionRequired, InstanceHalted
from gatebot.core.events import OrderFilled, StreamUp, SubmitStop
from gatebot.core.invariants import check, shared_claims
from gatebot.core.journal import Journal
from gatebot.core.strategy import Enter, Exit
from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions
from tests.bench import SYMBOL, Bench, _exchange_with, run

A, B = "aaaaa", "bbbbb"


def _bench(tmp: Path, name: str, exchange: PaperExchange, **kw: object) -> Bench:
    (tmp / name).mkdir(exist_ok=True)
    return Bench(tmp / name, kw.pop("script", {}), exchange=exchange, **kw)  # type: ignore[arg-type]


async def _protected(tmp: Path, exchange: PaperExchange | None = None) -> Bench:
    """A journal of epoch A that entered long and is protected by its stop ``t-aaaaa-1-s1``."""
    ex = exchange or PaperExchange(PaperOptions())
    bench = _bench(tmp, "a", ex, script={2: Enter(side="long", fraction=0.5)}, epoch=A)
    await bench.start()
    await bench.bars(100.0, 100.0)
    assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.stop_id == f"t-{A}-1-s1"
    return bench


def _order_ids(ex: PaperExchange) -> list[str]:
    return sorted(o.client_id for o in ex.core.open_orders(SYMBOL))


def test_a_new_journal_on_an_account_holding_another_journal_s_position_is_refused_then_adopts_when_told(
        tmp_path: Path) -> None:
    """Finding: a user set the state folder aside and started afresh; the new journal counted from 1 again,
    canceled the old journal's live stop and took the old orders' fills for its own. Now it refuses, and
    with --adopt takes the position over explicitly: its own stop first, the old one canceled after."""

    async def go() -> None:
        ex = await _exchange_with("3", extra_stop="t-9-s1")  # a long and the stop of a journal from before epochs
        with pytest.raises(AdoptionRequired, match=r"is new, but the account holds a long position of 3, order "
                                                   r"t-9-s1 on BTC-USDT .*gatebot run --adopt"):
            await _bench(tmp_path, "fresh", ex, epoch=B).start()
        assert _order_ids(ex) == ["t-9-s1"] and (await ex.position(SYMBOL, "long")).qty == 3, "nothing touched"

        bench = _bench(tmp_path, "adopting", ex, epoch=B, adopt=True)
        await bench.start()
        r = bench.engine.pos.rec
        assert bench.engine.pos.state == "protected" and r.stop_id == f"t-{B}-1-s1" and r.open_qty == 3
        assert _order_ids(ex) == [f"t-{B}-1-s1"], "the old stop is canceled once the new one is live"
        assert await bench.violations() == []
        assert bench.transitions()[:2] == [("flat", "adopt", "entering"), ("entering", "stop_confirmed", "protected")]

    run(go())


def test_a_journal_that_traded_halts_on_another_journal_s_orders_and_touches_nothing(tmp_path: Path) -> None:
    """Finding: two bots on one account (separate state folders, one config) each took the other's
    position and orders for their own. Journal B (it traded before) meets A's stop: it halts naming it,
    cancels nothing, adopts nothing; A's check (I6) names B's leftovers as another journal's."""

    async def go() -> None:
        a = await _protected(tmp_path)
        ex = a.exchange
        b = _bench(tmp_path, "b", ex, epoch=B, sent=(f"t-{B}-0-x1",), foreign_policy="adopt")
        with pytest.raises(InstanceHalted, match=rf"order t-{A}-1-s1 on BTC-USDT belongs to another journal of this "
                                                 rf"instance \(epoch {A}, this journal's is {B}\)"):
            await b.start()
        assert _order_ids(ex) == [f"t-{A}-1-s1"] and b.transitions() == []
        assert await a.violations() == []
        ex.core.submit(SubmitStop(client_id=f"t-{B}-3-s1", symbol=SYMBOL, side="long", qty=Decimal(1),
                                  stop_price=Decimal(50)), 0)
        assert [v.invariant for v in await a.violations()] == ["I6"]

    run(go())


def test_a_fill_of_another_journal_s_order_is_never_booked_and_halts_once_at_rest(tmp_path: Path) -> None:
    """Events are routed by instance name: another journal's (same name, other epoch) reach this engine.
    They used to be booked as stray fills of this journal (a phantom trade in its report)."""

    async def go() -> None:
        a = await _protected(tmp_path)
        foreign = OrderFilled(client_id=f"t-{B}-1-e1", trade_id="b1", qty=Decimal(2), price=Decimal(100),
                              cum_qty=Decimal(2), final=True)
        a.engine.post(foreign)
        with pytest.raises(InstanceHalted, match="belongs to another journal"):
            await a.engine.drain()
        assert not a.journal.is_booked(foreign.client_id, "b1")
        assert a.journal.conn.execute("SELECT count(*) FROM fills WHERE client_id LIKE ?",
                                      (f"t-{B}-%",)).fetchone()[0] == 0

    run(go())


def test_a_journal_restored_from_an_older_backup_halts_instead_of_guessing(tmp_path: Path) -> None:
    """Finding: a journal restored from an older backup canceled the live stop, re-adopted the position
    under an old number, had its new stop refused as a duplicate id and took the old dead stop's id as
    confirmation: a long without a stop while the journal said protected. Its next ids are known to the
    exchange: it halts and leaves everything as it is."""

    async def go() -> None:
        ex = PaperExchange(PaperOptions())
        bench = _bench(tmp_path, "a", ex, script={2: Enter(side="long", fraction=0.5), 4: Exit(reason="x"),
                                                  6: Enter(side="long", fraction=0.5), 8: Exit(reason="x"),
                                                  10: Enter(side="long", fraction=0.5)}, epoch=A)
        await bench.start()
        backups = {name: tmp_path / name for name in ("fresh", "flat_1", "flat_2")}
        for folder in backups.values():
            folder.mkdir()
        _backup(bench.journal, backups["fresh"] / "t.sqlite")  # nothing traded yet
        await bench.bars(100.0, 100.0, 101.0, 102.0)
        _backup(bench.journal, backups["flat_1"] / "t.sqlite")  # after the first trade
        await bench.bars(102.0, 102.0, 103.0, 104.0)
        _backup(bench.journal, backups["flat_2"] / "t.sqlite")  # after the second

        async def restore(name: str, pattern: str) -> None:
            restored = Bench(backups[name], {}, exchange=ex, epoch=A)
            before = _order_ids(ex), (await ex.position(SYMBOL, "long")).qty
            with pytest.raises(InstanceHalted, match=r"t.sqlite is behind the exchange: it never sent "
                                                     rf"t-aaaaa-{pattern}, which carries its epoch"):
                await restored.start()
            restored.engine.close()
            restored.journal.close()
            assert (_order_ids(ex), (await ex.position(SYMBOL, "long")).qty) == before, f"{name}: nothing touched"
            await ex.start(bench.engine.post)

        # Every order of the later trades is done: only the ids the journal would use next tell.
        await restore("fresh", "1-e1")
        await restore("flat_1", "2-e1")
        await bench.bars(104.0, 104.0)
        assert bench.engine.pos.state == "protected" and bench.engine.pos.rec.seq == 3
        await restore("flat_2", "3-[es]1")  # a live stop of a position it never opened as well

    run(go())


def _backup(journal: Journal, to: Path) -> None:
    dst = sqlite3.connect(to)
    journal.conn.backup(dst)
    dst.close()


def test_a_leverage_changed_by_hand_is_set_back_at_the_next_reconcile(tmp_path: Path) -> None:
    """Finding: a leverage changed by hand on the exchange went unnoticed until the next restart (new
    positions at 20x while configured for 4x). Every reconcile re-verifies it and journals the repair."""

    async def go() -> None:
        a = await _protected(tmp_path)
        a.exchange.core.account.leverage[SYMBOL] = 20  # by hand, in the exchange's app
        a.engine.post(StreamUp(stream="user"))
        await a.engine.drain()
        assert a.exchange.core.leverage(SYMBOL) == 4
        (detail,) = a.journal.conn.execute(
            "SELECT message FROM rejections WHERE trigger = 'settings_restored'").fetchone()
        assert detail == "BTC-USDT leverage 20x -> 4x"

    run(go())


def test_journals_claiming_one_position_between_them_are_reported() -> None:
    held = {("BTC-USDT", "short"): Decimal("0.8")}
    claims = {"a": ("BTC-USDT", "short", Decimal("0.8")), "b": ("BTC-USDT", "short", Decimal("0.8"))}
    ((names, v),) = shared_claims(claims, held)
    assert names == ["a", "b"] and v.invariant == "I6" and "0.8 + 0.8 of the 0.8" in str(v)
    shares = {"a": ("BTC-USDT", "short", Decimal("0.3")), "b": ("BTC-USDT", "short", Decimal("0.5"))}
    assert shared_claims(shares, held) == [], "two instances of a hedge-mode config share a position"


def test_ids_of_the_journal_s_orders_carry_its_epoch(tmp_path: Path) -> None:
    async def go() -> None:
        a = await _protected(tmp_path)
        for cid in a.journal.client_ids():
            p = ids.parse(cid)
            assert p is not None and (p.instance, p.epoch) == ("t", A)
        assert await check(a.journal, a.exchange, instance="t", symbol=SYMBOL) == []

    run(go())
