"""incident_response with dag.test(): one P1 incident opened by the high_priority rule (system_health's own code),
answered from outside the run as Airflow's REST API does (tests.support.hitl): nobody acknowledges in the response
time (3 s in this policy), the incident escalates to the next role (Slack and PagerDuty fakes receive it), the next
role acknowledges, a status report is given, the rule resolves, the recovery confirmation is offered and confirmed,
and the post-mortem is written from the real timeline.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.support.dagbag import fresh_dag
from tests.support.hitl import Responder
from tests.support.monitoring import healthy_metrics
from trading_ops.incidents import store
from trading_ops.monitoring.state import check_system_health
from trading_ops.policy import load_policy

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_ID = "incident_response"
KEY = "trading-ops/system_health/high_priority"


def _evaluate(policy, error_rate: float, at: datetime) -> None:
    metrics = healthy_metrics(policy)
    metrics["error_rate_percent"] = error_rate
    check_system_health(policy, metrics, at)


def test_an_unacknowledged_p1_escalates_then_is_acknowledged_reported_recovered_and_written_up(
    pg_cluster, alert_fakes, make_policy
):
    slack, pagerduty = alert_fakes
    make_policy({"incident_levels.P1.respond_within": "3s"})
    policy = load_policy()
    now = datetime.now(UTC)
    _evaluate(policy, 5.0, now - timedelta(minutes=6))
    _evaluate(policy, 5.0, now)
    [incident] = [row for row in store.list_incidents(policy) if row["dedup_key"] == KEY]
    incident_id = incident["incident_id"]
    pagerduty.reset()
    slack.reset()

    questions: dict[str, dict] = {}
    errors: list[BaseException] = []

    def resolve_the_rule(question: dict) -> None:
        _evaluate(policy, 0.05, datetime.now(UTC))

    report = {
        "impact": "orders rejected for 30% of users",
        "current_action": "rolling back 2026.11.3",
        "next_update_minutes": 20,
    }
    steps = [
        Responder(DAG_ID, "acknowledge_1", timeout_sweep=True),
        Responder(DAG_ID, "acknowledge_2", answer="Acknowledge", user="admin"),
        Responder(DAG_ID, "report_status", answer="Submit report", user="admin", params=report),
        Responder(
            DAG_ID,
            "report_status",
            answer="Submit report",
            user="admin",
            params={**report, "impact": "none since the rollback"},
            before_answer=resolve_the_rule,
        ),
        Responder(
            DAG_ID,
            "confirm_recovery",
            answer="Confirm recovery",
            user="admin",
            params={"what_resolved_it": "rolled back release 2026.11.3"},
        ),
    ]

    def drive() -> None:
        try:
            for number, step in enumerate(steps):
                questions[f"{number}:{step.task_id}"] = step.respond(timeout=120).request
        except BaseException as exc:
            errors.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    dag = fresh_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0
    run = dag.test(run_conf={"incident_id": incident_id})
    driver.join(timeout=30)
    assert not errors, errors
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {
        "start_response": "success",
        "acknowledge_1": "success",
        "acknowledge_2": "success",
        "acknowledge_3": "skipped",
        "acknowledge_4": "skipped",
        "acknowledge_5": "skipped",
        "report_status": "success",
        "confirm_recovery": "success",
        "write_post_mortem": "success",
    }

    # Who was asked: the first role's user, then (escalated) the next role's; the owner afterwards.
    assert questions["0:acknowledge_1"]["assigned_users"] == [{"id": "approver", "name": "approver"}]
    assert questions["0:acknowledge_1"]["subject"].startswith(f"Acknowledge P1 incident #{incident_id}: high_priority")
    assert questions["1:acknowledge_2"]["assigned_users"] == [{"id": "admin", "name": "admin"}]
    assert questions["4:confirm_recovery"]["assigned_users"][0] == {"id": "admin", "name": "admin"}
    assert "The triggering condition cleared at" in questions["4:confirm_recovery"]["body"]

    texts = [message["text"] for message in slack.messages()]
    assert any(f"Incident #{incident_id} opened: devops_lead (approver) to acknowledge within 3s" in t for t in texts)
    [escalation] = [t for t in texts if "escalated to" in t]
    assert f"Incident #{incident_id} escalated to system_architect (admin): not acknowledged in time" in escalation
    assert f"/dags/incident_response/runs/{quote(run.run_id)}/tasks/acknowledge_2/required_actions" in escalation
    assert any("status report by admin" in t and "orders rejected for 30% of users" in t for t in texts)
    assert any("post-mortem draft ready" in t and "/tasks/write_post_mortem" in t for t in texts)
    pages = [event for event in pagerduty.events() if event["event_action"] == "trigger"]
    assert [event["dedup_key"] for event in pages] == [f"trading-ops/incident/{incident_id}/escalation/1"]
    assert "system_architect (admin)" in pages[0]["payload"]["summary"]
    resolved = {event["dedup_key"] for event in pagerduty.events() if event["event_action"] == "resolve"}
    assert {KEY, f"trading-ops/incident/{incident_id}/escalation/1"} <= resolved

    incident, events = store.show_incident(policy, incident_id)
    assert incident["acknowledged_by"] == "admin" and incident["owner"] == "admin"
    assert incident["escalation_position"] == 1
    assert incident["resolved_by"] == "admin" and incident["resolution_note"] == "rolled back release 2026.11.3"
    assert incident["condition_resolved_at"] <= incident["resolved_at"]
    kinds = [event["kind"] for event in events if event["kind"] != "notified"]
    assert kinds == [
        "opened",
        "response_started",
        "acknowledge_timeout",
        "escalated",
        "acknowledged",
        "status_report",
        "condition_resolved",
        "status_report",
        "resolved",
        "post_mortem",
    ]
    post_mortem = incident["post_mortem"]
    assert post_mortem.startswith(f"# Post-mortem (draft): incident #{incident_id}: high_priority")
    assert "- **Escalations:** 1 (chain devops_lead → system_architect → cto)" in post_mortem
    assert "by admin: " in post_mortem and "(MISSED: 3s allowed" in post_mortem, "acknowledged after 3s"
    assert "## What resolved it\n\nrolled back release 2026.11.3" in post_mortem
    assert "| escalated |  | Escalated to system_architect (admin): devops_lead (approver) did not acknowledge" in (
        post_mortem
    )
    assert "Response: why was the first person of the chain not reachable in time?" in post_mortem
    print(post_mortem)
