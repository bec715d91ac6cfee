"""Alert rules with `for`, their state between runs, and what a run sends (`trading_ops.monitoring.rules` and
`.state`), against the real test PostgreSQL and the Slack and PagerDuty fakes.

Rule timing is driven with explicit evaluation times, as system_health passes each run's time: a rule fires only
once its condition has held for its `for`, fires once, and resolves when the condition clears.
"""

from __future__ import annotations

import time
from datetime import datetime

import psycopg
import pytest

from tests.support.monitoring import minutes
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


def evaluate(at: datetime, **metrics) -> dict:
    return state.check_system_health(load_policy(), metrics, at, RUN_URL)


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


# --- the shipped policy: the manual's alert rules govern the metrics they watch ----------------------------------


@pytest.fixture
def shipped_policy(alert_fakes, fresh_db, monkeypatch):
    """The policy file as shipped, not the test copy: these timelines are what production does."""
    monkeypatch.setenv("TRADING_OPS_POLICY", str(DEFAULT_POLICY_PATH))
    return alert_fakes


def test_the_manuals_rules_replace_the_thresholds_they_cover():
    names = {rule.name for rule in all_rules(load_policy(DEFAULT_POLICY_PATH))}
    # cpu > 70 for 15m covers both CPU thresholds (70, 85); p95 > 500 for 10m covers the p95 threshold (500).
    assert not names & {"cpu_usage_percent_warning", "cpu_usage_percent_critical", "api_latency_p95_ms_warning"}
    assert {"memory_usage_percent_warning", "api_latency_p99_ms_warning", "error_rate_percent_warning"} <= names
    rules = {rule.name: rule for rule in all_rules(load_policy(DEFAULT_POLICY_PATH))}
    assert rules["error_rate_percent_warning"].inhibited_by == ("high_priority",)


def channels_and_summaries(slack) -> list[tuple[str, str]]:
    return [(message["channel"], message["text"].split("\n")[0]) for message in slack.messages()]


def test_shipped_policy_cpu_timeline_sends_only_the_manuals_low_priority_rule(shipped_policy):
    slack, pagerduty = shipped_policy
    for at, cpu in ((0, 75), (5, 86), (10, 80)):
        assert evaluate(minutes(at), cpu_usage_percent=cpu)["fired"] == []
    assert evaluate(minutes(15), cpu_usage_percent=78)["fired"] == ["low_priority"]
    assert evaluate(minutes(20), cpu_usage_percent=50)["resolved"] == ["low_priority"]

    assert slack.messages() == [
        {
            "channel": "#alerts-info",
            "text": fired_text(
                ":information_source: *P3 minor* (partial feature failure)",
                "low_priority: cpu_usage_percent > 70 for 15m",
                "low_priority",
                "78",
                minutes(0),
                minutes(15),
                "*Respond within* 2h, *resolve within* 8h · *escalation:* on_call_engineer · "
                "*procedure:* normal handling",
            ),
        },
        {
            "channel": "#alerts-info",
            "text": (
                ":white_check_mark: *RESOLVED P3 minor* · low_priority: cpu_usage_percent > 70 for 15m\n"
                "*Source:* system_health/low_priority\n"
                f"*Airflow run:* <{RUN_URL}>\n"
                "_dedup key: trading-ops/system_health/low_priority_"
            ),
        },
    ]
    assert pagerduty.requests == [], "CPU at 86% does not page: the manual's CPU rule is low priority"


def test_shipped_policy_latency_timeline_sends_one_warning_after_10_minutes(shipped_policy):
    slack, pagerduty = shipped_policy
    for at in (0, 5, 9):
        assert evaluate(minutes(at), api_latency_p95_ms=650)["fired"] == []
    assert slack.requests == []
    assert evaluate(minutes(10), api_latency_p95_ms=650)["fired"] == ["medium_priority"]
    assert evaluate(minutes(15), api_latency_p95_ms=700)["fired"] == []

    assert channels_and_summaries(slack) == [
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · medium_priority: api_latency_p95_ms > 500 for 10m",
        )
    ]
    assert pagerduty.requests == []


