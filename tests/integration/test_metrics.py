"""/metrics of the running bot (app/metrics.py), scraped through its API while it trades on the BingX simulator:
behind the token, every metric of METRICS exported with bounded labels, and each moving as the bot trades."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatebot.app import control
from gatebot.app.metrics import METRICS
from gatebot.exchanges.bingx import constants as C
from tests.integration.test_control import TOKEN, bot

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LABELS = {"instance", "symbol", "reason", "state", "le", "version", "python"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, base: str) -> tuple[set[str], Samples]:
    """(the families exported, every sample by name and labels other than instance and symbol)."""
    async with http.get(base + "/metrics", headers=AUTH) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            assert set(s.labels) <= LABELS, s
            assert s.labels.get("instance", "it") == "it"
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("instance", "symbol")))
            samples[(s.name, key)] = s.value
    return families, samples


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_every_metric_is_exported_and_moves_as_the_bot_trades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        async with bot(tmp_path, monkeypatch) as s, aiohttp.ClientSession() as http:
            base = json.loads((tmp_path / "state" / "api.json").read_text())["url"]
            async with http.get(base + "/metrics") as r:
                assert r.status == 401  # the token, as everywhere
            families, before = await scrape(http, base)
            # prometheus_client names a counter's family without its _total, an info without its _info
            exported = {f + "_total" if f + "_total" in METRICS else f + "_info" if f + "_info" in METRICS else f
                        for f in families}
            assert set(METRICS) <= exported, set(METRICS) - exported
            assert one(before, "gatebot_instance_state", state="running") == 1
            assert one(before, "gatebot_trading_state", state="active") == 1
            assert one(before, "gatebot_position_state", state="flat") == 1
            assert one(before, "gatebot_position_quantity") == 0
            assert one(before, "gatebot_reconciliations_total", reason="agreed") >= 1
            assert one(before, "gatebot_listen_key_age_seconds") >= 0
            assert one(before, "gatebot_seconds_since_user_event") >= 0
            assert one(before, "gatebot_unprotected_seconds") == 0
            assert one(before, "gatebot_protection_timeout_seconds") > 0

            s.sim.faults.fail_next(C.POSITIONS, "busy")  # an exchange error, retried (a query)
            s.sim.faults.reject_next_stop()  # the first entry's stop refused: closed at once
            await s.candles_until(lambda: any(t[1] == "stop_rejected" for t in s.transitions()), "a refused stop")
            await s.candles_until(lambda: s.state == "protected", "a protected position")
            rest = s.runner.adapters["bx"].rest
            for _ in range(int(rest.limiter.buckets["query"].burst) + 2):  # a burst beyond the budget: waits
                await rest.limiter.take("query")
            _, during = await scrape(http, base)
            assert one(during, "gatebot_position_state", state="protected") == 1
            assert one(during, "gatebot_position_quantity") > 0
            assert one(during, "gatebot_stops_refused_total") == 1
            assert one(during, "gatebot_exchange_errors_total", reason="110411") >= 1  # the stop refused
            assert one(during, "gatebot_rate_limit_waits_total", reason="query") >= 1
            assert one(during, "gatebot_fees") > one(before, "gatebot_fees")
            assert one(during, "gatebot_transitions_total") > one(before, "gatebot_transitions_total")
            assert one(during, "gatebot_decision_latency_seconds_count") > one(
                before, "gatebot_decision_latency_seconds_count")
            assert one(during, "gatebot_journal_commit_seconds_count") > one(
                before, "gatebot_journal_commit_seconds_count")
            assert one(during, "gatebot_protection_gap_seconds_count") >= 1
            assert one(during, "gatebot_equity") != one(before, "gatebot_equity")

            s.runner.adapters["bx"].market.last_frame_ms -= 5_000  # as if the market fell silent 5 s ago
            await s.candles_until(lambda: s.state == "flat", "the exit")
            _, after = await scrape(http, base)
            assert one(after, "gatebot_position_quantity") == 0
            assert one(after, "gatebot_seconds_since_market_event") < 5  # a frame since
            assert one(after, "gatebot_realized_pnl") != one(during, "gatebot_realized_pnl")
            agreed = s.engine.reconcile_outcomes["agreed"]
            s.sim.faults.drop_user_streams()  # reconnected: the bot reconciles (the exchange does not replay)
            await s.until(lambda: s.engine.reconcile_outcomes["agreed"] > agreed, "a reconciliation after it")
            _, reconciled = await scrape(http, base)
            assert one(reconciled, "gatebot_reconciliations_total", reason="agreed") > one(
                after, "gatebot_reconciliations_total", reason="agreed")
            control.apply(s.runner, "it", "pause", source="test")
            _, paused = await scrape(http, base)
            assert one(paused, "gatebot_trading_state", state="reducing") == 1

    asyncio.run(go())
