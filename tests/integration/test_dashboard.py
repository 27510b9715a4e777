"""The read-only dashboard (``gatebot dashboard STATE_DIR``): the API contract's GETs from the journals, every
POST refused 409, the token required (and never echoed), the page and its vendored chart library served."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gatebot.app import views
from gatebot.app.api import READ_ONLY, STATIC_DIR, Api, JournalBackend, Token
from gatebot.core.journal import Journal
from tests.helpers import ROOT, gatebot, write_paper_session

TOKEN = "s3cret-token-for-tests"


def read_only_app(state_dir: Path) -> Any:
    """What ``gatebot dashboard`` serves: the API over the journals."""
    return Api(JournalBackend(state_dir), Token(TOKEN, "env"), started_ms=0).app


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished paper session's journals (generated market, seeded: trades in it)."""
    tmp = tmp_path_factory.mktemp("dash")
    result = gatebot("run", str(write_paper_session(tmp, bars=400)))
    assert result.returncode == 0, result.stderr
    return tmp / "state"


def call(state_dir: Path, requests: list[tuple[str, str, dict[str, str]]]) -> list[tuple[int, Any]]:
    """Each (method, path, headers) against the read-only app on a loopback port: (status, JSON body)."""
    async def go() -> list[tuple[int, Any]]:
        async with TestClient(TestServer(read_only_app(state_dir), host="127.0.0.1")) as client:
            out = []
            for method, path, headers in requests:
                resp = await client.request(method, path, headers=headers)
                body = await resp.json() if resp.content_type == "application/json" else await resp.text()
                out.append((resp.status, body))
            return out
    return asyncio.run(go())


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_every_get_of_the_contract_from_the_journals(state_dir: Path) -> None:
    paths = ["/api/health", "/api/instances", "/api/instances/kt", "/api/instances/kt/candles?limit=10",
             "/api/instances/kt/trades", "/api/instances/kt/equity", "/api/instances/kt/transitions?limit=3"]
    (health, instances, one, candles, trades, equity, transitions) = call(
        state_dir, [("GET", p, AUTH) for p in paths])
    assert all(status == 200 for status, _ in (health, instances, one, candles, trades, equity, transitions))
    assert health[1]["read_only"] is True and health[1]["instances"] == 1
    [inst] = instances[1]
    assert inst["name"] == "kt" and inst["strategy"] == "sma_cross" and inst["symbol"] == "BTC-USDT"
    assert inst["trading_state"] == "active"
    journal = Journal(state_dir / "kt.sqlite", readonly=True)
    try:
        rec = journal.fold()
        pnl, fees = journal.realized()
        n_fills = journal.conn.execute("SELECT count(*) FROM fills").fetchone()[0]
        initial = Decimal(journal.meta()["initial_balance"])
        funding = journal.funding_total()
    finally:
        journal.close()
    assert inst["position_state"] == rec.state
    assert Decimal(inst["realized_pnl"]) == pnl and Decimal(inst["fees"]) == fees  # exact, as strings
    assert Decimal(inst["balance"]) == initial + pnl - fees - funding
    if rec.open_qty > 0:  # read-only: no mark, so no unrealized PnL; the stop as journaled
        assert Decimal(inst["position"]["qty"]) == rec.open_qty and inst["position"]["mark_price"] is None
        assert inst["position"]["stop"]["client_id"] == rec.stop_id
        assert Decimal(inst["position"]["stop"]["price"]) == rec.stop_price
    else:
        assert inst["position"] is None
    assert "working_orders" in one[1] and one[1]["name"] == "kt"
    assert candles[1] == []  # journals hold no candles
    assert len(trades[1]) == n_fills > 0
    assert {t["kind"] for t in trades[1]} <= {"entry", "exit", "stop"} and trades[1][0]["kind"] == "entry"
    assert all(isinstance(t["time_ms"], int) and Decimal(t["price"]) > 0 for t in trades[1])
    assert Decimal(equity[1][0]["equity"]) == initial and len(equity[1]) >= 2
    assert len(transitions[1]) == 3 and set(transitions[1][0]) == {"time_ms", "from", "to", "trigger", "detail"}


def test_a_position_held_shows_side_entry_stop_and_unrealized_pnl() -> None:
    """What the table shows of an open short: qty, entry, the stop, unrealized PnL from a mark (numbers exact)."""
    from gatebot.core.position import PositionRecord

    rec = PositionRecord(state="protected", seq=3, symbol="BTC-USDT", side="short", filled_qty=Decimal("0.2"),
                         entry_cost=Decimal("20000"), stop_id="kt-3-s1", stop_price=Decimal("101000.5"),
                         opened_at=1_700_000_000_000)
    view = views.position(rec, Decimal("99000"))
    assert view is not None and view["side"] == "short" and view["opened_ms"] == 1_700_000_000_000
    assert [Decimal(view[k]) for k in ("qty", "entry_price", "mark_price", "unrealized_pnl")] == [
        Decimal("0.2"), Decimal("100000"), Decimal("99000"), Decimal("200")]
    assert view["stop"] == {"price": "101000.5", "client_id": "kt-3-s1"}
    assert views.position(PositionRecord()) is None


