"""Recordings in and out: record market data, import a candle CSV as frames, replay a recording.

- A market recording (``gatebot record``, ``gatebot import-candles``) replays through the BingX
  decoder into the paper exchange, like a CSV replay.
- A session recording (``gatebot run --record``) replays the recorded exchange itself: REST replies
  and execution events from the recording, the bot's commands compared with the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any

import msgspec

from gatebot.app.embedded import EmbeddedSimulators, for_embedded
from gatebot.core.clock import VirtualClock
from gatebot.core.config import Config
from gatebot.core.exchange import MarketSource
from gatebot.core.intervals import interval_ms
from gatebot.core.market import array_candles, load_csv
from gatebot.core.recording import (
    MARKET,
    START,
    Header,
    Recorder,
    Recording,
    RecordingError,
    session_hash,
    strategy_hashes,
)

log = logging.getLogger("gatebot.replayer")


class ReplayResult(msgspec.Struct, kw_only=True):
    kind: str
    bars: int
    frames: int
    divergence: Any = None
    """gatebot.exchanges.bingx.replay.Divergence of a session replay that did not repeat the live commands."""
    config_matches: bool = True
    halted: dict[str, str] = {}
    runner: Any = None


def _fmt(x: float) -> str:
    return format(x, ".10g")


def kline_frames(symbol: str, interval: str, rows: Any) -> Any:
    """(t, frame) of the kline pushes BingX makes while each candle forms: one per point of the path
    open -> nearer extreme -> farther extreme -> close (as the simulator plays it), the candle so far.
    The next candle's first push closes a candle; a last push after the final candle closes it."""
    from gatebot.simulators.bingx.market import path

    step = interval_ms(interval)
    quarter = step // 4
    topic = f"{symbol}@kline_{interval}"
    head = '{"code":0,"dataType":"' + topic + '","s":"' + symbol + '","data":[{"o":"'
    last = None
    for c in rows:
        t, o, h, lo, cl, v = c.open_time, c.open, c.high, c.low, c.close, c.volume
        pts = path((t, o, h, lo, cl, v))
        hi_s = lo_s = o
        for i, p in enumerate(pts):
            hi_s, lo_s = max(hi_s, p), min(lo_s, p)
            vol = round(v * i / 3, 4)
            yield t + i * quarter, (f'{head}{_fmt(o)}","h":"{_fmt(hi_s)}","l":"{_fmt(lo_s)}","c":"{_fmt(p)}",'
                                    f'"v":"{_fmt(vol)}","T":{t}}}]}}')
        last = (t, cl)
    if last is not None:
        t, cl = last[0] + step, last[1]
        yield t, f'{head}{_fmt(cl)}","h":"{_fmt(cl)}","l":"{_fmt(cl)}","c":"{_fmt(cl)}","v":"0","T":{t}}}]}}'


def import_candles(csv: Path, out: Path, *, symbol: str = "BTC-USDT", interval: str = "5m",
                   gzip: bool = False) -> int:
    """Write ``csv``'s candles as a market recording; returns the number of frames."""
    from gatebot.exchanges.bingx.codec import gzip_frame

    rows = load_csv(csv)
    header = Header(kind="market", created_ms=time.time_ns() // 1_000_000,
                    meta={"source": f"import-candles {csv.name}", "symbol": symbol, "interval": interval})
    n = 0
    with Recorder(out, header) as rec:
        for t, frame in kline_frames(symbol, interval, array_candles(rows, symbol, interval)):
            rec.record(MARKET, "", gzip_frame(frame) if gzip else frame, t=t)
            n += 1
    return n


# --- recording market data -------------------------------------------------------------------


async def record_market(config: Config, plugins: Any, out: Path, *, candles: int | None = None,
                        seconds: float | None = None) -> int:
    """Record the market data of CONFIG's instances (no trading) until stopped, ``candles`` closed
    candles or ``seconds`` passed; returns the number of candles seen."""
    from gatebot.core.clock import LiveClock

    clock = LiveClock()
    header = Header(kind="market", config_hash=session_hash(config), models=strategy_hashes(config, plugins),
                    created_ms=clock.now_ms(), meta={"mode": config.mode})
    exchanges = plugins.exchanges()
    seen = 0
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)

    def on_candle(_: Any) -> None:
        nonlocal seen
        seen += 1
        if candles is not None and seen >= candles:
            done.set()

    names = list(dict.fromkeys(i.exchange for i in config.instances))
    embedded = EmbeddedSimulators(config, names)
    with Recorder(out, header, clock=clock) as recorder:
        adapters = []
        try:
            for name in names:
                ex = config.exchanges[name]
                adapter = exchanges[ex.type].factory(for_embedded(ex.options), hedge_mode=ex.hedge_mode, clock=clock,
                                                     state_dir=Path(config.state_dir), account=name)
                if not isinstance(adapter, MarketSource):
                    raise RecordingError(f"exchange {name} ({ex.type}) has no market stream to record")
                adapter.recorder = recorder
                await embedded.start({name: adapter})
                await adapter.start(lambda _e: None, market_only=True)
                adapters.append(adapter)
                keys = list(dict.fromkeys((i.symbol, i.interval) for i in config.instances if i.exchange == name))
                last = {}
                for symbol, interval in keys:
                    hist = await adapter.history(symbol, interval, 1)
                    last[(symbol, interval)] = hist[-1].open_time if hist else None
                recorder.record(MARKET, START, msgspec.json.encode([[s, i, t] for (s, i), t in last.items()]))
                adapter.start_market(last, on_candle)
            waits = [asyncio.create_task(done.wait())]
            waits += [asyncio.create_task(a.finished.wait()) for a in adapters if a.finished is not None]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        finally:
            for adapter in adapters:
                await adapter.stop()
            await embedded.stop()
    return seen


