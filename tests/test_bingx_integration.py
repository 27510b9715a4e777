"""The bot against the BingX simulator on loopback: a full trade in each way it can end, in one-way and
hedge mode, with attached and separate stops; I1-I5 checked against the simulator's own state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.config import load_config
from core.invariants import check
from core.journal import Journal
from core.runner import Runner
from exchanges.bingx.simulator import BingXSimulator, SimOptions
from plugins.manager import make_plugin_manager
from tests.helpers import until

SYMBOL = "BTC-USDT"

CONFIG = """
mode = "paper"
state_dir = "{state}"
[journal]
synchronous = "OFF"
[plugins]
modules = ["tests.plugins_for_tests"]
[exchanges.bx]
type = "bingx"
hedge_mode = {hedge}
[exchanges.bx.options]
rest_url = "{rest}"
ws_url = "{ws}"
attached_stop = {attached}
close_candles_by_clock = false
request_timeout_s = 1.0
api_key_env = "SIM_BINGX_KEY"
secret_env = "SIM_BINGX_SECRET"
[[instances]]
name = "it"
exchange = "bx"
strategy = "scripted"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = {params}
protection = {{ leveraged_sl_pct = 0.04, protection_timeout_s = 5 }}
"""


class Session:
    """A simulator, the bot running on it (a task), and ways to wait for what the bot did."""

    def __init__(self, sim: BingXSimulator, runner: Runner, task: asyncio.Task[None], journal_path: Path) -> None:
        self.sim, self.runner, self.task, self.journal_path = sim, runner, task, journal_path

    @property
    def engine(self) -> Any:
        return self.runner.instances[0].engine

    @property
    def state(self) -> str:
        engine = self.engine
        return engine.pos.state if engine is not None else "down"

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        await until(condition, what, task=self.task, timeout=timeout, detail=lambda: f"state {self.state}")

    async def candles_until(self, condition: Callable[[], bool], what: str, limit: int = 20) -> None:
        """Play candles one at a time until ``condition`` (each candle fully handled before the next)."""
        for _ in range(limit):
            if condition():
                return
            before = self.runner.bars
            await self.sim.advance(1)
            await self.until(lambda before=before: self.runner.bars > before, "the candle to reach the bot")
            await self.settle()
        await self.until(condition, what, timeout=5)

    async def settle(self) -> None:
        await self.until(lambda: self.engine is None or self.engine.idle, "the engine to go idle")

    def transitions(self) -> list[tuple[str, str, str]]:
        journal = Journal(self.journal_path, readonly=True)
        try:
            return [tuple(r) for r in journal.conn.execute("SELECT src, trigger, dst FROM transitions ORDER BY seq")]
        finally:
            journal.close()

    async def violations(self) -> list[Any]:
        journal = Journal(self.journal_path, readonly=True)
        try:
            return await check(journal, self.sim.account_view(), instance="it", symbol=SYMBOL)
        finally:
            journal.close()


@asynccontextmanager
async def session(tmp: Path, monkeypatch: pytest.MonkeyPatch, *, hedge: bool = False, attached: bool = True,
                  params: str = "{ enter_on = 1, exit_on = 3 }", sim_options: dict[str, Any] | None = None,
                  ) -> AsyncIterator[Session]:
    options = SimOptions(mode="manual", history_bars=120, hedge_mode=hedge, **(sim_options or {}))
    async with BingXSimulator(options) as sim, bot(tmp, monkeypatch, sim, attached=attached, params=params) as s:
        yield s


@asynccontextmanager
async def bot(tmp: Path, monkeypatch: pytest.MonkeyPatch, sim: BingXSimulator, *, attached: bool = True,
              params: str = "{ enter_on = 1, exit_on = 3 }") -> AsyncIterator[Session]:
    """The bot on a running simulator (which outlives it: a second ``bot`` is a restart on the same journal)."""
    monkeypatch.setenv("SIM_BINGX_KEY", sim.options.api_key)
    monkeypatch.setenv("SIM_BINGX_SECRET", sim.options.secret)
    path = tmp / "bot.toml"
    path.write_text(CONFIG.format(state=tmp / "state", hedge=str(sim.options.hedge_mode).lower(), rest=sim.rest_url,
                                  ws=sim.ws_url, attached=str(attached).lower(), params=params))
    config = load_config(path)
    runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable))
    task = asyncio.create_task(runner.run())
    s = Session(sim, runner, task, tmp / "state" / "it.sqlite")
    try:
        await s.until(lambda: s.engine is not None and s.engine.status == "running", "the bot to start")
        await s.until(lambda: runner.adapters["bx"].market is not None
                      and runner.adapters["bx"].market.connected.is_set(), "the market stream")
        yield s
    finally:
        runner.stop()
        await asyncio.wait_for(task, timeout=15)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


MODES = [pytest.param(False, True, id="one-way-attached"), pytest.param(False, False, id="one-way-separate"),
         pytest.param(True, True, id="hedge-attached"), pytest.param(True, False, id="hedge-separate")]


@pytest.mark.parametrize(("hedge", "attached"), MODES)
def test_a_trade_that_ends_by_exit_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hedge: bool,
                                          attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached) as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert (stop.role, stop.client_id, stop.stop_price) == ("stop", "it-1-s1", s.engine.pos.rec.stop_price)
            await s.candles_until(lambda: s.state == "flat" and s.engine.pos.rec.seq == 1, "flat after the exit")
            assert await s.violations() == []
            assert await s.sim.account_view().open_orders(SYMBOL) == []
        assert ("exiting", "close_filled", "exited_exit") in s.transitions()

    run(go())


@pytest.mark.parametrize(("hedge", "attached"), MODES)
def test_a_trade_that_ends_at_the_exchange_stop_on_the_mark_price(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    hedge: bool, attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            stop = s.engine.pos.rec.stop_price
            s.sim.faults.set_mark_price(SYMBOL, stop - Decimal(50))  # the mark price falls through the stop
            await s.until(lambda: s.state == "flat", "flat after the stop")
            assert await s.violations() == []
        assert ("protected", "stop_filled", "exited_sl") in s.transitions()

    run(go())


@pytest.mark.parametrize(("hedge", "attached"), MODES[:1] + MODES[3:])
def test_a_position_closed_by_hand_on_the_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hedge: bool,
                                                   attached: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=attached,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            s.sim.faults.close_by_hand(SYMBOL, "long")
            await s.until(lambda: s.state == "flat", "flat after the manual close")
            assert await s.violations() == []
            assert await s.sim.account_view().open_orders(SYMBOL) == [], "the orphaned stop is canceled"
        assert ("protected", "position_gone", "exited_manual") in s.transitions()

    run(go())


@pytest.mark.parametrize("hedge", [False, True], ids=["one-way", "hedge"])
def test_a_rejected_stop_closes_the_position_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     hedge: bool) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=hedge, attached=False,
                           params="{ enter_on = 1, exit_on = 0 }") as s:
            s.sim.faults.reject_next_stop()
            await s.candles_until(lambda: s.engine.pos.rec.seq == 1 and s.state == "flat", "flat after the rejection")
            assert await s.violations() == []
        assert ("entering", "stop_rejected", "exiting") in s.transitions()

    run(go())


def test_short_positions_in_hedge_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, hedge=True, attached=False,
                           params='{ side = "short", enter_on = 1, exit_on = 3 }') as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert stop.side == "short" and stop.stop_price > s.engine.pos.rec.avg_entry
            await s.candles_until(lambda: s.state == "flat" and s.engine.pos.rec.seq == 1, "flat")
            assert await s.violations() == []

    run(go())


@pytest.mark.parametrize("wire", ["numeric", "string", "mixed"])
def test_a_one_way_short_stopped_out_in_each_wire_dialect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          wire: str) -> None:
    """Protocol §0: BingX's eras (numeric or string ids, times and codes, wrapped or bare order replies,
    brackets as text or objects) and one-way pushes (``ps=BOTH``, ``pa`` negative for a short): the bot
    enters, is protected, and is stopped out in each."""
    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, sim_options={"wire": wire},
                           params='{ side = "short", enter_on = 1, exit_on = 0 }') as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            (stop,) = await s.sim.account_view().open_orders(SYMBOL)
            assert stop.side == "short" and stop.stop_price > s.engine.pos.rec.avg_entry
            s.sim.faults.set_mark_price(SYMBOL, stop.stop_price + Decimal(50))
            await s.until(lambda: s.state == "flat", "flat after the stop")
            assert await s.violations() == []
        assert ("protected", "stop_filled", "exited_sl") in s.transitions()

    run(go())


# --- the network misbehaving ---------------------------------------------------------------------


def test_a_market_stream_dropped_mid_candle_still_yields_every_candle_once_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.clock import LiveClock
    from exchanges.bingx.adapter import BingXAdapter, BingXOptions

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50)
        async with BingXSimulator(options) as sim:
            monkeypatch.setenv("BINGX_API_KEY", options.api_key)
            monkeypatch.setenv("BINGX_SECRET_KEY", options.secret)
            adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url, ws_url=sim.ws_url,
                                                close_candles_by_clock=False), hedge_mode=False, clock=LiveClock())
            await adapter.start(lambda event: None)
            try:
                history = await adapter.history(SYMBOL, "5m", 50)
                seen: list[Any] = []
                market = adapter.start_market({(SYMBOL, "5m"): history[-1].open_time}, seen.append)
                await asyncio.wait_for(market.connected.wait(), 5)
                await sim.advance(3)
                await until(lambda: len(seen) == 3, "three candles", timeout=10)
                for _ in range(3):  # mid-candle drops, with candles played while nobody listens
                    before = market.connections
                    sim.faults.drop_market_streams()
                    await sim.advance(2)
                    await until(lambda before=before: market.connections > before and market.connected.is_set(),
                                "the market stream to come back", timeout=10)
                    await sim.advance(1)
                await until(lambda: len(seen) == 12, "twelve candles", timeout=10)
                truth = await adapter.klines(SYMBOL, "5m", history[-1].open_time + 300_000, seen[-1].open_time + 1)
                assert seen == truth, "each candle once, in order, with the exchange's final values"
                assert market.connections >= 4
            finally:
                await adapter.stop()

    run(go())


def test_an_expired_listen_key_is_replaced_without_losing_the_fill(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            adapter = s.runner.adapters["bx"]
            first_key = adapter.user.key
            s.sim.faults.expire_listen_key()  # the fill of the entry below is pushed to a dead key
            await s.candles_until(lambda: s.state == "protected", "protected on the fill")
            await s.until(lambda: adapter.user.key not in (None, first_key), "a new listenKey")
            assert await s.violations() == []
        journal = Journal(s.journal_path, readonly=True)
        try:
            fills = journal.conn.execute("SELECT client_id FROM fills").fetchall()
        finally:
            journal.close()
        assert fills == [("it-1-e1",)], "the entry fill booked exactly once"

    run(go())


@pytest.mark.parametrize("executed", [True, False], ids=["order-placed-reply-lost", "order-never-placed"])
def test_a_submission_that_times_out_leaves_exactly_one_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              executed: bool) -> None:
    from exchanges.bingx.constants import ORDER

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            s.sim.faults.fail_next(ORDER, "timeout", after_effect=executed)
            await s.sim.advance(1)
            if executed:
                await s.until(lambda: s.state == "protected", "protected after resolving the unknown entry")
            else:
                await s.until(lambda: any(t[1] == "entry_lost" for t in s.transitions()), "the entry found lost")
            await s.settle()
            view = s.sim.account_view()
            assert view.order_count("it-1-e1") == (1 if executed else 0)
            assert await s.violations() == []
        statuses = _statuses(s.journal_path, "it-1-e1")
        assert "unknown" in statuses, statuses

    run(go())


def _statuses(path: Path, client_id: str) -> list[str]:
    journal = Journal(path, readonly=True)
    try:
        return [r[0] for r in journal.conn.execute("SELECT status FROM intents WHERE client_id = ? ORDER BY rowid",
                                                   (client_id,))]
    finally:
        journal.close()


@asynccontextmanager
async def fired_stop(options: SimOptions, events: list[Any]) -> AsyncIterator[Any]:
    """An adapter on the simulator's REST alone (no user stream: nothing is pushed, as while the bot is
    down, or its stream is), a long of 0.01 with its stop ``c-1-s1``, and that stop fired."""
    from core.clock import LiveClock
    from core.events import SubmitEntry, SubmitStop
    from exchanges.bingx.adapter import BingXAdapter, BingXOptions
    from exchanges.bingx.rest import RestClient

    async with BingXSimulator(options) as sim:
        adapter = BingXAdapter(BingXOptions(rest_url=sim.rest_url), hedge_mode=False, clock=LiveClock())
        adapter.rest = RestClient(adapter.rest_url, options.api_key, options.secret, clock=adapter.clock)
        await adapter.rest.start()
        adapter._sink = events.append
        try:
            price = (await adapter.klines(SYMBOL, "5m", 0, 2**62))[-1].close
            await adapter.submit(SubmitEntry(client_id="c-1-e1", symbol=SYMBOL, side="long", qty=Decimal("0.01")))
            stop_price = (Decimal(repr(price)) * Decimal("0.99")).quantize(Decimal("0.1"))
            await adapter.submit(SubmitStop(client_id="c-1-s1", symbol=SYMBOL, side="long", qty=Decimal("0.01"),
                                            stop_price=stop_price))
            sim.faults.fire_stops_now(SYMBOL)
            events.clear()
            yield adapter
        finally:
            await adapter.rest.close()


def test_a_cancel_of_an_order_that_filled_first_delivers_its_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chaos run: a replaced stop fired during a stream drop; its cancel was answered "order not exist"
    and taken for canceled, and the fill was never booked (I5). The adapter now asks for the fills of an
    order that is gone before it reports it canceled."""
    from core.events import CancelOrder, OrderCanceled, OrderFilled

    async def go() -> None:
        events: list[Any] = []
        async with fired_stop(SimOptions(mode="manual", history_bars=50), events) as adapter:
            await adapter.cancel(CancelOrder(client_id="c-1-s1", symbol=SYMBOL))
            assert [type(e) for e in events] == [OrderFilled, OrderCanceled]
            assert events[0].client_id == "c-1-s1" and events[0].qty == Decimal("0.01")

    run(go())