def test_posts_are_refused_and_unknown_instances_404(state_dir: Path) -> None:
    results = call(state_dir, [("POST", f"/api/instances/kt/{c}", AUTH) for c in ("close", "pause", "resume", "halt")]
                   + [("POST", "/api/flatten", AUTH), ("GET", "/api/instances/nope", AUTH),
                      ("GET", "/api/instances/nope/trades", AUTH)])
    assert results[:5] == [(409, {"error": READ_ONLY})] * 5
    assert [s for s, _ in results[5:]] == [404, 404] and "nope" in results[5][1]["error"]


def test_the_token_is_required_and_never_echoed(state_dir: Path) -> None:
    wrong = "not-the-token-" + "x" * 10
    results = call(state_dir, [
        ("GET", "/api/instances", {}), ("GET", "/api/instances", {"Authorization": f"Bearer {wrong}"}),
        ("GET", f"/api/instances?token={TOKEN}", {}),  # only the event stream takes ?token=
        ("POST", "/api/flatten", {}), ("GET", f"/api/health?token={wrong}", {})])
    assert [s for s, _ in results] == [401] * 5
    assert all(wrong not in str(body) and TOKEN not in str(body) for _, body in results)


def test_the_page_and_its_assets_are_served(state_dir: Path) -> None:
    page, script, chart, notice = call(state_dir, [
        ("GET", "/", {}), ("GET", "/static/app.js", {}),
        ("GET", "/static/vendor/lightweight-charts.standalone.production.js", {}),
        ("GET", "/static/vendor/NOTICE", {})])
    assert page[0] == 200 and "/static/app.js" in page[1] and "lightweight-charts" in page[1]
    assert script[0] == 200 and "EventSource" in script[1]
    assert chart[0] == 200 and "TradingView Lightweight Charts" in chart[1]
    assert notice[0] == 200 and "TradingView, Inc." in notice[1]
    # nothing on the page is fetched from elsewhere: it works offline
    assert "http" not in (STATIC_DIR / "static" / "app.js").read_text().replace("HTTP ", "")
    assert all(src.startswith(("/static/", "data:")) for src in _sources((STATIC_DIR / "index.html").read_text()))


def _sources(html: str) -> Iterator[str]:
    import re

    yield from re.findall(r'(?:src|href)="([^"]+)"', html.replace('href="https://www.tradingview.com/"', ""))


def test_the_event_stream_sends_a_snapshot(state_dir: Path) -> None:
    async def go() -> str:
        async with TestClient(TestServer(read_only_app(state_dir), host="127.0.0.1")) as client:
            resp = await client.get(f"/api/events?token={TOKEN}")
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            head = b""
            while b"\n\n" not in head:
                head += await asyncio.wait_for(resp.content.readany(), 10)
            resp.close()
            return head.decode()
    text = asyncio.run(go())
    assert text.startswith("event: snapshot\ndata: [") and '"name":"kt"' in text


def test_the_command_serves_on_loopback_until_stopped(state_dir: Path) -> None:
    """``gatebot dashboard STATE_DIR --port 0`` says where it serves, then serves the page and the reads."""
    env = {**os.environ, "GATEBOT_API_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "dashboard", str(state_dir), "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("dashboard (read-only): http://127.0.0.1:"), line
        assert TOKEN not in line  # a token of the operator's own is not shown
        base = line.split(": ", 1)[1].split("/#")[0]

        async def get() -> tuple[Any, str]:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/api/health", headers=AUTH) as r:
                    health = await r.json()
                async with s.get(f"{base}/") as r:
                    return health, await r.text()
        health, page = asyncio.run(get())
        assert health["read_only"] is True and "/static/app.js" in page
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_command_refuses_a_folder_without_journals(tmp_path: Path) -> None:
    result = gatebot("dashboard", str(tmp_path), "--port", "0")
    assert result.returncode == 2 and f"no journals in {tmp_path}" in result.stderr


def test_every_file_of_the_page_ships_in_the_package() -> None:
    """``pip install .`` takes the page's files as package data: each one matches its folder's glob."""
    import fnmatch
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = [p for p in STATIC_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 6
    for path in files:
        package = ".".join(("gatebot", *path.parent.relative_to(ROOT).parts))
        assert package in project["packages"], f"{package} is not listed in pyproject's packages"
        globs = project["package-data"].get(package, [])
        assert any(fnmatch.fnmatch(path.name, g) for g in globs), f"{path} is not package data"
