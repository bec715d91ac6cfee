"""The Ops page's JSON and HTML (trading_ops.opspage) through Airflow's own authentication, against a real backup
repository, WAL archive and ops state database: its numbers are the CLI's (`backups window`, `backups list`,
`drills list`) and the state system_health and the checks recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support.harness import ROOT
from tests.support.monitoring import minutes
from trading_ops.backup import Repository, take_full_backup
from trading_ops.opspage.app import URL_PREFIX, create_app

TODAY = date(2026, 11, 20)


def _cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "trading_ops", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=300,
        check=True,
    )
    return result.stdout


@pytest.fixture
def client(airflow_db, monkeypatch):
    """The page's app mounted as the API server mounts a plugin's, with its auth manager (whose token check reads
    the revoked tokens of the metadata database)."""
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a-test-secret-" * 5)
    root = FastAPI()
    init_auth_manager(root)
    root.mount(URL_PREFIX, create_app())
    with TestClient(root) as test_client:
        yield test_client


def _token(role: str | None, username: str = "someone") -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def _get(client, path: str, role: str | None = "viewer"):
    return client.get(URL_PREFIX + path, headers={"Authorization": f"Bearer {_token(role)}"})


def test_every_route_refuses_a_request_without_a_logged_in_user_with_the_plugins_view(client):
    for path in ("/", "/api/sections", "/api/sections/recoverability", "/api/sections/nothing"):
        assert client.get(URL_PREFIX + path).status_code == 401, path
        bad = client.get(URL_PREFIX + path, headers={"Authorization": "Bearer not-a-jwt"})
        assert bad.status_code == 403, path
        assert _get(client, path, role=None).status_code == 403, f"{path}: a user without a role"
    assert client.get(URL_PREFIX + "/", cookies={"_token": "forged"}).status_code == 403


def _record_drill(backup_id: str, drill_id: str, rto: float, outcome: str = "passed") -> None:
    from trading_ops.policy import load_policy
    from trading_ops.restore.drill import DrillResult, record_drill

    phases = {"fetch": 1.5, "extract": 4.0, "replay": rto - 14.0, "transfer": 6.0, "verify": 4.0}
    record_drill(
        load_policy().alerting.state_conn_id,
        DrillResult(
            drill_id=drill_id,
            backup_id=backup_id,
            recovery_target=f"restore point trading-ops-drill-{drill_id}-1",
            started_at=datetime.strptime(drill_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat(),
            finished_at=(
                datetime.strptime(drill_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) + timedelta(minutes=2)
            ).isoformat(),
            outcome=outcome,
            failed_phase=None if outcome == "passed" else "replay",
            problems=[] if outcome == "passed" else ["WAL segment 000000010000000000000007 is missing"],
            phases=phases if outcome == "passed" else {},
            rto_seconds=rto if outcome == "passed" else None,
        ),
    )


def test_recoverability_equals_backups_window_list_and_drills_list(client, pg_cluster, fresh_db, make_policy, tmp_path):
    make_policy({"backup.repository": str(tmp_path / "repo")})
    repository = Repository(tmp_path / "repo")
    first = take_full_backup(repository, "20261101T010000Z")
    second = take_full_backup(repository, "20261102T010000Z")
    repository.pin(first, "quarter-end audit")
    _record_drill(first.id, "20261103T050000Z", 41.0)
    _record_drill(second.id, "20261104T050000Z", 0, outcome="failed")
    _record_drill(second.id, "20261105T050000Z", 37.5)

    reply = _get(client, "/api/sections/recoverability")
    assert reply.status_code == 200, reply.text
    data = reply.json()

    window = data["window"]
    assert _cli("backups", "window").strip() == window["sentence"]
    assert window["oldest_backup"] == first.id and window["newest_backup"] == second.id
    assert datetime.fromisoformat(window["start"]) == first.stop_time

    listed = json.loads(_cli("backups", "list", "--json"))
    assert [{k: row[k] for k in ("id", "type", "time", "size", "verified", "pinned")} for row in data["catalog"]] == [
        {k: row[k] for k in ("id", "type", "time", "size", "verified", "pinned")} for row in listed
    ]
    assert [row["pinned"] for row in data["catalog"]] == [False, True]
    drilled = {row["id"]: row["last_drill"] for row in data["catalog"]}
    cli_drilled = {row["id"]: row["last_drill"] for row in listed}
    for backup_id in (first.id, second.id):
        assert drilled[backup_id]["outcome"] == cli_drilled[backup_id]["outcome"]
        assert datetime.fromisoformat(drilled[backup_id]["finished_at"]) == datetime.fromisoformat(
            cli_drilled[backup_id]["finished_at"]
        )
    assert drilled[second.id]["outcome"] == "passed" and drilled[first.id]["outcome"] == "passed"

    cli_drills = json.loads(_cli("drills", "list", "--json"))
    assert [(d["drill_id"], d["outcome"], d["rto_seconds"], d["phases"]) for d in data["drills"]] == [
        (d["drill_id"], d["outcome"], d["rto_seconds"], d["phases"]) for d in cli_drills
    ]
    assert [d["drill_id"] for d in data["drills"]] == ["20261105T050000Z", "20261104T050000Z", "20261103T050000Z"]

    # The RPO is the newest archived segment's age (system_health's freshness metric), against backup.rpo.target.
    from trading_ops.monitoring.collect import newest_wal_segment_time
    from trading_ops.policy import load_policy

    policy = load_policy()
    newest = newest_wal_segment_time(Path(policy.backup.wal_archive_dir))
    assert data["rpo"]["newest_segment_archived_at"] == newest.isoformat().replace("+00:00", "Z")
    assert data["rpo"]["target_seconds"] == policy.backup.rpo.target.total_seconds()
    assert 0 <= data["rpo"]["age_seconds"] < 3600
    # A repository on this host's disk keeps nothing off the host: the page says so rather than a lag of zero.
    assert data["offhost"] == {
        "repository_on_this_host": True,
        "lag_seconds": None,
        "target_seconds": policy.backup.wal_ship_within.total_seconds(),
        "within_target": False,
    }

    page = _get(client, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'<time id="window-start" datetime="{window["start"]}">' in html
    assert f'<tr data-backup="{first.id}">' in html and "pinned" in html
    assert html.count("<circle") == 2, "the RTO trend draws the two passed drills"


def test_alerts_security_logs_and_capacity_are_what_the_runs_recorded(
    client, pg_cluster, fresh_db, make_policy, alert_fakes, tmp_path
):
    from tests.support.monitoring import healthy_metrics
    from trading_ops.db import connection
    from trading_ops.monitoring.state import check_system_health
    from trading_ops.opsstate import migrate
    from trading_ops.policy import load_policy
    from trading_ops.security.findings import Finding, RunInfo, record_findings

    log_dir = tmp_path / "app-logs"
    log_dir.mkdir()
    (log_dir / "api.log").write_bytes(b"x" * 973)
    make_policy(
        {
            "logs.classes.application_logs.max_size": "1KB",
            "logs.classes.application_logs.paths.0.directory": str(log_dir),
            "security.waivers": [
                {"check": "ssl_cert_check", "subject": "b:443 hostname", "reason": "CHG-1", "expires": "2026-11-25"},
                {"check": "ssl_cert_check", "subject": "c:443 chain", "reason": "CHG-2", "expires": "2099-06-01"},
            ],
        }
    )
    policy = load_policy()

    # system_health: error rate high since minute 0, firing at minute 5 (the rule's `for`); a pending threshold.
    healthy = healthy_metrics(policy)
    check_system_health(policy, {**healthy, "error_rate_percent": 2.5}, minutes(0))
    check_system_health(policy, {**healthy, "error_rate_percent": 3.0}, minutes(5))

    def run(check: str, dag_id: str, number: int, findings: list[Finding], waivers=()) -> None:
        as_of = minutes(number * 60 * 24)
        info = RunInfo(dag_id, f"scheduled__{number}", as_of, "")
        with connection(policy.security.findings_conn_id) as conn:
            migrate(conn)
            record_findings(conn, "ops", check, info, findings, list(waivers), TODAY)

    def tls(subject: str, severity: str = "warning") -> Finding:
        return Finding("ssl_cert_check", severity, subject, f"{subject} is wrong")

    run("ssl_cert_check", "security_checks_weekly", 1, [tls("a:443 expiry"), tls("d:443 old", "critical")])
    second = [tls("a:443 expiry"), tls("b:443 hostname")]
    run("ssl_cert_check", "security_checks_weekly", 2, second, policy.security.waivers)
    drift = Finding("capacity_workload", "warning", "hpa trading/trading-api maxReplicas", "maxReplicas is 6, not 10")
    run("capacity_workload", "capacity_review", 2, [drift])

    data = _get(client, "/api/sections").json()["sections"]

    alerts = {item["check"]: item for item in data["alerts"]["active"]}
    assert alerts["high_priority"]["state"] == "firing"
    assert alerts["high_priority"]["since"] == minutes(0).isoformat().replace("+00:00", "Z")
    assert alerts["high_priority"]["fired_at"] == minutes(5).isoformat().replace("+00:00", "Z")
    assert alerts["high_priority"]["value"] == 3.0 and alerts["high_priority"]["severity"] == "critical"
    assert all(item["state"] in ("firing", "pending") for item in alerts.values())
    assert data["alerts"]["runs_url"] == "http://127.0.0.1:8080/dags/system_health/runs"

    # The firing rules opened incidents (incidents.open_incidents): deadlines from their levels.
    opened = {item["source"]: item for item in data["incidents"]["open"]}
    assert {source: item["level"] for source, item in opened.items()} == {
        "system_health/high_priority": "P1",
        "system_health/error_rate_percent_warning": "P2",
    }
    incident = opened["system_health/high_priority"]
    assert incident["opened_at"] == minutes(5).isoformat()
    assert incident["response_due_at"] == (minutes(5) + policy.incident_levels["P1"].respond_within).isoformat()
    assert incident["resolution_due_at"] == (minutes(5) + policy.incident_levels["P1"].resolve_within).isoformat()
    assert incident["response_overdue"] and incident["resolution_overdue"], "the page's now is long after minute 5"
    assert (incident["escalation_step"], incident["asking"]) == ("1 of 4", ["devops_lead"])

    checks = {item["check"]: item for item in data["security"]["checks"]}
    newest, oldest = checks["ssl_cert_check"]["runs"]
    assert (newest["new_count"], newest["persisting_count"], newest["resolved_count"], newest["waived_count"]) == (
        1,
        1,
        1,
        1,
    )
    assert (oldest["new_count"], oldest["persisting_count"], oldest["resolved_count"]) == (2, 0, 0)
    assert newest["url"] == "http://127.0.0.1:8080/dags/security_checks_weekly/runs/scheduled__2"
    assert [row["subject"] for row in checks["ssl_cert_check"]["active"]] == ["a:443 expiry"]
    assert checks["vulnerability_scan"]["runs"] == [], "every check is listed, run or not"
    # The page's day is the wall clock's: the waiver that ended (or ends within 14 days) is listed, not the far one.
    [soon] = data["security"]["expiring_waivers"]
    assert (soon["subject"], soon["expires"]) == ("b:443 hostname", "2026-11-25")
    assert soon["days_left"] == (date(2026, 11, 25) - datetime.now(ZoneInfo(policy.timezone)).date()).days

    [application] = [c for c in data["logs_capacity"]["log_classes"] if c["log_class"] == "application_logs"]
    assert (application["total_bytes"], application["max_size"], application["cap_fraction"]) == (973, 1024, 0.9502)
    assert application["alerts"] == ["application_logs is at 95% of its cap of 1.0 KB"]
    [capacity] = data["logs_capacity"]["capacity"]
    assert capacity["check"] == "capacity_workload"
    assert [(f["subject"], f["status"]) for f in capacity["findings"]] == [(drift.subject, "new")]

    html = _get(client, "/").text
    assert (
        "high_priority" in html
        and 'data-incident="' in html
        and "a:443 expiry" in html
        and "maxReplicas is 6, not 10" in html
    )
    for secret in (os.environ["AIRFLOW_CONN_OPS_STATE"], os.environ["AIRFLOW_CONN_TRADING_DB"]):
        assert secret not in html and secret not in json.dumps(data)


def test_a_section_whose_source_is_down_says_so_and_the_others_still_show(client, make_policy, tmp_path, monkeypatch):
    make_policy({"backup.repository": str(tmp_path / "repo")})
    monkeypatch.setenv("AIRFLOW_CONN_OPS_STATE", "postgresql://ops:hunter2@127.0.0.1:1/nowhere")
    data = _get(client, "/api/sections").json()["sections"]
    assert data["alerts"]["unavailable"].startswith("Alerts cannot be shown: ")
    assert data["security"]["unavailable"].startswith("Security cannot be shown: ")
    recoverability = data["recoverability"]
    assert recoverability["window"]["start"] is None and recoverability["catalog"] == []
    assert recoverability["drills_problem"].startswith("The restore drills cannot be read: ")
    assert "hunter2" not in json.dumps(data)


def test_the_rto_trend_is_scaled_to_the_drills_and_shows_the_budget_when_it_is_near():
    from trading_ops.opspage.app import rto_trend

    def drill(number: int, rto: float | None, outcome: str = "passed") -> dict:
        return {"drill_id": f"d{number}", "outcome": outcome, "rto_seconds": rto}

    newest_first = [drill(3, 50.0), drill(2, None, "failed"), drill(1, 40.0)]
    far = rto_trend(newest_first, budget=3600, width=100, height=100)
    assert [(p["drill_id"], p["x"], p["y"]) for p in far["points"]] == [("d1", 0, 36.0), ("d3", 100, 20.0)]
    assert far["budget_y"] is None, "an hour's budget would flatten 50 s drills to the bottom line"
    near = rto_trend(newest_first, budget=60, width=100, height=100)
    assert near["budget_y"] == 20.0 and near["points"][1]["y"] == round(100 - 50 / 75 * 100, 1)