def test_shipped_policy_error_rate_pages_once_and_the_lower_threshold_waits_under_it(shipped_policy):
    slack, pagerduty = shipped_policy
    evaluate(minutes(0), error_rate_percent=2.5)
    assert evaluate(minutes(5), error_rate_percent=2.5)["fired"] == ["high_priority"]
    assert evaluate(minutes(8), error_rate_percent=2.5)["inhibited"] == ["error_rate_percent_warning"]
    assert channels_and_summaries(slack) == [
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · high_priority: error_rate_percent > 1 for 5m",
        )
    ]
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", "trading-ops/system_health/high_priority")
    ]

    # Down to 0.5%: the page resolves, and the manual's 0.1% threshold, crossed since minute 0, now speaks.
    result = evaluate(minutes(10), error_rate_percent=0.5)
    assert (result["resolved"], result["fired"]) == (["high_priority"], ["error_rate_percent_warning"])
    assert channels_and_summaries(slack)[1:] == [
        (
            "#alerts-critical",
            ":white_check_mark: *RESOLVED P1 critical* · high_priority: error_rate_percent > 1 for 5m",
        ),
        (
            "#alerts-warning",
            ":warning: *P2 major* (major feature failure) · "
            "error_rate_percent_warning: error_rate_percent > 0.1 for 5m",
        ),
    ]
    assert [event["event_action"] for event in pagerduty.events()] == ["trigger", "resolve"]


# --- delivery failures, reruns and an unreachable state database --------------------------------------------------


def rule_state(pg_conn, rule: str):
    return pg_conn.execute(
        "SELECT state, active_since, fired_at, evaluated_at FROM ops.alert_rule_state WHERE rule = %s", (rule,)
    ).fetchone()


def test_an_undelivered_alert_is_not_saved_as_fired_and_goes_out_on_the_retry(rules_only, pg_conn):
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
    assert rule_state(pg_conn, "high_priority") == ("pending", minutes(0), None, minutes(5))

    slack.failure, pagerduty.fail_with = None, None
    assert evaluate(minutes(5), error_rate_percent=2.5)["fired"] == ["high_priority"], "the task's retry"
    assert rule_state(pg_conn, "high_priority") == ("firing", minutes(0), minutes(5), minutes(5))
    assert len(slack.requests) == 2 and slack.messages()[0] == slack.messages()[1]
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "triggered"}


def test_an_undelivered_resolve_keeps_the_rule_firing_until_it_is_delivered(rules_only, pg_conn):
    slack, pagerduty = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=2.5)
    pagerduty.fail_with = 400

    with pytest.raises(state.MonitoringError, match=r"not delivered: high_priority \(pagerduty:trading-team\)"):
        evaluate(minutes(10), error_rate_percent=0.2)
    assert rule_state(pg_conn, "high_priority") == ("firing", minutes(0), minutes(5), minutes(10))

    pagerduty.fail_with = None
    assert evaluate(minutes(15), error_rate_percent=0.2)["resolved"] == ["high_priority"]
    assert pagerduty.incidents == {"trading-ops/system_health/high_priority": "resolved"}
    assert rule_state(pg_conn, "high_priority") == ("ok", None, None, minutes(15))


def test_a_rerun_of_an_older_run_after_the_rule_cleared_does_not_backdate_it(rules_only, pg_conn, caplog):
    slack, _ = rules_only
    evaluate(minutes(0), error_rate_percent=2.5)
    evaluate(minutes(5), error_rate_percent=0.2)  # cleared before its 5 minutes
    evaluate(minutes(2), error_rate_percent=2.5)  # someone clears and reruns the run of minute 2
    assert "Rule high_priority was last evaluated at" in caplog.text
    assert rule_state(pg_conn, "high_priority") == ("ok", None, None, minutes(5))

    assert evaluate(minutes(10), error_rate_percent=2.5)["fired"] == [], "holding since 10, not since 2"
    assert evaluate(minutes(15), error_rate_percent=2.5)["fired"] == ["high_priority"]
    assert len(slack.requests) == 1


