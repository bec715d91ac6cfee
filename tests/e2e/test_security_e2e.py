"""The security checks under the real scheduler and executor: what they found, what the fakes were asked, and the
penetration test's probe of the running Airflow API."""

from __future__ import annotations

import pytest

from trading_ops.security.pentest import probe_airflow_api

pytestmark = pytest.mark.e2e


def latest_successful_run(airflow, dag_id: str) -> str:
    """The run E2E_RUNS made, or a new one when this test runs alone."""
    runs = airflow.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1&state=success")
    if runs["dag_runs"]:
        return runs["dag_runs"][0]["dag_run_id"]
    run_id = airflow.trigger(dag_id, {})
    assert airflow.wait_for_run(dag_id, run_id, timeout=600)["state"] == "success"
    return run_id


def current(check: dict) -> dict[str, dict]:
    """Active findings by subject: unpausing a cron DAG also starts its latest scheduled run, so the run read here
    may be the second one, where the first one's findings persist."""
    return {item["subject"]: item for item in check["new"] + check["persisting"]}


def summary_of(airflow, dag_id: str) -> dict:
    run_id = latest_successful_run(airflow, dag_id)
    entry = airflow.request(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/summarize_findings/xcomEntries/return_value"
    )
    return entry["value"]


def alerts_of(slack_fake, dag_id: str) -> dict[str, list[str]]:
    """Channel -> texts of the Slack alerts raised by the checks of `dag_id`."""
    channels: dict[str, list[str]] = {}
    for message in slack_fake.messages():
        if f"*Source:* {dag_id}." in message["text"]:
            channels.setdefault(message["channel"], []).append(message["text"])
    return channels


def pagerduty_triggers(pagerduty_fake) -> dict[str, dict]:
    return {event["dedup_key"]: event for event in pagerduty_fake.events() if event["event_action"] == "trigger"}


def test_weekly_checks_asked_the_fakes_and_found_the_advisory(airflow_standalone, package_index, kubernetes_api):
    checks = summary_of(airflow_standalone, "security_checks_weekly")["checks"]
    dependency = current(checks["dependency_updates"])
    assert dependency["jinja2"]["severity"] == "warning"
    assert "advisories GHSA-e2e0-0000-0001" in dependency["jinja2"]["message"]
    assert "/pypi/apache-airflow/json" in package_index.paths("GET")
    assert "/apis/networking.k8s.io/v1/namespaces/trading/networkpolicies" in kubernetes_api.paths("GET")
    # The test cluster runs without TLS: the STARTTLS probe says so.
    assert [item["severity"] for item in current(checks["ssl_cert_check"]).values()] == ["critical"]
    assert checks["firewall_rule_review"]["counts"] == {"critical": 0, "warning": 0, "info": 0}


def test_daily_and_monthly_checks_ran_on_the_worker(airflow_standalone, kubernetes_api):
    daily = summary_of(airflow_standalone, "security_checks_daily")["checks"]
    vulnerable = {
        item["subject"] for item in daily["vulnerability_scan"]["new"] + daily["vulnerability_scan"]["persisting"]
    }
    assert "jinja2 GHSA-e2e0-0000-0001" in vulnerable
    monthly = summary_of(airflow_standalone, "security_checks_monthly")["checks"]
    assert set(monthly) == {"penetration_test", "security_policy_review", "access_right_audit"}
    assert "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" in kubernetes_api.paths("GET")


def test_the_running_airflow_api_refuses_requests_without_credentials(airflow_standalone):
    assert probe_airflow_api(airflow_standalone.url, timeout=10, verify=True) == []


def test_findings_reached_slack_and_pagerduty_with_a_link_to_their_task(airflow_standalone, slack_fake, pagerduty_fake):
    for dag_id in ("security_checks_daily", "security_checks_weekly", "security_checks_monthly"):
        summary_of(airflow_standalone, dag_id)
    weekly = alerts_of(slack_fake, "security_checks_weekly")
    advisory = next(text for text in weekly["#alerts-warning"] if "dependency_updates: 1 warning finding(s)" in text)
    assert "*new:* jinja2\n" in advisory or "*persisting:* jinja2\n" in advisory
    assert "/dags/security_checks_weekly/runs/" in advisory and "/tasks/check_dependency_updates>" in advisory
    print("\nSample security alert in #alerts-warning:\n" + advisory)

    # The test cluster has no TLS and runs with ssl = off: P1s to #alerts-critical and PagerDuty, one incident per
    # check, each linking to the task that found it.
    monthly = alerts_of(slack_fake, "security_checks_monthly")
    assert {text.split("\n")[0].split(" · ")[1].split(":")[0] for text in monthly["#alerts-critical"]} == {
        "penetration_test",
        "security_policy_review",
    }
    assert "#alerts-warning" not in monthly and "#alerts-info" not in monthly
    triggers = pagerduty_triggers(pagerduty_fake)
    for key, dag_id, task_id in (
        ("security:vulnerability_scan:critical", "security_checks_daily", "scan_vulnerabilities"),
        ("security:ssl_cert_check:critical", "security_checks_weekly", "check_ssl_certs"),
        ("security:penetration_test:critical", "security_checks_monthly", "probe_attack_surface"),
        ("security:security_policy_review:critical", "security_checks_monthly", "review_security_policy"),
    ):
        assert pagerduty_fake.incidents[key] == "triggered"
        link = triggers[key]["links"][0]["href"]
        assert link.startswith(f"http://127.0.0.1:8080/dags/{dag_id}/runs/") and link.endswith(f"/tasks/{task_id}")
