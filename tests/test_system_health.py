"""The system_health DAG: its schedule, and real runs (dag.test()) that measure and alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from trading_ops.monitoring.rules import all_rules
from trading_ops.policy import (
    DAG_RUN_OVERDUE_METRIC,
    DEFAULT_POLICY_PATH,
    DRILL_AGE_METRIC,
    FRESHNESS_METRICS,
    OFFHOST_LAG_METRIC,
    load_policy,
)

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
    system_health_dag, airflow_db, alert_fakes, prometheus_fake, heartbeat, fresh_db, ops_conn, make_policy, monkeypatch
):
    slack, pagerduty = alert_fakes
    prometheus_fake.reset()
    # Thresholds need an hour here, so only the manual's error-rate rule (5m) can fire in these two runs.
    make_policy({"monitoring.threshold_for": "1h"})
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    queries = load_policy().monitoring.sources.prometheus_queries
    prometheus_fake.values.update(
        {
            queries["error_rate_percent"]: 5.0,
            queries["request_rate_per_second"]: 900.0,
            queries["api_latency_p95_ms"]: 120.0,
            queries["api_latency_p99_ms"]: 300.0,
        }
    )

    first = system_health_dag.test(logical_date=FIRST_RUN)

    assert first.state == "success", _states(first)
    assert set(_states(first).values()) == {"success"}
    assert prometheus_fake.queried_times() == [FIRST_RUN.timestamp()] * len(queries)
    assert ops_conn.execute(
        "SELECT state, active_since, last_value FROM ops.alert_rule_state WHERE rule = 'high_priority'"
    ).fetchone() == (
        "pending",
        FIRST_RUN,
        5.0,
    )
    # No backup in the test policy's repository: freshness says so at once; the error-rate rule waits for its 5m.
    # The DAGs earlier tests ran with dag.test() (this session's Airflow database) are overdue at FIRST_RUN too.
    assert {source.split("/")[1].split("{")[0] for source in sources_of(slack.messages())} <= {
        "full_backup_stale",
        "wal_bundle_stale",
        "wal_segment_stale",
        "dag_run_stale",
    }
    assert pagerduty.requests == []
    freshness_messages = len(slack.messages())
    [ping] = heartbeat.pings()
    assert ping.method == "POST" and ping.json() == {"dag_id": "system_health", "run_id": first.run_id}

    second = system_health_dag.test(logical_date=FIRST_RUN + timedelta(minutes=5))

    assert second.state == "success", _states(second)
    run_link = f"http://127.0.0.1:8080/dags/system_health/runs/{quote(second.run_id)}"
    [message] = slack.messages()[freshness_messages:]
    assert message["channel"] == "#alerts-critical"
    text = message["text"]
    assert text.startswith(
        ":rotating_light: *P1 critical* (complete service outage) · high_priority: error_rate_percent > 1 for 5m\n"
    )
    assert f"*holding since:* {FIRST_RUN.isoformat()}\n" in text
    assert f"*Airflow run:* <{run_link}>" in text
    [event] = pagerduty.events()
    assert (event["event_action"], event["dedup_key"]) == ("trigger", "trading-ops/system_health/high_priority")
    assert len(heartbeat.pings()) == 2, "one ping per run, as its last task"


def sources_of(messages: list[dict]) -> list[str]:
    return [message["text"].split("\n")[1].removeprefix("*Source:* ") for message in messages]


def test_a_run_with_postgres_down_pages_and_fails_without_a_heartbeat(
    system_health_dag, airflow_db, alert_fakes, prometheus_fake, heartbeat, pg_cluster, monkeypatch
):
    from trading_ops.dev.localpg import free_port

    slack, pagerduty = alert_fakes
    prometheus_fake.reset()
    queries = load_policy().monitoring.sources.prometheus_queries
    prometheus_fake.values.update(dict(zip(queries.values(), (120.0, 300.0, 0.05, 900.0), strict=True)))
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")

    run = system_health_dag.test(logical_date=FIRST_RUN + timedelta(hours=1))

    assert run.state == "failed"
    assert _states(run) == {
        "collect_host_metrics": "success",
        "collect_postgres_metrics": "success",
        "collect_application_metrics": "success",
        "collect_freshness_metrics": "success",
        "evaluate_alert_rules": "failed",
        "ping_heartbeat": "upstream_failed",
    }
    assert heartbeat.pings() == [], "no ping: the heartbeat service pages once its grace period is over"
    sources = sources_of(slack.messages())
    # Rules on this host's CPU, memory and disks may hold too; these two are certain.
    assert sources[0] != "system_health.evaluate_alert_rules" and sources[-1] == "system_health.evaluate_alert_rules"
    assert "system_health/postgres_down" in sources
    failure = slack.messages()[-1]["text"]
    assert "PostgreSQL (trading_db) is unreachable: only pg_up was measured there." in failure
    assert pagerduty.incidents == {"trading-ops/system_health/postgres_down": "triggered"}


def test_collectors_read_the_real_sources_with_the_policy(fresh_db):
    """The values the DAG's collectors hand to the evaluation, read with the test policy's sources (psutil)."""
    from trading_ops.monitoring import collect, tasks
    from trading_ops.monitoring.state import checks

    policy = load_policy()
    measured = collect.merge_metrics(
        collect.collect_host_metrics(policy.monitoring.sources, FIRST_RUN), tasks.collect_postgres_metrics()
    )
    unmeasured = {check.rule.metric for check in checks(policy, all_rules(policy), measured) if not check.has_data}
    # The freshness collector's:
    unmeasured -= {*FRESHNESS_METRICS.values(), DRILL_AGE_METRIC, OFFHOST_LAG_METRIC, DAG_RUN_OVERDUE_METRIC}
    # Without Prometheus and without a standby, only the application metrics and replication lag are unknown.
    assert unmeasured == {
        "api_latency_p95_ms",
        "api_latency_p99_ms",
        "error_rate_percent",
        "request_rate_per_second",
        "prometheus_up",
        "pg_replication_lag_seconds",
    }


def test_the_runbook_lists_every_rule_of_the_shipped_policy(system_health_dag):
    """The table in the DAG's doc_md is generated from the policy; regenerate it with rule_table when this fails."""
    from trading_ops.monitoring.rules import rule_table

    table = rule_table(load_policy(DEFAULT_POLICY_PATH))
    assert table in system_health_dag.doc_md, f"Paste this table under ## Rules in dags/system_health.py:\n{table}"
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == len(all_rules(load_policy(DEFAULT_POLICY_PATH)))


def test_an_unreachable_heartbeat_is_reported_without_its_secret_url(monkeypatch):
    """The ping URL's path is the check's secret (hc-ping.com/<uuid>): the failure names the connection, not it."""
    import json
    import socket
    from datetime import timedelta

    from trading_ops.monitoring.heartbeat import ping

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "0b8e3c1a-secret-check-uuid"
    monkeypatch.setenv(
        "AIRFLOW_CONN_HEARTBEAT", json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{port}/{secret}"})
    )
    with pytest.raises(Exception) as failure:
        ping("heartbeat", "manual__probe", timedelta(seconds=2))
    assert "heartbeat" in str(failure.value)
    assert secret not in str(failure.value)
