"""Shared helpers for the integration and kill tests: configs on disk, the CLI in a child process,
and the invariant check against a persisted paper account."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatebot.core.invariants import Violation, check
from gatebot.core.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GATEBOT_SHARED_DATA", ROOT.parent / "shared" / "data"))
"""The project's shared candle files (never copied into the repo); tests that need them skip without."""
SHARED_5M = SHARED_DATA / "bingx_btcusdt_5m_2025-08-06_2025-10-14.csv"
SHARED_15M = SHARED_DATA / "bingx_btcusdt_15m_2024-12-26_2025-10-14.csv"
CAPTURES = ROOT / "tests" / "captures"
"""Real BingX traffic (docs/bingx-wire.md): read by the codec tests and matched by the simulator's tests."""
CONFIGS = ROOT / "tests" / "configs"
"""The configs several tests share, as templates: ``{name}`` placeholders, ``{{ }}`` for TOML's literal braces."""


def config_text(name: str, **values: object) -> str:
    """``tests/configs/<name>.toml`` with its placeholders filled."""
    return (CONFIGS / f"{name}.toml").read_text().format(**values)


def example_text(name: str, state_dir: Path | str) -> str:
    """``examples/<name>.toml`` with its journals in ``state_dir`` (an example's own state_dir points into the repo's
    state/): the configs the README shows, and the benchmarks run, are the ones the tests check."""
    text = (ROOT / "examples" / f"{name}.toml").read_text()
    out, found = re.subn(r"(?m)^state_dir = .*$", lambda _: f'state_dir = "{state_dir}"', text, count=1)
    assert found, f"examples/{name}.toml has no state_dir line"
    return out


def sma_replay_text(state_dir: Path | str) -> str:
    """A replay of sma_cross(10, 30) 4x, 4 % leveraged stop, on a 10,000 USDT paper account: the example sweep's
    config without its [sweep] table."""
    return example_text("sweep_sma_cross", state_dir).partition("\n[sweep]\n")[0]


def replaced(text: str, *changes: tuple[str, str]) -> str:
    """``text`` with each (old, new) replaced; an old that is not there fails (a variant that silently stayed the
    original would test nothing new)."""
    for old, new in changes:
        assert old in text, f"not in the config: {old!r}"
        text = text.replace(old, new)
    return text


def write_edge_candles(path: Path, candles: int, phase: Callable[[int], int] = lambda i: 1, every: int = 30) -> Path:
    """``candles`` 5m candles from 2025-01-01 around 100 with a planted edge: candle i closes 1.5 % higher where
    i % every == phase(i), the next gives it back; between, a small deterministic wobble."""
    lines = ["timestamp,open,high,low,close,volume"]
    prev = 100.0
    for i in range(candles):
        close = 101.5 if i % every == phase(i) else 100.0 + 0.05 * ((i * 7919) % 5 - 2)
        hi, lo = max(prev, close) * 1.001, min(prev, close) * 0.999
        lines.append(f"{1_735_689_600_000 + i * 300_000},{prev},{hi:.4f},{lo:.4f},{close},10")
        prev = close
    path.write_text("\n".join(lines) + "\n")
    return path


async def until(condition: Callable[[], bool], what: str, *, task: asyncio.Task[Any] | None = None,
                timeout: float = 15.0, detail: Callable[[], str] | None = None) -> None:
    """Let the loop run until ``condition`` holds (a bot against its simulator in the same loop); fail
    naming ``what`` at the deadline, or at once if the bot's ``task`` ended first (with its error)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if task is not None and task.done():
            task.result()
            raise AssertionError(f"the bot stopped before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}" + (f" ({detail()})" if detail else ""))
        await asyncio.sleep(0.002)


def write_paper_session(tmp: Path, *, seed: int = 3, bars: int = 300, speed: float = 0.0) -> Path:
    """A paper session of ``bars`` generated candles; ``speed`` > 0 paces them (candles per interval)."""
    path = tmp / "session.toml"
    path.write_text(config_text("paper_session", state=tmp / "state", account=tmp / "account.json", seed=seed,
                                bars=bars, speed=speed))
    return path


def gatebot(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process (a separate interpreter, as a user would)."""
    full_env = {k: v for k, v in os.environ.items() if k != "GATEBOT_CRASH_AT"} | (env or {})
    return subprocess.run([sys.executable, "-m", "gatebot.app.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def paper_violations(tmp: Path, instance: str = "kt", symbol: str = "BTC-USDT") -> list[Violation]:
    """I1-I5 for ``instance`` against the persisted paper account of a session in ``tmp``."""
    from gatebot.exchanges.paper.exchange import PaperExchange, PaperOptions

    exchange = PaperExchange(PaperOptions(state_file=str(tmp / "account.json")))
    journal = Journal(tmp / "state" / f"{instance}.sqlite", readonly=True)
    try:
        return asyncio.run(check(journal, exchange, instance=instance, symbol=symbol))
    finally:
        journal.close()
