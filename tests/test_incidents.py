"""Incidents in the real ops state database, opened by the real alerting path (rules evaluated by system_health's
own code, alerts to the Slack and PagerDuty fakes): opening and joining, P3 resolved with its alert, the policy's
role mapping, a missed resolution deadline alerted one level up, and the CLI. Times are bound, never the clock.

The human steps (acknowledge, escalation, status reports, recovery, post-mortem) are in
test_incident_response_dag.py (dag.test()) and tests/e2e/test_incident_e2e.py (the real scheduler).
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml

from tests.support.monitoring import healthy_metrics, minutes
from trading_ops.alerting import Alert, resolve_alert, send_alert
from trading_ops.incidents import open_incidents, store, tracker
from trading_ops.monitoring.state import check_system_health
from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy

HIGH_PRIORITY_KEY = "trading-ops/system_health/high_priority"


def _incident(policy, dedup_key: str) -> dict:
    [incident] = [row for row in store.list_incidents(policy, limit=1000) if row["dedup_key"] == dedup_key]
    return incident


def _kinds(policy, incident_id: int) -> list[str]:
    return [event["kind"] for event in store.show_incident(policy, incident_id)[1]]


def _evaluate(policy, error_rate: float, at) -> dict:
    metrics = healthy_metrics(policy)
    metrics["error_rate_percent"] = error_rate
    return check_system_health(policy, metrics, at)


def test_a_p1_rule_firing_opens_one_incident_and_its_repeats_join_it(pg_cluster, alert_fakes):
    slack, pagerduty = alert_fakes
    policy = load_policy()
    _evaluate(policy, 0.05, minutes(0))
    _evaluate(policy, 5.0, minutes(1))
    assert store.list_incidents(policy) == [], "pending is no incident yet"
    fired = _evaluate(policy, 5.0, minutes(6))
    assert "high_priority" in fired["fired"]

    incident = _incident(policy, HIGH_PRIORITY_KEY)
    assert (incident["level"], incident["opened_level"], incident["alert_count"]) == ("P1", "P1", 1)
    assert incident["opened_at"] == minutes(6)
    assert incident["response_due_at"] == minutes(6) + timedelta(minutes=15)
    assert incident["resolution_due_at"] == minutes(6) + timedelta(hours=2)
    assert incident["escalation_position"] == 0 and incident["acknowledged_at"] is None
    assert any(event["dedup_key"] == HIGH_PRIORITY_KEY for event in pagerduty.events()), "the alert itself paged"

    # Still firing: the rule sends nothing, nothing changes. The same alert sent again (a retry) joins.
    _evaluate(policy, 5.0, minutes(7))
    assert _incident(policy, HIGH_PRIORITY_KEY)["alert_count"] == 1
    send_alert(
        Alert(
            severity="critical",
            source="system_health/high_priority",
            summary="again",
            dedup_key=HIGH_PRIORITY_KEY,
            raised_at=minutes(8),
        )
    )
    # Cleared, then firing again before anyone confirmed the recovery: the same incident, the condition back.
    _evaluate(policy, 0.05, minutes(9))
    assert _incident(policy, HIGH_PRIORITY_KEY)["condition_resolved_at"] == minutes(9)
    _evaluate(policy, 5.0, minutes(10))
    _evaluate(policy, 5.0, minutes(16))
    incident = _incident(policy, HIGH_PRIORITY_KEY)
    assert incident["alert_count"] == 3 and incident["condition_resolved_at"] is None
    assert incident["resolved_at"] is None, "a P1 closes only when a person confirms the recovery"
    assert _kinds(policy, incident["incident_id"]) == [
        "opened",
        "alert_repeated",
        "condition_resolved",
        "condition_returned",
    ]
    # The threshold on the same metric is an incident of its own (its own dedup key), at its own level.
    warning = _incident(policy, "trading-ops/system_health/error_rate_percent_warning")
    assert warning["level"] == "P2"
    assert {row["incident_id"] for row in open_incidents(policy)} >= {incident["incident_id"], warning["incident_id"]}
    json.dumps(open_incidents(policy))  # plain values for the Ops page


def test_a_p3_incident_is_recorded_and_resolved_with_its_alert_and_a_notice_is_no_incident(pg_cluster, alert_fakes):
    policy = load_policy()
    alert = Alert(
        severity="P3",
        source="log_rotation.rotate",
        summary="log_rotation: task rotate failed",
        dedup_key="trading-ops/log_rotation/rotate",
        raised_at=minutes(0),
    )
    send_alert(alert)
    incident = _incident(policy, alert.key)
    assert incident["level"] == "P3" and incident["resolved_at"] is None
    resolve_alert(Alert(**{**alert.__dict__, "raised_at": minutes(3)}))
    incident = _incident(policy, alert.key)
    assert incident["resolved_at"] == minutes(3) and incident["resolved_by"] == "auto: its alert resolved"
    assert _kinds(policy, incident["incident_id"]) == ["opened", "resolved"]
    assert tracker.check(policy, minutes(60 * 24))["start"] == [], "P3 has no incident_response run"

    send_alert(
        Alert(
            severity="info",
            source="db_restore.validate",
            summary="db_restore: stopped: bad form",
            dedup_key="trading-ops/db_restore/validate/user-error",
            raised_at=minutes(4),
            incident=False,
        )
    )
    assert [row["dedup_key"] for row in store.list_incidents(policy)] == [alert.key]


def test_a_p2_past_its_resolution_time_pages_as_p1_once(pg_cluster, alert_fakes):
    slack, pagerduty = alert_fakes
    policy = load_policy()
    alert = Alert(
        severity="P2",
        source="db_backup_full.take_backup",
        summary="db_backup_full: task take_backup failed",
        dedup_key="trading-ops/db_backup_full/take_backup",
        raised_at=minutes(0),
    )
    send_alert(alert)
    assert pagerduty.events() == [], "P2 does not page"
    incident = _incident(policy, alert.key)
    outcome = tracker.check(policy, minutes(60))
    assert outcome == {
        "overdue_alerted": [],
        "start": [
            {"trigger_run_id": f"incident_{incident['incident_id']}", "conf": {"incident_id": incident["incident_id"]}}
        ],
    }

    late = minutes(4 * 60 + 1)
    assert tracker.check(policy, late)["overdue_alerted"] == [incident["incident_id"]]
    [page] = pagerduty.events()
    assert page["event_action"] == "trigger" and page["payload"]["severity"] == "critical"
    assert page["dedup_key"] == f"trading-ops/incident/{incident['incident_id']}/resolution-overdue"
    assert page["payload"]["summary"].startswith(f"[P1] Incident #{incident['incident_id']} (P2) missed its 4h")
    assert page["payload"]["custom_details"]["late by"] == "1m"
    assert any(f"Incident #{incident['incident_id']} (P2) missed" in m["text"] for m in slack.messages())
    raised = _incident(policy, alert.key)
    assert (raised["level"], raised["opened_level"]) == ("P1", "P2")
    assert _kinds(policy, incident["incident_id"])[-2:] == ["notified", "resolution_overdue"]
    assert tracker.check(policy, late + timedelta(minutes=5))["overdue_alerted"] == [], "once"
    assert len(pagerduty.events()) == 1


def test_an_unmapped_escalation_role_is_a_policy_error():
    shipped = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    del shipped["incidents"]["roles"]["system_architect"]
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(shipped, "ops_policy.yaml")
    assert str(excinfo.value) == (
        "Policy ops_policy.yaml is invalid: incident_levels.P1.escalation names 'system_architect', which "
        "incidents.roles does not map to an Airflow user."
    )
    shipped = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    shipped["incidents"]["roles"]["devops_lad"] = ["x"]
    with pytest.raises(PolicyError, match="incidents.roles maps devops_lad, which no escalation chain names"):
        parse_policy(shipped, "ops_policy.yaml")
    shipped = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    shipped["incidents"]["roles"]["cto"] = []
    with pytest.raises(PolicyError, match=r"incidents\.roles\.cto"):
        parse_policy(shipped, "ops_policy.yaml")


def test_the_cli_lists_and_shows_incidents(pg_cluster, alert_fakes, capsys):
    from trading_ops.__main__ import main

    send_alert(
        Alert(
            severity="P1",
            source="db_restore.verify_restore",
            summary="db_restore: verification failed",
            dedup_key="trading-ops/db_restore/verify_restore",
            raised_at=minutes(0),
        )
    )
    incident = _incident(load_policy(), "trading-ops/db_restore/verify_restore")
    assert main(["incidents", "list", "--open"]) == 0
    out = capsys.readouterr().out
    assert f"{incident['incident_id']:>5} P1  OPEN     2026-11-20 03:00" in out and "verification failed" in out
    assert main(["incidents", "show", str(incident["incident_id"])]) == 0
    out = capsys.readouterr().out
    assert "response_due_at                2026-11-20T03:15:00+00:00" in out
    assert "opened               P1 alert: db_restore: verification failed" in out
    assert main(["incidents", "show", "999999"]) == 1
    assert "Incident 999999 does not exist" in capsys.readouterr().err


def test_each_escalation_step_asks_the_next_role_and_the_last_asks_the_whole_chain_without_limit():
    from trading_ops.incidents.response import step

    policy = load_policy()  # the local roles: devops_engineer -> approver, team_lead -> admin
    p2 = {"opened_level": "P2"}
    first, second, everyone = (step(policy, p2, position) for position in range(3))
    assert (first.who, first.timeout) == ("devops_engineer (approver)", timedelta(minutes=30))
    assert (second.who, second.timeout) == ("team_lead (admin)", timedelta(minutes=30))
    assert (everyone.who, everyone.timeout) == ("devops_engineer (approver), team_lead (admin)", None)
    assert everyone.users == ["approver", "admin"]
    assert step(policy, p2, 3) is None, "past the chain: acknowledge_4 and acknowledge_5 are skipped"
    assert [step(policy, {"opened_level": "P1"}, n).roles for n in range(3)] == [
        ["devops_lead"],
        ["system_architect"],
        ["cto"],
    ]