@pytest.mark.parametrize("stop_fill_event", ["same_id", "derived_id"])
def test_the_fills_of_a_stop_that_fired_are_found_under_either_order_id(monkeypatch: pytest.MonkeyPatch,
                                                                         stop_fill_event: str) -> None:
    """Whether BingX books a fired stop's fill on the stop itself or on a derived MARKET order linked by
    ``triggerOrderId`` is UNCONFIRMED (protocol §6.4): recovery asks for a stop's fills either way, and
    must find them (else a stop that fired while the bot was down is taken for a position closed by hand)."""
    from exchanges.bingx.simulator.options import Switches

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=50, switches=Switches(stop_fill_event=stop_fill_event))
        async with fired_stop(options, []) as adapter:
            (fill,) = await adapter.order_fills(SYMBOL, "c-1-s1")
            assert (fill.client_id, fill.qty, fill.final) == ("c-1-s1", Decimal("0.01"), True)
            assert fill.realized_pnl < 0 and fill.fee > 0

    run(go())


def test_funding_is_booked_from_the_push_and_after_a_restart_from_the_income_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exchanges.paper.funding import FundingOptions

    def booked() -> int:
        journal = Journal(tmp_path / "state" / "it.sqlite", readonly=True)
        try:
            return journal.funding_count()
        finally:
            journal.close()

    async def go() -> None:
        options = SimOptions(mode="manual", history_bars=120, volatility=0.0005,
                             funding=FundingOptions(rate=Decimal("0.0001"), interval_h=1))
        async with BingXSimulator(options) as sim:
            paid = sim.core.account.funding
            async with bot(tmp_path, monkeypatch, sim, params="{ enter_on = 1 }") as s:
                await s.candles_until(lambda: s.state == "protected", "protected")
                await s.candles_until(lambda: len(paid) >= 2, "two funding times (hourly)", limit=30)
                await s.until(lambda: booked() == len(paid), "every payment booked from its push")
                assert all(p.side == "long" and p.paid > 0 for p in paid)
                assert await s.violations() == []
            down = len(paid)
            await sim.advance(14)  # a funding time passes while the bot is down: its push is lost
            assert len(paid) == down + 1
            async with bot(tmp_path, monkeypatch, sim, params="{ enter_on = 1 }") as s:
                assert booked() == len(paid), "recovery read the payment from the income history"
                assert await s.violations() == []
            journal = Journal(tmp_path / "state" / "it.sqlite", readonly=True)
            try:
                assert journal.funding_total() == sum((p.paid for p in paid), Decimal(0))
            finally:
                journal.close()
            # gatebot check-invariants: I5 with funding through the adapter's REST view (the income history)
            import argparse

            from core.check_invariants import _check_all

            args = argparse.Namespace(rest=sim.rest_url, symbol=SYMBOL, api_key_env="SIM_BINGX_KEY",
                                      secret_env="SIM_BINGX_SECRET", secrets_file=None)
            assert await _check_all([tmp_path / "state" / "it.sqlite"], args) == {"it": []}
            sim.core.account.funding.append(paid[-1])  # the exchange now shows one payment the journal lacks
            [violation] = (await _check_all([tmp_path / "state" / "it.sqlite"], args))["it"]
            assert violation.invariant == "I5" and "funding" in violation.detail

    run(go())


