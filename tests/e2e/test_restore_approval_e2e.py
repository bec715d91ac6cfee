"""A live db_restore on the real scheduler waits for a second person: two users of the simple auth manager (`admin`
triggers, `approver` is the second person), answers through the REST API's HITL endpoint, the trading-api fake
recording every scale request.

Approved by the second user, the restore runs; answered by the triggering user, or rejected, the run fails in the
approval task with nothing changed and no scale request sent.
"""

from __future__ import annotations

import time
import urllib.error

import psycopg
import pytest

from trading_ops.dev.standalone import ADMIN_USER, APPROVER_USER

pytestmark = pytest.mark.e2e

DAG_ID, TASK_ID = "db_restore", "approve_live_restore"
LIVE = {"dry_run": False, "confirm": "trading_db", "jobs": 2}


@pytest.fixture(scope="module")
def a_verified_full_backup(airflow_standalone):
    """The newest verified full backup the restore uses: the one test_airflow_e2e took, or one taken now."""
    from trading_ops import backup as backups
    from trading_ops.policy import load_policy

    policy = load_policy(airflow_standalone.extra_env["TRADING_OPS_POLICY"])
    if not backups.list_backups(backups.repository_from_policy(policy), "full"):
        run_id = airflow_standalone.trigger("db_backup_full", {"dry_run": False})
        assert airflow_standalone.wait_for_run("db_backup_full", run_id, timeout=600)["state"] == "success"


def _wait_for_the_question(airflow, run_id: str) -> dict:
    return airflow.wait_for_question(DAG_ID, run_id, TASK_ID)


def _answer(airflow, run_id: str, option: str, user: str) -> dict:
    return airflow.answer_until_heard(DAG_ID, run_id, TASK_ID, option, user)


def _databases(pg_cluster) -> set[str]:
    with psycopg.connect(pg_cluster.conninfo("postgres")) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_approved_by_the_second_user_the_restore_runs(
    airflow_standalone, a_verified_full_backup, kubernetes_api, pg_cluster
):
    scaled_before = len(kubernetes_api.scale_requests())
    run_id = airflow_standalone.trigger(DAG_ID, LIVE)
    question = _wait_for_the_question(airflow_standalone, run_id)

    assert kubernetes_api.scale_requests()[scaled_before:] == [], "scaled before the approval"
    assert question["subject"].startswith("Approve a live restore of trading_db from backup ")
    assert f"**{ADMIN_USER}** asks to replace the production database **trading_db**" in question["body"]
    assert "**Mode:** swap" in question["body"] and "`trading_db` is swapped out" in question["body"]
    assert {user["id"] for user in question["assigned_users"]} == {ADMIN_USER, APPROVER_USER}
    # What the UI's Browse -> Required Actions lists: the waiting question of this run.
    pending = airflow_standalone.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/hitlDetails")
    assert [detail["subject"] for detail in pending["hitl_details"]] == [question["subject"]]

    answered = _answer(airflow_standalone, run_id, "Approve", APPROVER_USER)
    assert answered["responded_by"]["id"] == APPROVER_USER
    run = airflow_standalone.wait_for_run(DAG_ID, run_id, timeout=600)

    states = airflow_standalone.task_instances(DAG_ID, run_id)
    assert run["state"] == "success", states
    assert states[TASK_ID] == "success" and states["swap_databases"] == "success"
    assert kubernetes_api.scale_requests()[scaled_before:] == [0, 3]
    retired = [name for name in _databases(pg_cluster) if name.startswith("trading_db_pre_restore_")]
    assert retired, "the swap kept no replaced database"
    with pytest.raises(urllib.error.HTTPError) as again:
        _answer(airflow_standalone, run_id, "Reject", APPROVER_USER)
    assert again.value.code == 409, "an answer is final"


@pytest.mark.parametrize(
    ("user", "option", "sentence"),
    [
        (ADMIN_USER, "Approve", f"{ADMIN_USER} triggered this run and answered its approval"),
        (APPROVER_USER, "Reject", f"{APPROVER_USER} rejected the live restore"),
    ],
    ids=["answered-by-the-triggering-user", "rejected-by-the-second-user"],
)
def test_an_answer_that_is_not_a_second_persons_approval_changes_nothing(
    airflow_standalone,
    a_verified_full_backup,
    kubernetes_api,
    pg_cluster,
    slack_fake,
    pagerduty_fake,
    user,
    option,
    sentence,
):
    scaled_before, requests_before = len(kubernetes_api.scale_requests()), len(kubernetes_api.requests)
    databases = _databases(pg_cluster)
    run_id = airflow_standalone.trigger(DAG_ID, LIVE)
    _wait_for_the_question(airflow_standalone, run_id)

    _answer(airflow_standalone, run_id, option, user)
    run = airflow_standalone.wait_for_run(DAG_ID, run_id, timeout=600)

    states = airflow_standalone.task_instances(DAG_ID, run_id)
    assert run["state"] == "failed", states
    assert states[TASK_ID] == "failed"
    assert {states[task] for task in ("record_replicas", "scale_down_workload", "restore_database")} == {
        "upstream_failed"
    }
    assert kubernetes_api.scale_requests()[scaled_before:] == [], "a scale request was sent"
    assert [r.method for r in kubernetes_api.requests[requests_before:] if r.method != "GET"] == []
    assert _databases(pg_cluster) == databases, "a database was created, renamed or dropped"
    deadline = time.monotonic() + 30
    source = f"*Source:* {DAG_ID}.{TASK_ID}\n"
    while not (notices := [m for m in slack_fake.messages() if source in m["text"] and sentence in m["text"]]):
        assert time.monotonic() < deadline, f"no notice saying: {sentence}"
        time.sleep(0.5)
    assert [notice["channel"] for notice in notices] == ["#alerts-info"]
    assert [e for e in pagerduty_fake.events() if e["payload"]["source"] == f"{DAG_ID}.{TASK_ID}"] == []
