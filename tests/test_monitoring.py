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
from trading_ops.policy import DEFAULT_POLICY_PATH, HOST_METRICS, POSTGRES_METRICS, PolicyError, load_policy

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

    assert during["pg_up"] == baseline["pg_up"] == 1
    assert during["pg_connections"] == baseline["pg_connections"] + 1
    assert during["pg_max_connections"] == max_connections
    assert during["pg_connection_usage_percent"] == pytest.approx(100 * during["pg_connections"] / max_connections)
    assert during["pg_longest_transaction_seconds"] >= 1.2 > baseline["pg_longest_transaction_seconds"]
    assert during["pg_database_size_bytes"] == size
    assert during["pg_wal_archive_failed_count"] == failed_count
    assert during["pg_wal_archive_failing"] == 0, "the harness archives WAL successfully"
    # The test cluster is a primary without standbys: there is no replication lag to measure.
    assert (during["pg_replicas"], during["pg_replication_lag_seconds"]) == (0, None)


def test_replication_lag_does_not_grow_while_the_primary_is_idle(pg_cluster, monkeypatch):
    """A standby that has replayed everything has no lag, however long ago the primary's last commit was."""
    import subprocess

    from tests.support.harness import RUN_DIR
    from trading_ops.dev.localpg import LocalCluster, _as_server_user, _give_to_server_user
    from trading_ops.pgtools import server_bindir

    home = RUN_DIR / "replication"
    home.mkdir()
    home.chmod(0o755)  # the postgres OS user runs both clusters
    primary = LocalCluster(home / "primary")
    standby = LocalCluster(home / "standby", password=primary.password)  # a copy of the primary
    primary.init()
    primary.start()
    try:
        standby.base_dir.mkdir(parents=True)
        _give_to_server_user(standby.base_dir)
        subprocess.run(
            _as_server_user(
                [str(server_bindir() / "pg_basebackup"), "-D", str(standby.data_dir), "-R", "-h"]
                + [str(primary.socket_dir), "-p", str(primary.port), "-U", "postgres"]
            ),
            check=True,
            capture_output=True,
        )
        for directory in (standby.socket_dir, standby.wal_archive_dir):
            directory.mkdir()
            _give_to_server_user(directory)
        with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in standby.settings().items())
        standby.start()
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE TABLE replicated (id integer)")  # one commit for the standby to replay
        with psycopg.connect(standby.conninfo(), autocommit=True) as conn:
            deadline = time.monotonic() + 20
            while not conn.execute(
                "SELECT pg_last_xact_replay_timestamp() IS NOT NULL "
                "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
            ).fetchone()[0]:
                assert time.monotonic() < deadline, "the standby did not catch up"
                time.sleep(0.05)
        time.sleep(2)  # the primary stays idle

        monkeypatch.setenv("AIRFLOW_CONN_STANDBY", standby.uri())
        monkeypatch.setenv("AIRFLOW_CONN_PRIMARY", primary.uri())
        on_standby = monitoring.collect_postgres_metrics("standby")
        on_primary = monitoring.collect_postgres_metrics("primary")
    finally:
        standby.stop(mode="immediate")
        primary.stop(mode="immediate")

    assert on_standby["pg_replication_lag_seconds"] == 0
    assert on_primary["pg_replicas"] == 1 and on_primary["pg_replication_lag_seconds"] < 1


def test_an_unreachable_postgres_is_measured_as_down(pg_cluster, monkeypatch, caplog):
    from trading_ops.dev.localpg import free_port

    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")
    assert monitoring.collect_postgres_metrics("trading_db") == {"pg_up": 0.0}
    assert "PostgreSQL (trading_db) is unreachable" in caplog.text


def test_collectors_measure_exactly_the_metrics_rules_may_watch(tmp_path, fresh_db):
    host = monitoring.collect_host_metrics({"data": str(tmp_path)})
    postgres = monitoring.collect_postgres_metrics("trading_db")
    informational = {"pg_wal_archive_last_failed_wal", "pg_wal_archive_last_failed_time"}
    assert set(host) == {*HOST_METRICS, "disk_usage_percent.data"}
    assert set(postgres) - informational == set(POSTGRES_METRICS)


