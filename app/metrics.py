"""Prometheus metrics of a running bot, served at ``/metrics`` of its API (app/api.py, behind the same token).

One registry per runner (never prometheus_client's global one: several runners in one process, as in the tests,
must not mix their series). Most values are read from the runner when scraped (states, position, money, stream
ages, the counters the engine and the BingX client keep: core/telemetry.py); the histograms get every sample as
it happens (decision latency and journal commits through the engine's and journal's ``observe``, the protection
gap from the transition hook). Names are prefixed ``gatebot_``, in base units (seconds; money in the quote
currency), counters end in ``_total``; labels are the instance, its symbol, and a bounded ``reason`` (an outcome,
an error code, an endpoint group) or ``state`` (one of a fixed set). :data:`METRICS` lists every name, for the
alert rules' and the dashboard's test.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from decimal import Decimal
from importlib import metadata
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from gatebot.app import views
from gatebot.core.instrument import to_decimal
from gatebot.core.position import STATES
from gatebot.core.telemetry import Observe
from gatebot.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from gatebot.app.runner import Instance, Runner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INSTANCE_STATES = ("running", "recovering", "down", "halted")
TRADING_STATES = ("active", "reducing", "halted")
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GAP_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
COMMIT_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

PLAIN = ("instance", "symbol")
STATE = (*PLAIN, "state")
REASON = (*PLAIN, "reason")
BUILD = ("version", "python")
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "gatebot_build_info": ("info", BUILD),
    "gatebot_instance_state": ("gauge", STATE),
    "gatebot_trading_state": ("gauge", STATE),
    "gatebot_position_state": ("gauge", STATE),
    "gatebot_position_quantity": ("gauge", PLAIN),
    "gatebot_equity": ("gauge", PLAIN),
    "gatebot_realized_pnl": ("gauge", PLAIN),
    "gatebot_unrealized_pnl": ("gauge", PLAIN),
    "gatebot_fees": ("gauge", PLAIN),
    "gatebot_funding": ("gauge", PLAIN),
    "gatebot_unprotected_seconds": ("gauge", PLAIN),
    "gatebot_protection_timeout_seconds": ("gauge", PLAIN),
    "gatebot_seconds_since_market_event": ("gauge", PLAIN),
    "gatebot_seconds_since_user_event": ("gauge", PLAIN),
    "gatebot_listen_key_age_seconds": ("gauge", PLAIN),
    "gatebot_transitions_total": ("counter", PLAIN),
    "gatebot_stops_refused_total": ("counter", PLAIN),
    "gatebot_exchange_errors_total": ("counter", REASON),
    "gatebot_rate_limit_waits_total": ("counter", REASON),
    "gatebot_reconciliations_total": ("counter", REASON),
    "gatebot_decision_latency_seconds": ("histogram", PLAIN),
    "gatebot_protection_gap_seconds": ("histogram", PLAIN),
    "gatebot_journal_commit_seconds": ("histogram", PLAIN),
}
"""Every metric this module exports (a histogram by its name without the samples' suffixes): its type and labels."""


def _version() -> str:
    try:
        return metadata.version("gatebot")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """A runner's registry: the scrape-time collector, the histograms, and the transition hook they need."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ("instance", "symbol")
        self.decision = Histogram("gatebot_decision_latency_seconds", "A closed candle handled: the strategy "
                                  "asked and its orders sent", labels, buckets=LATENCY_BUCKETS_S,
                                  registry=self.registry)
        self.gap = Histogram("gatebot_protection_gap_seconds", "From an entry's fill to its stop confirmed on "
                             "the exchange", labels, buckets=GAP_BUCKETS_S, registry=self.registry)
        self.commit = Histogram("gatebot_journal_commit_seconds", "A journal transaction's COMMIT (fsync)",
                                labels, buckets=COMMIT_BUCKETS_S, registry=self.registry)
        self.registry.register(_Collector(runner, self))
        self._names = frozenset(i.name for i in runner.config.instances)
        self._filled_ms: dict[str, int] = {}
        self.transitions: dict[str, int] = {}
        self.stops_refused: dict[str, int] = {}

    def observer(self, instance: str, symbol: str) -> Observe:
        """The ``observe`` of an instance's engine and journal."""
        histograms = {"decision": self.decision.labels(instance, symbol),
                      "commit": self.commit.labels(instance, symbol)}

        def observe(what: str, seconds: float) -> None:
            h = histograms.get(what)
            if h is not None:
                h.observe(seconds)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @hookimpl
    def gatebot_on_transition(self, instance: str, position: int, src: str, trigger: str, dst: str,
                              record: Any) -> None:
        if instance not in self._names:
            return  # another runner's instance on a shared plugin manager
        self.transitions[instance] = self.transitions.get(instance, 0) + 1
        now = self.runner.clock.monotonic_ms()
        if trigger == "stop_rejected":
            self.stops_refused[instance] = self.stops_refused.get(instance, 0) + 1
        if trigger == "entry_filled" and dst == "protected" and instance not in self._filled_ms:
            self.gap.labels(instance, record.symbol).observe(0.0)  # its stop was on the exchange already (attached)
        elif trigger == "entry_filled" and instance not in self._filled_ms:
            self._filled_ms[instance] = now
        elif trigger == "stop_confirmed" and instance in self._filled_ms:
            self.gap.labels(instance, record.symbol).observe((now - self._filled_ms.pop(instance)) / 1000)
        elif dst == "flat" or dst.startswith("exited_"):
            self._filled_ms.pop(instance, None)


def _family(name: str, doc: str) -> Metric:
    """The family of ``name`` (a counter's without its ``_total``), its type and labels from :data:`METRICS`."""
    kind, labels = METRICS.get(name) or METRICS[f"{name}_total"]
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, doc, labels=list(labels))