def test_postgres_down_alerts_at_once_without_state_and_fails_the_task(alert_fakes, pg_cluster, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from trading_ops.dev.localpg import free_port

    slack, pagerduty = alert_fakes
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")
    metrics = {
        **collect.collect_postgres_metrics("trading_db"),
        "cpu_usage_percent": 75.0,
        "memory_usage_percent": 40.0,
    }
    missing = collect.missing_sources(load_policy(), host=metrics, postgres=metrics, application=None)

    with pytest.raises(AirflowFailException) as failure:
        state.check_system_health(load_policy(), metrics, minutes(0), RUN_URL, missing=missing)

    assert str(failure.value) == (
        "PostgreSQL (trading_db) is unreachable: only pg_up was measured there. "
        "The rule state in 'trading_db' is unreachable: the 2 rule(s) that hold now alerted without waiting for "
        "their `for`, and no rule could resolve."
    )
    assert channels_and_summaries(slack) == [
        (
            "#alerts-info",
            ":information_source: *P3 minor* (partial feature failure) · low_priority: cpu_usage_percent > 70 for 15m",
        ),
        (
            "#alerts-critical",
            ":rotating_light: *P1 critical* (complete service outage) · postgres_down: pg_up < 1 for 0s",
        ),
    ]
    assert "*rule state:* unavailable: alerted without waiting 15m" in slack.messages()[0]["text"]
    assert pagerduty.incidents == {"trading-ops/system_health/postgres_down": "triggered"}


def test_a_failed_collector_fails_the_evaluation_after_it_alerted_on_the_rest(rules_only, make_policy):
    slack, _ = rules_only
    make_policy({"monitoring.threshold_for": "1h", "monitoring.sources.prometheus_conn_id": "prometheus"})
    policy = load_policy()
    host = {"cpu_usage_percent": 75.0}
    missing = collect.missing_sources(policy, host=host, postgres=None, application=None)
    assert missing == [
        "collect_postgres_metrics failed: no PostgreSQL metric was evaluated.",
        "collect_application_metrics failed: no application metric was evaluated.",
    ]
    from airflow.sdk.exceptions import AirflowFailException

    state.check_system_health(policy, host, minutes(0), RUN_URL)
    with pytest.raises(AirflowFailException, match=r"^collect_postgres_metrics failed: .* was evaluated\.$"):
        state.check_system_health(policy, host, minutes(15), RUN_URL, missing=missing)
    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"], "the host was still evaluated"


def test_ops_schema_ddl_waits_for_the_lock_the_security_ddl_takes(pg_cluster, fresh_db):
    """Two DAGs starting together create the `ops` schema at once: without one lock, one of them fails."""
    import re
    import threading

    from trading_ops.paths import SQL_DIR
    from trading_ops.sqlfiles import load_sql

    lock = re.compile(r"SELECT pg_advisory_xact_lock\(hashtext\('[\w.]+'\)\);")
    [security_lock] = lock.findall((SQL_DIR / "security/create_findings_tables.sql").read_text())
    for name in ("alerting/create_alert_groups.sql", "monitoring/create_alert_rule_state.sql"):
        assert lock.findall((SQL_DIR / name).read_text()) == [security_lock], name

    errors = []
    waits = []

    def second_creator():
        try:
            with psycopg.connect(pg_cluster.conninfo(fresh_db)) as second:
                second.execute(load_sql("monitoring/create_alert_rule_state.sql"))
        except psycopg.Error as exc:
            errors.append(exc)

    with (
        psycopg.connect(pg_cluster.conninfo(fresh_db)) as first,
        psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as watcher,
    ):
        first.execute(load_sql("alerting/create_alert_groups.sql"))  # its transaction stays open
        thread = threading.Thread(target=second_creator)
        thread.start()
        deadline = time.monotonic() + 10
        while not waits and time.monotonic() < deadline:
            waits = watcher.execute(
                "SELECT wait_event FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> %s",
                (first.info.backend_pid,),
            ).fetchall()
            time.sleep(0.02)
        first.commit()
        thread.join(timeout=10)
    assert waits == [("advisory",)], "the second creator waits for the lock, not for the first one's schema row"
    assert errors == []


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
        "request_rate_per_second."
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