UNREADABLE_REPLIES = {
    "not-an-id": b'{"code":0,"msg":"","data":{"order":{"symbol":"BTC-USDT","orderId":"18098413796O3398656",'
                 b'"side":"BUY","positionSide":"BOTH","type":"MARKET"}}}',
    "gateway-page": b"<html><body>502 Bad Gateway</body></html>",
    "no-order": b'{"code":"0","msg":"","data":{"result":true}}',
}


@pytest.mark.parametrize("attached", [True, False], ids=["attached", "separate"])
@pytest.mark.parametrize("reply", list(UNREADABLE_REPLIES))
def test_an_entry_whose_reply_the_codec_refuses_still_ends_protected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    attached: bool, reply: str) -> None:
    """The order is placed on the exchange, but its reply cannot be read: an unknown outcome (never a crash, never
    a plain error that would leave the position without its stop), resolved by querying the client id."""
    from exchanges.bingx.constants import ORDER
    from exchanges.bingx.rest import RestClient

    real_send = RestClient._send
    refused: list[str] = []

    async def send(self: RestClient, method: str, url: str, path: str) -> bytes:
        body = await real_send(self, method, url, path)  # the exchange executes the order...
        if method == "POST" and path == ORDER and "clientOrderId=it-1-e1" in url:
            refused.append(url)
            return UNREADABLE_REPLIES[reply]  # ...and its reply is one the codec refuses
        return body

    monkeypatch.setattr(RestClient, "_send", send)

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=attached, params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected although the entry's reply was refused")
            await s.settle()
            view = s.sim.account_view()
            assert view.order_count("it-1-e1") == 1
            (stop,) = await view.open_orders(SYMBOL)
            assert (stop.role, stop.client_id) == ("stop", "it-1-s1")
            assert await s.violations() == []
        assert len(refused) == 1
        assert "unknown" in _statuses(s.journal_path, "it-1-e1")

    run(go())


