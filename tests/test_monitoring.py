"""Metrics from the real host, the real test PostgreSQL and a Prometheus query API; alert rules with `for`.

Rule timing is driven with explicit evaluation times, as system_health passes each run's time: a rule fires only
once its condition has held for its `for`, fires once, and resolves when the condition clears.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psutil
import psycopg
import pytest

from trading_ops import monitoring
from trading_ops.policy import load_policy

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
RUN_URL = "http://127.0.0.1:8080/dags/system_health/runs/scheduled__2026-11-20T03%3A05%3A00%2B00%3A00"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


# --- collection ---------------------------------------------------------------------------------------------------


def test_host_metrics_come_from_this_host(tmp_path):
    missing = tmp_path / "not-created-yet" / "backups"
    metrics = monitoring.collect_host_metrics({"data": str(tmp_path), "backup": str(missing)})

    assert set(metrics) == {
        "cpu_usage_percent",
        "memory_usage_percent",
        "disk_usage_percent.data",
        "disk_usage_percent.backup",
    }
    assert 0 <= metrics["cpu_usage_percent"] <= 100
    assert metrics["memory_usage_percent"] == pytest.approx(psutil.virtual_memory().percent, abs=5)
    assert metrics["disk_usage_percent.data"] == pytest.approx(psutil.disk_usage(str(tmp_path)).percent, abs=1)
    # A folder that does not exist yet is measured on the volume that will hold it.
    assert metrics["disk_usage_percent.backup"] == pytest.approx(metrics["disk_usage_percent.data"], abs=1)


def test_postgres_metrics_come_from_the_real_server(pg_cluster, fresh_db):
    baseline = monitoring.collect_postgres_metrics("trading_db")
    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as busy:
        busy.execute("SELECT count(*) FROM market_data")  # opens a transaction that stays open
        time.sleep(1.2)
        during = monitoring.collect_postgres_metrics("trading_db")
    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as conn:
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        failed_count = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]

    assert during["pg_connections"] == baseline["pg_connections"] + 1
    assert during["pg_max_connections"] == max_connections
    assert during["pg_connection_usage_percent"] == pytest.approx(100 * during["pg_connections"] / max_connections)
    assert during["pg_longest_transaction_seconds"] >= 1.2 > baseline["pg_longest_transaction_seconds"]
    assert during["pg_database_size_bytes"] == size
    assert during["pg_wal_archive_failed_count"] == failed_count
    assert during["pg_wal_archive_failing"] == 0, "the harness archives WAL successfully"
    # The test cluster is a primary without standbys: there is no replication lag to measure.
    assert (during["pg_replicas"], during["pg_replication_lag_seconds"]) == (0, None)


def test_application_metrics_are_queried_at_the_runs_time(prometheus_fake):
    prometheus_fake.reset()
    policy = load_policy()
    queries = policy.monitoring.sources.prometheus_queries
    prometheus_fake.values.update(
        {
            queries["api_latency_p95_ms"]: 420.0,
            queries["error_rate_percent"]: 2.5,
            queries["request_rate_per_second"]: 850,
        }
    )

    metrics = monitoring.collect_application_metrics(prometheus_fake.url, queries, minutes(5), timedelta(seconds=5))

    assert metrics == {
        "api_latency_p95_ms": 420.0,
        "api_latency_p99_ms": None,  # no data: the rule keeps its state
        "error_rate_percent": 2.5,
        "request_rate_per_second": 850.0,
    }
    assert [(r.method, r.path) for r in prometheus_fake.requests] == [("GET", "/api/v1/query")] * 4
    assert [r.query["query"][0] for r in prometheus_fake.requests] == list(queries.values())
    assert prometheus_fake.queried_times() == [minutes(5).timestamp()] * 4


def test_a_prometheus_error_names_the_query(prometheus_fake):
    prometheus_fake.reset()
    with pytest.raises(monitoring.MonitoringError, match=r"refused the error_rate_percent query: bad_data"):
        monitoring.collect_application_metrics(
            prometheus_fake.url, {"error_rate_percent": ""}, T0, timedelta(seconds=5)
        )


# --- rules --------------------------------------------------------------------------------------------------------


@pytest.fixture
def rules_only(make_policy, alert_fakes, fresh_db):
    """The manual's alert rules alone: thresholds need an hour, longer than any timeline below."""
    make_policy({"monitoring.threshold_for": "1h"})
    return alert_fakes