@pytest.fixture
def prometheus(prometheus_fake, monkeypatch):
    """The Prometheus fake behind the `prometheus` HTTP connection, with basic-auth credentials."""
    prometheus_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json("grafana-reader", "s3cret"))
    return prometheus_fake


def test_application_metrics_are_queried_at_the_runs_time(prometheus):
    prometheus_fake = prometheus
    policy = load_policy()
    queries = policy.monitoring.sources.prometheus_queries
    prometheus_fake.values.update(
        {
            queries["api_latency_p95_ms"]: 420.0,
            queries["error_rate_percent"]: 2.5,
            queries["request_rate_per_second"]: 850,
        }
    )

    metrics = monitoring.collect_application_metrics("prometheus", queries, minutes(5), timedelta(seconds=5))

    assert metrics == {
        "api_latency_p95_ms": 420.0,
        "api_latency_p99_ms": None,  # no data: the rule keeps its state
        "error_rate_percent": 2.5,
        "request_rate_per_second": 850.0,
    }
    assert [(r.method, r.path) for r in prometheus_fake.requests] == [("GET", "/api/v1/query")] * 4
    assert [r.query["query"][0] for r in prometheus_fake.requests] == list(queries.values())
    assert prometheus_fake.queried_times() == [minutes(5).timestamp()] * 4
    # The connection's credentials go along (Basic grafana-reader:s3cret).
    assert {r.headers["Authorization"] for r in prometheus_fake.requests} == {"Basic Z3JhZmFuYS1yZWFkZXI6czNjcmV0"}


def test_a_prometheus_error_names_the_query(prometheus):
    with pytest.raises(monitoring.MonitoringError, match=r"refused the error_rate_percent query: bad_data"):
        monitoring.collect_application_metrics("prometheus", {"error_rate_percent": ""}, T0, timedelta(seconds=5))


def test_a_query_answering_several_series_fails_instead_of_picking_one(prometheus):
    prometheus.values["http_request_latency_p95_ms"] = [120.0, 900.0]
    with pytest.raises(
        monitoring.MonitoringError,
        match=(
            r"^The api_latency_p95_ms query answered 2 series \(.*trading-api-0.*trading-api-1.*\) where one is "
            r"needed: aggregate it in prometheus_queries \(max, sum, avg\)\.$"
        ),
    ):
        monitoring.collect_application_metrics(
            "prometheus", {"api_latency_p95_ms": "http_request_latency_p95_ms"}, T0, timedelta(seconds=5)
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
    rules = {rule.name: rule for rule in monitoring.all_rules(load_policy())}
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
    names = {rule.name for rule in monitoring.all_rules(load_policy(DEFAULT_POLICY_PATH))}
    # cpu > 70 for 15m covers both CPU thresholds (70, 85); p95 > 500 for 10m covers the p95 threshold (500).
    assert not names & {"cpu_usage_percent_warning", "cpu_usage_percent_critical", "api_latency_p95_ms_warning"}
    assert {"memory_usage_percent_warning", "api_latency_p99_ms_warning", "error_rate_percent_warning"} <= names
    rules = {rule.name: rule for rule in monitoring.all_rules(load_policy(DEFAULT_POLICY_PATH))}
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
        monitoring.MonitoringError,
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

    with pytest.raises(monitoring.MonitoringError, match=r"not delivered: high_priority \(pagerduty:trading-team\)"):
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
        **monitoring.collect_postgres_metrics("trading_db"),
        "cpu_usage_percent": 75.0,
        "memory_usage_percent": 40.0,
    }
    missing = monitoring.missing_sources(load_policy(), host=metrics, postgres=metrics, application=None)

    with pytest.raises(AirflowFailException) as failure:
        monitoring.check_system_health(load_policy(), metrics, minutes(0), RUN_URL, missing=missing)

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
    missing = monitoring.missing_sources(policy, host=host, postgres=None, application=None)
    assert missing == [
        "collect_postgres_metrics failed: no PostgreSQL metric was evaluated.",
        "collect_application_metrics failed: no application metric was evaluated.",
    ]
    from airflow.sdk.exceptions import AirflowFailException

    monitoring.check_system_health(policy, host, minutes(0), RUN_URL)
    with pytest.raises(AirflowFailException, match=r"^collect_postgres_metrics failed: .* was evaluated\.$"):
        monitoring.check_system_health(policy, host, minutes(15), RUN_URL, missing=missing)
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
