"""kill -9 between an entry's fill and its stop's confirmation, with ``/metrics`` scraped all along: no sample of
``gatebot_unprotected_seconds`` is above the protection timeout while the bot could have acted on it.

The gauge reports the truth from the journal: seconds since the entry's fill as journaled, so a restart does not
reset it and the time the process was dead counts. The bound is the engine's: the protection timeout is acted on
at its time (a wake-up, not the 1 s heartbeat) and during recovery. A restart after an outage longer than the
timeout (the overdue path) first asks the exchange (the stop may be there: closing a protected position at market
would cost the trade) and closes the position if its stop is still not confirmed after that first round; while
that round runs, the gauge honestly reads more than the timeout. Such samples are allowed only when the same
scrape says the instance is recovering (``gatebot_instance_state{state="recovering"}``; a start slowed by a busy
machine is such an outage too); in any other state, none may exceed the timeout. While the bot is dead nobody
can scrape it (the alert rules' ``up`` covers that).

The bot runs as a child process (tests/chaos/driver.py) with its API on loopback behind a token; a thread scrapes
``/metrics`` back to back from the first start to the last kill, so samples fall right after each restart, during
its recovery (before the bot journals that it reconciled) and after. Crash points fill_journaled,
stop_intent_committed and stop_sent, plus random kills; after some kills the restart waits until the journaled
fill is older than the timeout. Each sample is checked on its own: against the timeout, and, when the journal
read just before and just after it did not move, against the journal's own answer (the time since the journaled
fill of an entry waiting for its stop, else 0). Their number decides nothing beyond "at least one non-zero
sample" (so that the bound could be broken).
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatebot.core.journal import Journal, JournalError
from tests.chaos.driver import INSTANCE, Chaos
from tests.chaos.simthread import wait_for

pytestmark = pytest.mark.chaos

TOKEN = "unprotected-chaos-token"
TIMEOUT_S = 5.0
POINTS = ("fill_journaled", "stop_intent_committed", "stop_sent")
PER_POINT = 3
RANDOM_KILLS = 3
OVERDUE_SHARE = 0.4
"""Of the kills that leave a filled entry without its stop: how many restart only once it waited past the timeout."""
SLACK_S = 0.005
"""The gauge against the journal: milliseconds rounded on both sides (the journal's ts, the clock readings)."""


class Scraper(threading.Thread):
    """Scrapes ``/metrics`` back to back and keeps every ``gatebot_unprotected_seconds`` sample with the phase
    of the bot's cycle it was taken in (``recovering``: started, not yet journaled reconciled)."""

    def __init__(self, url: str, journal: Path) -> None:
        super().__init__(daemon=True, name="scraper")
        self.url = url
        self.journal = journal
        self.truth_checked = 0
        self.untrue: list[str] = []
        """Samples that did not say what the journal says (read just before and just after, unchanged)."""
        self.phase = "down"
        self.next_overdue = False
        """The next start follows an outage longer than the protection timeout."""
        self.samples: list[tuple[str, float, float, str]] = []
        """(phase, unprotected seconds, protection timeout seconds, the instance's state in the same scrape)"""
        self.refused = 0
        self._done = threading.Event()

    def run(self) -> None:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {TOKEN}"})
        while not self._done.is_set():
            phase = self.phase
            before = _journal_state(self.journal)
            t_before_ms = time.time() * 1000
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    text = r.read().decode()
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                self.refused += 1  # the bot is down or not serving yet
                self._done.wait(0.005)
                continue
            t_after_ms = time.time() * 1000
            after = _journal_state(self.journal)
            values: dict[str, float] = {}
            state = "?"
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.labels.get("instance") != INSTANCE:
                        continue
                    if s.name in ("gatebot_unprotected_seconds", "gatebot_protection_timeout_seconds"):
                        values[s.name] = s.value
                    elif s.name == "gatebot_instance_state" and s.value == 1:
                        state = s.labels["state"]
            if "gatebot_unprotected_seconds" not in values:
                continue  # no engine yet (the instance is building): nothing is reported
            value = values["gatebot_unprotected_seconds"]
            self.samples.append((phase, value, values["gatebot_protection_timeout_seconds"], state))
            if before is not None and before == after:
                # The journal did not move around the scrape: the gauge says what it says. A filled entry
                # waiting for its stop has waited since its journaled fill (the bot's clock is this machine's
                # wall clock; ms rounding on both sides), anything else reads 0.
                self.truth_checked += 1
                since_ms = before[1]
                low, high = (0.0, 0.0) if since_ms is None else \
                    ((t_before_ms - since_ms) / 1000 - SLACK_S, (t_after_ms - since_ms) / 1000 + SLACK_S)
                if not low <= value <= high:
                    self.untrue.append(f"{phase}: {value} s, the journal says {max(0.0, low):.3f}..{high:.3f} s")

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class ScrapedChaos(Chaos):
    """The driver's cycles, telling the scraper which phase each sample falls in."""

    scraper: Scraper

    def spawn(self, crash_at: str | None) -> float:
        overdue, self.scraper.next_overdue = self.scraper.next_overdue, False
        t0 = super().spawn(crash_at)
        self.scraper.phase = "recovering-overdue" if overdue else "recovering"
        return t0

    def recovered(self, t0: float) -> bool:
        ok = super().recovered(t0)
        if self.alive():
            self.scraper.phase = "reconciled"
        return ok

    def kill(self) -> None:
        super().kill()
        self.scraper.phase = "down"

    def died(self) -> bool:
        dead = super().died()
        if dead:
            self.scraper.phase = "down"
        return dead


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _journal_state(path: Path) -> tuple[list[int], int | None] | None:
    """(the journal's high-water marks, since when its filled entry waits for a stop or None); None: unreadable."""
    try:
        journal = Journal(path, readonly=True)
    except JournalError:
        return None
    try:
        return journal.high_water(), _waiting_since(journal)
    except sqlite3.Error:
        return None
    finally:
        journal.close()


def _waiting_since(journal: Journal) -> int | None:
    rec = journal.fold()
    if rec is None or rec.state != "entering" or not rec.entry_complete or rec.filled_qty <= 0:
        return None
    return journal.filled_at(rec.seq)


def _waiting_since_ms(path: Path) -> int | None:
    """When the journal's position took the fill it still waits for its stop with (None: nothing waits)."""
    if not path.exists():
        return None
    journal = Journal(path, readonly=True)
    try:
        return _waiting_since(journal)
    finally:
        journal.close()


@contextmanager
def _running(chaos: ScrapedChaos, url: str) -> Iterator[Scraper]:
    (chaos.workdir / "logs").mkdir(parents=True, exist_ok=True)
    chaos.sim.start()
    chaos.scraper = Scraper(url, chaos.journal)
    chaos.scraper.start()
    try:
        yield chaos.scraper
    finally:
        if chaos.alive():
            chaos.kill()
        chaos.scraper.stop()
        chaos.sim.stop()


def test_unprotected_seconds_never_exceeds_the_protection_timeout_across_kills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEBOT_API_TOKEN", TOKEN)  # the bot's environment is this one's (driver.spawn)
    port = _free_port()
    chaos = ScrapedChaos(tmp_path, seed=21, attached=False)
    overdue_restarts = 0
    waiting_kills = 0
    with _running(chaos, f"http://127.0.0.1:{port}/metrics") as scraper:
        chaos.write_config(**{"protection_timeout_s = 2": f"protection_timeout_s = {TIMEOUT_S:g}",
                              "[plugins]": f"[api]\nenabled = true\nport = {port}\n[plugins]"})
        plan: list[str | None] = [p for p in POINTS for _ in range(PER_POINT)] + [None] * RANDOM_KILLS
        chaos.rng.shuffle(plan)
        attempts = 0
        while plan and attempts < 4 * (PER_POINT * len(POINTS) + RANDOM_KILLS):
            attempts += 1
            point = plan.pop()
            if point is None:
                chaos.random_cycle()
            else:
                before = chaos.result.point_kills[point]
                chaos.point_cycle(point)
                if chaos.result.point_kills[point] == before:
                    plan.insert(0, point)  # not reached this time (no entry filled): again later
            since_ms = _waiting_since_ms(chaos.journal)
            if since_ms is not None:
                waiting_kills += 1
                if chaos.rng.random() < OVERDUE_SHARE:  # restart only once the fill is older than the timeout
                    overdue_restarts += 1
                    due_ms = since_ms + TIMEOUT_S * 1000
                    assert wait_for(lambda: time.time() * 1000 > due_ms, TIMEOUT_S + 5)  # noqa: B023
                    scraper.next_overdue = True
        t0 = chaos.spawn(None)  # the last restart: recovered, scraped, stopped
        assert chaos.recovered(t0), chaos.result.violations
        wait_for(lambda: any(p == "reconciled" for p, *_ in scraper.samples[-3:]), 5)
        chaos.kill()
    samples = scraper.samples
    # Above the timeout only while the bot says (in the same scrape) that it is recovering: asking the exchange
    # whether the stop is there, after an outage (or a start slowed by the machine) longer than the timeout.
    above = [(phase, value, state) for phase, value, _, state in samples if value > TIMEOUT_S and state != "recovering"]
    recovering_above = [value for _, value, _, state in samples if value > TIMEOUT_S and state == "recovering"]
    nonzero = [(phase, value) for phase, value, *_ in samples if value > 0]
    by_phase = {p: sum(1 for s in samples if s[0] == p)
                for p in ("recovering", "recovering-overdue", "reconciled", "down")}
    nonzero_by_phase = {p: sum(1 for s in nonzero if s[0] == p) for p in by_phase}
    closed = _overdue_closes(chaos.journal)
    print(f"kills {chaos.result.kills} (points {chaos.result.point_kills}, random {chaos.result.random_kills}); "
          f"kills leaving a filled entry without its stop {waiting_kills}, restarted overdue {overdue_restarts}, "
          f"closed by the timeout {closed}; samples {len(samples)} {by_phase}, refused {scraper.refused}; "
          f"non-zero {len(nonzero)} {nonzero_by_phase}, max {max((v for _, v in nonzero), default=0):.3f} s "
          f"(timeout {TIMEOUT_S:g} s); above the timeout {len(above)} (and {len(recovering_above)} while recovering, "
          f"max {max(recovering_above, default=0):.3f} s); checked against the journal "
          f"{scraper.truth_checked}, untrue {len(scraper.untrue)}")
    assert chaos.result.violations == [], chaos.result.violations[:5]
    assert chaos.result.unexpected_exits == [], chaos.result.unexpected_exits[:3]
    assert all(chaos.result.point_kills[p] == PER_POINT for p in POINTS), chaos.result.point_kills
    assert {t for _, _, t, _ in samples} == {TIMEOUT_S}  # the gauge beside it says which timeout the bot runs with
    assert above == [], above[:10]
    assert scraper.untrue == [], scraper.untrue[:10]
    assert nonzero, "no sample saw an unprotected position: the bound was never put to the test"


def _overdue_closes(path: Path) -> int:
    journal = Journal(path, readonly=True)
    try:
        (n,) = journal.conn.execute("SELECT count(*) FROM transitions WHERE trigger = 'protection_timeout'").fetchone()
        return int(n)
    finally:
        journal.close()
