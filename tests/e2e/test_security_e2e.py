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
