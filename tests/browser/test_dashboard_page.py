"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright; `make test` installs
the browser when it is missing): the demo bot on its embedded simulator shows both instances, their positions and
stops, candles and trade markers; closing a position from the page (after its confirmation) closes it on the
simulator. The read-only dashboard of a stopped bot shows its journals with the controls off. Screenshots go to
test-artifacts/ (git-ignored). Every wait is on a page or bot condition, bounded."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import async_playwright

from gatebot.app.runner import Runner
from gatebot.core import ids
from gatebot.core.config import load_config
from gatebot.plugins.manager import make_plugin_manager
from tests.helpers import ROOT, gatebot, until, write_paper_session

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "browser-test-token-0123456789"
PAGE_TIMEOUT_MS = 30_000
DEMO_SPEED = 150.0
"""The demo's market at 150x (a 5m candle every 2 s, not 50 ms): its positions live for a minute or more, long
enough to see them on the page and close one from it (the seeded market is the demo's, candle for candle)."""


@pytest.fixture(autouse=True)
def _browser_present() -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get)"


@asynccontextmanager
async def browser(tmp: Path) -> AsyncIterator[Any]:
    """A page in a fresh headless Chromium profile (never a browser playwright would download)."""
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=str(CHROMIUM), args=FLAGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, errors
        finally:
            await context.close()


def demo_config(tmp: Path) -> Path:
    """examples/demo.toml with its journals in ``tmp``, its market on the wall clock and slower (in lockstep it
    runs as fast as the bot gets through it: a position would not wait for a click), and the API on a free
    port."""
    text = (ROOT / "examples" / "demo.toml").read_text()
    text = re.sub(r'(?m)^state_dir = .*$', f'state_dir = "{tmp / "state"}"', text)
    text = re.sub(r'(?m)^mode = "lockstep"', 'mode = "auto"', text)
    text = re.sub(r'(?m)^speed = [0-9.]+', f"speed = {DEMO_SPEED}", text)
    text = re.sub(r'(?m)^port = 8787', "port = 0", text)
    path = tmp / "demo.toml"
    path.write_text(text)
    return path


def protected(runner: Runner, name: str) -> bool:
    engine = runner.instance(name).engine
    return engine is not None and engine.pos.state == "protected" and engine.pos.rec.stop_id is not None


async def row(page: Any, name: str, cls: str) -> str:
    return str(await page.inner_text(f"#instances tr[data-instance='{name}'] td.{cls}"))


