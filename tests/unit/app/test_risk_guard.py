"""The built-in risk guards in replays built to trip them: the scripted strategy enters every other candle (and
signals its exit one candle later) on candles shaped to lose, stop out or just trade; a tripped guard pauses
entries through the operator's path (journaled, source risk-guard), the open position's stop and exit keep
working, and the pause ends at the next UTC day or by the operator's resume, as configured."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from gatebot.app import control
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.core.events import CandleClosed
from gatebot.core.journal import Journal
from gatebot.plugins.manager import make_plugin_manager

STEP_MS = 300_000
DAY0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
START_MS = DAY0_MS + 22 * 3_600_000  # two hours (24 candles) before the next UTC day


def config_toml(state: Path, risk: str, *, account: bool = False) -> str:
    """A replay of scripted entries (every other candle) at 4x with stops 1 % away, filled exactly at their price:
    one instance "rg" (half the balance per entry) with ``risk`` as its own guards, or (``account``) two, "ra" on
    BTC-USDT and "rb" on ETH-USDT (a quarter each), with ``risk`` as their paper account's."""
    instances = [("ra", "BTC-USDT", 0.25), ("rb", "ETH-USDT", 0.25)] if account else [("rg", "BTC-USDT", 0.5)]
    text = f"""
mode = "replay"
state_dir = "{state}"
[journal]
synchronous = "OFF"
[plugins]
modules = ["gatebot.strategies.scripted"]
[exchanges.paper]
type = "paper"
{f"risk = {risk}" if account else ""}
[exchanges.paper.options]
balance = 10000.0
stop_slippage_bps = 0
"""
    for name, symbol, fraction in instances:
        text += f"""[[instances]]
name = "{name}"
exchange = "paper"
strategy = "scripted"
symbol = "{symbol}"
interval = "5m"
leverage = 4
params = {{ every = 2, fraction = {fraction} }}
protection = {{ leveraged_sl_pct = 0.04 }}
{"" if account else f"risk = {risk}"}
"""
    return text


SHAPES: dict[str, Callable[[float], tuple[float, float, float, float]]] = {
    "flat": lambda p: (p, p * 1.001, p * 0.999, p),
    "crash": lambda p: (p, p, p * 0.97, p * 0.975),  # through a long's stop (1 % away at 4x, 4 %)
}
"""A candle's shape from the price it opens at: (open, high, low, close)."""


def candles(shapes: list[str], symbol: str = "BTC-USDT") -> list[CandleClosed]:
    out, price = [], 100.0
    for i, shape in enumerate(shapes):
        o, h, lo, c = SHAPES[shape](price)
        out.append(CandleClosed(symbol=symbol, interval="5m", open_time=START_MS + i * STEP_MS, open=o, high=h,
                                low=lo, close=c, volume=1.0))
        price = c
    return out


def replay(tmp: Path, risk: str, shapes: list[str],
           between: Callable[[Runner, int], None] | None = None) -> Journal:
    """Replay ``shapes`` with ``risk``; ``between(runner, i)`` runs before candle i is fed (each candle is handled
    in full before the next). The journal, read-only."""
    path = tmp / "rg.toml"
    path.write_text(config_toml(tmp / "state", risk))
    config = load_config(path)
    runner: Runner

    async def source() -> AsyncIterator[CandleClosed]:
        for i, candle in enumerate(candles(shapes)):
            if between is not None:
                between(runner, i)
            yield candle

    runner = Runner(config, make_plugin_manager(config.plugins.modules), candle_source=source())
    asyncio.run(runner.run())
    return Journal(tmp / "state" / "rg.sqlite", readonly=True)


def entries(journal: Journal) -> list[int]:
    """The candle index each position was entered at."""
    return [(ts - START_MS) // STEP_MS - 1 for (ts,) in journal.conn.execute(
        "SELECT ts FROM transitions WHERE src = 'flat' AND dst = 'entering' ORDER BY seq")]


def exits(journal: Journal) -> list[str]:
    return [dst for _, dst, _ in journal.exits()]


def guard_rows(journal: Journal) -> list[tuple[str, str, str]]:
    return [(c["command"], c["source"], c["trading_state"]) for c in journal.controls()]


def test_consecutive_stop_outs_pause_entries_until_the_operator_resumes(tmp_path: Path) -> None:
    resumed_at = 10

    def operator(runner: Runner, i: int) -> None:
        if i == resumed_at:
            assert runner.instances[0].engine.trading_state == "reducing"
            control.apply(runner, "rg", "resume", source="cli", reason="checked")

    # Each entry is stopped out by the crash after it; three in a row trip the guard.
    journal = replay(tmp_path, '{ max_consecutive_stop_outs = 3, resume = "operator" }',
                     ["flat", "crash"] * 10, between=operator)
    controls = journal.controls()
    assert guard_rows(journal) == [("pause", "risk-guard", "reducing"), ("resume", "cli", "active"),
                                   ("pause", "risk-guard", "reducing")]
    assert controls[0]["reason"] == "3 consecutive stop-outs reached max_consecutive_stop_outs 3"
    # Entered on candles 0, 2, 4 (each stopped out on the next), none while paused, three more after the resume
    # (the count starts again there: it does not trip at the first loss after it), then paused again.
    assert entries(journal) == [0, 2, 4, 10, 12, 14]
    assert exits(journal) == ["exited_sl"] * 6


