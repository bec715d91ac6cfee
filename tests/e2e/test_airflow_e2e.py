"""Each DAG triggered through the REST API with conf, run by the real scheduler and executor, to success."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trading_ops.dev.standalone import APPROVER_USER

pytestmark = pytest.mark.e2e

# (dag_id, conf, expected final state); each issue adds its DAGs here.
E2E_RUNS: list[tuple[str, dict, str]] = [
    ("system_health", {}, "success"),
    ("security_checks_daily", {}, "success"),
    ("security_checks_weekly", {}, "success"),
    ("security_checks_monthly", {}, "success"),
    # The test policy's log directories do not exist yet: a real run over nothing succeeds and does nothing.
    ("log_rotation", {"dry_run": False}, "success"),
    # The full backup first: the WAL run checks the archive from its base backup on.
    ("db_backup_full", {"dry_run": False}, "success"),
    ("db_backup_wal", {"dry_run": False}, "success"),
    # A real db_restore waits for a second person's approval: test_restore_approval_e2e runs it, answered.
    ("db_maintenance", {"dry_run": False}, "success"),
    # The fake cluster's trading-api has no HPA and the local caches Redis' defaults: findings, not failures.
    ("capacity_review", {}, "success"),
    # After db_backup_full: its backup recovered to a restore point on a recovery instance, verified, recorded.
    ("db_restore_drill", {}, "success"),
]


def test_standalone_serves_the_api_with_a_fixed_login(airflow_standalone):
    health = airflow_standalone.request("GET", "/api/v2/monitor/health", auth=False)
    assert health["metadatabase"]["status"] == "healthy"
    assert health["scheduler"]["status"] == "healthy"
    dags = airflow_standalone.request("GET", "/api/v2/dags?limit=100")
    assert "dags" in dags


@pytest.mark.parametrize(("dag_id", "conf", "expected"), E2E_RUNS, ids=[run[0] for run in E2E_RUNS])
def test_dag_runs_on_the_real_scheduler(airflow_standalone, dag_id, conf, expected):
    run_id = airflow_standalone.trigger(dag_id, conf)
    run = airflow_standalone.wait_for_run(dag_id, run_id, timeout=600)
    states = airflow_standalone.task_instances(dag_id, run_id)
    assert run["state"] == expected, f"{dag_id} ended {run['state']}: {states}"
    assert states and all(state in ("success", "skipped") for state in states.values()), states


def test_point_in_time_restore_to_latest_through_the_rest_api(airflow_standalone, pg_cluster):
    """Rows written after the full backup above come back through recovery_target=latest: the recovery instance
    runs on the worker of the real executor, its restore_command is `python -m trading_ops wal fetch`."""
    import psycopg

    with psycopg.connect(pg_cluster.conninfo("trading_db"), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders (symbol, side, quantity, price, created_at) "
            "SELECT 'AAPL', 'buy', g, 77.75, now() FROM generate_series(1, 200) g"
        )
    conf = {"dry_run": False, "confirm": "trading_db", "recovery_target": "latest", "jobs": 2}

    run_id = airflow_standalone.trigger("db_restore", conf)
    # A live restore waits for a second person: the admin triggered it, the approver approves.
    airflow_standalone.wait_for_question("db_restore", run_id, "approve_live_restore")
    airflow_standalone.answer_until_heard("db_restore", run_id, "approve_live_restore", "Approve", APPROVER_USER)
    run = airflow_standalone.wait_for_run("db_restore", run_id, timeout=600)

    states = airflow_standalone.task_instances("db_restore", run_id)
    assert run["state"] == "success", states
    assert states["restore_database"] == "success" and states["teardown_recovery_instance"] == "success"
    with psycopg.connect(pg_cluster.conninfo("trading_db")) as conn:
        assert conn.execute("SELECT count(*) FROM orders WHERE price = 77.75").fetchone()[0] == 200


def test_log_rotation_rotates_compresses_and_encrypts_real_files(airflow_standalone, audit_log_identity):
    import io

    from tests.support.harness import TEST_POLICY
    from trading_ops.backup import Repository
    from trading_ops.logs import chain
    from trading_ops.logs.archives import extract_archive
    from trading_ops.policy import load_policy
    from trading_ops.streams import EncryptionKey

    originals = {}
    for name, log_class in load_policy(TEST_POLICY).logs.classes.items():
        directory = Path(log_class.paths[0].directory)
        directory.mkdir(parents=True, exist_ok=True)
        originals[name] = b"".join(b"%d %s event=e2e\n" % (n, name.encode()) for n in range(5000))
        (directory / "e2e.log").write_bytes(originals[name])

    run_id = airflow_standalone.trigger("log_rotation", {"dry_run": False})
    run = airflow_standalone.wait_for_run("log_rotation", run_id, timeout=600)
    states = airflow_standalone.task_instances("log_rotation", run_id)
    assert run["state"] == "success", states
    assert sorted(states) == [
        "list_log_classes",
        "report_hosts",  # read the host tasks' states through the execution API: every host reached
        "rotate_log_class[0]",
        "rotate_log_class[1]",
        "rotate_log_class[2]",
    ]

    for name, log_class in load_policy(TEST_POLICY).logs.classes.items():
        directory = Path(log_class.paths[0].directory)
        (archive,) = [p for p in directory.glob("e2e.log.*") if not p.name.endswith(".sha256")]
        assert archive.name.endswith(".zst.age" if log_class.encryption else ".zst")
        assert (directory / f"{archive.name}.sha256").exists()
        assert (directory / "e2e.log").read_bytes() == b""
        out = io.BytesIO()
        extract_archive(archive, out, [EncryptionKey(audit_log_identity)])
        assert out.getvalue() == originals[name]
        # Recorded in the signed chain, whose head the run stored in the backup repository.
        policy = load_policy(TEST_POLICY)
        head = Repository(policy.backup.repository).read_object(chain.head_object_name("default", name, str(directory)))
        assert head is not None
        key = chain.verify_key(policy.logs.chain.public_key)
        assert chain.verify(directory, name, key, json.loads(head)) == []
        assert archive.name in {
            entry.get("name") for entry in chain.read_chain(chain.chain_path(directory, name)).entries
        }
