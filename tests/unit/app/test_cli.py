"""What a newcomer meets in the first hour of the CLI: a version, quiet pipes, mistakes said plainly."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import pytest

from gatebot.app.cli import _parser, main
from gatebot.app.exit_codes import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE
from gatebot.core.config import ConfigError, load_config
from tests.conftest import PaperSession
from tests.helpers import ROOT, gatebot, write_paper_session
from tests.unit.core.test_config import GOOD


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"gatebot {version('gatebot')}\n"


def _closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI writing into a pipe whose reader has already gone (``gatebot status | head -0``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "gatebot.app.cli", *args], cwd=ROOT, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)


def test_status_and_report_into_a_closed_pipe_exit_quietly(tmp_path: Path, paper_session: PaperSession) -> None:
    config = paper_session(bars=5)
    assert gatebot("run", str(config)).returncode == 0
    for command in ("status", "report"):
        done = _closed_pipe_run(command, str(tmp_path / "state"), *(["--no-png"] if command == "report" else []))
        assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr, (command, done.stderr)
        assert done.returncode == EXIT_BROKEN_PIPE, (command, done.returncode, done.stderr)


def test_live_flag_with_a_config_that_is_not_live_is_refused(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
        paper_session: PaperSession) -> None:
    config = paper_session(bars=5)
    assert main(["run", str(config), "--live"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--live" in err and "mode = 'paper'" in err, err
    assert not (tmp_path / "state").exists(), "nothing started"
    live_on_paper = tmp_path / "live.toml"
    live_on_paper.write_text(config.read_text().replace('mode = "paper"', 'mode = "live"'))
    assert main(["run", str(live_on_paper), "--live"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every account of this config is a paper one" in err, err


def test_invalid_enum_lists_the_valid_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('mode = "replay"', 'mode = "replya"'))
    with pytest.raises(ConfigError, match=r"\$\.mode: .*'replya'.* \(valid: 'paper', 'replay', 'live'\)"):
        load_config(path)


@pytest.mark.parametrize(("field", "bad", "sentence"), [
    ("symbol", "BTCUSDT", "symbol 'BTCUSDT' must be BASE-QUOTE in capital letters and digits, like BTC-USDT"),
    ("name", "btc-1", "name 'btc-1' must be 1 to 20 lowercase letters, digits or _ (no -)"),
])
def test_a_bad_pattern_is_said_as_a_sentence_with_an_example(tmp_path: Path, field: str, bad: str,
                                                              sentence: str) -> None:
    path = tmp_path / "bad.toml"
    good = {"symbol": 'symbol = "BTC-USDT"', "name": 'name = "one"'}[field]
    path.write_text(GOOD.replace(good, f'{field} = "{bad}"'))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"$.instances[0].{field}: {sentence}" in str(err.value)
    assert "regex" not in str(err.value) and "^[" not in str(err.value)


def test_verbose_before_or_after_the_subcommand() -> None:
    parse = _parser().parse_args
    assert parse(["-v", "status", "x"]).verbose is True
    assert parse(["status", "x", "-v"]).verbose is True
    assert parse(["run", "c.toml", "--verbose"]).verbose is True
    assert parse(["status", "x"]).verbose is False


def test_sim_prints_a_config_snippet_that_loads(tmp_path: Path) -> None:
    """``gatebot sim`` prints the account table with its own URLs; pasted into a config, it loads."""
    import tomllib

    sim = subprocess.Popen([sys.executable, "-m", "gatebot.app.cli", "sim"], cwd=ROOT, stdout=subprocess.PIPE,
                           text=True)
    killer = threading.Timer(60, sim.kill)  # bounds the reads below if the simulator never prints
    killer.start()
    try:
        lines = []
        while not lines or not lines[-1].startswith("secret_env"):
            line = sim.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the simulator ended before its snippet: {lines}"
            lines.append(line)
    finally:
        killer.cancel()
        sim.terminate()
        sim.wait(timeout=30)
    rest = next(line.split()[1] for line in lines if line.strip().startswith("REST"))
    snippet = "".join(lines[next(i for i, line in enumerate(lines) if line.startswith("# paste")):])
    options = tomllib.loads(snippet)["exchanges"]["sim"]["options"]
    assert options["rest_url"] == rest and options["ws_url"].startswith("ws://127.0.0.1:")
    assert options["close_candles_by_clock"] is False
    assert options["api_key_env"] == "GATEBOT_SIM_API_KEY" and options["secret_env"] == "GATEBOT_SIM_SECRET"
    config = tmp_path / "c.toml"
    instances = (ROOT / "examples" / "sim.toml").read_text().partition("[[instances]]")[2]
    config.write_text(f'mode = "paper"\nstate_dir = "state"\n{snippet}\n[[instances]]{instances}')
    assert main(["check-config", str(config)]) == 0


def test_the_sim_example_loads(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(ROOT / "examples" / "sim.toml")]) == 0, capsys.readouterr().err


def test_report_of_an_instance_without_trades_starts_no_series_at_1970(tmp_path: Path,
        paper_session: PaperSession) -> None:
    """Two instances, one of which never decided (too little history): the chart's time range is the
    trading one's, read back from what the PNG was drawn from."""
    from gatebot.app.plot import read_series

    config = paper_session(bars=200)
    idle = ('\n[[instances]]\nname = "idle"\nexchange = "paper"\nstrategy = "sma_cross"\nsymbol = "ETH-USDT"\n'
            'interval = "5m"\nleverage = 4\nparams = { fast = 3, slow = 1000, fraction = 0.5 }\n'
            'protection = { leveraged_sl_pct = 0.04 }\n')
    config.write_text(config.read_text() + idle)
    run = gatebot("run", str(config))
    assert run.returncode == 0, run.stderr
    done = gatebot("report", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    series = read_series(tmp_path / "state" / "report.png")
    assert set(series) == {"kt", "idle"} and len(series["kt"]["t"]) > 1, series
    plotted = [t for curve in series.values() for t in curve["t"]]
    assert min(plotted) >= min(series["kt"]["t"]) > 0, "an empty series must not start at epoch 0"


def test_replay_progress_shows_the_total_and_an_eta(tmp_path: Path) -> None:
    """A candle-file replay knows its total: the progress line says it, with the time left."""
    from gatebot.app.runner import Runner, _Progress
    from gatebot.plugins.manager import make_plugin_manager

    csv = tmp_path / "c.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n"
                   + "".join(f"{1_735_689_600_000 + i * 300_000},100,101,99,100,1\n" for i in range(1234)))
    config = tmp_path / "replay.toml"
    config.write_text(GOOD.replace('state_dir = "state"', f'state_dir = "{tmp_path / "state"}"'))
    runner = Runner(load_config(config), make_plugin_manager([], []), candles_csv=csv, progress=True)
    assert runner._candle_total() == 1234
    line = _Progress(runner._candle_total()).line(617, 10.0)  # half done in 10 s: 10 s to go
    assert "617 of 1,234 candles" in line and "50.0%" in line and "ETA 0:10" in line, line
    assert "of" not in _Progress(None).line(617, 10.0)  # unknown total: count and rate only