def test_trades_per_day_pause_entries_the_open_positions_stop_still_fires_and_the_next_day_resumes(
        tmp_path: Path) -> None:
    # The second entry reaches the limit: the crash after it is the open position's stop firing while paused.
    shapes = ["flat"] * 3 + ["crash"] + ["flat"] * 30
    journal = replay(tmp_path, '{ max_trades_per_day = 2, resume = "next_utc_day" }', shapes)
    controls = journal.controls()
    assert guard_rows(journal)[:2] == [("pause", "risk-guard", "reducing"), ("resume", "risk-guard", "active")]
    assert "2 entries today reached max_trades_per_day 2" in controls[0]["reason"]
    assert entries(journal)[:2] == [0, 2]
    # the second one's stop, on the exchange, worked while entries were paused
    assert exits(journal)[:2] == ["exited_exit", "exited_sl"]
    day1 = DAY0_MS + 86_400_000
    assert controls[1]["ts_ms"] >= day1 and controls[1]["ts_ms"] - day1 <= STEP_MS  # the first candle of the day
    first_days = [e for e in entries(journal) if START_MS + (e + 1) * STEP_MS < day1]
    assert len(first_days) == 2  # the limit held for the rest of the day
    assert len(entries(journal)) > 2  # and trading went on the next day


def test_an_exit_signal_still_closes_while_paused(tmp_path: Path) -> None:
    journal = replay(tmp_path, '{ max_trades_per_day = 1 }', ["flat"] * 10)
    assert guard_rows(journal) == [("pause", "risk-guard", "reducing")]  # resume = "operator": stays paused
    assert len(entries(journal)) == 1
    assert exits(journal) == ["exited_exit"]  # entered, paused at once, closed by its exit signal


def test_daily_loss_pauses_entries(tmp_path: Path) -> None:
    journal = replay(tmp_path, '{ max_daily_loss_pct = 3 }', ["flat", "crash"] * 6)
    controls = journal.controls()
    assert guard_rows(journal) == [("pause", "risk-guard", "reducing")]
    assert controls[0]["reason"].startswith("daily loss ")
    # 4x on half the balance: a stop-out 1 % away loses about 2 % of the equity; the second one trips 3 %.
    assert exits(journal) == ["exited_sl", "exited_sl"]
    assert len(entries(journal)) == 2


def test_drawdown_pauses_entries_and_a_new_day_does_not_resume_it_by_itself(tmp_path: Path) -> None:
    journal = replay(tmp_path, '{ max_drawdown_pct = 5 }', ["flat", "crash"] * 15)
    controls = journal.controls()
    assert guard_rows(journal) == [("pause", "risk-guard", "reducing")]
    assert controls[0]["reason"].startswith("drawdown ")
    assert exits(journal) == ["exited_sl"] * 3  # about 2 % each: the third reaches 5 %
    assert entries(journal) == [0, 2, 4]  # and nothing after midnight (candle 24): only the operator resumes


def replay_account(tmp: Path, risk: str, shapes: list[str]) -> dict[str, Journal]:
    """Two instances on one paper account, each on its own symbol fed the same ``shapes``; their journals."""
    path = tmp / "acct.toml"
    path.write_text(config_toml(tmp / "state", risk, account=True))
    config = load_config(path)

    async def source() -> AsyncIterator[CandleClosed]:
        for a, b in zip(candles(shapes), candles(shapes, "ETH-USDT"), strict=True):
            yield a
            yield b

    runner = Runner(config, make_plugin_manager(config.plugins.modules), candle_source=source())
    asyncio.run(runner.run())
    return {name: Journal(tmp / "state" / f"{name}.sqlite", readonly=True) for name in ("ra", "rb")}


def test_an_account_s_guard_counts_every_instance_on_it_and_pauses_them_all_until_the_next_day(
        tmp_path: Path) -> None:
    # Each instance stops out twice (candles 1 and 3): neither alone reaches 3 in a row; the account does, at
    # ra's second (ra 1, rb 1, ra 3), and both pause. rb's open position's stop still fires on candle 3.
    shapes = ["flat", "crash"] * 2 + ["flat"] * 30
    journals = replay_account(tmp_path, '{ max_consecutive_stop_outs = 3, resume = "next_utc_day" }', shapes)
    day1 = DAY0_MS + 86_400_000
    for name, journal in journals.items():
        controls = journal.controls()
        tripped = [("pause", "risk-guard", "reducing"), ("resume", "risk-guard", "active")]
        assert guard_rows(journal)[:2] == tripped, name
        assert controls[0]["reason"] == "account paper: 3 consecutive stop-outs reached max_consecutive_stop_outs 3"
        assert controls[0]["ts_ms"] == START_MS + 4 * STEP_MS  # candle 3's close: the same moment for both
        assert controls[1]["ts_ms"] >= day1 and controls[1]["ts_ms"] - day1 <= STEP_MS
        assert exits(journal)[:2] == ["exited_sl", "exited_sl"], name
        first_day = [e for e in entries(journal) if START_MS + (e + 1) * STEP_MS < day1]
        assert first_day == [0, 2], name  # nothing after the trip until the next UTC day
        assert len(entries(journal)) > 2, name  # then both trade again


def test_an_account_s_guard_holds_while_the_account_s_streak_is_below_its_limit(tmp_path: Path) -> None:
    # the same four stop-outs against a limit of 5: no pause anywhere, both keep entering every other candle
    journals = replay_account(tmp_path, "{ max_consecutive_stop_outs = 5 }", ["flat", "crash"] * 2 + ["flat"] * 4)
    for journal in journals.values():
        assert guard_rows(journal) == []
        assert entries(journal) == [0, 2, 4, 6]
        assert exits(journal)[:3] == ["exited_sl", "exited_sl", "exited_exit"]