# --- replaying ---------------------------------------------------------------------------------


async def replay(config: Config, plugins: Any, path: Path, *, progress: bool = False) -> ReplayResult:
    """Replay a recording through CONFIG's instances (CONFIG must be in mode replay)."""
    from gatebot.app.runner import Runner

    recording = Recording(path)
    header = recording.header
    matches = not header.config_hash or header.config_hash == session_hash(config)
    if header.kind == "market":
        from gatebot.exchanges.bingx.replay import market_candles

        config = on_paper(config)
        first = next(iter(recording), None)
        clock = VirtualClock(first.t if first is not None else 0)
        streams = list(dict.fromkeys((i.symbol, i.interval) for i in config.instances))
        frames = [0]
        source = market_candles(recording, streams, clock, on_frame=lambda n: frames.__setitem__(0, n))
        runner = Runner(config, plugins, candle_source=source, clock=clock, progress=progress)
        if progress:
            runner.progress_total = _estimate_candles(recording)
        await runner.run()
        return ReplayResult(kind="market", bars=runner.bars, frames=frames[0], config_matches=matches,
                            halted=runner.halted, runner=runner)
    return await _replay_session(config, plugins, recording, matches)


def candle_replay_config(path: Path) -> Config:
    """The config ``gatebot replay CONFIG --candles CSV`` runs (a sweep's trial too): CONFIG in mode replay, each
    account a paper one (as for a market recording), never the exchange or simulator it trades on; a live config
    or a state folder holding another session's journals is refused in one line."""
    from gatebot.app.runner import check_replay_target
    from gatebot.core.config import ConfigError, load_config

    config = load_config(path)
    if config.mode == "live":
        raise ConfigError(f"{path}: $.mode: replay never uses a live config")
    config = on_paper(msgspec.structs.replace(config, mode="replay"))
    check_replay_target(config)
    return config


def on_paper(config: Config) -> Config:
    """A market recording replays on the paper exchange: each account of another type becomes a paper
    account (BingX: its stop placement and an embedded simulator's balance and fee rate kept)."""
    from gatebot.core.config import ExchangeConfig
    from gatebot.exchanges.paper.exchange import PaperOptions

    exchanges = {}
    for name, ex in config.exchanges.items():
        if ex.type != "paper":
            options = paper_options(ex.options) if ex.type == "bingx" else PaperOptions()
            ex = ExchangeConfig(type="paper", hedge_mode=ex.hedge_mode, options=options)
        exchanges[name] = ex
    return msgspec.structs.replace(config, exchanges=exchanges)


def paper_options(options: Any) -> Any:
    """The paper account a market recording of this BingX account replays on: the same stop placement
    (``attached_stop``), and an embedded simulator's balance, fee rate, stop slippage and funding."""
    from gatebot.exchanges.bingx.adapter import BingXOptions
    from gatebot.exchanges.paper.exchange import PaperOptions
    from gatebot.simulators.bingx import SimOptions

    bx = options if isinstance(options, BingXOptions) else msgspec.convert(options, BingXOptions)
    kw: dict[str, Any] = {"attached_stop": bx.attached_stop}
    if bx.simulator is not None:
        sim = msgspec.convert(bx.simulator, SimOptions)
        kw |= {"balance": sim.balance, "fee_rate": sim.fee_rate, "stop_slippage_bps": sim.stop_slippage_bps,
               "funding": sim.funding}
    return PaperOptions(**kw)


def recorded_epochs(driver: Any) -> dict[str, str]:
    """Instance -> the epoch of the journal that recorded a session, read from the client ids it sent:
    the replay's new journals get the same, so that its orders carry the same ids as live."""
    from gatebot.core import ids

    out: dict[str, str] = {}
    for _, rec in driver.live_sends:
        for param in rec.what.partition("?")[2].split("&"):
            key, _, value = param.partition("=")
            p = ids.parse(value) if key.lower() == "clientorderid" else None
            if p is not None:
                out.setdefault(p.instance, p.epoch)
    return out


def _estimate_candles(recording: Recording) -> int:
    frames = sum(1 for r in recording if r.ch == MARKET)
    return max(1, frames // 4)


async def _replay_session(config: Config, plugins: Any, recording: Recording, matches: bool) -> ReplayResult:
    from gatebot.app.runner import Runner
    from gatebot.exchanges.bingx.adapter import BingXOptions
    from gatebot.exchanges.bingx.replay import ReplayBingXAdapter, SessionDriver

    accounts = list(dict.fromkeys(i.exchange for i in config.instances))
    if len(accounts) != 1 or config.exchanges[accounts[0]].type != "bingx":
        raise RecordingError(f"recording {recording.path}: a session replay needs exactly one BingX account in the "
                             f"config (this one has {', '.join(accounts)})")
    name = accounts[0]
    ex = config.exchanges[name]
    first = next(iter(recording), None)
    clock = VirtualClock(first.t if first is not None else 0)
    driver = SessionDriver(recording, clock)
    options = ex.options if isinstance(ex.options, BingXOptions) else msgspec.convert(ex.options, BingXOptions)
    adapter = ReplayBingXAdapter(for_embedded(options), driver, hedge_mode=ex.hedge_mode, account=name)
    runner = Runner(config, plugins, adapters={name: adapter}, clock=clock, epochs=recorded_epochs(driver))
    driver.on_divergence = runner.stop
    await runner.run()
    return ReplayResult(kind="session", bars=runner.bars, frames=driver.frames, divergence=driver.divergence,
                        config_matches=matches, halted=runner.halted, runner=runner)
