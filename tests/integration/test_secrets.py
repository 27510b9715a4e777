"""Secrets and safety: a session with known key and secret leaves them nowhere (logs at DEBUG, journals,
reports, recordings, exception texts); a loose secrets file is refused through the CLI; live trading needs
mode = "live" and --live (tested both ways through the CLI); the simulator binds to loopback only."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from gatebot.core.journal import Journal
from gatebot.simulators.bingx import BingXSimulator, SimOptions
from tests.helpers import gatebot
from tests.integration.sessions import session

KEY = "KEY-b7f3c1d9e2a4-known"
SECRET = "SECRET-9a8b7c6d5e4f-known"


def test_a_session_leaves_the_key_and_secret_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []

    async def go() -> None:
        async with session(tmp_path, monkeypatch, attached=False, params="{ every = 2 }",
                           sim_options={"api_key": KEY, "secret": SECRET}) as s:
            await s.candles_until(lambda: s.engine.pos.rec.seq >= 3, "three trades", limit=30)
            s.sim.faults.expire_listen_key()
            s.sim.faults.fail_next("/openApi/swap/v2/trade/order", "5xx")
            await s.candles_until(lambda: s.engine.pos.rec.seq >= 5, "two more", limit=30)
        # an authentication failure's text: the adapter with a wrong secret
        from gatebot.core.clock import LiveClock
        from gatebot.exchanges.bingx.rest import RestClient

        async with BingXSimulator(SimOptions(api_key=KEY, secret=SECRET)) as sim:
            rest = RestClient(sim.rest_url, KEY, SECRET + "-wrong", clock=LiveClock(), timeout_s=2)
            await rest.start()
            try:
                await rest.listen_key()
                from gatebot.exchanges.bingx.constants import BALANCE

                await rest.query(BALANCE, {}, list)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc!r} {exc}")
            finally:
                await rest.close()

    asyncio.run(go())
    assert errors, "the wrong secret was refused"
    texts = {"logs": caplog.text, "errors": "\n".join(errors)}
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    journal = Journal(tmp_path / "state" / "it.sqlite", readonly=True)
    try:
        texts["journal dump"] = journal.dump().decode("latin-1")
    finally:
        journal.close()
    status = gatebot("status", str(tmp_path / "state"))
    texts["status"] = status.stdout + status.stderr
    assert len(caplog.text) > 1000, "DEBUG logging was on"
    for where, text in texts.items():
        assert KEY not in text and SECRET not in text, f"a secret leaked into {where}"


def test_a_loose_secrets_file_is_refused_through_the_cli(tmp_path: Path) -> None:
    secrets = tmp_path / "bingx.env"
    secrets.write_text(f"BINGX_API_KEY={KEY}\nBINGX_SECRET_KEY={SECRET}\n")
    secrets.chmod(0o644)
    config = tmp_path / "bot.toml"
    config.write_text(f"""
mode = "paper"
state_dir = "{tmp_path / 'state'}"
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
rest_url = "http://127.0.0.1:9"
ws_url = "ws://127.0.0.1:9/swap-market"
secrets_file = "{secrets}"
[[instances]]
name = "sf"
exchange = "bx"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
""")
    done = gatebot("run", str(config), env={"BINGX_API_KEY": "", "BINGX_SECRET_KEY": ""}, timeout=60)
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert f"secrets file {secrets} is readable by others: chmod 600" in done.stderr
    assert SECRET not in done.stderr + done.stdout and KEY not in done.stderr + done.stdout


LIVE = """
mode = "{mode}"
state_dir = "{state}"
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
host = "live"
api_key_env = "GATEBOT_TEST_NO_SUCH_KEY"
secret_env = "GATEBOT_TEST_NO_SUCH_SECRET"
[[instances]]
name = "lv"
exchange = "bx"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
"""


def test_live_trading_needs_mode_live_and_the_flag_through_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "live.toml"
    config.write_text(LIVE.format(mode="live", state=tmp_path / "state"))
    without = gatebot("run", str(config), timeout=60)
    assert without.returncode == 2 and "start it with the explicit flag --live" in without.stderr, without.stderr
    assert not (tmp_path / "state").exists(), "nothing started"
    # with the flag the guard lets it through: it stops next at the missing credentials, before any network
    flagged = gatebot("run", str(config), "--live", timeout=60)
    assert flagged.returncode == 4, (flagged.stdout, flagged.stderr)
    assert "--live" not in flagged.stderr and "set GATEBOT_TEST_NO_SUCH_KEY" in flagged.stderr
    # the flag alone is not enough: a real-money account in a paper config is refused, flag or not
    config.write_text(LIVE.format(mode="paper", state=tmp_path / "state"))
    for args in ([], ["--live"]):
        refused = gatebot("run", str(config), *args, timeout=60)
        assert refused.returncode == 2 and "this account trades real money" in refused.stderr, refused.stderr


def test_the_simulator_binds_to_loopback_only() -> None:
    async def go() -> None:
        async with BingXSimulator(SimOptions()) as sim:
            assert sim._runner is not None
            rest = [a[0] for a in sim._runner.addresses]
            server = sim.streams._server
            assert server is not None
            ws = [s.getsockname()[0] for s in server.sockets]
            assert rest and all(a == "127.0.0.1" for a in rest), rest
            assert ws and all(a == "127.0.0.1" for a in ws), ws
            assert sim.rest_url.startswith("http://127.0.0.1:") and sim.ws_url.startswith("ws://127.0.0.1:")
            # and it is not reachable on another address of this machine
            port = sim._runner.addresses[0][1]
            others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
            for host in others - {"127.0.0.1"}:
                if host.startswith("127."):
                    continue
                with socket.socket() as sock:
                    sock.settimeout(0.5)
                    assert sock.connect_ex((host, port)) != 0, f"reachable on {host}"

    asyncio.run(go())