class _Collector(Collector):
    """What the runner holds now, read at each scrape."""

    def __init__(self, runner: Runner, metrics: Metrics) -> None:
        self.runner = runner
        self.metrics = metrics
        self._views: dict[str, views.JournalViews] = {}

    def collect(self) -> Iterator[Metric]:
        r = self.runner
        now_ms = r.clock.monotonic_ms()
        build = InfoMetricFamily("gatebot_build", "The running gatebot's version")
        build.add_metric([], {"version": _version(), "python": platform.python_version()})
        yield build
        fam = {
            "instance": _family("gatebot_instance_state", "1 for the instance's state now"),
            "trading": _family("gatebot_trading_state", "1 for the trading state now (active, "
                               "reducing: no new entry, halted)"),
            "position": _family("gatebot_position_state", "1 for the position's state now"),
            "qty": _family("gatebot_position_quantity", "Open quantity in base units (negative: short)"),
            "equity": _family("gatebot_equity", "Balance plus unrealized PnL, in the quote currency"),
            "realized": _family("gatebot_realized_pnl", "Gross realized PnL of every fill (quote currency)"),
            "unrealized": _family("gatebot_unrealized_pnl", "Unrealized PnL at the last close (quote)"),
            "fees": _family("gatebot_fees", "Fees of every fill (quote currency)"),
            "funding": _family("gatebot_funding", "Funding paid, positive = paid (quote currency)"),
            "unprotected": _family("gatebot_unprotected_seconds", "How long a filled entry has been "
                                   "waiting for its stop, since its fill as journaled (a restart does not reset "
                                   "it; 0: protected, flat or being closed)"),
            "timeout": _family("gatebot_protection_timeout_seconds", "The configured protection timeout"),
            "market": _family("gatebot_seconds_since_market_event", "Since the last market-stream frame"),
            "user": _family("gatebot_seconds_since_user_event", "Since the last user-stream frame"),
            "key": _family("gatebot_listen_key_age_seconds", "Since the listenKey was made or extended"),
            "transitions": _family("gatebot_transitions", "Position transitions journaled"),
            "refused": _family("gatebot_stops_refused", "Stops the exchange refused"),
            "errors": _family("gatebot_exchange_errors", "Failed exchange requests by code"),
            "waits": _family("gatebot_rate_limit_waits", "Requests that waited for the client-side "
                             "budget, by endpoint group"),
            "reconciles": _family("gatebot_reconciliations", "Reconciliations with the exchange by "
                                  "outcome (agreed, corrected, failed)"),
        }
        for inst in r.instances:
            self._one(inst, fam, now_ms)
        yield from fam.values()

    def _one(self, inst: Instance, fam: dict[str, Any], now_ms: int) -> None:
        r = self.runner
        cfg = inst.cfg
        name, symbol = cfg.name, cfg.symbol
        key = [name, symbol]
        engine = inst.engine
        state = "halted" if inst.halted else "down" if engine is None else \
            "running" if engine.status == "running" else "recovering"
        for s in INSTANCE_STATES:
            fam["instance"].add_metric([*key, s], float(s == state))
        fam["timeout"].add_metric(key, cfg.protection.protection_timeout_s)
        fam["transitions"].add_metric(key, self.metrics.transitions.get(name, 0))
        fam["refused"].add_metric(key, self.metrics.stops_refused.get(name, 0))
        journal = r.journals.get(name)
        if journal is not None and journal.conn is not None:
            trading = "halted" if inst.halted else engine.trading_state if engine is not None else \
                journal.trading_state()
            for s in TRADING_STATES:
                fam["trading"].add_metric([*key, s], float(s == trading))
            v = self._views.get(name)
            if v is None or v.journal is not journal:
                v = self._views[name] = views.JournalViews(journal)
            mark = to_decimal(engine.last_close) if engine is not None and engine.last_close else None
            out = v.instance(rec=engine.pos.rec if engine is not None else None, trading_state=trading, mark=mark)
            pos = out["position"]
            qty = Decimal(pos["qty"]) * (-1 if pos["side"] == "short" else 1) if pos else Decimal(0)
            unrealized = Decimal(pos["unrealized_pnl"]) if pos and pos["unrealized_pnl"] else Decimal(0)
            fam["qty"].add_metric(key, float(qty))
            fam["equity"].add_metric(key, float(Decimal(out["balance"]) + unrealized))
            fam["realized"].add_metric(key, float(Decimal(out["realized_pnl"])))
            fam["unrealized"].add_metric(key, float(unrealized))
            fam["fees"].add_metric(key, float(Decimal(out["fees"])))
            fam["funding"].add_metric(key, float(Decimal(out["funding"])))
            for s in STATES:
                fam["position"].add_metric([*key, s], float(s == out["position_state"]))
        if engine is not None:
            since = engine.unprotected_since_ms
            fam["unprotected"].add_metric(key, 0.0 if since is None else max(0, now_ms - since) / 1000)
            for outcome, n in engine.reconcile_outcomes.items():
                fam["reconciles"].add_metric([*key, outcome], n)
        adapter = r.adapters.get(cfg.exchange)
        market = getattr(adapter, "market", None)
        if market is not None and getattr(market, "last_frame_ms", 0):
            fam["market"].add_metric(key, max(0, now_ms - market.last_frame_ms) / 1000)
        user = getattr(adapter, "user", None)
        if user is not None and getattr(user, "last_data_ms", 0):
            fam["user"].add_metric(key, max(0, now_ms - user.last_data_ms) / 1000)
        if user is not None and getattr(user, "key_ms", 0):
            fam["key"].add_metric(key, max(0, now_ms - user.key_ms) / 1000)
        rest = getattr(adapter, "rest", None)
        for code, n in sorted(getattr(rest, "errors", {}).items()):
            fam["errors"].add_metric([*key, code], n)
        buckets = getattr(getattr(rest, "limiter", None), "buckets", {})
        for group, bucket in sorted(buckets.items()):
            fam["waits"].add_metric([*key, group], getattr(bucket, "waits", 0))
