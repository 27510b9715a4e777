"""The control API (docs/api.md) of a bot running on the simulator: every endpoint, the token refused when
missing or wrong, commands refused with their reason, the set-up refusals, the read-only journal server, and no
secret in any response."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gatebot.app.api import Api, JournalBackend, load_token
from gatebot.core.config import ApiConfig, ConfigError
from tests.helpers import gatebot
from tests.integration.test_control import TOKEN, bot

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GETS = ["/api/health", "/api/instances", "/api/instances/it", "/api/instances/it/candles?limit=5",
        "/api/instances/it/trades", "/api/instances/it/equity", "/api/instances/it/transitions?limit=3"]
POSTS = ["/api/instances/it/close", "/api/instances/it/pause", "/api/instances/it/resume",
         "/api/instances/it/halt", "/api/flatten"]


async def _get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(url, headers=AUTH if headers is None else headers) as r:
        return r.status, await r.json()


async def _post(http: aiohttp.ClientSession, url: str, reason: str = "test") -> tuple[int, Any]:
    async with http.post(url, headers=AUTH, json={"reason": reason}) as r:
        return r.status, await r.json()


def test_every_endpoint_of_a_running_bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 0 }") as s, \
                aiohttp.ClientSession() as http:
            info = json.loads((tmp_path / "state" / "api.json").read_text())
            base = info["url"]
            assert base.startswith("http://127.0.0.1:") and TOKEN not in json.dumps(info)
            await s.candles_until(lambda: s.state == "protected", "protected")
            bodies = []
            status, health = await _get(http, base + "/api/health")
            assert status == 200 and health["status"] == "ok" and health["instances"] == 1
            assert health["read_only"] is False and isinstance(health["started_ms"], int)
            status, instances = await _get(http, base + "/api/instances")
            (inst,) = instances
            assert (inst["name"], inst["strategy"], inst["exchange"], inst["symbol"]) == ("it", "scripted", "bx",
                                                                                          "BTC-USDT")
            assert (inst["position_state"], inst["trading_state"]) == ("protected", "active")
            pos = inst["position"]
            rec = s.engine.pos.rec
            assert (pos["side"], pos["qty"], pos["entry_price"]) == ("long", str(rec.open_qty), str(rec.avg_entry))
            assert pos["stop"] == {"price": str(rec.stop_price), "client_id": rec.stop_id}
            assert pos["mark_price"] is not None and pos["unrealized_pnl"] is not None
            assert isinstance(inst["balance"], str) and isinstance(inst["fees"], str)
            status, one = await _get(http, base + "/api/instances/it")
            assert status == 200 and [o["kind"] for o in one["working_orders"]] == ["stop"]
            assert one["working_orders"][0]["client_id"] == rec.stop_id
            assert one["working_orders"][0]["price"] == str(rec.stop_price)
            status, candles = await _get(http, base + "/api/instances/it/candles?limit=5")
            assert status == 200 and len(candles) == 5
            assert set(candles[0]) == {"time_ms", "open", "high", "low", "close", "volume"}
            assert candles == sorted(candles, key=lambda c: c["time_ms"])
            status, trades = await _get(http, base + "/api/instances/it/trades")
            assert status == 200 and [(t["kind"], t["side"]) for t in trades] == [("entry", "long")]
            status, equity = await _get(http, base + "/api/instances/it/equity")
            assert status == 200 and equity[0]["drawdown"] == "0"
            status, transitions = await _get(http, base + "/api/instances/it/transitions?limit=3")
            assert status == 200 and len(transitions) == 3 and transitions[-1]["to"] == "protected"
            assert set(transitions[0]) == {"time_ms", "from", "to", "trigger", "detail"}
            async with http.get(base + "/api/events", params={"token": TOKEN}) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
                assert await r.content.readline() == b"event: snapshot\n"
                data = (await r.content.readline()).removeprefix(b"data: ")
                assert json.loads(data)[0]["name"] == "it"
            # the commands: applied, idempotent, refused with the reason
            status, r1 = await _post(http, base + "/api/instances/it/pause")
            assert (status, r1) == (200, {"ok": True, "message": "it: active -> reducing"})
            status, r2 = await _post(http, base + "/api/instances/it/pause")
            assert status == 200 and "already" in r2["message"]
            status, closing = await _post(http, base + "/api/instances/it/close", "enough")
            assert status == 200 and closing["message"].startswith("it: closing position 1")
            await s.until(lambda: s.state == "flat", "closed through the API")
            status, refused = await _post(http, base + "/api/instances/it/close")
            assert (status, refused) == (409, {"error": "no open position to close"})
            status, halted = await _post(http, base + "/api/instances/it/halt")
            assert status == 200 and halted["message"] == "it: reducing -> halted"
            status, refused = await _post(http, base + "/api/instances/it/pause")
            assert status == 409 and "halted" in refused["error"]
            status, flat = await _post(http, base + "/api/flatten")
            assert status == 200 and flat == {"results": {"it": {"ok": True, "message": "it: flat"}}}
            status, resumed = await _post(http, base + "/api/instances/it/resume")
            assert status == 200 and resumed["message"] == "it: halted -> active"
            status, trades = await _get(http, base + "/api/instances/it/trades")
            assert [t["kind"] for t in trades] == ["entry", "exit"]
            # unknown instance, unknown command, bad limit, bad body
            assert (await _get(http, base + "/api/instances/nope"))[0] == 404
            assert (await _post(http, base + "/api/instances/nope/pause"))[0] == 404
            assert (await _post(http, base + "/api/instances/it/explode"))[0] == 404
            assert (await _get(http, base + "/api/instances/it/candles?limit=x"))[0] == 400
            async with http.post(base + "/api/instances/it/pause", headers=AUTH, data=b"{") as r:
                assert r.status == 400
            for url in GETS:
                async with http.get(base + url, headers=AUTH) as r:
                    bodies.append(await r.text())
            secret = s.sim.options.secret
            assert all(TOKEN not in b and secret not in b and s.sim.options.api_key not in b for b in bodies)
            # the CLI, against the running bot
            env = {"GATEBOT_API_TOKEN": TOKEN}
            state = str(tmp_path / "state")
            cli = await asyncio.to_thread(gatebot, "status", state, env=env)
            assert cli.returncode == 0 and "trading active" in cli.stdout and "(live from the running bot" in cli.stdout
            assert "resume by api@127.0.0.1 (test): active" in cli.stdout, cli.stdout
            cli = await asyncio.to_thread(gatebot, "close", "it", state, env=env)
            assert cli.returncode == 2 and cli.stderr.strip() == "error: close it: no open position to close"
            cli = await asyncio.to_thread(gatebot, "pause", "it", state, "--reason", "lunch", env=env)
            assert cli.returncode == 0 and cli.stdout.strip() == "it: active -> reducing"
            cli = await asyncio.to_thread(gatebot, "flatten", state, env=env)
            assert cli.returncode == 0 and "it: flat" in cli.stdout
            cli = await asyncio.to_thread(gatebot, "resume", "it", state, env={"GATEBOT_API_TOKEN": "wrong"})
            assert cli.returncode == 2 and "wrong token" in cli.stderr
        assert not (tmp_path / "state" / "api.json").exists(), "the URL file goes with the server"
        cli = await asyncio.to_thread(gatebot, "status", str(tmp_path / "state"))
        assert cli.returncode == 0 and "trading reducing" in cli.stdout and "(from the journals" in cli.stdout
        cli = await asyncio.to_thread(gatebot, "pause", "it", str(tmp_path / "state"))
        assert cli.returncode == 2 and "no running gatebot" in cli.stderr

    asyncio.run(go())


def test_no_token_or_a_wrong_one_is_refused_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch) as s, aiohttp.ClientSession() as http:
            base = json.loads((tmp_path / "state" / "api.json").read_text())["url"]
            for url in [*GETS, "/api/events"]:  # the page and its assets hold no data: served to all (test_dashboard)
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                    async with http.get(base + url, headers=headers) as r:
                        body = await r.json()
                        assert r.status == 401 and "token" in body["error"] and TOKEN not in json.dumps(body)
            for url in POSTS:
                for headers in ({}, {"Authorization": "Bearer " + TOKEN[:-1]}):
                    async with http.post(base + url, headers=headers, json={}) as r:
                        assert r.status == 401
                async with http.post(base + url, params={"token": TOKEN}, json={}) as r:
                    assert r.status == 401, "a command never takes the token from the URL"
            async with http.get(base + "/api/instances", params={"token": TOKEN}) as r:
                assert r.status == 401, "the query token is for the page and the event stream only"
            assert s.engine.trading_state == "active", "nothing refused acted"

    asyncio.run(go())


def test_unsafe_api_set_ups_are_refused_in_one_line(tmp_path: Path) -> None:
    loose = tmp_path / "token"
    loose.write_text("abc")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644: it must be readable by its owner alone \(chmod 600"):
        load_token(ApiConfig(token_file=str(loose)), tmp_path, env={})
    os.chmod(loose, 0o600)
    token = load_token(ApiConfig(token_file=str(loose)), tmp_path, env={"GATEBOT_API_TOKEN": "env"})
    assert token.value == "abc" and "abc" not in repr(token)
    with pytest.raises(ConfigError, match="allow_remote"):
        load_token(ApiConfig(host="0.0.0.0"), tmp_path, env={"GATEBOT_API_TOKEN": "x"})
    with pytest.raises(ConfigError, match="needs a token of your own"):
        load_token(ApiConfig(host="0.0.0.0", allow_remote=True), tmp_path, env={})
    remote = load_token(ApiConfig(host="0.0.0.0", allow_remote=True), tmp_path, env={"GATEBOT_API_TOKEN": "x"})
    assert remote.value == "x"
    made = load_token(ApiConfig(), tmp_path, env={})
    assert made.where == "generated" and len(made.value) >= 32
    assert (os.stat(made.file).st_mode & 0o777) == 0o600


def test_the_read_only_server_serves_the_journals_and_refuses_every_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch, params="{ enter_on = 1, exit_on = 0 }") as s:
            await s.candles_until(lambda: s.state == "protected", "protected")
            stop_id = s.engine.pos.rec.stop_id
        token = load_token(ApiConfig(), tmp_path, env={"GATEBOT_API_TOKEN": TOKEN})
        api = Api(JournalBackend(tmp_path / "state"), token, started_ms=1)
        base = await api.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http:
                status, health = await _get(http, base + "/api/health")
                assert status == 200 and health["read_only"] is True and health["instances"] == 1
                status, (inst,) = await _get(http, base + "/api/instances")
                assert inst["position_state"] == "protected" and inst["position"]["stop"]["client_id"] == stop_id
                assert inst["position"]["mark_price"] is None, "no mark without the running bot"
                for url in GETS[2:]:
                    assert (await _get(http, base + url))[0] == 200, url
                for url in POSTS:
                    assert await _post(http, base + url) == (409, {"error": "read-only dashboard: the bot is not "
                                                                            "running"})
        finally:
            await api.stop()

    asyncio.run(go())


def test_the_incremental_views_agree_with_the_report_read_whole(tmp_path: Path) -> None:
    from decimal import Decimal

    from gatebot.app import evaluation, views
    from gatebot.core.journal import Journal
    from tests.helpers import write_paper_session

    assert gatebot("run", str(write_paper_session(tmp_path, bars=600))).returncode == 0
    journal = Journal(tmp_path / "state" / "kt.sqlite", readonly=True)
    try:
        v = views.JournalViews(journal)
        curve = v.equity()
        facts = evaluation.read_journal(journal)  # the report's reading of the same journal, whole
        closed = [t for t in facts.trades if not t.open]
        expected, value = [facts.initial_balance], facts.initial_balance
        for t in closed:
            value += t.net
            expected.append(value)
        assert len(curve) > 3 and [p["time_ms"] for p in curve[1:]] == [t.closed_at for t in closed]
        assert [Decimal(p["equity"]) for p in curve] == expected
        pnl, fees = journal.realized()
        inst = v.instance()
        assert (inst["realized_pnl"], inst["fees"]) == (str(pnl), str(fees))
        assert v.equity() == curve and v.trades() == views.JournalViews(journal).trades(), "read again: the same"
        kinds = {t["kind"] for t in v.trades()}
        assert {"entry"} <= kinds <= {"entry", "exit", "stop"}
        assert all(t["side"] in ("long", "short") for t in v.trades())
    finally:
        journal.close()


def test_a_token_made_for_the_run_is_shown_on_the_terminal_only_and_removed_at_the_end(tmp_path: Path) -> None:
    import re

    from tests.helpers import write_paper_session

    config = write_paper_session(tmp_path, bars=120)
    config.write_text(config.read_text().replace("[[instances]]", "[api]\nenabled = true\nport = 0\n[[instances]]"))
    out = gatebot("run", str(config), env={"GATEBOT_API_TOKEN": ""})
    assert out.returncode == 0, out.stderr
    found = re.search(r"dashboard: http://127\.0\.0\.1:\d+/#token=([\w-]{32,})", out.stderr)
    assert found, out.stderr
    token = found.group(1)
    state = tmp_path / "state"
    assert token not in (state / "gatebot.log.jsonl").read_text(), "never in the log file"
    assert out.stderr.count(token) == 1 and token not in out.stdout
    assert not (state / "api.token").exists() and not (state / "api.json").exists()


def test_gatebot_dashboard_serves_a_stopped_bots_journals_read_only(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.helpers import ROOT, write_paper_session

    assert gatebot("run", str(write_paper_session(tmp_path, bars=200))).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "GATEBOT_API_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "dashboard", str(tmp_path / "state"),
                             "--port", "0"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"dashboard \(read-only\): (http://127\.0\.0\.1:\d+)/#token=([\w-]+)", line)
        assert found, line
        url, token = found.groups()
        headers = {"Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(urllib.request.Request(url + "/api/health", headers=headers), timeout=10) as r:
            assert json.loads(r.read())["read_only"] is True
        with urllib.request.urlopen(urllib.request.Request(url + "/api/instances/kt/equity", headers=headers),
                                    timeout=10) as r:
            assert len(json.loads(r.read())) >= 1
        req = urllib.request.Request(url + "/api/instances/kt/pause", data=b"{}", method="POST", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 409
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
