"""The three security DAGs: the manual's check sets as tasks, and whole runs with dag.test() on real inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.fakes.http_server import RecordingHttpServer
from tests.fakes.package_index import PackageIndexFake
from trading_ops.security.catalog import CHECKS, checks_of

DATA = Path(__file__).parent / "data" / "security"
# 02:00 on 2 November in Seoul, the daily schedule's run.
FIRST_RUN = datetime(2026, 11, 1, 17, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dags(dagbag):
    return dagbag.dags


@pytest.mark.parametrize("frequency", ["daily", "weekly", "monthly"])
def test_each_dag_runs_its_check_set_one_task_per_check(dags, frequency):
    task_ids = {check.task_id for check in checks_of(frequency)}
    dag = dags[f"security_checks_{frequency}"]
    assert {task.task_id for task in dag.tasks} == task_ids | {"summarize_findings"}
    summary = dag.get_task("summarize_findings")
    assert summary.trigger_rule == "all_done"
    assert summary.upstream_task_ids == task_ids


def test_every_check_has_its_own_task_id_and_a_function():
    from trading_ops.security.runner import check_function

    assert len({check.task_id for check in CHECKS.values()}) == len(CHECKS)
    assert all(callable(check_function(name)) for name in CHECKS)


def summary_xcom(dag_id: str, run_id: str) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=run_id, dag_ids=dag_id, task_ids="summarize_findings", key="return_value")
        ).first()
        return XComModel.deserialize_value(row)


@pytest.fixture
def daily_inputs(tmp_path, make_policy, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("Jinja2==3.1.4\nrequests==2.34.2\n")
    with PackageIndexFake() as index:
        index.add_advisory("GHSA-q2x7-8rv6-6q7h", "jinja2", fixed="3.1.5", summary="Jinja sandbox breakout")
        monkeypatch.setenv("AIRFLOW_CONN_OSV_API", index.connection_json())
        make_policy(
            {
                "security.requirement_files": [str(requirements)],
                "security.vulnerability_scan.audit_environment": False,
                "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
                "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
            }
        )
        yield index


def test_daily_runs_record_findings_and_report_what_changed(
    dags, airflow_db, fresh_db, ops_conn, daily_inputs, alert_fakes, caplog
):
    slack, pagerduty = alert_fakes
    dag = dags["security_checks_daily"]
    caplog.set_level("INFO")
    first = dag.test(logical_date=FIRST_RUN)
    assert first.state == "success"
    # Each check's critical findings page, linking to the check's task in this run.
    triggers = {event["dedup_key"]: event for event in pagerduty.events() if event["event_action"] == "trigger"}
    assert set(triggers) == {
        "security:vulnerability_scan:critical",
        "security:auth_log_review:critical",
        "security:failed_login_attempts:critical",
    }
    run_url = triggers["security:failed_login_attempts:critical"]["links"][0]["href"]
    assert (
        run_url
        == f"http://127.0.0.1:8080/dags/security_checks_daily/runs/{quote(first.run_id)}/tasks/count_failed_logins"
    )
    assert {message["channel"] for message in slack.messages()} == {
        "#alerts-critical",
        "#alerts-warning",
        "#alerts-info",
    }
    summary = summary_xcom(dag.dag_id, first.run_id)
    checks = summary["checks"]
    assert set(checks) == {"vulnerability_scan", "auth_log_review", "failed_login_attempts"}
    assert [item["subject"] for item in checks["vulnerability_scan"]["new"]] == ["jinja2 GHSA-q2x7-8rv6-6q7h"]
    assert checks["failed_login_attempts"]["counts"] == {"critical": 2, "warning": 2, "info": 0}
    assert checks["auth_log_review"]["counts"] == {"critical": 3, "warning": 5, "info": 8}
    assert summary["totals"]["new"] == 1 + 4 + 16 and summary["totals"]["resolved"] == 0
    assert "Security findings of this run:" in caplog.text

    second = dag.test(logical_date=FIRST_RUN + timedelta(days=1))
    assert second.state == "success"
    checks = summary_xcom(dag.dag_id, second.run_id)["checks"]
    # The next day's window holds one line of the sample: a root login with a password at 02:00.
    assert sorted(item["subject"] for item in checks["auth_log_review"]["new"]) == [
        "ssh login root from 198.51.100.77",
        "ssh login without public key + 2FA: root from 198.51.100.77",
        "ssh root login from 198.51.100.77",
    ]
    assert len(checks["auth_log_review"]["resolved"]) == 16
    assert len(checks["failed_login_attempts"]["resolved"]) == 4
    # failed_login_attempts has nothing left: its incident is resolved; auth_log_review still has a critical.
    assert pagerduty.incidents == {
        "security:vulnerability_scan:critical": "triggered",
        "security:auth_log_review:critical": "triggered",
        "security:failed_login_attempts:critical": "resolved",
    }
    assert [item["subject"] for item in checks["vulnerability_scan"]["persisting"]] == ["jinja2 GHSA-q2x7-8rv6-6q7h"]

    runs = ops_conn.execute(
        "SELECT check_name, count(*) FROM ops.security_check_runs GROUP BY check_name ORDER BY check_name"
    ).fetchall()
    assert runs == [("auth_log_review", 2), ("failed_login_attempts", 2), ("vulnerability_scan", 2)]


def test_a_check_that_cannot_read_its_source_fails_the_run(
    dags, airflow_db, fresh_db, daily_inputs, make_policy, alert_fakes, monkeypatch
):
    slack, _ = alert_fakes
    make_policy(
        {
            "security.requirement_files": [str(DATA / "absent-requirements.txt")],
            "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
        }
    )
    dag = dags["security_checks_daily"]
    for task in dag.tasks:
        monkeypatch.setattr(task, "retries", 0)  # a retry would wait out the two-minute retry delay
    run = dag.test(logical_date=FIRST_RUN + timedelta(days=3))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states == {
        "scan_vulnerabilities": "failed",
        "review_auth_logs": "success",
        "count_failed_logins": "success",
        "summarize_findings": "failed",
    }
    # The failure is an alert at the DAG's level too, naming the task.
    assert any("security_checks_daily: task scan_vulnerabilities failed" in m["text"] for m in slack.messages())


def test_the_local_policy_runs_what_works_here_and_skips_the_rest(
    dags, airflow_db, fresh_db, pg_cluster, tmp_path, monkeypatch, alert_fakes
):
    """`make up`'s policy: the penetration test probes the local cluster and Airflow API; checks needing a real host
    or Kubernetes are skipped, saying what they need, and the run still succeeds."""
    from trading_ops.dev.local_policy import LOCAL_DISABLED_CHECKS, write_local_policy

    with RecordingHttpServer() as airflow_api:
        airflow_api.route("GET", "/api/v2/dags")(lambda request: (401, {"detail": "Not authenticated"}))
        policy = write_local_policy(
            tmp_path / "ops_policy.yaml",
            tmp_path,
            wal_archive_dir=pg_cluster.wal_archive_dir,
            airflow_url=airflow_api.url,
            postgres=pg_cluster,
        )
        monkeypatch.setenv("TRADING_OPS_POLICY", str(policy))
        dag = dags["security_checks_monthly"]
        run = dag.test(logical_date=FIRST_RUN + timedelta(days=10))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states == {
        "probe_attack_surface": "success",
        "review_security_policy": "skipped",
        "audit_access_rights": "skipped",
        "summarize_findings": "success",
    }
    summary = summary_xcom(dag.dag_id, run.run_id)
    assert summary["disabled"] == {
        name: LOCAL_DISABLED_CHECKS[name] for name in ("security_policy_review", "access_right_audit")
    }
    assert [item["subject"] for item in summary["checks"]["penetration_test"]["new"]] == [
        f"127.0.0.1:{pg_cluster.port} no tls"
    ]
    assert airflow_api.paths("GET") == ["/api/v2/dags"]