def evaluate(at: datetime, **metrics) -> dict:
    return monitoring.check_system_health(load_policy(), metrics, at, RUN_URL)


def fired_text(icon_level: str, summary: str, rule: str, value: str, since: datetime, at: datetime, times: str):
    return (
        f"{icon_level} · {summary}\n"
        f"*Source:* system_health/{rule}\n"
        f"{times}\n"
        f"*value:* {value}\n"
        f"*holding since:* {since.isoformat()}\n"
        f"*evaluated at:* {at.isoformat()}\n"
        f"*Airflow run:* <{RUN_URL}>\n"
        f"_dedup key: trading-ops/system_health/{rule}_"
    )


P1_TIMES = (
    "*Respond within* 15m, *resolve within* 2h · *escalation:* devops_lead → system_architect → cto · "
    "*procedure:* convene emergency team"
)


def test_error_rate_rule_fires_after_5_minutes_once_and_resolves(rules_only, pg_conn):
    slack, pagerduty = rules_only

    assert evaluate(minutes(0), error_rate_percent=2.5)["fired"] == []
    assert evaluate(minutes(3), error_rate_percent=3.0)["fired"] == []
    assert slack.requests == [] and pagerduty.requests == [], "not before the rule held for 5m"

    result = evaluate(minutes(5), error_rate_percent=2.0)
    assert result["fired"] == ["high_priority"]
    assert slack.messages() == [
        {
            "channel": "#alerts-critical",
            "text": fired_text(
                ":rotating_light: *P1 critical* (complete service outage)",
                "high_priority: error_rate_percent > 1 for 5m",
                "high_priority",
                "2",
                minutes(0),
                minutes(5),
                P1_TIMES,
            ),
        }
    ]
    [trigger] = pagerduty.events()
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "trading-ops/system_health/high_priority"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["summary"] == "[P1] high_priority: error_rate_percent > 1 for 5m"
    assert trigger["payload"]["group"] == "trading-team"
    assert trigger["payload"]["custom_details"]["value"] == "2"

    # Still holding, and a rerun of the same run: no second notification.
    assert evaluate(minutes(5), error_rate_percent=2.0)["fired"] == []
    assert evaluate(minutes(10), error_rate_percent=4.0)["fired"] == []
    assert len(slack.requests) == 1 and len(pagerduty.requests) == 1
    assert pg_conn.execute(
        "SELECT state, active_since, fired_at, last_value FROM ops.alert_rule_state WHERE rule = 'high_priority'"
    ).fetchone() == ("firing", minutes(0), minutes(5), 4.0)

    result = evaluate(minutes(15), error_rate_percent=0.4)
    assert result["resolved"] == ["high_priority"]
    assert slack.messages()[1] == {
        "channel": "#alerts-critical",
        "text": (
            ":white_check_mark: *RESOLVED P1 critical* · high_priority: error_rate_percent > 1 for 5m\n"
            "*Source:* system_health/high_priority\n"
            f"*Airflow run:* <{RUN_URL}>\n"
            "_dedup key: trading-ops/system_health/high_priority_"
        ),
    }
    resolve = pagerduty.events()[1]
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", "trading-ops/system_health/high_priority")
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "resolved"}

    # Holding again starts a new 5 minutes.
    assert evaluate(minutes(20), error_rate_percent=2.0)["fired"] == []
    assert evaluate(minutes(24), error_rate_percent=2.0)["fired"] == []
    assert evaluate(minutes(25), error_rate_percent=2.0)["fired"] == ["high_priority"]
    assert [event["event_action"] for event in pagerduty.events()] == ["trigger", "resolve", "trigger"]


def test_a_condition_that_clears_before_its_duration_never_alerts(rules_only, pg_conn):
    slack, pagerduty = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    assert evaluate(minutes(4), error_rate_percent=0.2)["resolved"] == [], "pending, never firing: nothing to resolve"
    evaluate(minutes(5), error_rate_percent=2.5)
    assert evaluate(minutes(9), error_rate_percent=2.5)["fired"] == [], "the 5 minutes restarted at 5"
    assert slack.requests == [] and pagerduty.requests == []
    assert pg_conn.execute(
        "SELECT state, active_since FROM ops.alert_rule_state WHERE rule = 'high_priority'"
    ).fetchone() == (
        "pending",
        minutes(5),
    )


