"""Bad configurations: one clear line naming the key path, exit status 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatebot.app.cli import main
from gatebot.core.config import ConfigError, load_config

GOOD = """
mode = "replay"
state_dir = "state"
[exchanges.paper]
type = "paper"
[exchanges.paper.options]
balance = 1000.0
[[instances]]
name = "one"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "5m"
leverage = 4
params = { fast = 5, slow = 20 }
protection = { leveraged_sl_pct = 0.04 }
"""

SECOND = """
[[instances]]
name = "two"
exchange = "paper"
strategy = "sma_cross"
symbol = "BTC-USDT"
interval = "15m"
leverage = 4
"""

# (case, text, key path the message must name, a phrase of the explanation)
BAD = [
    ("unknown key", GOOD.replace('mode = "replay"', 'mode = "replay"\ncolour = "red"'), "$.colour", "unknown field"),
    ("unknown nested key", GOOD.replace("leverage = 4", "leverage = 4\nleverge = 5"), "$.instances[0].leverge",
     "unknown field"),
    ("wrong type", GOOD.replace("leverage = 4", 'leverage = "4"'), "$.instances[0].leverage", "Expected `int`"),
    ("missing exchange", GOOD.replace('exchange = "paper"', 'exchange = "bingx_main"'),
     "$.instances[0].exchange", "no exchange 'bingx_main'"),
    ("unknown strategy", GOOD.replace('strategy = "sma_cross"', 'strategy = "moon"'), "$.instances[0].strategy",
     "unknown strategy 'moon'"),
    ("leverage too high", GOOD.replace("leverage = 4", "leverage = 200"), "$.instances[0].leverage", "<= 125"),
    ("leverage zero", GOOD.replace("leverage = 4", "leverage = 0"), "$.instances[0].leverage", ">= 1"),
    ("negative stop", GOOD.replace("leveraged_sl_pct = 0.04", "leveraged_sl_pct = -0.04"),
     "$.instances[0].protection.leveraged_sl_pct", "> 0"),
    ("duplicate names", GOOD + SECOND.replace('name = "two"', 'name = "one"'), "$.instances[1].name",
     "duplicate instance name 'one'"),
    ("two instances on one symbol and account", GOOD + SECOND, "$.instances[1]", "hedge_mode = true"),
    ("two leverages on one symbol and account",
     (GOOD + SECOND.replace("leverage = 4", "leverage = 5")).replace('type = "paper"',
                                                                     'type = "paper"\nhedge_mode = true'),
     "$.instances[1].leverage", "they share one leverage"),
    ("secret in TOML", GOOD.replace('type = "paper"', 'type = "paper"\napi_secret = "abc123"'),
     "$.exchanges.paper.api_secret", "environment variables"),
    ("secret nested in options", GOOD.replace("balance = 1000.0", 'balance = 1000.0\napiKey = "k"'),
     "$.exchanges.paper.options.apiKey", "looks like a secret"),
    ("invalid TOML", GOOD.replace("leverage = 4", "leverage = = 4"), "", "invalid TOML"),
    ("strategy param of the wrong type", GOOD.replace("fast = 5", 'fast = "five"'), "$.instances[0].params.fast",
     "Expected `int`"),
    ("strategy param out of its rules", GOOD.replace("fast = 5", "fast = 50"), "$.instances[0].params",
     "fast (50) must be smaller than slow (20)"),
    ("unknown strategy param", GOOD.replace("fast = 5", "fats = 5"), "$.instances[0].params.fats", "unknown field"),
    ("exchange option of the wrong type", GOOD.replace("balance = 1000.0", 'balance = "lots"'),
     "$.exchanges.paper.options.balance", "Invalid decimal"),
    ("exchange option out of range", GOOD.replace("balance = 1000.0", "balance = -5.0"),
     "$.exchanges.paper.options", "balance must be positive"),
    ("unknown key of an exchange", GOOD.replace('type = "paper"', 'type = "paper"\nhedge = true'),
     "$.exchanges.paper.hedge", "unknown field"),
    ("exchange key of the wrong type", GOOD.replace('type = "paper"', 'type = "paper"\nhedge_mode = "yes"'),
     "$.exchanges.paper.hedge_mode", "Expected `bool`"),
    ("unknown exchange type", GOOD.replace('type = "paper"', 'type = "kraken"'), "$.exchanges.paper.type",
     "unknown exchange type 'kraken'"),
    ("bad instance name", GOOD.replace('name = "one"', 'name = "One-Bot"'), "$.instances[0].name",
     "lowercase letters, digits or _"),
    ("bad interval", GOOD.replace('interval = "5m"', 'interval = "7m"'), "$.instances[0].interval", "Invalid enum"),
    ("bad mode", GOOD.replace('mode = "replay"', 'mode = "yolo"'), "$.mode", "Invalid enum"),
    ("no instances", GOOD.split("[[instances]]")[0], "$", "instances"),
    ("live without the flag", GOOD.replace('mode = "replay"', 'mode = "live"'), "$.mode", "explicit flag --live"),
    ("csv market without a file", GOOD + '[market]\nsource = "csv"\ncsv = "nowhere.csv"\n', "$.market.csv",
     "no such file"),
    ("group commit outside a replay",
     GOOD.replace('mode = "replay"', 'mode = "paper"') + "[journal]\ngroup_commit = 10\n",
     "$.journal.group_commit", "only a replay"),
    ("unknown plugin module", GOOD + '[plugins]\nmodules = ["no_such_plugin_module"]\n', "$.plugins",
     "no_such_plugin_module"),
]


@pytest.mark.parametrize(("case", "text", "key", "phrase"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_gives_one_line_naming_the_key_exit_2_and_no_journal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, text: str, key: str, phrase: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    status = main(["run", str(path)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"{path}: {key}"), err
    assert phrase in err, err
    assert not (tmp_path / "state").exists(), "a journal folder was created for a bad config"
    assert list(tmp_path.rglob("*.sqlite")) == []


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["check-config", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{missing}: cannot read") and len(err.splitlines()) == 1


def test_a_secret_value_never_appears_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace('type = "paper"', 'type = "paper"\nsecret_key = "s3cr3t-value"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "s3cr3t-value" not in str(info.value)


def test_secret_references_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD.replace("[exchanges.paper.options]", 'api_key_env = "X"\n[exchanges.paper.options]'))
    with pytest.raises(ConfigError, match=r"api_key_env"):
        load_config(path)  # a reference is not a secret, but the paper exchange has no such field


def test_a_foreign_position_halts_unless_adopting_is_chosen(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    assert load_config(path).instances[0].protection.on_foreign_position == "halt"
    path.write_text(GOOD.replace("leveraged_sl_pct = 0.04", 'leveraged_sl_pct = 0.04, on_foreign_position = "adopt"'))
    assert load_config(path).instances[0].protection.on_foreign_position == "adopt"


def test_two_instances_on_one_symbol_are_fine_in_hedge_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text((GOOD + SECOND).replace('type = "paper"', 'type = "paper"\nhedge_mode = true'))
    config = load_config(path)
    assert [i.name for i in config.instances] == ["one", "two"]


def test_an_account_s_risk_guards_are_configured_on_its_exchange_table(tmp_path: Path) -> None:
    from gatebot.core.config import config_hash

    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    before = config_hash(load_config(path))
    path.write_text(GOOD.replace('type = "paper"', 'type = "paper"\nrisk = { max_daily_loss_pct = 3, '
                                 'resume = "next_utc_day" }'))
    config = load_config(path)
    risk = config.exchanges["paper"].risk
    assert risk is not None and (risk.max_daily_loss_pct, risk.resume) == (3, "next_utc_day")
    assert config_hash(config) != before  # a limit changes how the bot trades
    path.write_text(GOOD.replace('type = "paper"', 'type = "paper"\nrisk = { max_trades_per_day = 0 }'))
    with pytest.raises(ConfigError, match=r"\$\.exchanges\.paper\.risk\.max_trades_per_day: Expected `int` >= 1"):
        load_config(path)


def test_good_config_is_typed_and_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "c.toml").write_text(GOOD)
    config = load_config(sub / "c.toml")
    assert config.state_dir == str(sub / "state")
    inst = config.instances[0]
    assert (inst.params.fast, inst.params.slow, inst.params.fraction) == (5, 20, 0.5)
    assert str(config.exchanges["paper"].options.balance) == "1000.0"
    assert config.journal_synchronous == "OFF"
    assert main(["check-config", str(sub / "c.toml")]) == 0


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[3] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_example_is_valid(example: Path) -> None:
    if "\n[sweep]\n" in example.read_text():  # a sweep's: its [sweep] table checked with the rest (gatebot sweep)
        from gatebot.app.sweep import load_sweep

        config = load_sweep(example).base
    else:
        config = load_config(example)
    assert config.instances
