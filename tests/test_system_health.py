"""The system_health DAG: its schedule follows the policy, and real runs (dag.test()) measure and alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

FIRST_RUN = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def system_health_dag(dagbag):
    return dagbag.dags["system_health"]


def test_schedule_is_every_5_minutes(system_health_dag):
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert system_health_dag.timetable._expression == "*/5 * * * *"
    assert str(system_health_dag.timetable._timezone.name) == policy.timezone
    assert system_health_dag.max_active_runs == 1 and system_health_dag.catchup is False


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_runs_measure_the_real_host_and_database_and_fire_a_rule_on_the_second_run(
    system_health_dag, airflow_db, alert_fakes, prometheus_fake, fresh_db, pg_conn, make_policy, monkeypatch
):
    slack, pagerduty = alert_fakes
    prometheus_fake.reset()
    # Thresholds need an hour here, so only the manual's error-rate rule (5m) can fire in these two runs.
    make_policy({"monitoring.sources.prometheus_conn_id": "prometheus", "monitoring.threshold_for": "1h"})
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    queries = load_policy().monitoring.sources.prometheus_queries
    prometheus_fake.values.update({queries["error_rate_percent"]: 5.0, queries["request_rate_per_second"]: 900.0})

    first = system_health_dag.test(logical_date=FIRST_RUN)

    assert first.state == "success", _states(first)
    assert set(_states(first).values()) == {"success"}
    assert prometheus_fake.queried_times() == [FIRST_RUN.timestamp()] * len(queries)
    assert pg_conn.execute(
        "SELECT state, active_since, last_value FROM ops.alert_rule_state WHERE rule = 'high_priority'"
    ).fetchone() == (
        "pending",
        FIRST_RUN,
        5.0,
    )
    assert slack.requests == [] and pagerduty.requests == []

    second = system_health_dag.test(logical_date=FIRST_RUN + timedelta(minutes=5))

    assert second.state == "success", _states(second)
    run_link = f"http://127.0.0.1:8080/dags/system_health/runs/{quote(second.run_id)}"
    assert [message["channel"] for message in slack.messages()] == ["#alerts-critical"]
    text = slack.messages()[0]["text"]
    assert text.startswith(
        ":rotating_light: *P1 critical* (complete service outage) · high_priority: error_rate_percent > 1 for 5m\n"
    )
    assert f"*holding since:* {FIRST_RUN.isoformat()}\n" in text
    assert f"*Airflow run:* <{run_link}>" in text
    [event] = pagerduty.events()
    assert (event["event_action"], event["dedup_key"]) == ("trigger", "trading-ops/system_health/high_priority")


def sources_of(messages: list[dict]) -> list[str]:
    return [message["text"].split("\n")[1].removeprefix("*Source:* ") for message in messages]


def test_a_run_with_postgres_down_pages_and_fails(system_health_dag, airflow_db, alert_fakes, pg_cluster, monkeypatch):
    from trading_ops.dev.localpg import free_port

    slack, pagerduty = alert_fakes
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")

    run = system_health_dag.test(logical_date=FIRST_RUN + timedelta(hours=1))

    assert run.state == "failed"
    assert _states(run) == {
        "collect_host_metrics": "success",
        "collect_postgres_metrics": "success",
        "collect_application_metrics": "skipped",
        "evaluate_alert_rules": "failed",
    }
    sources = sources_of(slack.messages())
    # Rules on this host's CPU, memory and disks may hold too; these two are certain.
    assert sources[0] != "system_health.evaluate_alert_rules" and sources[-1] == "system_health.evaluate_alert_rules"
    assert "system_health/postgres_down" in sources
    failure = slack.messages()[-1]["text"]
    assert "PostgreSQL (trading_db) is unreachable: only pg_up was measured there." in failure
    assert pagerduty.incidents == {"trading-ops/system_health/postgres_down": "triggered"}


def test_collectors_read_the_real_sources_with_the_policy(fresh_db):
    """The values the DAG's collectors hand to the evaluation, read with the test policy's sources."""
    from trading_ops.monitoring import tasks
    from trading_ops.monitoring.rules import all_rules

    measured = {**tasks.collect_host_metrics(), **tasks.collect_postgres_metrics()}
    rules = all_rules(load_policy())
    unmeasured = {rule.metric for rule in rules if not isinstance(measured.get(rule.metric), int | float)}
    # Without Prometheus and without a standby, only the application metrics and replication lag are unknown.
    assert unmeasured == {
        "api_latency_p95_ms",
        "api_latency_p99_ms",
        "error_rate_percent",
        "request_rate_per_second",
        "pg_replication_lag_seconds",
    }
