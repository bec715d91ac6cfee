"""An incident on the real scheduler: a P1 alert opens it in the e2e ops state database, incident_tracker (unpaused,
every minute) starts its incident_response run `incident_<id>`, and the questions are answered through the REST
API's HITL endpoint: acknowledged by the user its first escalation role maps to (anyone else gets 403), a status
report once the alert has resolved, the recovery confirmed. The incident records who acknowledged and when, closes,
and carries its post-mortem. The escalation on timeout is in test_incident_response_dag.py (dag.test()).
"""

from __future__ import annotations

import time
import urllib.error
from datetime import UTC, datetime

import pytest

from trading_ops.dev.standalone import ADMIN_USER, APPROVER_USER

pytestmark = pytest.mark.e2e

DAG_ID = "incident_response"


@pytest.fixture
def e2e_state(airflow_standalone, monkeypatch):
    """This process writes where the e2e Airflow reads: its ops state database, policy and alert fakes."""
    for name in (
        "AIRFLOW_CONN_OPS_STATE",
        "TRADING_OPS_POLICY",
        "AIRFLOW_CONN_SLACK_ALERTS",
        "AIRFLOW_CONN_PAGERDUTY_EVENTS",
    ):
        monkeypatch.setenv(name, airflow_standalone.extra_env[name])
    from trading_ops.policy import load_policy

    return load_policy()


def test_a_p1_incident_is_acknowledged_reported_and_closed_through_the_rest_api(
    airflow_standalone, e2e_state, slack_fake
):
    from trading_ops.alerting import Alert, resolve_alert, send_alert
    from trading_ops.incidents import store

    airflow = airflow_standalone
    alert = Alert(
        severity="critical",
        source="system_health/postgres_down",
        summary="postgres_down: pg_up < 1 for 0s",
        dedup_key=f"trading-ops/e2e/postgres_down/{time.time_ns()}",
        raised_at=datetime.now(UTC),
    )
    send_alert(alert)
    [incident] = [row for row in store.list_incidents(e2e_state) if row["dedup_key"] == alert.key]
    run_id = f"incident_{incident['incident_id']}"

    airflow.unpause(DAG_ID)
    airflow.unpause("incident_tracker")
    try:
        # The run does not exist until the tracker starts it: until then its task is "not created yet".
        question = airflow.wait_for_question(DAG_ID, run_id, "acknowledge_1", timeout=240)
    finally:
        # Later tests' incidents get no runs (the tracker would start one for every open P1/P2 incident).
        airflow.request("PATCH", "/api/v2/dags/incident_tracker", {"is_paused": True})
    assert question["subject"].startswith(f"Acknowledge P1 incident #{incident['incident_id']}: postgres_down")
    assert [user["id"] for user in question["assigned_users"]] == [APPROVER_USER], "devops_lead, in the local policy"
    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow.answer(DAG_ID, run_id, "acknowledge_1", "Acknowledge", ADMIN_USER)
    assert refused.value.code == 403

    answered = airflow.answer_until_heard(DAG_ID, run_id, "acknowledge_1", "Acknowledge", APPROVER_USER)
    acknowledged = store.show_incident(e2e_state, incident["incident_id"])[0]
    assert acknowledged["acknowledged_by"] == APPROVER_USER == acknowledged["owner"]
    assert abs((acknowledged["acknowledged_at"] - datetime.fromisoformat(answered["responded_at"])).total_seconds()) < 1

    airflow.wait_for_question(DAG_ID, run_id, "report_status")
    resolve_alert(Alert(**{**alert.__dict__, "raised_at": datetime.now(UTC)}))
    report = {"impact": "trading halted", "current_action": "failed over to the replica", "next_update_minutes": 15}
    airflow.answer_until_heard(DAG_ID, run_id, "report_status", "Submit report", APPROVER_USER, params=report)

    question = airflow.wait_for_question(DAG_ID, run_id, "confirm_recovery")
    assert "The triggering condition cleared at" in question["body"]
    airflow.answer_until_heard(
        DAG_ID,
        run_id,
        "confirm_recovery",
        "Confirm recovery",
        APPROVER_USER,
        params={"what_resolved_it": "failover to the replica"},
    )
    run = airflow.wait_for_run(DAG_ID, run_id, timeout=180)
    assert run["state"] == "success", airflow.task_instances(DAG_ID, run_id)

    closed, events = store.show_incident(e2e_state, incident["incident_id"])
    assert closed["resolved_by"] == APPROVER_USER and closed["resolution_note"] == "failover to the replica"
    assert "| status_report | approver | Status: impact trading halted;" in closed["post_mortem"]
    assert "trading halted" in " ".join(message["text"] for message in slack_fake.messages())
    assert [event["kind"] for event in events if event["kind"] != "notified"][:3] == [
        "opened",
        "response_started",
        "acknowledged",
    ]
