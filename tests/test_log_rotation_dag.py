"""The log_rotation DAG run by dag.test(): one mapped task per policy class; `dry_run` (default false) prints the
plan and changes nothing; a missing key fails the encrypted class at once."""

from __future__ import annotations

import json

import pytest
from pyrage import x25519

from tests.support.dagbag import fresh_dag
from tests.support.logs import CLASSES, SIGNING_SECRET, tree
from trading_ops.logs.archives import extract_archive
from trading_ops.streams import EncryptionKey

IDENTITY = x25519.Identity.generate()


@pytest.fixture
def log_rotation_dag(airflow_db):
    return fresh_dag("log_rotation")


@pytest.fixture
def log_dirs(tmp_path, make_policy, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_LOG_SIGNING_KEY", json.dumps({"conn_type": "generic", "password": SIGNING_SECRET})
    )
    dirs = {name: tmp_path / name for name in CLASSES}
    for name, directory in dirs.items():
        directory.mkdir()
        (directory / f"{name}.log").write_text(f"{name} line\n" * 1000)
    make_policy({f"logs.classes.{name}.paths.0.directory": str(directory) for name, directory in dirs.items()})
    return dirs


@pytest.fixture
def audit_key(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUDIT_LOG_ENCRYPTION_KEY",
        json.dumps({"conn_type": "generic", "password": str(IDENTITY.to_public())}),
    )


