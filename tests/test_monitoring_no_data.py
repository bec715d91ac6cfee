"""No data is a signal: the Prometheus fake answering data, then empty vectors, then errors, then data again, read by
the real collector and evaluated against the real ops state; a host's series vanishing; `no_data: ok/keep_state`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.support.monitoring import healthy_metrics, minutes
from trading_ops.monitoring import collect, state
from trading_ops.policy import load_policy

RUN_URL = "http://127.0.0.1:8080/dags/system_health/runs/manual"


@pytest.fixture
def prometheus(prometheus_fake, alert_fakes, fresh_db, make_policy, monkeypatch):
    """The `prometheus` connection on the fake; only the alert rules can fire (thresholds need an hour)."""
    prometheus_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    make_policy({"monitoring.threshold_for": "1h"})
    return prometheus_fake


def answer(prometheus, **values) -> None:
    queries = load_policy().monitoring.sources.prometheus_queries
    prometheus.values.clear()
    prometheus.values.update({queries[name]: value for name, value in values.items()})


def run(at_minute: int) -> dict:
    """One system_health evaluation: the application metrics read from the fake, the rest of a healthy platform."""
    policy = load_policy()
    sources = policy.monitoring.sources
    application = collect.collect_application_metrics(
        sources.prometheus_conn_id, sources.prometheus_queries, minutes(at_minute), timedelta(seconds=5)
    )
    metrics = {**{k: v for k, v in healthy_metrics(policy).items() if k not in sources.prometheus_queries}}
    metrics = collect.merge_metrics(metrics, application)
    missing = collect.missing_sources(policy, metrics, metrics, application, metrics)
    return state.check_system_health(policy, metrics, minutes(at_minute), RUN_URL, missing=missing)


def headings(slack) -> list[str]:
    return [message["text"].split("\n")[0] for message in slack.messages()]


def test_a_total_outage_alerts_no_data_then_prometheus_down_and_all_resolves_with_real_data(prometheus, alert_fakes):
    slack, pagerduty = alert_fakes
    healthy = {"api_latency_p95_ms": 120, "api_latency_p99_ms": 300, "request_rate_per_second": 900}

    answer(prometheus, error_rate_percent=5.0, **healthy)
    run(0)
    assert run(5)["fired"] == ["high_priority"], "the paging rule fires on real data"

    answer(prometheus)  # every query answers an empty vector
    assert run(10)["no_data_fired"] == []
    result = run(15)
    assert result["no_data_fired"] == ["high_priority"], "no data for the rule's `for`: the page says so"
    assert {"error_rate_percent", "request_rate_per_second"} <= set(result["unmeasured"])

    prometheus.error = (503, "unavailable", "TSDB not ready")
    with pytest.raises(AirflowFailException, match=r"^Prometheus \(prometheus\) is unavailable: .* TSDB not ready\.$"):
        run(20)

    prometheus.error = None
    answer(prometheus, error_rate_percent=0.05, **healthy)
    result = run(25)
    assert sorted(result["resolved"]) == ["high_priority", "prometheus_down"]
    assert run(30)["resolved"] == [] and run(30)["fired"] == [], "resolved once"

    assert headings(slack) == [
        ":rotating_light: *P1 critical* (complete service outage) · high_priority: error_rate_percent > 1 for 5m",
        ":rotating_light: *P1 critical* (complete service outage) · high_priority: no data for error_rate_percent "
        "for 5m",
        ":rotating_light: *P1 critical* (complete service outage) · prometheus_down: prometheus_up < 1 for 0s",
        ":white_check_mark: *RESOLVED P1 critical* · high_priority: error_rate_percent > 1 for 5m",
        ":white_check_mark: *RESOLVED P1 critical* · prometheus_down: prometheus_up < 1 for 0s",
    ]
    assert "*no data since:* " + minutes(10).isoformat() in slack.messages()[1]["text"]
    assert [(event["event_action"], event["dedup_key"].rsplit("/", 1)[1]) for event in pagerduty.events()] == [
        ("trigger", "high_priority"),
        ("trigger", "high_priority"),
        ("trigger", "prometheus_down"),
        ("resolve", "high_priority"),
        ("resolve", "prometheus_down"),
    ]
    assert pagerduty.incidents == {
        "trading-ops/system_health/high_priority": "resolved",
        "trading-ops/system_health/prometheus_down": "resolved",
    }


def test_no_traffic_at_all_pages_after_5_minutes_of_empty_vectors(prometheus, alert_fakes):
    """The issue's outage from the start: nothing ever answered, so nothing was firing to begin with."""
    slack, pagerduty = alert_fakes
    answer(prometheus)
    assert run(0)["no_data_fired"] == []
    assert run(5)["no_data_fired"] == ["high_priority"]
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "triggered"}
    assert run(10)["no_data_fired"] == ["medium_priority"], "p95 latency's 10 minutes"
    assert run(15)["no_data_fired"] == [], "each once"


