"""Notifications (app/notify.py) from the bot on the BingX simulator to a JSON webhook receiver on loopback
(apprise's ``json://``): each kind with its content, sent off the engine's path (a receiver that hangs does not
hold the engine back), retried a bounded number of times, deduplicated and rate-limited; URLs only from the env or
a 0600 file."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from gatebot.app import control, notify
from gatebot.core.clock import VirtualClock
from gatebot.core.config import ConfigError, NotifyConfig
from tests.helpers import until
from tests.integration.sessions import SYMBOL
from tests.integration.test_control import bot


class Receiver:
    """A JSON webhook on loopback: what arrived (apprise's title and body), optionally hanging or failing."""

    def __init__(self, *, hang: bool = False, status: int = 200) -> None:
        self.hang, self.status = hang, status
        self.started = 0
        self.messages: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.started += 1
        body = await request.json()
        if self.hang:
            # hangs for as long as the test needs it to (apprise gives up at its read timeout, then retries)
            await asyncio.wait_for(self.release.wait(), timeout=60)
        self.messages.append(body)
        return web.Response(status=self.status)

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]

    def find(self, part: str) -> dict[str, Any]:
        found = [m for m in self.messages if part in m["title"]]
        assert found, f"no notification with {part!r} in {self.titles()}"
        return found[0]


@asynccontextmanager
async def receiver(**kw: Any) -> AsyncIterator[Receiver]:
    r = Receiver(**kw)
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.url = f"json://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    try:
        yield r
    finally:
        r.release.set()
        await runner.cleanup()


def test_each_kind_reaches_a_json_webhook_with_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with receiver() as hook:
            monkeypatch.setenv(notify.URLS_ENV, hook.url)
            async with bot(tmp_path, monkeypatch) as s:
                assert s.runner.notifier is not None
                s.sim.faults.reject_next_stop()  # the first entry's stop refused: closed at once
                await s.candles_until(lambda: any(t[1] == "stop_rejected" for t in s.transitions()), "a refused stop")
                await s.until(lambda: s.state == "flat", "the unprotected entry closed")
                await s.candles_until(lambda: s.state == "protected", "a protected position")
                rec = s.engine.pos.rec
                said = f"{rec.side} {rec.open_qty} @ {rec.avg_entry:.8g}, stop at {rec.stop_price}"
                stop_price = rec.stop_price
                s.sim.faults.fire_stops_now(SYMBOL)
                await s.until(lambda: s.state == "flat", "the stop filled")
                control.apply(s.runner, "it", "pause", source="test", reason="news")
                s.runner.adapters["bx"].market.last_frame_ms -= 200_000  # as if silent for 200 s (threshold 120)
                await until(lambda: any("stream silent" in t for t in hook.titles()) and len(hook.messages) >= 7,
                            "the notifications", timeout=30, detail=hook.titles)
            refused = hook.find("refused the stop")
            assert "closing it" in refused["message"]
            entry = hook.find("entry filled")
            assert entry["title"] == f"it {SYMBOL}: entry filled"
            assert entry["message"] == said
            assert f"stopped out at {stop_price}" in hook.find("stop fired")["message"]
            exits = [m for m in hook.messages if ": exit (" in m["title"]]
            assert [m["title"].partition("exit ")[2] for m in exits] == ["(exit: unprotected)", "(stop)"]
            stopped = exits[-1]["message"]  # "<qty> closed at <price>; PnL <pnl>, fees <fees>, funding 0, net <net>"
            assert re.fullmatch(r"0\.\d+ closed at \d+\.?\d*; PnL -\d+\.\d{4}, fees \d+\.\d{4}, funding "
                                r"0\.0000, net -\d+\.\d{4}", stopped), stopped
            assert not stopped.startswith("0.0000") and ", fees 0.0000" not in stopped
            assert hook.find("pause by test")["message"] == "trading state active -> reducing (news)"
            assert "market stream silent" in hook.find("stream silent")["title"]
            assert len(hook.titles()) == len(set(hook.titles())) == 7  # each said once

    asyncio.run(go())


