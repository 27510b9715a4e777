"""The shipped alert rules and Grafana dashboard (docs/monitoring/) against the metrics the bot exports: the rules
parse (promtool when it is on the machine: Debian's ``prometheus`` package, ``make promtool``), and every metric the
rules and the dashboard name exists in a runner's registry, with the labels they match on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gatebot.app.metrics import METRICS
from gatebot.app.runner import Runner
from gatebot.core.config import load_config
from gatebot.plugins.manager import make_plugin_manager

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "docs" / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana.json"
PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself (the scrape's health)."""
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "delta",
                "histogram_quantile", "absent", "topk", "bottomk", "clamp_min", "changes", "resets", "time"}
SERIES = {"counter": ("_total",), "info": ("_info",), "histogram": ("_bucket", "_count", "_sum")}
"""The series a family's samples are named by (prometheus_client names the family without them)."""
HISTOGRAM_LABELS = {"le"}


def registry_labels(tmp: Path) -> dict[str, set[str]]:
    """Every sample name a runner's registry exports -> its label names (one paper instance, not started)."""
    config = tmp / "c.toml"
    config.write_text(f'mode = "replay"\nstate_dir = "{tmp / "state"}"\n[exchanges.paper]\ntype = "paper"\n'
                      '[[instances]]\nname = "m"\nexchange = "paper"\nstrategy = "sma_cross"\nsymbol = "BTC-USDT"\n'
                      'interval = "5m"\nleverage = 2\n')
    cfg = load_config(config)
    runner = Runner(cfg, make_plugin_manager())
    runner.metrics.observer("m", "BTC-USDT")
    runner.metrics.gap.labels("m", "BTC-USDT")
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(runner.metrics.exposition().decode()):
        # a family with no sample yet (no exchange error so far) still names its series
        for name in SERIES.get(family.type, ("",)):
            out.setdefault(family.name + name, set())
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every rule and every dashboard target."""
    rules = yaml.safe_load(RULES.read_text())
    out = [(f"rule {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    out += [(f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    return out


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The series names an expression selects and the label names it matches or groups on."""
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", expr))
    labels |= {w.strip() for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
               for w in group.split(",") if w.strip()}
    bare = re.sub(r"\"[^\"]*\"", "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS
    return {w for w in words if not re.fullmatch(r"\d+[smhdw]?", w)}, labels


def test_every_metric_the_rules_and_the_dashboard_name_is_exported_with_its_labels(tmp_path: Path) -> None:
    exported = registry_labels(tmp_path)
    assert {n for n in METRICS if n not in exported and f"{n}_count" not in exported} == set()
    checked = 0
    for where, expr in expressions():
        names, labels = names_and_labels(expr)
        assert names, f"{where}: no series in {expr!r}"
        for name in names:
            if name in PROMETHEUS_OWN:
                continue
            assert name.startswith("gatebot_"), f"{where}: {name} is not one of gatebot's"
            assert name in exported, f"{where}: {name} is not exported (app/metrics.py)"
            declared = METRICS.get(name) or METRICS[re.sub(r"_(bucket|count|sum)$", "", name)]
            assert exported[name] <= set(declared[1]) | HISTOGRAM_LABELS, f"{name} exports undeclared labels"
            known = set(declared[1]) | HISTOGRAM_LABELS | {"job"}
            assert labels <= known, f"{where}: labels {labels - known} not on {name}"
            checked += 1
    assert checked >= 30


def test_each_rule_says_what_is_wrong_and_how_bad() -> None:
    rules: list[dict[str, Any]] = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {"GatebotDown", "GatebotPositionUnprotected", "GatebotMarketStreamStale", "GatebotUserStreamStale",
            "GatebotStopRefused", "GatebotReconcileMismatch", "GatebotRateLimited"} <= alerts
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_the_names_check_itself_catches_an_unknown_metric(tmp_path: Path) -> None:
    names, labels = names_and_labels('sum by (instance, reason) (increase(gatebot_nope_total{reason="1"}[5m])) > 3')
    assert names == {"gatebot_nope_total"} and labels == {"instance", "reason"}
    assert "gatebot_nope_total" not in registry_labels(tmp_path)


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: make promtool); the YAML-and-expression "
                    "check above still ran")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
