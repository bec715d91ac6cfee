"""
# system_health

Every 5 minutes: measure the host, PostgreSQL and the trading API, and evaluate the manual's thresholds and alert
rules, Prometheus style (a condition must hold for the rule's `for` before it alerts; it resolves when it clears).

**Schedule**: `*/5 * * * *`, `max_active_runs=1`, no catch-up: a missed run is not worth running late, the next
one measures the present.

## Tasks
- `collect_host_metrics`: CPU and memory of the worker host and usage of the volumes in
  `monitoring.sources.disk_paths` (data, backups), with psutil.
- `collect_postgres_metrics`: on `monitoring.sources.database_conn_id`: client connections vs `max_connections`,
  replication lag, the oldest open transaction, `pg_stat_archiver` failures, database size. A server that does not
  answer is measured as `pg_up` 0 (the task succeeds, the `postgres_down` rule pages).
- `collect_application_metrics`: latency p95/p99, error rate and request rate of `trading-api` from the
  Prometheus-compatible API of the HTTP connection `monitoring.sources.prometheus_conn_id` (`/api/v1/query` at the
  run's time; each query must answer one series); skipped when no connection is set.
- `evaluate_alert_rules`: runs even when a collector failed, so one broken source does not blind the others.
  Evaluates `alert_rules` (error rate > 1% for 5m → P1 `#alerts-critical` + PagerDuty `trading-team`; p95 latency
  > 500 ms for 10m → `#alerts-warning`; CPU > 70% for 15m → `#alerts-info`; PostgreSQL not answering → P1 and
  PagerDuty) and the warning/critical thresholds these rules do not cover, held for `monitoring.threshold_for` and
  sent to Slack by level, against the state in `ops.alert_rule_state`; sends what started firing and resolves what
  cleared, through `trading_ops.alerting`, and saves a transition only once delivered. Its log lists what fired,
  resolved, was not delivered, breaches now (pending or firing), is held back under an alert rule and could not be
  measured. It fails after alerting when an alert was not delivered (retried), a collector failed or PostgreSQL is
  down (not retried: nothing new to measure).

## Idempotency
Rule state is keyed by rule name and advanced to the run's time (`data_interval_end`, or `run_after` for manual
runs), never the wall clock: a rerun of a run finds its own state and sends nothing twice; a rerun of an older run
leaves newer state alone. A firing rule is notified once; PagerDuty deduplicates on
`trading-ops/system_health/<rule>`. An alert that did not go out is not saved as sent, so the retry sends it.

## Triage
- A collector failed: its log names the source (Prometheus connection and error, PostgreSQL connection). The
  evaluation still ran on the other sources and then failed, naming the missing source.
- `evaluate_alert_rules` failed with "not delivered": Slack or PagerDuty refused; the retry (or the next run) sends
  the alert again. Failed with "rule state ... is unreachable": PostgreSQL, where the rule state lives, is down;
  every rule that held alerted at once, every run, until it is back. Resolve the `postgres_down` incident and any
  other alert of that time by hand once it is: nothing recorded that they were sent.
- Too many alerts: see `SELECT * FROM ops.alert_rule_state` (each rule ok, pending or firing, with the value last seen)
  and `ops.alert_groups` (what was sent when and how much was grouped).
- `ALERT DELIVERY FAILED` in a log: Slack or PagerDuty refused or was unreachable; the undelivered message is
  printed right after. Check the `slack_alerts` / `pagerduty_events` connections.
- A longest-transaction or connection figure of 0 while sessions are busy: the connection's user needs
  `pg_monitor` to see other sessions.

## Recovery
Nothing to repair: the next run measures again. To silence a rule after fixing its cause, let the next run
resolve it; to forget all state, `TRUNCATE ops.alert_rule_state` (firing PagerDuty incidents must then be
resolved by hand).

## Owner
sre-dba (DBA on-call for PostgreSQL metrics, SRE on-call for host and API metrics).
Code: `trading_ops.monitoring` (`collect`, `rules`, `state`, `tasks`); delivery: `trading_ops.alerting`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args


@dag(
    description="Measure the host, PostgreSQL and trading-api; alert on the manual's rules and thresholds.",
    schedule=cron("*/5 * * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Short retries and timeout: the whole run must fit in its 5-minute slot.
    default_args=default_args(
        retry_delay=timedelta(seconds=20),
        retry_exponential_backoff=False,
        execution_timeout=timedelta(minutes=2),
    ),
    tags=["monitoring", "alerting", "database", "frequent"],
    doc_md=__doc__,
)
def system_health():
    @task
    def collect_host_metrics() -> dict:
        from trading_ops.monitoring import tasks

        return tasks.collect_host_metrics()

    @task
    def collect_postgres_metrics() -> dict:
        from trading_ops.monitoring import tasks

        return tasks.collect_postgres_metrics()

    @task
    def collect_application_metrics() -> dict:
        from trading_ops.monitoring import tasks

        return tasks.collect_application_metrics()

    @task(trigger_rule="all_done")
    def evaluate_alert_rules(host: dict | None, postgres: dict | None, application: dict | None) -> dict:
        from trading_ops.monitoring import tasks

        return tasks.evaluate_alert_rules(host, postgres, application)

    evaluate_alert_rules(collect_host_metrics(), collect_postgres_metrics(), collect_application_metrics())


system_health()