def test_a_hanging_receiver_does_not_hold_the_engine_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with receiver(hang=True) as hook:
            monkeypatch.setenv(notify.URLS_ENV, hook.url)
            async with bot(tmp_path, monkeypatch) as s:
                await s.candles_until(lambda: s.state == "protected", "a protected position")
                await until(lambda: hook.started >= 1, "the entry's notification to be on its way", timeout=15)
                hung_at = time.monotonic()
                before = decisions(s)
                # The engine goes on (the exit, the next entry) while the receiver still holds the first message.
                await s.candles_until(lambda: s.state == "flat", "the exit")
                await s.candles_until(lambda: s.state == "protected", "the next entry")
                assert hook.messages == [], "nothing was answered yet: the engine did not wait for it"
                triggers = [t[1] for t in s.transitions()]
                assert triggers.count("enter") == 2 and "exit_signal" in triggers and "settled" in triggers
                # Trading on until the receiver has hung 10 s: the decision-latency figures meanwhile. An engine
                # that waited for the receiver would show decisions as long as apprise's read timeout (4 s) or the
                # hang; every one taken during it is in a bucket below both (the histogram's last, 2.5 s).
                await s.candles_until(lambda: time.monotonic() - hung_at >= HANG_S, "the hang", limit=5000)
                assert hook.messages == []
                after = decisions(s)
                taken = after[float("inf")] - before[float("inf")]
                assert taken >= 2, (before, after)  # the exit and the next entry (at least) were decided meanwhile
                bound = max(b for b in after if b != float("inf"))
                assert bound < 4.0 and after[bound] - before[bound] == taken, (before, after)
                hook.release.set()

    asyncio.run(go())


HANG_S = 10.0


def decisions(s: Any) -> dict[float, float]:
    """The decision-latency histogram's cumulative bucket counts (upper bound in seconds -> decisions)."""
    out: dict[float, float] = {}
    for metric in s.runner.metrics.decision.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def test_a_failing_target_is_retried_a_bounded_number_of_times_and_logged(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "RETRY_FIRST_S", 0.01)

    async def go() -> None:
        async with receiver(status=500) as hook:
            n = notify.Notifier([hook.url], NotifyConfig(retries=2), VirtualClock(0))
            n.start()
            assert n.send("error", "it: cannot trade", "RuntimeError: boom")
            await until(lambda: n.failed == 1, "the notification given up", timeout=30)
            assert hook.started == 3 and n.sent == 0  # the first try and two retries, no more
            await asyncio.to_thread(n.stop)

    with caplog.at_level(logging.WARNING, logger="gatebot.notify"):
        asyncio.run(go())
    assert "not sent after 3 tries" in caplog.text and "127.0.0.1" not in caplog.text


def test_repeats_are_dropped_and_the_rate_is_bounded_by_the_bots_clock() -> None:
    clock = VirtualClock(0)
    n = notify.Notifier([], NotifyConfig(max_per_minute=2, dedupe_s=300), clock)
    assert n.send("stale", "bx: market stream silent", "...", key="stale:bx:market")
    assert not n.send("stale", "bx: market stream silent", "...", key="stale:bx:market")  # a repeat
    assert n.send("command", "it: pause", "done", key="c1")
    assert not n.send("command", "it: resume", "done", key="c2") and n.dropped == 1  # over 2 a minute
    clock.advance_to(60_000)
    assert n.send("command", "it: resume", "done", key="c2")
    clock.advance_to(301_000)
    assert n.send("stale", "bx: market stream silent", "...", key="stale:bx:market")  # said again after dedupe_s
    assert [n._queue.get_nowait().key for _ in range(n._queue.qsize())] == ["stale:bx:market", "c1", "c2",
                                                                           "stale:bx:market"]


