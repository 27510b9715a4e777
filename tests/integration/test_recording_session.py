"""A live session against the BingX simulator, recorded, then replayed through the same decoder and
engine: the same transitions and commands in the same order; an altered strategy diverges, and the
replay names the first divergent command and the frame that caused it."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gatebot.app.replayer import replay
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.journal import Journal
from gatebot.core.recording import Header, Recorder, Recording, session_hash
from gatebot.plugins.manager import make_plugin_manager
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import config_text, until

SYMBOL = "BTC-USDT"
PARAMS = "{ enter_on = 1, every = 2, fraction = 0.5 }"


def write_config(tmp: Path, name: str, *, mode: str, state: Path, rest: str = "http://127.0.0.1:9",
                 ws: str = "ws://127.0.0.1:9", params: str = PARAMS) -> Any:
    path = tmp / name
    path.write_text(config_text("bingx_sim", state=state, hedge="false", rest=rest, ws=ws, attached="true",
                                params=params, options="", protection=""))
    return msgspec.structs.replace(load_config(path), mode=mode)  # as `gatebot replay` does


async def live_session(tmp: Path, monkeypatch: pytest.MonkeyPatch, recording: Path) -> dict[str, Any]:
    """~60 candles: a trade every 2 candles, every third protected position stopped out by the mark
    price, and the market stream dropped twice (candles played while nobody listens)."""
    options = SimOptions(mode="manual", history_bars=60, volatility=0.004)
    async with BingXSimulator(options) as sim:
        monkeypatch.setenv("SIM_BINGX_KEY", options.api_key)
        monkeypatch.setenv("SIM_BINGX_SECRET", options.secret)
        config = write_config(tmp, "live.toml", mode="paper", state=tmp / "live", rest=sim.rest_url, ws=sim.ws_url)
        plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
        recorder = Recorder(recording, Header(kind="session", config_hash=session_hash(config)))
        runner = Runner(config, plugins, recorder=recorder)
        task = asyncio.create_task(runner.run())
        stats: dict[str, Any] = {"stops": 0, "drops": 0, "rest": sim.rest_url, "ws": sim.ws_url}
        try:
            await until(lambda: runner.instances[0].engine is not None
                        and runner.instances[0].engine.status == "running", "the bot to start", task=task)
            adapter = runner.adapters["bx"]
            await until(lambda: adapter.market is not None and adapter.market.connected.is_set(), "market", task=task)

            def engine() -> Any:
                return runner.instances[0].engine

            def idle() -> bool:
                return engine() is not None and engine().idle

            protected_seen = 0
            bars_before = runner.bars
            for n in range(64):
                market = adapter.market
                if n in (20, 41):  # a dropped market stream; two candles pass while it is away
                    before = market.connections
                    sim.faults.drop_market_streams()
                    await sim.advance(2)
                    await until(lambda m=market, b=before: m.connections > b and m.connected.is_set(),
                                "the market stream to come back", task=task)
                    stats["drops"] += 1
                    await sim.advance(1)  # the first push after the gap: the missed candles come from REST
                    await until(lambda b=bars_before: runner.bars >= b + 3, "the missed candles", task=task)
                else:
                    bars_before = runner.bars
                    await sim.advance(1)
                    await until(lambda b=bars_before: runner.bars > b, "the candle", task=task)
                bars_before = runner.bars
                await until(idle, "the engine to go idle", task=task)
                if engine().pos.state == "protected":
                    protected_seen += 1
                    if protected_seen % 3 == 0:
                        stop = engine().pos.rec.stop_price
                        seq = engine().pos.rec.seq
                        sim.faults.set_mark_price(SYMBOL, stop - Decimal(25))
                        await until(lambda seq=seq: engine().pos.rec.seq == seq and engine().pos.state == "flat"
                                    and engine().idle, "flat after the stop", task=task)
                        stats["stops"] += 1
        finally:
            runner.stop()
            await asyncio.wait_for(task, timeout=15)
            recorder.close()
        stats["bars"] = runner.bars
        stats["closed"] = list(sim.markets[SYMBOL].closed)
    return stats


def journal_facts(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    journal = Journal(path, readonly=True)
    try:
        transitions = [tuple(r) for r in journal.conn.execute(
            "SELECT position, src, trigger, dst FROM transitions ORDER BY seq")]
        commands = [tuple(r) for r in journal.conn.execute(
            "SELECT position, client_id, status, command FROM intents ORDER BY seq")]
        exits = journal.conn.execute("SELECT COUNT(*) FROM transitions WHERE dst = 'exited_sl'").fetchone()[0]
        return transitions, commands, exits
    finally:
        journal.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("session")
    recording = tmp / "session.gbrec"
    with pytest.MonkeyPatch.context() as mp:
        stats = asyncio.run(live_session(tmp, mp, recording))
    return tmp, recording, stats


@pytest.mark.slow
def test_a_recorded_live_session_replays_with_the_same_transitions_and_commands(
        recorded: tuple[Path, Path, dict[str, Any]]) -> None:
    tmp, recording, stats = recorded
    assert stats["drops"] == 2 and stats["stops"] >= 5
    live_t, live_c, live_sl = journal_facts(tmp / "live" / "it.sqlite")
    trades = sum(1 for t in live_t if t[3].startswith("exited_"))
    assert trades >= 20 and live_sl >= 5, (trades, live_sl)
    rec = Recording(recording)
    assert sum(1 for r in rec if r.ch == "market" and r.what == "connect") == 3  # two reconnects

    config = write_config(tmp, "replay.toml", mode="replay", state=tmp / "replay", rest=stats["rest"], ws=stats["ws"])
    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    result = asyncio.run(replay(config, plugins, recording))
    assert result.divergence is None, result.divergence.text()
    assert result.config_matches
    replay_t, replay_c, _ = journal_facts(tmp / "replay" / "it.sqlite")
    assert replay_t == live_t
    assert [c[:2] + c[3:] for c in replay_c] == [c[:2] + c[3:] for c in live_c]
    assert [c[2] for c in replay_c] == [c[2] for c in live_c]


@pytest.mark.slow
def test_an_altered_strategy_reports_the_first_divergent_command_and_its_frame(
        recorded: tuple[Path, Path, dict[str, Any]]) -> None:
    tmp, recording, stats = recorded
    config = write_config(tmp, "altered.toml", mode="replay", state=tmp / "altered", rest=stats["rest"], ws=stats["ws"],
                          params="{ enter_on = 1, every = 2, fraction = 0.4 }")
    plugins = make_plugin_manager(config.plugins.modules, config.plugins.disable)
    result = asyncio.run(replay(config, plugins, recording))
    assert not result.config_matches
    d = result.divergence
    assert d is not None, "a different entry size must diverge"
    live_orders = [r for r in Recording(recording) if r.ch == "send"]
    assert d.index < len(live_orders) and d.live == live_orders[d.index].what
    assert d.replay is not None and "quantity=" in d.replay
    assert re.search(r"clientOrderId=it-[0-9a-z]{5}-1-e1", d.replay), d.replay
    assert d.live != d.replay
    assert "market" in d.frame and "@kline_5m" in d.frame, d.frame  # the candle close that led to the entry
    text = d.text()
    assert "live sent" in text and "replay sent" in text and "after frame" in text
    msgspec.json.encode(d)


@pytest.mark.slow
def test_the_market_frames_of_a_session_with_dropped_streams_replay_as_the_candles_the_live_bot_saw(
        recorded: tuple[Path, Path, dict[str, Any]]) -> None:
    """A market replay reads frames ahead a block at a time; a gap after a reconnect makes it hand on
    the candles read so far, then wait for the recorded REST reply. The candles must be the ones the live
    bot closed (the simulator's own), each once, in order, on a clock that never goes back."""
    from gatebot.core.clock import VirtualClock
    from gatebot.exchanges.bingx.replay import market_candles

    _, recording, stats = recorded
    rec = Recording(recording)
    first = next(iter(rec))
    clock = VirtualClock(first.t)
    frames: list[int] = []

    async def go() -> list[Any]:
        out = []
        async for candle in market_candles(rec, [(SYMBOL, "5m")], clock, on_frame=frames.append):
            out.append((candle, clock.now_ms()))
        return out

    got = asyncio.run(go())
    assert len(got) == stats["bars"], "the live bot closed this many candles from the stream and REST"
    truth = {row[0]: row for row in stats["closed"]}
    for candle, _ in got:
        _, o, h, lo, c, _v = truth[candle.open_time]
        assert (candle.open, candle.high, candle.low, candle.close) == pytest.approx((o, h, lo, c), rel=1e-9)
    times = [c.open_time for c, _ in got]
    assert times == list(range(times[0], times[0] + 300_000 * len(times), 300_000)), "no gap, no duplicate"
    assert [t for _, t in got] == sorted(t for _, t in got)
    assert frames and frames[0] == sum(1 for r in rec if r.ch == "market" and r.what == "")
