"""db_restore end to end with dag.test(): a real backup, real damage, a real restore, a fake Kubernetes API."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from tests.support.dagbag import fresh_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

TABLES = ("market_data", "market_data_archive", "orders", "instruments")


@pytest.fixture
def restore_dag():
    """A fresh parse per test (dag.test() keeps a run's conf in the DAG's params), retries off so the failure
    tests do not sit through retry delays."""
    dag = fresh_dag("db_restore")
    for task in dag.tasks:
        task.retries = 0
    return dag


@pytest.fixture
def declared_restore_dag():
    """The DAG with the retries it declares, for the tests that show which failures are not retried."""
    return fresh_dag("db_restore")


@pytest.fixture
def repository(tmp_path, make_policy):
    from trading_ops import backup as backups
    from trading_ops.policy import load_policy

    make_policy({"backup.repository": str(tmp_path / "repository")})
    return backups.repository_from_policy(load_policy())


@pytest.fixture
def verified_backup(repository, fresh_db):
    from trading_ops import backup as backups

    info = backups.take_full_backup(repository, backups.full_backup_id(datetime.now(UTC)), conn_id="trading_db")
    return backups.verify_backup(repository, info)


def _snapshot(conninfo: str) -> dict:
    with psycopg.connect(conninfo) as conn:
        return {
            table: conn.execute(f"SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {table} t").fetchone()
            for table in TABLES
        }


def _run(dag, conf: dict):
    run = dag.test(run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def _try_numbers(run) -> dict[str, int]:
    return {ti.task_id: ti.try_number for ti in run.get_task_instances()}


def _databases(pg_cluster) -> set[str]:
    with psycopg.connect(pg_cluster.conninfo("postgres")) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def _real(fresh_db: str, **extra) -> dict:
    return {"dry_run": False, "confirm": fresh_db, "target_database": fresh_db, **extra}


def test_restore_brings_back_the_backup_and_the_service(
    restore_dag, verified_backup, fresh_db, pg_cluster, fake_trading_api, alert_fakes, second_person_approves
):
    expected = _snapshot(pg_cluster.conninfo(fresh_db))
    with psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as conn:
        conn.execute("DROP TABLE orders")
        conn.execute("DELETE FROM market_data WHERE id % 3 = 0")
    assert _snapshot_or_none(pg_cluster.conninfo(fresh_db)) != expected

    run, states = _run(restore_dag, _real(fresh_db, jobs=2))

    assert run.state == "success", states
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == expected
    assert fake_trading_api.scale_requests() == [0, 3]
    assert fake_trading_api.deployment.replica_history == [3, 0, 3]
    report = run.get_task_instance("report_restore").xcom_pull(task_ids="report_restore")
    restore_started = datetime.fromisoformat(report["restore_started_at"]).timestamp()
    assert fake_trading_api.deployment.all_pods_gone_at, "the pods were never all gone"
    assert fake_trading_api.deployment.all_pods_gone_at[0] <= restore_started, "pg_restore started before pods left"
    assert report["replicas_before"] == 3 and report["replicas_after"] == 3
    assert [pod["ready"] for pod in report["pods"]] == ["1/1"] * 3
    retired = report["retired_database"]
    assert retired.startswith(f"{fresh_db}_pre_restore_") and retired in _databases(pg_cluster)
    slack, pagerduty = alert_fakes
    [notice] = slack.messages()
    assert notice["channel"] == "#alerts-info"
    assert f"{fresh_db} restored from backup {verified_backup.id} (swap)" in notice["text"]
    assert pagerduty.events() == []
    asked = second_person_approves.request
    assert asked["subject"] == f"Approve a live restore of {fresh_db} from backup {verified_backup.id}"
    assert asked["options"] == ["Approve", "Reject"] and asked["defaults"] is None
    assert [user["id"] for user in asked["assigned_users"]] == ["admin", "approver"]
    for shown in (
        f"**Backup:** {verified_backup.id}",
        "**Recovery target:** the full backup's dump",
        "**Mode:** swap",
        f"`{fresh_db}` is swapped out: renamed to `{retired}` (kept for rollback)",
        "Approve only if you are not dag_test",
        "trading/trading-api: 3 replicas now; scaled back to 3",
    ):
        assert shown in asked["body"], shown
    assert (
        run.get_task_instance("approve_live_restore").xcom_pull(task_ids="approve_live_restore")["approved_by"]
        == "approver"
    )
    pg_cluster.drop_database(retired)


@pytest.mark.parametrize(
    ("answer", "policy_changes", "sentence"),
    [
        (
            {"answer": "Approve", "user": "dag_test"},
            {},
            "dag_test triggered this run and answered its approval: a live restore needs a second person",
        ),
        ({"answer": "Reject", "user": "approver"}, {}, "approver rejected the live restore: nothing was changed"),
        (
            {"timeout_sweep": True},
            {"restore.approval.timeout": "2s"},
            "No approver answered within restore.approval.timeout (0:00:02)",
        ),
    ],
    ids=["answered-by-the-triggering-user", "rejected", "timed-out"],
)
def test_a_live_restore_not_approved_by_a_second_person_changes_nothing(
    restore_dag,
    verified_backup,
    fresh_db,
    pg_cluster,
    fake_trading_api,
    alert_fakes,
    make_policy,
    tmp_path,
    caplog,
    answer,
    policy_changes,
    sentence,
):
    """The triggering user's own answer, a rejection, or no answer in time (the scheduler's own timeout sweep):
    the run fails in the approval task, before anything is scaled; a notice, no page."""
    from tests.support.hitl import Responder

    make_policy({"backup.repository": str(tmp_path / "repository"), **policy_changes})
    before = _snapshot(pg_cluster.conninfo(fresh_db))
    databases = _databases(pg_cluster)

    with Responder("db_restore", "approve_live_restore", **answer) as responder:
        run, states = _run(restore_dag, _real(fresh_db))

    assert responder.request is not None, "the approval was never asked"
    assert run.state == "failed"
    assert states["approve_live_restore"] == "failed"
    assert _try_numbers(run)["approve_live_restore"] == 1, "refused at once, not asked again"
    assert {states[t] for t in ("record_replicas", "scale_down_workload", "restore_database", "swap_databases")} == {
        "upstream_failed"
    }
    assert states["scale_up_workload"] == "skipped"
    assert sentence in caplog.text
    assert fake_trading_api.scale_requests() == [] and not [r for r in fake_trading_api.requests if r.method != "GET"]
    assert fake_trading_api.deployment.replica_history == [3]
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == before and _databases(pg_cluster) == databases
    slack, pagerduty = alert_fakes
    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"]
    assert sentence in slack.messages()[0]["text"]
    assert pagerduty.requests == []


def test_a_restore_of_a_service_that_is_down_scales_it_back_to_the_manuals_minimum(
    restore_dag, verified_backup, fresh_db, pg_cluster, fake_trading_api, alert_fakes, caplog, second_person_approves
):
    """The outage that caused the restore left trading-api at 0: it comes back at min_replicas (3), not at 0. The
    HPA that manages it is named in the plan and only read."""
    deployment = fake_trading_api.deployment
    deployment.replicas, deployment.pods, deployment.replica_history = 0, [], [0]
    fake_trading_api.add_autoscaler("trading", "trading-api", "trading-api", min_replicas=3, max_replicas=10)

    run, states = _run(restore_dag, _real(fresh_db))

    assert run.state == "success", states
    assert fake_trading_api.scale_requests() == [0, 3]
    assert deployment.replica_history == [0, 0, 3]
    report = run.get_task_instance("report_restore").xcom_pull(task_ids="report_restore")
    assert report["replicas_before"] == 0 and report["replicas_after"] == 3
    assert [pod["ready"] for pod in report["pods"]] == ["1/1"] * 3
    hpa = "HorizontalPodAutoscaler trading-api manages it (min 3, max 10): its bounds are left as they are"
    assert hpa in caplog.text and hpa in second_person_approves.request["body"]
    assert "0 replicas now; scaled back to 3 (not the 0 now: never below resources.autoscaling.min_replicas 3" in (
        caplog.text
    )
    hpa_requests = [r for r in fake_trading_api.requests if "horizontalpodautoscalers" in r.path]
    assert hpa_requests and {r.method for r in hpa_requests} == {"GET"}, "the HPA is read, never changed"
    pg_cluster.drop_database(report["retired_database"])


def _snapshot_or_none(conninfo: str):
    try:
        return _snapshot(conninfo)
    except psycopg.errors.UndefinedTable:
        return None


def test_a_corrupted_backup_is_refused_before_anything_is_touched(
    restore_dag, verified_backup, fresh_db, pg_cluster, fake_trading_api
):
    dump = verified_backup.file_path("dump")
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    before = _snapshot(pg_cluster.conninfo(fresh_db))
    databases = _databases(pg_cluster)

    run, states = _run(restore_dag, _real(fresh_db, backup_id=verified_backup.id))

    assert run.state == "failed"
    assert states["validate_request"] == "failed"
    assert states["scale_down_workload"] == "upstream_failed"
    assert states["scale_up_workload"] == "skipped"
    assert fake_trading_api.scale_requests() == []
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == before and _databases(pg_cluster) == databases


def test_a_failed_restore_keeps_the_old_database_and_scales_back(
    restore_dag,
    verified_backup,
    fresh_db,
    pg_cluster,
    fake_trading_api,
    monkeypatch,
    alert_fakes,
    second_person_approves,
):
    """pg_restore fails midway (its database is dropped under it): the live database and service are untouched."""
    from trading_ops.restore import database as steps

    real_run = steps.run_pg_restore

    def failing_pg_restore(conn_id, dump, database, **kwargs):
        pg_cluster.drop_database(database)
        return real_run(conn_id, dump, database, **kwargs)

    monkeypatch.setattr(steps, "run_pg_restore", failing_pg_restore)
    fake_trading_api.deployment.replicas = 3
    before = _snapshot(pg_cluster.conninfo(fresh_db))

    run, states = _run(restore_dag, _real(fresh_db))

    assert run.state == "failed"
    assert states["restore_database"] == "failed" and states["swap_databases"] == "upstream_failed"
    assert states["scale_up_workload"] == "success"
    assert fake_trading_api.scale_requests() == [0, 3]
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == before
    assert not any(name.startswith(f"{fresh_db}_restore_") for name in _databases(pg_cluster))
    slack, pagerduty = alert_fakes
    page = pagerduty.only_page()
    assert page["event_action"] == "trigger" and page["payload"]["severity"] == "critical"
    assert page["payload"]["source"] == "db_restore.restore_database"
    assert [message["channel"] for message in slack.messages()] == ["#alerts-critical"]


def test_a_copy_that_fails_verification_fails_at_once_pages_and_keeps_the_old_database(
    declared_restore_dag,
    verified_backup,
    repository,
    fresh_db,
    pg_cluster,
    fake_trading_api,
    alert_fakes,
    second_person_approves,
):
    """Damage is no user's mistake: an incident at the DAG's level, but not retried (a retry checks the same copy)."""
    from trading_ops.backup.repository import write_manifest

    manifest = {key: value for key, value in verified_backup.manifest.items() if key != "format"}
    manifest["row_counts"] = {**manifest["row_counts"], "public.orders": manifest["row_counts"]["public.orders"] + 1}
    write_manifest(verified_backup.path, manifest)
    before = _snapshot(pg_cluster.conninfo(fresh_db))

    run, states = _run(declared_restore_dag, _real(fresh_db, backup_id=verified_backup.id))

    assert states["verify_integrity"] == "failed" and _try_numbers(run)["verify_integrity"] == 1
    assert states["swap_databases"] == "upstream_failed" and states["scale_up_workload"] == "success"
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == before
    assert not any(name.startswith(f"{fresh_db}_restore_") for name in _databases(pg_cluster))
    slack, pagerduty = alert_fakes
    page = pagerduty.only_page()
    assert page["payload"]["source"] == "db_restore.verify_integrity" and page["payload"]["severity"] == "critical"
    assert "public.orders has" in page["payload"]["custom_details"]["error"]
    assert [message["channel"] for message in slack.messages()] == ["#alerts-critical"]


def test_dry_run_prints_the_plan_and_changes_nothing(
    restore_dag, verified_backup, fresh_db, pg_cluster, fake_trading_api, caplog
):
    before = _snapshot(pg_cluster.conninfo(fresh_db))
    databases = _databases(pg_cluster)

    run, states = _run(restore_dag, {"target_database": fresh_db})

    assert run.state == "success"
    assert states["validate_request"] == "success" and states["stop_if_dry_run"] == "success"
    assert {states[t] for t in ("record_replicas", "restore_database", "swap_databases", "scale_up_workload")} == {
        "skipped"
    }
    assert "DRY RUN: nothing will change" in caplog.text
    assert f"swap: {fresh_db} -> {fresh_db}_pre_restore_" in caplog.text
    assert fake_trading_api.scale_requests() == [] and not [r for r in fake_trading_api.requests if r.method != "GET"]
    assert _snapshot(pg_cluster.conninfo(fresh_db)) == before and _databases(pg_cluster) == databases


@pytest.mark.parametrize(
    ("conf", "sentence"),
    [
        ({"backup_id": "20200101T000000Z"}, "20200101T000000Z"),
        ({"confirm": "not_it", "dry_run": False}, "confirm must equal the target database name"),
        ({"target_database": "no_such_db"}, "target database 'no_such_db' does not exist"),
    ],
)
def test_user_errors_stop_in_validate_with_one_sentence(
    restore_dag, verified_backup, fresh_db, fake_trading_api, caplog, conf, sentence
):
    run, states = _run(restore_dag, {"target_database": fresh_db, **conf})
    assert run.state == "failed" and states["validate_request"] == "failed"
    assert sentence in caplog.text
    assert fake_trading_api.scale_requests() == []


def test_a_dry_run_naming_a_missing_database_fails_at_once_and_pages_nobody(
    declared_restore_dag, verified_backup, fake_trading_api, alert_fakes, caplog
):
    """The defect of issue 11: this paged PagerDuty as a P1 "complete service outage"; it is a request problem."""
    slack, pagerduty = alert_fakes
    assert declared_restore_dag.get_task("validate_request").retries == 2, "retries it would have had"

    run, states = _run(declared_restore_dag, {"target_database": "no_such_db"})

    assert run.state == "failed" and states["validate_request"] == "failed"
    assert _try_numbers(run)["validate_request"] == 1, "failed at once, not retried"
    assert states["stop_if_dry_run"] == "upstream_failed"
    assert pagerduty.requests == []
    [notice] = slack.messages()
    assert notice["channel"] == "#alerts-info"
    sentence = "target database 'no_such_db' does not exist on trading_db."
    assert notice["text"].startswith(
        f":memo: *Not an incident* · db_restore: task validate_request stopped: {sentence}\n"
    )
    assert "a request or policy problem to fix" in notice["text"] and "without a retry" in notice["text"]
    assert "*try:* 1\n" in notice["text"]
    assert fake_trading_api.scale_requests() == []


def test_a_dump_newer_than_every_installed_pg_restore_is_refused(
    declared_restore_dag, verified_backup, repository, fresh_db, fake_trading_api, alert_fakes, caplog
):
    """pg_restore is chosen by the dump's pg_dump version (the manifest's `tools`), not taken from PATH."""
    from trading_ops.backup.repository import write_manifest

    manifest = {key: value for key, value in verified_backup.manifest.items() if key != "format"}
    manifest["tools"] = {**manifest["tools"], "pg_dump": "pg_dump (PostgreSQL) 99.1"}
    write_manifest(verified_backup.path, manifest)

    run, states = _run(declared_restore_dag, {"target_database": fresh_db, "backup_id": verified_backup.id})

    assert states["validate_request"] == "failed" and _try_numbers(run)["validate_request"] == 1
    assert "pg_restore of PostgreSQL 99 or newer is not installed on this worker" in caplog.text
    slack, pagerduty = alert_fakes
    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"] and pagerduty.requests == []


@pytest.mark.parametrize("backup_id", ["../../etc/passwd", "20261101T010000Z/../x", "latest; rm -rf /"])
def test_a_path_in_the_backup_id_is_rejected_by_the_form(restore_dag, backup_id):
    """The trigger form (and the REST API, which validates conf the same way) refuses it before any task runs."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        restore_dag.params.get_param("backup_id").resolve(backup_id)
