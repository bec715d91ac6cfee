"""
# system_health

Every 5 minutes: measure the platform's hosts, PostgreSQL, the trading API and the freshness of backups and WAL, and
evaluate the manual's thresholds and alert rules, Prometheus style (a condition must hold for the rule's `for`
before it alerts; it resolves when it clears; missing data is a signal too); then ping the dead man's switch.

**Schedule**: `*/5 * * * *`, `max_active_runs=1`, no catch-up: a missed run is not worth running late, the next
one measures the present (and the heartbeat service notices the missed one).

## Tasks
- `collect_host_metrics`: CPU, memory and the volumes of `monitoring.sources.disk_paths`, from the source in force
  (`monitoring.sources.host_metrics`): `prometheus` (shipped) queries node-exporter through Prometheus
  (`host_queries`), one series per host, labelled with its instance; `psutil` (`make up`, a single host) measures
  the worker that runs the task, labelled `source="psutil"`.
- `collect_postgres_metrics`: on `monitoring.sources.database_conn_id`: client connections vs `max_connections`,
  replication lag, the oldest open transaction, `pg_stat_archiver` failures, database size. A server that does not
  answer is measured as `pg_up` 0 (the `postgres_down` rule pages).
- `collect_application_metrics`: latency p95/p99, error rate and request rate of `trading-api` from the
  Prometheus-compatible API of `monitoring.sources.prometheus_conn_id` (`/api/v1/query` at the run's time; each
  query must answer one series). Prometheus unreachable or refusing is measured as `prometheus_up` 0
  (`prometheus_down` pages).
- `collect_freshness_metrics`: ages of the newest verified full backup, the newest WAL bundle and the newest segment
  in `backup.wal_archive_dir` (the RPO), read from the repository whatever state the backup DAGs are in; the age of
  the newest passed restore drill (`ops.restore_drills`; none passed yet: since the first drill; no drill recorded:
  no data, which is no alert); and for every DAG with a cron schedule (every DAG bundle, parsed as Airflow does),
  how overdue its next successful scheduled run is, from Airflow's own record of runs. Task code may not read the
  metadata database in Airflow 3: the run counts come through the Task SDK (`get_dr_count`, the API server
  answers). The run due after the newest successful scheduled run (a scheduled run's logical date is its fire time)
  must have succeeded `monitoring.freshness.dag_runs.slack` (4h, the longest DAG timeout) after its fire time;
  none succeeded yet: the first run's. A DAG without a run at its last 100 fire times is not measured (a new
  deployment); a measured DAG that disappears (its file stopped parsing: the collector's log names the file) has
  no data, which alerts. Manual runs do not count (their logical date is null).
- `evaluate_alert_rules`: runs even when a collector failed, so one broken source does not blind the others.
  Evaluates every rule below against the state in `ops.alert_rule_state` (the ops state database,
  `alerting.state_conn_id`), sends what started firing and resolves what cleared through `trading_ops.alerting`,
  and saves a transition only once delivered. Its log lists what fired, fired on missing data, resolved, was not
  delivered, breaches now and has no data. It fails after alerting when an alert was not delivered (retried), a
  collector failed or a source is down (not retried: nothing new to measure).
- `ping_heartbeat`: the dead man's switch: POSTs to `monitoring.heartbeat_conn_id` only when everything before
  succeeded. In the heartbeat service (healthchecks.io check, PagerDuty or Opsgenie heartbeat) set the period to
  5 minutes and the grace period to 10 minutes: two missed runs (a stopped scheduler, dag-processor or worker, or
  a run failing every time) page from outside Airflow.

## Rules
Generated from `include/config/ops_policy.yaml` (`trading_ops.monitoring.rules.rule_table`; a test keeps this table
equal to the shipped policy). Every threshold alerts at its own level whatever alert rule watches the same metric;
a per-host rule is checked once per host (`rule{instance="..."}`). No data `alert`: after the rule's `for` without
a value, "no data for <metric>" at the rule's severity; `ok`: no data counts as clear; `keep_state`: the state is
kept for `monitoring.keep_state_for`. While PostgreSQL or Prometheus is down, the rules on its metrics keep their
state and the source's own rule is the alert. Ages are in seconds (691200 = 8d, 93600 = 26h, 3600 = 1h);
`restore_drill_stale`'s limit is `restore.drill.max_age`, `wal_offhost_stale`'s `backup.wal_ship_within` (only with an
object-store repository); `dag_run_overdue_seconds` is already net of each DAG's
schedule and the slack.

| rule | condition | for | route | no data |
|---|---|---|---|---|
| high_priority | error_rate_percent > 1 | 5m | P1 #alerts-critical + PagerDuty trading-team | alert |
| medium_priority | api_latency_p95_ms > 500 | 10m | P2 #alerts-warning | alert |
| low_priority | cpu_usage_percent > 70, per host | 15m | P3 #alerts-info | alert |
| postgres_down | pg_up < 1 | 0s | P1 #alerts-critical + PagerDuty trading-team | alert |
| prometheus_down | prometheus_up < 1 | 0s | P1 #alerts-critical + PagerDuty trading-team | alert |
| cpu_usage_percent_warning | >= 70, per host | 5m | P2 #alerts-warning | alert |
| cpu_usage_percent_critical | >= 85, per host | 5m | P1 #alerts-critical | alert |
| memory_usage_percent_warning | >= 75, per host | 5m | P2 #alerts-warning | alert |
| memory_usage_percent_critical | >= 90, per host | 5m | P1 #alerts-critical | alert |
| disk_usage_percent.data_warning | >= 80, per host | 5m | P2 #alerts-warning | alert |
| disk_usage_percent.data_critical | >= 90, per host | 5m | P1 #alerts-critical | alert |
| disk_usage_percent.backup_warning | >= 80, per host | 5m | P2 #alerts-warning | alert |
| disk_usage_percent.backup_critical | >= 90, per host | 5m | P1 #alerts-critical | alert |
| api_latency_p95_ms_warning | > 500 | 5m | P2 #alerts-warning | alert |
| api_latency_p99_ms_warning | > 1000 | 5m | P2 #alerts-warning | alert |
| error_rate_percent_warning | > 0.1 | 5m | P2 #alerts-warning | alert |
| request_rate_below_minimum | request_rate_per_second < 100 | 5m | P2 #alerts-warning | alert |
| request_rate_above_maximum | request_rate_per_second > 10000 | 5m | P2 #alerts-warning | alert |
| pg_connection_usage_percent_warning | >= 80 | 5m | P2 #alerts-warning | alert |
| pg_connection_usage_percent_critical | >= 90 | 5m | P1 #alerts-critical | alert |
| pg_replication_lag_seconds_warning | >= 30 | 5m | P2 #alerts-warning | ok |
| pg_replication_lag_seconds_critical | >= 300 | 5m | P1 #alerts-critical | ok |
| pg_longest_transaction_seconds_warning | >= 600 | 5m | P2 #alerts-warning | alert |
| pg_longest_transaction_seconds_critical | >= 3600 | 5m | P1 #alerts-critical | alert |
| pg_wal_archive_failing | > 0 | 5m | P1 #alerts-critical | alert |
| full_backup_stale | backup_full_age_seconds > 691200 | 0s | P2 #alerts-warning | alert |
| wal_bundle_stale | backup_wal_bundle_age_seconds > 93600 | 0s | P2 #alerts-warning | alert |
| wal_segment_stale | wal_archive_age_seconds > 3600 | 0s | P1 #alerts-critical | alert |
| restore_drill_stale | restore_drill_age_seconds > 691200 | 0s | P2 #alerts-warning | ok |
| wal_offhost_stale | wal_offhost_lag_seconds > 300 | 0s | P2 #alerts-warning | ok |
| dag_run_stale | dag_run_overdue_seconds > 0, per DAG | 0s | P2 #alerts-warning | alert |

## Idempotency
Rule state is keyed by rule (and host) and advanced to the run's time (`data_interval_end`, or `run_after` for
manual runs), never the wall clock: a rerun of a run finds its own state and sends nothing twice; a rerun of an
older run leaves newer state alone. A firing rule is notified once (and once more if its data then vanishes);
PagerDuty deduplicates on `trading-ops/system_health/<rule>`. An alert that did not go out is not saved as sent, so
the retry sends it.

## Triage
- `prometheus_down` / `postgres_down`: the source is unreachable; the task log of the collector names the
  connection and the error. The rules on that source's metrics wait; the run fails, so the heartbeat is not pinged.
- "no data for <metric>": the query answered an empty vector or NaN for the rule's `for` (the service stopped
  reporting, a host's node-exporter is gone, or no traffic at all); query Prometheus for the policy's query.
- `full_backup_stale`, `wal_bundle_stale`: check `db_backup_full` / `db_backup_wal` (paused? failing?);
  `wal_segment_stale`: `pg_stat_archiver` and `archive_command`, or a server so idle that no segment was switched
  (set `archive_timeout` below `monitoring.freshness.wal_segment.stale_after`).
- `restore_drill_stale`: no restore drill passed within `restore.drill.max_age`: db_restore_drill fails (its
  runbook) or does not run (paused? then `dag_run_stale{dag_id="db_restore_drill"}` fires too).
- `wal_offhost_stale`: an archived WAL file has waited longer than `backup.wal_ship_within` to reach the
  object-store repository, so losing the database host now loses those trades: `db_wal_ship` paused or failing (its
  log names the store's error: credentials, bucket, network), or its runs queue behind busy workers. Once it ships
  again the rule resolves by itself; the Ops page shows the lag.
- `dag_run_stale{dag_id="..."}`: that DAG's scheduled run has not succeeded in time: paused (the UI's toggle),
  failing (its last runs), or not scheduled at all (the scheduler or dag-processor: every DAG goes stale at once,
  and the heartbeat pages). "no data" on it: the DAG is gone from the parsed DAGs: an import error (Airflow's
  UI lists it; the collector's log names the file) or a DAG removed on purpose (then
  `DELETE FROM ops.alert_rule_state WHERE rule LIKE 'dag_run_stale{dag_id="<dag>"}'`).
- The heartbeat service paged: Airflow's scheduler, dag-processor or workers are down, or system_health fails every
  run; check `airflow jobs check` and this DAG's runs.
- Too many alerts: see `SELECT * FROM ops.alert_rule_state` in the ops state database (each rule ok, pending or
  firing, with the value last seen and since when it has had no data) and `ops.alert_groups`.
- `ALERT DELIVERY FAILED` in a log: Slack or PagerDuty refused or was unreachable; the undelivered message is
  printed right after. Check the `slack_alerts` / `pagerduty_events` connections.
- A longest-transaction or connection figure of 0 while sessions are busy: the connection's user needs
  `pg_monitor` to see other sessions.

## Recovery
Nothing to repair: the next run measures again. To silence a rule after fixing its cause, let the next run
resolve it; a decommissioned host stays "no data" until its rows go: `DELETE FROM ops.alert_rule_state WHERE rule
LIKE '%instance="<host>"%'`. To forget all state, `TRUNCATE ops.alert_rule_state` (firing PagerDuty incidents must
then be resolved by hand).

## Owner
sre-dba (DBA on-call for PostgreSQL metrics and freshness, SRE on-call for host and API metrics).
Code: `trading_ops.monitoring` (`collect`, `rules`, `state`, `heartbeat`, `tasks`); delivery: `trading_ops.alerting`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args


@dag(
    description="Measure hosts, PostgreSQL, trading-api and backup freshness; alert on the rules; ping a heartbeat.",
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

    @task
    def collect_freshness_metrics() -> dict:
        from trading_ops.monitoring import tasks

        return tasks.collect_freshness_metrics()

    @task(trigger_rule="all_done")
    def evaluate_alert_rules(
        host: dict | None, postgres: dict | None, application: dict | None, freshness: dict | None
    ) -> dict:
        from trading_ops.monitoring import tasks

        return tasks.evaluate_alert_rules(host, postgres, application, freshness)

    @task
    def ping_heartbeat() -> int:
        from trading_ops.monitoring import tasks

        return tasks.ping_heartbeat()

    evaluated = evaluate_alert_rules(
        collect_host_metrics(), collect_postgres_metrics(), collect_application_metrics(), collect_freshness_metrics()
    )
    evaluated >> ping_heartbeat()


system_health()