def evaluate(at: int, **changes) -> dict:
    policy = load_policy()
    return state.check_system_health(policy, {**healthy_metrics(policy), **changes}, minutes(at), RUN_URL)


def test_no_data_ok_resolves_a_firing_rule_and_keep_state_keeps_it_for_keep_state_for(
    alert_fakes, fresh_db, make_policy
):
    slack, _ = alert_fakes
    make_policy(
        {
            "monitoring.threshold_for": "1h",
            "monitoring.keep_state_for": "20m",
            "alert_rules.0.no_data": "ok",  # high_priority
            "alert_rules.1.no_data": "keep_state",  # medium_priority
        }
    )
    evaluate(0, error_rate_percent=5.0, api_latency_p95_ms=900)
    assert evaluate(10, error_rate_percent=5.0, api_latency_p95_ms=900)["fired"] == [
        "high_priority",
        "medium_priority",
    ]
    result = evaluate(15, error_rate_percent=None, api_latency_p95_ms=None)
    assert result["resolved"] == ["high_priority"] and result["no_data_fired"] == []
    assert evaluate(30, error_rate_percent=None, api_latency_p95_ms=None)["no_data_fired"] == [], "kept 15 < 20m"
    assert evaluate(35, error_rate_percent=None, api_latency_p95_ms=None)["no_data_fired"] == ["medium_priority"]
    assert headings(slack)[-1] == (
        ":warning: *P2 major* (major feature failure) · medium_priority: no data for api_latency_p95_ms for 10m"
    )


def test_each_host_is_a_series_of_its_own_and_a_host_that_vanishes_alerts(alert_fakes, fresh_db, ops_conn):
    slack, _ = alert_fakes  # the test policy: threshold_for 5m
    db, api = 'instance="db-1:9100",job="node"', 'instance="api-1:9100",job="node"'
    evaluate(0, cpu_usage_percent={db: 91.0, api: 20.0})
    result = evaluate(5, cpu_usage_percent={db: 92.0, api: 20.0})
    assert sorted(result["fired"]) == [f"cpu_usage_percent_critical{{{db}}}", f"cpu_usage_percent_warning{{{db}}}"]
    assert [(message["channel"], message["text"].split("\n")[1]) for message in slack.messages()] == [
        ("#alerts-warning", f"*Source:* system_health/cpu_usage_percent_warning{{{db}}}"),
        ("#alerts-critical", f"*Source:* system_health/cpu_usage_percent_critical{{{db}}}"),
    ]

    # db-1 stops reporting (node-exporter or the host is down): its series is gone, api-1's stays.
    assert evaluate(10, cpu_usage_percent={api: 20.0})["no_data_fired"] == []
    result = evaluate(15, cpu_usage_percent={api: 20.0})
    assert sorted(result["no_data_fired"]) == [
        f"cpu_usage_percent_critical{{{db}}}",
        f"cpu_usage_percent_warning{{{db}}}",
    ]
    assert headings(slack)[-1] == (
        ":rotating_light: *P1 critical* (complete service outage) · "
        f"cpu_usage_percent_critical{{{db}}}: no data for cpu_usage_percent for 5m"
    )
    # It is back and idle: everything about it resolves once.
    result = evaluate(20, cpu_usage_percent={db: 10.0, api: 20.0})
    assert sorted(result["resolved"]) == [f"cpu_usage_percent_critical{{{db}}}", f"cpu_usage_percent_warning{{{db}}}"]
    rows = dict(ops_conn.execute("SELECT rule, state FROM ops.alert_rule_state WHERE rule LIKE 'cpu%{%'"))
    assert rows == {
        f"cpu_usage_percent_{level}{{{host}}}": "ok" for level in ("warning", "critical") for host in (db, api)
    }