def test_the_demo_bot_in_a_browser_shows_both_instances_and_closes_from_the_page(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEBOT_API_TOKEN", TOKEN)
    ARTIFACTS.mkdir(exist_ok=True)
    config = load_config(demo_config(tmp_path))
    assert config.api.enabled and config.api.port == 0  # the demo serves its dashboard; here on a free port
    runner = Runner(config, make_plugin_manager(config.plugins.modules, config.plugins.disable))

    async def go() -> None:
        task = asyncio.create_task(runner.run())
        try:
            url_file = tmp_path / "state" / "api.json"
            await until(url_file.exists, "the bot's API URL file", task=task, timeout=60)
            base = json.loads(url_file.read_text())["url"]
            await until(lambda: protected(runner, "btc") and protected(runner, "eth"),
                        "both demo instances holding a protected position", task=task, timeout=90)
            async with browser(tmp_path) as (page, errors):
                await page.goto(f"{base}/#token={TOKEN}")
                await page.wait_for_selector("body[data-ready='1']")
                for name in ("btc", "eth"):
                    await page.wait_for_function(
                        """n => { const c = document.querySelector(`.card[data-instance='${n}']`);
                                  const r = document.querySelector(`#instances tr[data-instance='${n}'] td.stop`);
                                  return c && +c.dataset.candles > 0 && +c.dataset.markers > 0 && c.dataset.stop
                                         && r && r.textContent !== '-'; }""", arg=name)
                await check_positions(page, runner)
                assert await page.inner_text("#mode") == "bot running"
                await page.screenshot(path=str(ARTIFACTS / "dashboard-demo.png"), full_page=True)
                await close_from_the_page(page, runner)
                await page.screenshot(path=str(ARTIFACTS / "dashboard-demo-closed.png"), full_page=True)
                await pause_resume_flatten_from_the_page(page, runner)
                assert errors == []
        finally:
            runner.stop()
            await asyncio.wait_for(task, timeout=30)

    asyncio.run(go())


async def check_positions(page: Any, runner: Runner) -> None:
    """The table shows each instance's position and stop as the bot holds them (the page may lag by a snapshot;
    a position that ended meanwhile, by the market's own signal, is checked again on the one that follows)."""
    for name, symbol in (("btc", "BTC-USDT"), ("eth", "ETH-USDT")):
        assert await row(page, name, "text:nth-child(2)") == symbol
        for _attempt in range(3):
            await until(lambda n=name: protected(runner, n), f"{name} protected", timeout=120)
            rec = runner.instance(name).engine.pos.rec  # type: ignore[union-attr]
            try:
                await page.wait_for_function(SHOWS, arg=[name, float(rec.stop_price), float(rec.open_qty)],
                                             timeout=10_000)  # type: ignore[arg-type]
            except PlaywrightTimeout:
                if runner.instance(name).engine.pos.rec.seq == rec.seq:  # type: ignore[union-attr]
                    raise  # the same position all along: the page is wrong
                continue
            break
        else:
            raise AssertionError(f"{name}: no position lived long enough to be seen on the page")
        card_stop = await page.get_attribute(f".card[data-instance='{name}']", "data-stop")
        assert Decimal(card_stop or "0") == rec.stop_price  # the stop's price line on the chart


SHOWS = """([n, stop, qty]) => {
  const r = document.querySelector(`#instances tr[data-instance='${n}']`);
  const c = document.querySelector(`.card[data-instance='${n}']`);
  return r && +r.querySelector('td.stop').textContent === stop && +r.querySelector('td.qty').textContent === qty
         && r.querySelector('td.position-state').textContent === 'protected' && c && +c.dataset.stop === stop; }"""
"""The row of instance n shows a protected position of qty with its stop, and its chart the stop's line."""


async def close_from_the_page(page: Any, runner: Runner) -> None:
    """Close btc from its row: the confirmation first (Cancel sends nothing), then the close reaches the simulator."""
    engine = runner.instance("btc").engine
    assert engine is not None
    rec = engine.pos.rec
    seq, side, qty, stop_id = rec.seq, rec.side, rec.open_qty, rec.stop_id
    close_id = ids.make("btc", engine.journal.epoch, seq, "x", 1)
    sim = runner._embedded.running[0]
    button = "#instances tr[data-instance='btc'] button[data-command='close']"
    await page.click(button)
    await page.wait_for_selector("#confirm:not([hidden])")
    assert await page.inner_text("#confirm-text") == "Close btc?"
    await page.click("#confirm-cancel")
    await page.wait_for_selector("#confirm", state="hidden")
    assert sim.core.fills_of(close_id) == [] and engine.pos.rec.seq == seq  # nothing was sent
    markers = int(await page.get_attribute(".card[data-instance='btc']", "data-markers") or 0)
    await page.click(button)
    await page.fill("#confirm-reason", "browser test")
    await page.click("#confirm-ok")
    await page.wait_for_function("() => /closing position/.test(document.querySelector('#message').textContent)")
    assert await page.get_attribute("#message", "class") != "error", await page.inner_text("#message")
    # on the simulator: the reduce-only close filled the whole position, and the stop left the book
    await until(lambda: sum((f.qty for f in sim.core.fills_of(close_id)), Decimal(0)) == qty,
                f"the simulator to fill the close {close_id} of {qty}", timeout=30)
    await until(lambda: all(o.view().client_id != stop_id for o in sim.core.open_orders("BTC-USDT")),
                f"the stop {stop_id} off the simulator's book", timeout=30)
    holding = sim.core.holding("BTC-USDT", side)  # type: ignore[arg-type]
    assert holding is None or engine.pos.rec.seq > seq  # flat there, unless a later position of the bot's own
    # and on the page: the manual close in the transitions log, the close's fill as a new marker on the chart
    await page.wait_for_function(
        "() => /--manual_close-->/.test(document.querySelector(\".card[data-instance='btc'] .log\").textContent)")
    await page.wait_for_function(
        "m => +document.querySelector(\".card[data-instance='btc']\").dataset.markers > m", arg=markers)


def test_the_read_only_dashboard_in_a_browser(tmp_path: Path) -> None:
    """``gatebot dashboard STATE_DIR`` on a finished session: the instance and its trades, the controls off."""
    ARTIFACTS.mkdir(exist_ok=True)
    done = gatebot("run", str(write_paper_session(tmp_path, bars=400)))
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "GATEBOT_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "dashboard", str(tmp_path / "state"),
                             "--port", "0"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("dashboard (read-only): http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].split("/#")[0] + f"/#token={TOKEN}"

        async def go() -> None:
            async with browser(tmp_path) as (page, errors):
                await page.goto(url)
                await page.wait_for_selector("body[data-ready='1']")
                assert await page.inner_text("#mode") == "read-only (bot not running)"
                assert await row(page, "kt", "position-state") != ""
                await page.wait_for_function(  # trade markers, the equity curve past its start, the transitions
                    """() => { const c = document.querySelector(".card[data-instance='kt']");
                               return +c.dataset.markers > 0 && +c.dataset.equity > 1
                                      && c.querySelectorAll('.log li').length > 0; }""")
                assert await page.is_disabled("#instances tr[data-instance='kt'] button[data-command='close']")
                assert await page.is_disabled("#flatten")
                await page.wait_for_selector("#live.ok")  # the event stream is open
                await page.screenshot(path=str(ARTIFACTS / "dashboard-read-only.png"), full_page=True)
                assert errors == []

        asyncio.run(go())
    finally:
        proc.terminate()
        proc.wait(10)


async def command(page: Any, selector: str, expect: str) -> None:
    """Click a control, confirm it, and wait for the bot's answer on the page (an error fails)."""
    await page.click(selector)
    await page.wait_for_selector("#confirm:not([hidden])")
    await page.click("#confirm-ok")
    await page.wait_for_function("e => document.querySelector('#message').textContent.includes(e)", arg=expect)
    assert await page.get_attribute("#message", "class") != "error", await page.inner_text("#message")


async def pause_resume_flatten_from_the_page(page: Any, runner: Runner) -> None:
    """Pause and resume eth from its row (the engine's trading state and the table follow), then flatten all."""
    engine = runner.instance("eth").engine
    assert engine is not None
    state_cell = "#instances tr[data-instance='eth'] td.trading-state"
    await command(page, "#instances tr[data-instance='eth'] button[data-command='pause']", "eth:")
    assert engine.trading_state == "reducing"
    await page.wait_for_function(f"() => document.querySelector(\"{state_cell}\").textContent === 'reducing'")
    await command(page, "#instances tr[data-instance='eth'] button[data-command='resume']", "eth:")
    assert engine.trading_state == "active"
    await page.wait_for_function(f"() => document.querySelector(\"{state_cell}\").textContent === 'active'")
    await command(page, "#flatten", "btc:")
    assert await page.inner_text("#message") != "" and "eth:" in await page.inner_text("#message")
    for name in ("btc", "eth"):  # flatten pauses every instance (and closes what it holds)
        assert runner.instance(name).engine.trading_state == "reducing"  # type: ignore[union-attr]
        await page.wait_for_function(
            f"() => document.querySelector(\"#instances tr[data-instance='{name}'] td.trading-state\")"
            ".textContent === 'reducing'")
    await until(lambda: all(runner.instance(n).engine.pos.state in ("flat", "exited_manual")  # type: ignore[union-attr]
                            for n in ("btc", "eth")), "both instances flat after flatten", timeout=60)
