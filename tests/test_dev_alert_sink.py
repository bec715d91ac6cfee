"""`make up`'s alert sink: the real Slack webhook hook and the project's PagerDuty hook deliver to it, and
`make alerts` prints what it received."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.harness import ROOT
from trading_ops.alerting import Alert, resolve_alert, send_alert
from trading_ops.dev.alert_sink import SinkEndpoints, format_alert, read_alerts


@pytest.fixture
def sink(tmp_path, monkeypatch):
    """The sink in its own process, as `make up` starts it, wired as the two alert connections."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trading_ops.dev", "alert-sink", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
    )
    deadline = time.monotonic() + 60
    while (endpoints := SinkEndpoints.read(tmp_path)) is None:
        assert process.poll() is None and time.monotonic() < deadline, "the sink did not start"
        time.sleep(0.1)
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", endpoints.slack_connection())
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_EVENTS", endpoints.pagerduty_connection())
    yield tmp_path
    process.terminate()
    assert process.wait(timeout=30) == 0
    assert SinkEndpoints.read(tmp_path) is None, "a stopped sink leaves no endpoints behind"


def test_a_p1_alert_and_its_resolution_reach_slack_and_pagerduty_over_tls(sink, fresh_db):
    alert = Alert(
        severity="P1",
        source="db_backup_full.take_full_backup",
        summary="db_backup_full: task take_full_backup failed",
        details={"error": "pg_basebackup failed"},
        dedup_key="trading-ops/db_backup_full/take_full_backup",
    )
    assert send_alert(alert).complete
    assert resolve_alert(alert).complete

    received = read_alerts(sink)
    assert [(message["to"], message.get("channel"), message.get("action")) for message in received] == [
        ("slack", "#alerts-critical", None),
        ("pagerduty", None, "trigger"),
        ("slack", "#alerts-critical", None),
        ("pagerduty", None, "resolve"),
    ]
    assert "db_backup_full: task take_full_backup failed" in received[0]["text"]
    assert received[1]["dedup_key"] == received[3]["dedup_key"] == "trading-ops/db_backup_full/take_full_backup"
    assert received[1]["severity"] == "critical"
    assert format_alert(received[1]).splitlines()[1] == "[P1] db_backup_full: task take_full_backup failed"


def test_make_alerts_prints_every_message(sink, fresh_db, capsys):
    from trading_ops.dev.environment import alerts

    alert = Alert(
        severity="P3", source="log_rotation.rotate_log_class", summary="log_rotation: a class is near its cap"
    )
    assert send_alert(alert).complete
    alerts(sink)
    printed = capsys.readouterr().out
    assert " slack #alerts-info\n" in printed and "log_rotation: a class is near its cap" in printed
    assert printed.rstrip().endswith(f"1 message(s) in {sink / 'alerts.jsonl'}.")