def summaries(dag_run) -> dict[int, dict]:
    """The XCom summary of each mapped rotate_log_class task, by map index."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, dag_ids="log_rotation", task_ids="rotate_log_class", key="return_value"
            )
        ).all()
        return {row.map_index: XComModel.deserialize_value(row) for row in rows}


def test_dry_run_is_a_plain_param_that_defaults_to_false(log_rotation_dag):
    param = log_rotation_dag.params.get_param("dry_run")
    assert param.value is False and param.schema["type"] == "boolean"
    assert log_rotation_dag.description


def test_a_dry_run_lists_the_plan_and_changes_nothing(log_rotation_dag, log_dirs, tmp_path, audit_key):
    before = tree(tmp_path)

    dry = log_rotation_dag.test(run_conf={"dry_run": True})

    assert dry.state == "success"
    assert tree(tmp_path) == before
    plans = summaries(dry)
    assert sorted(plans) == [0, 1, 2]
    by_class = {plan["log_class"]: plan for plan in plans.values()}
    assert sorted(by_class) == sorted(CLASSES)
    for name, plan in by_class.items():
        assert plan["dry_run"] is True and plan["failures"] == [] and plan["files_rotated"] == 1
        assert any(action.startswith(f"rotate {log_dirs[name] / f'{name}.log'}") for action in plan["actions"])
    assert any(".zst.age" in action for action in by_class["audit_logs"]["actions"])


def test_a_manual_run_without_dry_run_rotates_compresses_and_encrypts(log_rotation_dag, log_dirs, tmp_path, audit_key):
    real = log_rotation_dag.test()

    assert real.state == "success"
    mapped = [ti for ti in real.get_task_instances() if ti.task_id == "rotate_log_class"]
    assert sorted(ti.map_index for ti in mapped) == [0, 1, 2]
    assert all(plan["dry_run"] is False for plan in summaries(real).values())
    for name, directory in log_dirs.items():
        archives = [p for p in directory.iterdir() if not p.name.endswith((".sha256", ".log", ".jsonl"))]
        assert len(archives) == 1, archives
        assert archives[0].name.endswith(".zst.age" if name == "audit_logs" else ".zst")
        with open(tmp_path / "out", "wb") as out:
            extract_archive(archives[0], out, [EncryptionKey(IDENTITY)])
        assert (tmp_path / "out").read_text() == f"{name} line\n" * 1000


def test_without_the_key_connection_the_audit_class_fails_at_once_and_the_others_rotate(
    log_rotation_dag, log_dirs, alert_fakes
):
    slack, _pagerduty = alert_fakes
    # The shared default_args retry twice: a missing key is the user's to fix, so it must not be retried.
    assert all(task.retries == 2 for task in log_rotation_dag.tasks)

    run = log_rotation_dag.test()

    assert run.state == "failed"
    mapped = {ti.map_index: ti for ti in run.get_task_instances() if ti.task_id == "rotate_log_class"}
    assert {index: ti.state for index, ti in mapped.items()} == {0: "success", 1: "success", 2: "failed"}
    assert mapped[2].try_number == 1  # the policy lists audit_logs third
    assert list((log_dirs["audit_logs"]).iterdir()) == [log_dirs["audit_logs"] / "audit_logs.log"]
    assert any(p.name.endswith(".zst") for p in log_dirs["application_logs"].iterdir())
    # The audit task started and failed (it alerts by itself): no host is reported as unreached, yet the run fails.
    states = {ti.task_id: ti.state for ti in run.get_task_instances() if ti.map_index < 0}
    assert states["report_hosts"] == "failed"
    assert not any("did not run" in message["text"] for message in slack.messages())


# --- per-host rotation ------------------------------------------------------------------------------------------


def test_each_host_gets_its_own_tasks_on_its_own_queue(monkeypatch):
    monkeypatch.setenv("TRADING_OPS_LOG_HOSTS", "default, db1,db-2")
    dag = fresh_dag("log_rotation")
    tasks = {task.task_id: task for task in dag.tasks}
    assert sorted(tasks) == [
        "list_log_classes",
        "list_log_classes_db1",
        "list_log_classes_db_2",
        "report_hosts",
        "rotate_log_class",
        "rotate_log_class_db1",
        "rotate_log_class_db_2",
    ]
    assert tasks["rotate_log_class_db1"].queue == "db1" and tasks["rotate_log_class_db_2"].queue == "db-2"
    assert tasks["rotate_log_class"].queue == tasks["report_hosts"].queue == "default"
    assert tasks["rotate_log_class_db_2"].partial_kwargs["op_kwargs"] == {"host": "db-2"}
    assert tasks["report_hosts"].trigger_rule == "all_done"
    assert set(tasks["report_hosts"].upstream_task_ids) == {
        "rotate_log_class",
        "rotate_log_class_db1",
        "rotate_log_class_db_2",
    }


def test_a_single_host_setup_keeps_one_listing_and_one_mapped_rotation(monkeypatch):
    monkeypatch.delenv("TRADING_OPS_LOG_HOSTS", raising=False)
    tasks = {task.task_id: task for task in fresh_dag("log_rotation").tasks}
    assert sorted(tasks) == ["list_log_classes", "report_hosts", "rotate_log_class"]


def test_a_host_whose_worker_never_runs_its_task_is_reported_by_name(
    airflow_db, log_dirs, audit_key, make_policy, monkeypatch, alert_fakes
):
    slack, _pagerduty = alert_fakes
    # The audit logs live on db2; this process plays the default host's worker, which refuses db2's task before it
    # starts (TRADING_OPS_HOST), as no worker of db2 took it. A host "db3" has paths but no task at all.
    make_policy(
        {
            **{f"logs.classes.{name}.paths.0.directory": str(directory) for name, directory in log_dirs.items()},
            "logs.classes.audit_logs.paths.0.host": "db2",
            "logs.classes.system_logs.paths.0.host": "db3",
        }
    )
    monkeypatch.setenv("TRADING_OPS_LOG_HOSTS", "default,db2")
    monkeypatch.setenv("TRADING_OPS_HOST", "default")

    run = fresh_dag("log_rotation").test()

    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("rotate_log_class", 0)] == "success"  # application_logs, on the default host
    assert states[("rotate_log_class_db2", 0)] == "failed"
    assert states[("report_hosts", -1)] == "failed" and run.state == "failed"
    assert list(log_dirs["audit_logs"].iterdir()) == [log_dirs["audit_logs"] / "audit_logs.log"]
    assert list(log_dirs["system_logs"].iterdir()) == [log_dirs["system_logs"] / "system_logs.log"]
    # One alert per host, by name (the report task's own failure notice, on the info channel, repeats them).
    alerts = [message for message in slack.messages() if message["channel"] != "#alerts-info"]
    db2 = [message for message in alerts if "log rotation on host db2 did not run" in message["text"]]
    assert len(db2) == 1 and db2[0]["channel"] == "#alerts-critical"  # db2 holds the audit logs
    assert "rotate_log_class_db2 never started" in db2[0]["text"] and "queue db2" in db2[0]["text"]
    db3 = [message for message in alerts if "host db3 holds paths of system_logs" in message["text"]]
    assert len(db3) == 1 and db3[0]["channel"] == "#alerts-warning"