def test_the_demo_names_its_exchange_and_each_symbol_trades_near_its_own_price() -> None:
    from gatebot.app.cli import run_label
    from gatebot.simulators.bingx import BingXSimulator, SimOptions

    demo = load_config(ROOT / "examples" / "demo.toml")
    assert run_label(demo) == "paper, on the embedded BingX simulator"
    assert run_label(load_config(ROOT / "examples" / "sim.toml")).startswith("paper, on BingX")
    sim = BingXSimulator(SimOptions(symbols=["BTC-USDT", "ETH-USDT"], history_bars=5, bars=5))
    assert 30_000 < sim.markets["BTC-USDT"].price < 120_000
    assert 1_500 < sim.markets["ETH-USDT"].price < 6_000
    one = BingXSimulator(SimOptions(symbols=["ETH-USDT"], start_price=100.0, start_prices={"SOL-USDT": 1.0}))
    assert 50 < one.markets["ETH-USDT"].price < 200  # an explicit start_price still sets every symbol


def test_a_replay_into_a_paper_sessions_state_dir_is_refused_once_with_status_2(tmp_path: Path) -> None:
    from gatebot.app.replayer import import_candles
    from gatebot.core.market import generate

    config = write_paper_session(tmp_path, bars=10)
    assert gatebot("run", str(config)).returncode == 0
    journal = tmp_path / "state" / "kt.sqlite"
    before = journal.read_bytes()
    csv = tmp_path / "candles.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{c.open_time},{c.open},{c.high},{c.low},{c.close},{c.volume}\n"
        for c in generate(seed=1, symbol="BTC-USDT", interval="5m", bars=10)))
    import_candles(csv, tmp_path / "market.rec")
    done = gatebot("replay", str(config), str(tmp_path / "market.rec"))
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: journal {journal} was written by a paper session; a replay does not overwrite it "
        "(choose another state_dir)"]
    assert done.stdout == "", "no 'candles replayed' line and no summary of the paper journal"
    assert journal.read_bytes() == before


BESIDE_PLUGIN = '''
from gatebot.plugins.hookspecs import hookimpl
from gatebot.strategies.sma_cross.strategy import SmaCross


class Beside(SmaCross):
    pass


@hookimpl
def gatebot_strategies():
    return {"beside": Beside}
'''


def test_a_plugin_module_beside_the_config_loads_without_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "my_beside_plugin.py").write_text(BESIDE_PLUGIN)
    config = tmp_path / "beside.toml"
    config.write_text(GOOD.replace('strategy = "sma_cross"', 'strategy = "beside"')
                      .replace('state_dir = "state"', 'state_dir = "state"\n[plugins]\nmodules = ["my_beside_plugin"]'))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "gatebot.app.cli", "check-config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_missing_plugin_module_says_where_it_was_looked_for_and_how_to_fix_it(tmp_path: Path) -> None:
    config = tmp_path / "missing.toml"
    config.write_text(GOOD.replace('state_dir = "state"',
                                   'state_dir = "state"\n[plugins]\nmodules = ["no_such_plugin_here"]'))
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert "$.plugins: plugin module 'no_such_plugin_here' cannot be imported" in message
    assert f"nor in the config's folder {tmp_path}" in message
    assert "put no_such_plugin_here.py (or a no_such_plugin_here/ package) beside the config" in message


def test_a_failing_run_leaves_no_unclosed_session_noise(tmp_path: Path) -> None:
    import socket

    config = write_paper_session(tmp_path, bars=5)
    assert gatebot("run", str(config)).returncode == 0
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = gatebot("check-invariants", str(tmp_path / "state"), "--rest", f"http://127.0.0.1:{port}",
                   "--api-key-env", "K", "--secret-env", "S", env={"K": "k", "S": "s"})
    assert done.returncode == 4, done.stderr
    assert "Cannot connect to host" in done.stderr
    assert "Unclosed" not in done.stderr, done.stderr
