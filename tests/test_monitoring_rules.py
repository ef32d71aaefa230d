"""Alerting as code (issue 20): contrib/monitoring's alert rules, their unit tests, the example
Prometheus configuration and the Grafana dashboard load, and use only metrics Switchboard exports.

promtool (Debian's prometheus package, which .ci/run installs) checks and unit-tests the rules
when it is installed, and must be in CI; the parse-based checks run everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.test import Client

from tests.live import REPO

MONITORING = REPO / "contrib" / "monitoring"
METRIC_NAME = re.compile(r"\bswitchboard_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


@pytest.fixture
def exported(db: None) -> set[str]:
    """Every sample name a scrape of /metrics can hold (labelled series included before their first use)."""
    text = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    names = set()
    for name, kind in re.findall(r"^# TYPE (switchboard_\w+) (\w+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def rules() -> list[dict]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alert_rules_cover_the_issue_and_use_only_exported_metrics(exported):
    alerts = {rule["alert"]: rule for rule in rules()}
    assert {
        "SwitchboardOutboxBacklogGrowing", "SwitchboardOldestPendingTooOld", "SwitchboardFailedBatches",
        "SwitchboardRejectionRateSpike", "SwitchboardNoEventsReceived",
    } <= alerts.keys()  # fmt: skip
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("page", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        used = set(METRIC_NAME.findall(rule["expr"]))
        assert used <= exported, f"{name} uses {used - exported}"
    assert "switchboard_records_rejected_total" in alerts["SwitchboardRejectionRateSpike"]["expr"]


def test_the_dashboard_plots_only_exported_metrics(exported):
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used <= exported, used - exported
    for metric in ("switchboard_outbox_backlog_batches", "switchboard_processing_lag_seconds_bucket",
                   "switchboard_records_rejected_total", "switchboard_events_received_total"):  # fmt: skip
        assert metric in used


def test_promtool_checks_and_unit_tests_the_rules_and_the_scrape_configuration(tmp_path: Path):
    promtool = shutil.which("promtool")
    if promtool is None:
        # Outside CI the parse-based tests above stand in; CI installs it (.ci/run), so it must be there.
        assert not os.environ.get("CI"), "promtool is missing: .ci/run installs Debian's prometheus package"
        assert rules()
        return
    checked = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # The example configuration, with its token file somewhere that exists.
    token = tmp_path / "token"
    token.write_text("t0ken")
    shutil.copy(MONITORING / "alerts.yml", tmp_path)
    config = (
        (MONITORING / "prometheus.yml").read_text().replace("/etc/prometheus/switchboard-metrics-token", str(token))
    )
    (tmp_path / "prometheus.yml").write_text(config)
    configured = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert configured.returncode == 0, configured.stdout + configured.stderr
