"""Alert rules with `for`, their state between runs, and what a run sends (`trading_ops.monitoring.rules` and
`.state`), against the real test PostgreSQL and the Slack and PagerDuty fakes.

Rule timing is driven with explicit evaluation times, as system_health passes each run's time: a rule fires only
once its condition has held for its `for`, fires once, and resolves when the condition clears.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.monitoring import healthy_metrics, minutes
from trading_ops.monitoring import collect, state
from trading_ops.monitoring.rules import all_rules
from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy

RUN_URL = "http://127.0.0.1:8080/dags/system_health/runs/scheduled__2026-11-20T03%3A05%3A00%2B00%3A00"


# --- rules --------------------------------------------------------------------------------------------------------


@pytest.fixture
def rules_only(make_policy, alert_fakes, fresh_db):
    """The manual's alert rules alone: thresholds need an hour, longer than any timeline below."""
    make_policy({"monitoring.threshold_for": "1h"})
    return alert_fakes


def evaluate(at: datetime, **changes) -> dict:
    """One system_health evaluation at `at` of a healthy platform but for `changes` (None: no data)."""
    policy = load_policy()
    return state.check_system_health(policy, {**healthy_metrics(policy), **changes}, at, RUN_URL)


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


def test_error_rate_rule_fires_after_5_minutes_once_and_resolves(rules_only, ops_conn):
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
    assert ops_conn.execute(
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


def test_a_condition_that_clears_before_its_duration_never_alerts(rules_only, ops_conn):
    slack, pagerduty = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    assert evaluate(minutes(4), error_rate_percent=0.2)["resolved"] == [], "pending, never firing: nothing to resolve"
    evaluate(minutes(5), error_rate_percent=2.5)
    assert evaluate(minutes(9), error_rate_percent=2.5)["fired"] == [], "the 5 minutes restarted at 5"
    assert slack.requests == [] and pagerduty.requests == []
    assert ops_conn.execute(
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


def test_a_gap_in_the_data_shorter_than_for_keeps_the_rule_pending(rules_only):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    result = evaluate(minutes(5), error_rate_percent=None)  # one run whose query answered an empty vector
    assert "error_rate_percent" in result["unmeasured"] and result["fired"] == result["no_data_fired"] == []
    assert evaluate(minutes(10), error_rate_percent=2.5)["fired"] == ["high_priority"], "pending since 0 all along"
    assert len(slack.requests) == 1


def test_an_older_evaluation_does_not_rewind_newer_state(rules_only, caplog):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=2.5)
    assert evaluate(minutes(2), error_rate_percent=0.0)["resolved"] == []
    assert "Rule high_priority was last evaluated at" in caplog.text
    assert len(slack.requests) == 1


def test_critical_and_warning_thresholds_go_to_slack_by_level_and_do_not_page(alert_fakes, fresh_db):
    slack, pagerduty = alert_fakes  # shipped threshold_for: 5m
    assert evaluate(minutes(0), **{"disk_usage_percent.data": 95.0})["breaching"] == [
        "disk_usage_percent.data_critical",
        "disk_usage_percent.data_warning",
    ]
    assert slack.requests == []

    result = evaluate(minutes(5), **{"disk_usage_percent.data": 93.0})
    assert sorted(result["fired"]) == ["disk_usage_percent.data_critical", "disk_usage_percent.data_warning"]
    assert sorted(message["channel"] for message in slack.messages()) == ["#alerts-critical", "#alerts-warning"]
    assert pagerduty.requests == [], "only alert rules page unless monitoring.threshold_pagerduty_service is set"

    result = evaluate(minutes(10), **{"disk_usage_percent.data": 85.0})
    assert result["resolved"] == ["disk_usage_percent.data_critical"] and result["fired"] == []
    assert slack.messages()[-1]["text"].startswith(
        ":white_check_mark: *RESOLVED P1 critical* · disk_usage_percent.data_critical: "
        "disk_usage_percent.data >= 90 for 5m\n"
    )
    assert result["breaching"] == ["disk_usage_percent.data_warning"]


def test_critical_thresholds_page_when_the_policy_names_a_service(alert_fakes, fresh_db, make_policy):
    slack, pagerduty = alert_fakes
    make_policy({"monitoring.threshold_pagerduty_service": "trading-team"})
    evaluate(minutes(0), memory_usage_percent=95.0)
    evaluate(minutes(5), memory_usage_percent=95.0)
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", "trading-ops/system_health/memory_usage_percent_critical")
    ]
    assert sorted(message["channel"] for message in slack.messages()) == ["#alerts-critical", "#alerts-warning"]


