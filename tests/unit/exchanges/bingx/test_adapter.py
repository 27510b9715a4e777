"""Credentials come from the environment or a 0600 file; errors say where to put them, never a value;
a config that would trade real money needs mode = "live" and the explicit opt-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gatebot.core.config import ConfigError, load_config
from gatebot.core.exchange import ExchangeError
from gatebot.exchanges.bingx.adapter import BingXAdapter, BingXOptions, load_secrets
from gatebot.exchanges.bingx.rest import RestClient


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINGX_API_KEY", "k-123")
    monkeypatch.setenv("BINGX_SECRET_KEY", "s-456")
    assert load_secrets(BingXOptions()) == ("k-123", "s-456")


def test_from_a_0600_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BINGX_API_KEY", raising=False)
    monkeypatch.delenv("BINGX_SECRET_KEY", raising=False)
    path = tmp_path / "bingx.env"
    path.write_text("BINGX_API_KEY=file-key\nBINGX_SECRET_KEY = file-secret\n")
    path.chmod(0o600)
    assert load_secrets(BingXOptions(secrets_file=str(path))) == ("file-key", "file-secret")
    path.chmod(0o644)
    with pytest.raises(ExchangeError, match="readable by others: chmod 600") as info:
        load_secrets(BingXOptions(secrets_file=str(path)))
    assert "file-secret" not in str(info.value)


def test_missing_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    monkeypatch.setenv("MY_SECRET", "top-secret-value")
    with pytest.raises(ExchangeError) as info:
        load_secrets(BingXOptions(api_key_env="MY_KEY", secret_env="MY_SECRET"))
    assert "set MY_KEY in the environment" in str(info.value) and "top-secret-value" not in str(info.value)


def test_the_secret_never_appears_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    from gatebot.core.clock import LiveClock

    caplog.set_level(logging.DEBUG)
    rest = RestClient("http://127.0.0.1:9", "the-key", "the-secret-xyz", clock=LiveClock())
    adapter = BingXAdapter(BingXOptions(), hedge_mode=False, clock=LiveClock())
    assert "the-secret-xyz" not in repr(rest) + repr(adapter) + str(vars(adapter))
    assert "the-secret-xyz" not in caplog.text


LIVE = """
mode = "{mode}"
[exchanges.bx]
type = "bingx"
[exchanges.bx.options]
host = "live"
[[instances]]
name = "og"
exchange = "bx"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
"""


def test_the_live_host_needs_mode_live_and_the_flag(tmp_path: Path) -> None:
    from gatebot.app.cli import main

    path = tmp_path / "live.toml"
    path.write_text(LIVE.format(mode="paper"))
    with pytest.raises(ConfigError, match=r"\$\.exchanges\.bx\.options: this account trades real money"):
        load_config(path, allow_live=True)
    path.write_text(LIVE.format(mode="live"))
    with pytest.raises(ConfigError, match="explicit flag --live"):
        load_config(path)
    assert load_config(path, allow_live=True).exchanges["bx"].options.real_money
    assert main(["run", str(path)]) == 2, "without --live nothing starts"
    assert main(["check-config", str(path)]) == 0