def test_latency_rule_waits_10_minutes_and_goes_to_the_warning_channel_only(rules_only):
    slack, pagerduty = rules_only
    for at in (0, 5, 9):
        assert evaluate(minutes(at), api_latency_p95_ms=650)["fired"] == []
    assert evaluate(minutes(10), api_latency_p95_ms=700)["fired"] == ["medium_priority"]
    assert [message["channel"] for message in slack.messages()] == ["#alerts-warning"]
    assert slack.messages()[0]["text"].startswith(
        ":warning: *P2 major* (major feature failure) · medium_priority: api_latency_p95_ms > 500 for 10m\n"
    )
    assert pagerduty.requests == []


def test_cpu_rule_waits_15_minutes_and_goes_to_the_info_channel(rules_only):
    slack, pagerduty = rules_only
    for at in (0, 5, 10):
        assert evaluate(minutes(at), cpu_usage_percent=75)["fired"] == []
    assert evaluate(minutes(15), cpu_usage_percent=72)["fired"] == ["low_priority"]
    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"]
    assert "low_priority: cpu_usage_percent > 70 for 15m" in slack.messages()[0]["text"]
    assert pagerduty.requests == []


def test_a_metric_without_value_leaves_its_rule_as_it_was(rules_only):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    result = evaluate(minutes(5))  # Prometheus not answering: no application metrics at all
    assert "error_rate_percent" in result["unmeasured"] and result["fired"] == []
    assert evaluate(minutes(10), error_rate_percent=2.5)["fired"] == ["high_priority"], "pending since 0 all along"
    assert len(slack.requests) == 1


def test_an_older_evaluation_does_not_rewind_newer_state(rules_only, caplog):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=2.5)
    assert evaluate(minutes(2), error_rate_percent=0.0)["resolved"] == []
    assert "Rule high_priority was last evaluated at" in caplog.text
    assert len(slack.requests) == 1


def test_warning_and_critical_thresholds_fire_after_threshold_for_by_level(alert_fakes, fresh_db):
    slack, pagerduty = alert_fakes  # shipped threshold_for: 5m
    assert evaluate(minutes(0), **{"disk_usage_percent.data": 95.0})["breaching"] == [
        "disk_usage_percent.data_critical",
        "disk_usage_percent.data_warning",
    ]
    assert slack.requests == []

    result = evaluate(minutes(5), **{"disk_usage_percent.data": 93.0})
    assert sorted(result["fired"]) == ["disk_usage_percent.data_critical", "disk_usage_percent.data_warning"]
    assert sorted(message["channel"] for message in slack.messages()) == ["#alerts-critical", "#alerts-warning"]
    assert [event["dedup_key"] for event in pagerduty.events()] == [
        "trading-ops/system_health/disk_usage_percent.data_critical"
    ]

    result = evaluate(minutes(10), **{"disk_usage_percent.data": 85.0})
    assert result["resolved"] == ["disk_usage_percent.data_critical"] and result["fired"] == []
    assert slack.messages()[-1]["text"].startswith(
        ":white_check_mark: *RESOLVED P1 critical* · disk_usage_percent.data_critical: "
        "disk_usage_percent.data >= 90 for 5m\n"
    )
    assert pagerduty.events()[-1]["event_action"] == "resolve"
    assert result["breaching"] == ["disk_usage_percent.data_warning"]


def test_postgres_limits_and_request_rate_floor_are_rules_too():
    rules = {rule.name: rule for rule in monitoring.all_rules(load_policy())}
    assert rules["pg_connection_usage_percent_critical"].holds(91) and not rules[
        "pg_connection_usage_percent_critical"
    ].holds(89)
    assert rules["pg_wal_archive_failing"].holds(1) and rules["pg_wal_archive_failing"].severity == "critical"
    assert rules["request_rate_below_minimum"].holds(99) and not rules["request_rate_below_minimum"].holds(100)
    assert rules["request_rate_above_maximum"].holds(10001)
    assert rules["high_priority"].route is not None and rules["high_priority"].route.pagerduty_service == "trading-team"