def test_postgres_limits_and_request_rate_floor_are_rules_too():
    rules = {rule.name: rule for rule in all_rules(load_policy())}
    assert rules["pg_connection_usage_percent_critical"].holds(91) and not rules[
        "pg_connection_usage_percent_critical"
    ].holds(89)
    assert rules["pg_wal_archive_failing"].holds(1) and rules["pg_wal_archive_failing"].severity == "critical"
    assert rules["request_rate_below_minimum"].holds(99) and not rules["request_rate_below_minimum"].holds(100)
    assert rules["request_rate_above_maximum"].holds(10001)
    assert rules["high_priority"].route is not None and rules["high_priority"].route.pagerduty_service == "trading-team"
    assert rules["postgres_down"].holds(0) and not rules["postgres_down"].holds(1)


# --- the shipped policy: every threshold alerts at its level, the alert rules add theirs on top -------------------


@pytest.fixture
def shipped_policy(alert_fakes, fresh_db, monkeypatch):
    """The policy file as shipped, not the test copy: these timelines are what production does."""
    monkeypatch.setenv("TRADING_OPS_POLICY", str(DEFAULT_POLICY_PATH))
    return alert_fakes


def test_every_threshold_is_a_rule_whatever_alert_rule_watches_its_metric():
    rules = {rule.name: rule for rule in all_rules(load_policy(DEFAULT_POLICY_PATH))}
    assert {
        "cpu_usage_percent_warning",
        "cpu_usage_percent_critical",
        "api_latency_p95_ms_warning",
        "error_rate_percent_warning",
        "low_priority",
        "medium_priority",
        "high_priority",
    } <= set(rules)
    assert rules["cpu_usage_percent_critical"].route.slack_channels == ("#alerts-critical",)
    assert rules["cpu_usage_percent_warning"].route.slack_channels == ("#alerts-warning",)


def channels_and_summaries(slack) -> list[tuple[str, str]]:
    return [(message["channel"], message["text"].split("\n")[0]) for message in slack.messages()]


def test_shipped_policy_cpu_at_86_percent_for_5_minutes_is_a_critical_alert(shipped_policy):
    slack, pagerduty = shipped_policy
    assert evaluate(minutes(0), cpu_usage_percent=86)["fired"] == []
    assert sorted(evaluate(minutes(5), cpu_usage_percent=86)["fired"]) == [
        "cpu_usage_percent_critical",
        "cpu_usage_percent_warning",
    ]
    assert sorted(channels_and_summaries(slack)) == [
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · "
            "cpu_usage_percent_critical: cpu_usage_percent >= 85 for 5m",
        ),
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · cpu_usage_percent_warning: cpu_usage_percent >= 70 for 5m",
        ),
    ]
    # The manual's low_priority rule adds its own info alert once CPU stayed over 70% for 15 minutes.
    assert evaluate(minutes(10), cpu_usage_percent=80)["resolved"] == ["cpu_usage_percent_critical"]
    assert evaluate(minutes(15), cpu_usage_percent=78)["fired"] == ["low_priority"]
    assert channels_and_summaries(slack)[-1] == (
        "#alerts-info",
        ":information_source: *P3 minor* (partial feature failure) · low_priority: cpu_usage_percent > 70 for 15m",
    )
    assert sorted(evaluate(minutes(20), cpu_usage_percent=50)["resolved"]) == [
        "cpu_usage_percent_warning",
        "low_priority",
    ]
    assert pagerduty.requests == [], "only alert rules page unless monitoring.threshold_pagerduty_service is set"


def test_shipped_policy_latency_timeline_sends_the_threshold_then_the_rule(shipped_policy):
    slack, pagerduty = shipped_policy
    assert evaluate(minutes(0), api_latency_p95_ms=650)["fired"] == []
    assert evaluate(minutes(5), api_latency_p95_ms=650)["fired"] == ["api_latency_p95_ms_warning"]
    assert evaluate(minutes(10), api_latency_p95_ms=650)["fired"] == ["medium_priority"]
    assert evaluate(minutes(15), api_latency_p95_ms=700)["fired"] == []

    assert channels_and_summaries(slack) == [
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · "
            "api_latency_p95_ms_warning: api_latency_p95_ms > 500 for 5m",
        ),
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · medium_priority: api_latency_p95_ms > 500 for 10m",
        ),
    ]
    assert pagerduty.requests == []