def test_an_entry_fill_push_the_codec_refuses_is_found_over_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """The entry's fill push arrives in a shape the codec refuses: the push is counted and logged with its raw
    frame (listenKey redacted), and the instance reconciles over REST, which finds the fill: the stop goes out."""
    import json
    import logging

    from exchanges.bingx import codec
    from exchanges.bingx.user_stream import UserStream

    real_handle = UserStream.handle
    mangled: list[str] = []

    async def handle(self: UserStream, ws: Any, frame: bytes | str) -> bool:
        text = codec.ungzip_frame(frame)
        if '"ORDER_TRADE_UPDATE"' in text and '"TRADE"' in text and "it-1-e1" in text:
            push = json.loads(text)
            push["o"]["i"] = f"{push['o']['i']}-v2"  # an id the codec cannot read exactly: refused
            push["listenKey"] = self.key
            text = json.dumps(push)
            mangled.append(text)
        return await real_handle(self, ws, text)

    monkeypatch.setattr(UserStream, "handle", handle)
    caplog.set_level(logging.WARNING, "gatebot")

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ enter_on = 1, exit_on = 0 }") as s:
            adapter = s.runner.adapters["bx"]
            await s.candles_until(lambda: s.state == "protected", "protected after the reconcile found the fill")
            await s.settle()
            assert mangled, "the fill push was refused by the codec"
            assert adapter.user.unreadable == len(mangled)
            assert adapter.entries_blocked is None, "one unreadable push does not stop entries"
            assert adapter.user.key not in caplog.text, "the listenKey is redacted"
            assert "unreadable user frame #1 (ORDER_TRADE_UPDATE" in caplog.text and "-v2" in caplog.text
            assert await s.violations() == []

    run(go())