def test_unprotected_mismatch_error_halt_and_the_daily_summary(tmp_path: Path) -> None:
    from tests.unit.app.test_risk_guard import DAY0_MS, replay

    journal = replay(tmp_path, "{ max_trades_per_day = 20 }", ["flat", "crash"] * 4)  # four stop-outs on day 0
    clock = VirtualClock(DAY0_MS + 23 * 3_600_000)
    engine = SimpleNamespace(unprotected_since_ms=clock.monotonic_ms() - 6_000, protection_timeout_ms=10_000,
                             pos=SimpleNamespace(rec=SimpleNamespace(seq=4), state="entering"),
                             reconcile_outcomes={"corrected": 1}, reconciled={"intents": 2}, trading_state="active")
    inst = SimpleNamespace(cfg=SimpleNamespace(name="rg", exchange="paper"), engine=engine)
    runner = SimpleNamespace(instances=[inst], journals={"rg": journal}, adapters={})
    n = notify.Notifier([], NotifyConfig(unprotected_s=5), clock, runner)  # type: ignore[arg-type]
    n.check(inst)  # type: ignore[arg-type]
    n.instance_down("rg", "halted", "another owner's order on BTC-USDT")
    n.instance_down("rg", "cannot trade (restarting)", "TransportError: timeout")
    n.summary(runner)  # type: ignore[arg-type]  # the first look sets the day
    clock.advance_to(DAY0_MS + 86_400_000 + 1)
    n.summary(runner)  # type: ignore[arg-type]
    msgs = {m.kind: m for m in (n._queue.get_nowait() for _ in range(n._queue.qsize()))}
    assert msgs["unprotected"].title == "rg: position unprotected for 6 s"
    assert "2 order(s) resolved from the exchange" in msgs["mismatch"].body
    assert msgs["halt"].title == "rg: halted" and "another owner" in msgs["halt"].body
    assert msgs["error"].body == "TransportError: timeout"
    assert msgs["summary"].body.startswith("rg: 4 closed, net -") and "balance" in msgs["summary"].body


def test_urls_come_from_the_env_or_an_owner_only_file(tmp_path: Path) -> None:
    assert notify.load_urls({}) == []
    assert notify.load_urls({notify.URLS_ENV: "json://127.0.0.1:9/a, tgram://123:abc/456"}) == [
        "json://127.0.0.1:9/a", "tgram://123:abc/456"]
    path = tmp_path / "urls"
    path.write_text("tgram://123:secrettoken/456\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644") as bad:
        notify.load_urls({notify.URLS_FILE_ENV: str(path)})
    assert "secrettoken" not in str(bad.value)
    path.chmod(0o600)
    assert notify.load_urls({notify.URLS_FILE_ENV: str(path)}) == ["tgram://123:secrettoken/456"]
    with pytest.raises(ConfigError, match=r"URL 1 .*\(nope://\.\.\.\)") as unknown:
        notify.load_urls({notify.URLS_ENV: "nope://secrettoken"})
    assert "secrettoken" not in str(unknown.value)


def test_quantities_and_prices_are_written_without_an_exponent() -> None:
    """A journal row may carry a Decimal as "1.0000E+5" or "0E-8" (str's form); a message says it as a view does."""
    n = notify.Notifier([], NotifyConfig(), VirtualClock(0))
    record = SimpleNamespace(symbol="BTC-USDT", side="long", open_qty=Decimal("1.0E-3"), avg_entry=Decimal("100000"),
                             stop_price=Decimal("9.900E+4"), closed_qty=Decimal("1.0E-3"))
    n.gatebot_on_transition("it", 1, "entering", "stop_confirmed", "protected", record)
    n.gatebot_on_transition("it", 1, "protected", "stop_filled", "exited_sl", SimpleNamespace(
        **vars(record), realized_pnl=Decimal("-1"), fees=Decimal("0.1"), exit_reason=None))
    n.gatebot_on_fill("it", SimpleNamespace(qty=Decimal("1.0E-3"), price=Decimal("9.900E+4")))
    bodies = [m.body for m in (n._queue.get_nowait() for _ in range(n._queue.qsize()))]
    assert bodies[0] == "long 0.0010 @ 100000, stop at 99000"
    assert bodies[1] == "long 0.0010 stopped out at 99000"
    assert bodies[2].startswith("0.0010 closed at 99000; PnL -1.0000")