def test_shipped_policy_error_rate_pages_and_the_lower_threshold_alerts_too(shipped_policy):
    slack, pagerduty = shipped_policy
    evaluate(minutes(0), error_rate_percent=2.5)
    assert sorted(evaluate(minutes(5), error_rate_percent=2.5)["fired"]) == [
        "error_rate_percent_warning",
        "high_priority",
    ]
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", "trading-ops/system_health/high_priority")
    ]
    # Down to 0.5%: the page resolves; the manual's 0.1% threshold still holds.
    result = evaluate(minutes(10), error_rate_percent=0.5)
    assert (result["resolved"], result["fired"]) == (["high_priority"], [])
    assert result["breaching"] == ["error_rate_percent_warning"]
    assert [event["event_action"] for event in pagerduty.events()] == ["trigger", "resolve"]


# --- delivery failures, reruns and an unreachable state database --------------------------------------------------


def rule_state(ops_conn, rule: str):
    return ops_conn.execute(
        "SELECT state, active_since, fired_at, evaluated_at FROM ops.alert_rule_state WHERE rule = %s", (rule,)
    ).fetchone()


def test_an_undelivered_alert_is_not_saved_as_fired_and_goes_out_on_the_retry(rules_only, ops_conn):
    slack, pagerduty = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    slack.failure = (500, "internal_error")
    pagerduty.fail_with = 400

    with pytest.raises(
        state.MonitoringError,
        match=(
            r"^1 alert\(s\) not delivered: high_priority \(slack:#alerts-critical, pagerduty:trading-team\); "
            r"the retry or the next run sends them again\.$"
        ),
    ):
        evaluate(minutes(5), error_rate_percent=2.5)
    assert rule_state(ops_conn, "high_priority") == ("pending", minutes(0), None, minutes(5))

    slack.failure, pagerduty.fail_with = None, None
    assert evaluate(minutes(5), error_rate_percent=2.5)["fired"] == ["high_priority"], "the task's retry"
    assert rule_state(ops_conn, "high_priority") == ("firing", minutes(0), minutes(5), minutes(5))
    assert len(slack.requests) == 2 and slack.messages()[0] == slack.messages()[1]
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "triggered"}


def test_an_undelivered_resolve_keeps_the_rule_firing_until_it_is_delivered(rules_only, ops_conn):
    slack, pagerduty = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=2.5)
    pagerduty.fail_with = 400

    with pytest.raises(state.MonitoringError, match=r"not delivered: high_priority \(pagerduty:trading-team\)"):
        evaluate(minutes(10), error_rate_percent=0.2)
    assert rule_state(ops_conn, "high_priority") == ("firing", minutes(0), minutes(5), minutes(10))

    pagerduty.fail_with = None
    assert evaluate(minutes(15), error_rate_percent=0.2)["resolved"] == ["high_priority"]
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "resolved"}
    assert rule_state(ops_conn, "high_priority") == ("ok", None, None, minutes(15))


def test_a_rerun_of_an_older_run_after_the_rule_cleared_does_not_backdate_it(rules_only, ops_conn, caplog):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=0.2)  # cleared before its 5 minutes
    evaluate(minutes(2), error_rate_percent=2.5)  # someone clears and reruns the run of minute 2
    assert "Rule high_priority was last evaluated at" in caplog.text
    assert rule_state(ops_conn, "high_priority") == ("ok", None, None, minutes(5))

    assert evaluate(minutes(10), error_rate_percent=2.5)["fired"] == [], "holding since 10, not since 2"
    assert evaluate(minutes(15), error_rate_percent=2.5)["fired"] == ["high_priority"]
    assert len(slack.requests) == 1


def test_postgres_and_the_ops_state_down_alert_at_once_without_state_and_fail_the_task(
    alert_fakes, pg_cluster, monkeypatch
):
    from airflow.sdk.exceptions import AirflowFailException

    from trading_ops.dev.localpg import free_port

    slack, pagerduty = alert_fakes
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")
    monkeypatch.setenv("AIRFLOW_CONN_OPS_STATE", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_ops")
    policy = load_policy()
    postgres = collect.collect_postgres_metrics("trading_db")
    metrics = {
        **{name: value for name, value in healthy_metrics(policy).items() if not name.startswith("pg_")},
        **postgres,
        "cpu_usage_percent": 75.0,
    }
    missing = collect.missing_sources(policy, host=metrics, postgres=postgres, application=metrics, freshness={})

    with pytest.raises(AirflowFailException) as failure:
        state.check_system_health(policy, metrics, minutes(0), RUN_URL, missing=missing)

    assert str(failure.value) == (
        "PostgreSQL (trading_db) is unreachable: only pg_up was measured there. "
        "The rule state in 'ops_state' is unreachable: the 3 rule(s) that hold now alerted without waiting for "
        "their `for`, and no rule could resolve."
    )
    # PostgreSQL's other metrics have no data, which its own rule covers: no "no data" alert for them.
    assert channels_and_summaries(slack) == [
        (
            "#alerts-info",
            ":information_source: *P3 minor* (partial feature failure) · low_priority: cpu_usage_percent > 70 for 15m",
        ),
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · postgres_down: pg_up < 1 for 0s",
        ),
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · cpu_usage_percent_warning: cpu_usage_percent >= 70 for 5m",
        ),
    ]
    assert "*rule state:* unavailable: alerted without waiting 15m" in slack.messages()[0]["text"]
    assert pagerduty.incidents == {"trading-ops/system_health/postgres_down": "triggered"}


