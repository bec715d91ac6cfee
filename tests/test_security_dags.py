"""The three security DAGs: the manual's check sets as tasks, and whole runs with dag.test() on real inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fakes.package_index import PackageIndexFake
from tests.test_dag_integrity import DAGS_DIR
from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy
from trading_ops.security.runner import CHECKS
from trading_ops.security.tasks import TASK_IDS

DATA = Path(__file__).parent / "data" / "security"
# 02:00 on 2 November in Seoul, the daily schedule's run.
FIRST_RUN = datetime(2026, 11, 1, 17, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR)).dags


@pytest.mark.parametrize("frequency", ["daily", "weekly", "monthly"])
def test_each_dag_runs_the_policys_check_set_one_task_per_check(dags, frequency):
    checks = getattr(load_policy(DEFAULT_POLICY_PATH).security.checks, frequency)
    dag = dags[f"security_checks_{frequency}"]
    assert {task.task_id for task in dag.tasks} == {TASK_IDS[check] for check in checks} | {"summarize_findings"}
    summary = dag.get_task("summarize_findings")
    assert summary.trigger_rule == "all_done"
    assert summary.upstream_task_ids == {TASK_IDS[check] for check in checks}


def test_every_check_has_a_task_id_and_a_function():
    assert set(TASK_IDS) == set(CHECKS)
    assert set(CHECKS) == {
        check
        for frequency in ("daily", "weekly", "monthly")
        for check in getattr(load_policy().security.checks, frequency)
    }


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


def test_daily_runs_record_findings_and_report_what_changed(dags, airflow_db, fresh_db, pg_conn, daily_inputs, caplog):
    dag = dags["security_checks_daily"]
    caplog.set_level("INFO")
    first = dag.test(logical_date=FIRST_RUN)
    assert first.state == "success"
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
    assert [item["subject"] for item in checks["vulnerability_scan"]["persisting"]] == ["jinja2 GHSA-q2x7-8rv6-6q7h"]

    runs = pg_conn.execute(
        "SELECT check_name, count(*) FROM ops.security_check_runs GROUP BY check_name ORDER BY check_name"
    ).fetchall()
    assert runs == [("auth_log_review", 2), ("failed_login_attempts", 2), ("vulnerability_scan", 2)]


def test_a_check_that_cannot_read_its_source_fails_the_run(dags, airflow_db, fresh_db, daily_inputs, make_policy):
    make_policy(
        {
            "security.requirement_files": [str(DATA / "absent-requirements.txt")],
            "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
        }
    )
    dag = dags["security_checks_daily"]
    for task in dag.tasks:
        task.retries = 0  # a retry would wait out the two-minute retry delay
    run = dag.test(logical_date=FIRST_RUN + timedelta(days=3))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states == {
        "scan_vulnerabilities": "failed",
        "review_auth_logs": "success",
        "count_failed_logins": "success",
        "summarize_findings": "failed",
    }