def test_a_failed_collector_fails_the_evaluation_after_it_alerted_on_the_rest(rules_only):
    """Nothing measured PostgreSQL or Prometheus: their rules alert on the missing data, the host is evaluated."""
    from airflow.sdk.exceptions import AirflowFailException

    slack, _ = rules_only
    policy = load_policy()
    host = {"cpu_usage_percent": 75.0, "memory_usage_percent": 40.0}
    fresh = {
        name: value
        for name, value in healthy_metrics(policy).items()
        if "age_seconds" in name or name == "dag_run_overdue_seconds"
    }
    missing = collect.missing_sources(policy, host=host, postgres=None, application=None, freshness={})
    assert missing == [
        "collect_postgres_metrics failed: no PostgreSQL metric was evaluated.",
        "collect_application_metrics failed: no application metric was evaluated.",
    ]

    with pytest.raises(AirflowFailException, match=r"^collect_postgres_metrics failed: .* was evaluated\.$"):
        state.check_system_health(policy, {**host, **fresh}, minutes(0), RUN_URL, missing=missing)
    assert sorted(channels_and_summaries(slack)) == [
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · postgres_down: no data for pg_up for 0s",
        ),
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · "
            "prometheus_down: no data for prometheus_up for 0s",
        ),
    ]
    with pytest.raises(AirflowFailException):
        state.check_system_health(policy, {**host, **fresh}, minutes(15), RUN_URL, missing=missing)
    assert ("#alerts-info", slack.messages()[-1]["text"].split("\n")[0]) in channels_and_summaries(slack)
    assert any("low_priority: cpu_usage_percent > 70 for 15m" in text for _, text in channels_and_summaries(slack))


# --- the rules the policy may hold ---------------------------------------------------------------------------------


def test_a_rule_on_a_metric_nobody_measures_is_refused_in_one_sentence(make_policy):
    path = make_policy({"alert_rules.2.metric": "cpu_usage"})
    with pytest.raises(PolicyError) as error:
        load_policy()
    assert str(error.value) == (
        f"Policy {path} is invalid: alert_rules.2 (low_priority) watches 'cpu_usage', which system_health does not "
        "measure; use one of cpu_usage_percent, memory_usage_percent, disk_usage_percent.data, "
        "disk_usage_percent.backup, pg_up, pg_connections, pg_max_connections, pg_connection_usage_percent, "
        "pg_replicas, pg_replication_lag_seconds, pg_longest_transaction_seconds, pg_wal_archive_failed_count, "
        "pg_wal_archive_failing, pg_database_size_bytes, api_latency_p95_ms, api_latency_p99_ms, error_rate_percent, "
        "request_rate_per_second, prometheus_up, backup_full_age_seconds, backup_wal_bundle_age_seconds, "
        "wal_archive_age_seconds, restore_drill_age_seconds, wal_offhost_lag_seconds, dag_run_overdue_seconds."
    )


@pytest.mark.parametrize(
    "metric", ["disk_usage_percent.backup", "pg_replication_lag_seconds", "request_rate_per_second"]
)
def test_rules_may_watch_disks_postgres_and_prometheus_queries(make_policy, metric):
    make_policy({"alert_rules.2.metric": metric})
    assert load_policy().alert_rules[2].metric == metric


def test_a_rule_on_a_disk_that_is_not_watched_is_refused(make_policy):
    make_policy({"alert_rules.2.metric": "disk_usage_percent.logs"})
    with pytest.raises(PolicyError, match=r"alert_rules.2 \(low_priority\) watches 'disk_usage_percent.logs'"):
        load_policy()
