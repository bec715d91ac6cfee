"""Collecting the metrics system_health evaluates: the platform's hosts (node-exporter through Prometheus, or this
worker's psutil as a single-host fallback), PostgreSQL, and the application (a Prometheus-compatible query API).

Metrics are a `{name: value}` dict. A value is a number, None (no data: the query answered nothing or NaN), or, for
host metrics, `{series: number}` with one entry per host, `series` being its labels in PromQL notation
(`instance="db-1:9100"`). A source that cannot be reached is measured too: `pg_up` / `prometheus_up` 0, which rules
alert on, with the reason in `missing_sources`, so the evaluation can fail after alerting.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from datetime import datetime, timedelta
from pathlib import Path
from string import Template

from trading_ops.policy import (
    DAG_RUN_OVERDUE_METRIC,
    DRILL_AGE_METRIC,
    FRESHNESS_METRICS,
    OFFHOST_LAG_METRIC,
    SOURCE_UP_METRICS,
    MetricSources,
    Policy,
)

log = logging.getLogger(__name__)

PROMETHEUS_UP = SOURCE_UP_METRICS["prometheus"]
PROMETHEUS_ERROR = "prometheus_error"


class MonitoringError(RuntimeError):
    """A metric source answered something unusable, or alerts could not be delivered."""


class PrometheusUnavailable(MonitoringError):
    """Prometheus could not be reached or refused a query."""


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def psutil_series() -> str:
    """The series label of this worker's own measurements: it is one host, and says it is psutil's."""
    return f'instance="{socket.gethostname()}",source="psutil"'


def collect_psutil_host_metrics(disk_paths: dict[str, str]) -> dict[str, dict[str, float]]:
    """CPU and memory usage of this worker host and usage of each named volume, in percent, labelled as this host."""
    import psutil

    series = psutil_series()
    metrics = {
        "cpu_usage_percent": {series: psutil.cpu_percent(interval=1)},
        "memory_usage_percent": {series: psutil.virtual_memory().percent},
    }
    for name, path in disk_paths.items():
        # A directory not created yet (no backup so far) lives on the volume of its nearest existing parent.
        volume = _existing_ancestor(Path(path))
        if volume != Path(path):
            log.warning("Disk path %s (%s) does not exist; measuring its volume at %s", path, name, volume)
        metrics[f"disk_usage_percent.{name}"] = {series: psutil.disk_usage(str(volume)).percent}
    return metrics


def collect_postgres_metrics(conn_id: str) -> dict[str, float | str | None]:
    """Connections, replication lag, longest transaction, WAL archiving and size of the database.

    A server that does not answer is a measurement too, `pg_up` 0, which the `postgres_down` rule alerts on.
    """
    import psycopg
    from psycopg.rows import dict_row

    from trading_ops.db import connect
    from trading_ops.sqlfiles import load_sql

    try:
        conn = connect(conn_id, autocommit=True)
    except psycopg.OperationalError as exc:
        log.error("PostgreSQL (%s) is unreachable: %s", conn_id, str(exc).strip())
        return {"pg_up": 0.0}
    try:
        conn.row_factory = dict_row
        row = conn.execute(load_sql("monitoring/select_postgres_health.sql")).fetchone()
    finally:
        conn.close()
    last_failed = row["wal_archive_last_failed_time"]
    return {
        "pg_up": 1.0,
        "pg_connections": float(row["connections"]),
        "pg_max_connections": float(row["max_connections"]),
        "pg_connection_usage_percent": round(100.0 * row["connections"] / row["max_connections"], 2),
        "pg_replicas": float(row["replicas"]),
        "pg_replication_lag_seconds": None
        if row["replication_lag_seconds"] is None
        else float(row["replication_lag_seconds"]),
        "pg_longest_transaction_seconds": float(row["longest_transaction_seconds"]),
        "pg_wal_archive_failed_count": float(row["wal_archive_failed_count"]),
        "pg_wal_archive_failing": float(row["wal_archive_failing"]),
        "pg_wal_archive_last_failed_wal": row["wal_archive_last_failed_wal"],
        "pg_wal_archive_last_failed_time": last_failed.isoformat() if last_failed else None,
        "pg_database_size_bytes": float(row["database_size_bytes"]),
    }


def series_label(labels: dict[str, str]) -> str:
    """A series' labels in PromQL notation, sorted, without the metric name: `instance="db-1:9100",job="node"`."""
    return ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()) if key != "__name__")


def _number(raw: str) -> float | None:
    value = float(raw)
    return None if math.isnan(value) else value


def _single_value(name: str, data: dict) -> float | None:
    """The value of an instant query's answer: a scalar or a one-series vector; None for no data or NaN.

    Several series fail: which one to take (the worst instance? their sum?) depends on the metric, so the query in
    the policy must aggregate, not this code guess.
    """
    if data["resultType"] == "scalar":
        return _number(data["result"][1])
    if len(data["result"]) > 1:
        labels = ", ".join("{" + series_label(series["metric"]) + "}" for series in data["result"][:5])
        raise MonitoringError(
            f"The {name} query answered {len(data['result'])} series ({labels}) where one is needed: aggregate it in "
            "prometheus_queries (max, sum, avg)."
        )
    return _number(data["result"][0]["value"][1]) if data["result"] else None


def _per_series(data: dict) -> dict[str, float]:
    """{series label: value} of an instant vector; series answering NaN have no data and are left out."""
    values = {}
    for series in data["result"]:
        value = _number(series["value"][1])
        if value is not None:
            values[series_label(series["metric"])] = value
    return values


def query_prometheus(conn_id: str, queries: dict[str, str], at: datetime, timeout: timedelta) -> dict[str, dict]:
    """Each named PromQL query evaluated at `at` through the Prometheus HTTP API (GET /api/v1/query) of the Airflow
    HTTP connection `conn_id` (its host, port, scheme, credentials and TLS options); returns each answer's `data`.

    Raises PrometheusUnavailable, naming the endpoint and the error, when Prometheus cannot be reached or refuses.
    """
    import requests

    from trading_ops.http_connections import http_session

    try:
        session, base_url = http_session(conn_id)
    except Exception as exc:  # the connection is not defined, or not an HTTP one
        raise PrometheusUnavailable(f"the Prometheus connection {conn_id!r} cannot be used: {exc}") from None
    endpoint = f"{base_url}/api/v1/query"
    answers = {}
    with session:
        for name, query in queries.items():
            try:
                response = session.get(
                    endpoint, params={"query": query, "time": f"{at.timestamp():.3f}"}, timeout=timeout.total_seconds()
                )
                body = response.json()
            except requests.RequestException as exc:
                raise PrometheusUnavailable(f"{endpoint} did not answer the {name} query: {exc}") from None
            except ValueError:
                raise PrometheusUnavailable(
                    f"{endpoint} answered the {name} query with HTTP {response.status_code} and a body that is not "
                    "JSON."
                ) from None
            if body.get("status") != "success":
                raise PrometheusUnavailable(
                    f"{endpoint} refused the {name} query (HTTP {response.status_code}): {body.get('errorType')}: "
                    f"{body.get('error')}."
                )
            answers[name] = body["data"]
    return answers


def _unavailable(conn_id: str, error: PrometheusUnavailable) -> dict:
    log.error("Prometheus (%s) is unavailable: %s", conn_id, error)
    return {PROMETHEUS_UP: 0.0, PROMETHEUS_ERROR: str(error)}


def query_single_values(
    conn_id: str, queries: dict[str, str], at: datetime, timeout: timedelta
) -> dict[str, float | None]:
    """One value per query (None: no data); raises PrometheusUnavailable (a MonitoringError) when it cannot be read."""
    answers = query_prometheus(conn_id, queries, at, timeout)
    return {name: _single_value(name, data) for name, data in answers.items()}


def collect_application_metrics(
    conn_id: str, queries: dict[str, str], at: datetime, timeout: timedelta
) -> dict[str, float | str | None]:
    """The application's metrics, one value per query (None: no data), and `prometheus_up`."""
    try:
        values = query_single_values(conn_id, queries, at, timeout)
    except PrometheusUnavailable as exc:
        return _unavailable(conn_id, exc)
    return {PROMETHEUS_UP: 1.0, **values}


def host_queries(sources: MetricSources) -> dict[str, str]:
    """The node-exporter query of every host metric, one per watched volume for disk usage."""
    queries = {
        "cpu_usage_percent": sources.host_queries.cpu_usage_percent,
        "memory_usage_percent": sources.host_queries.memory_usage_percent,
    }
    disk = Template(sources.host_queries.disk_usage_percent)
    for name, mountpoint in sources.disk_paths.items():
        queries[f"disk_usage_percent.{name}"] = disk.substitute(mountpoint=mountpoint)
    return queries


def collect_node_metrics(sources: MetricSources, at: datetime) -> dict[str, dict[str, float] | float | str]:
    """Host metrics of every host node-exporter reports, one series per instance, and `prometheus_up`."""
    try:
        answers = query_prometheus(sources.prometheus_conn_id, host_queries(sources), at, sources.prometheus_timeout)
    except PrometheusUnavailable as exc:
        return _unavailable(sources.prometheus_conn_id, exc)
    return {PROMETHEUS_UP: 1.0, **{name: _per_series(data) for name, data in answers.items()}}


def collect_host_metrics(sources: MetricSources, at: datetime) -> dict:
    """The host metrics from the source the policy puts in force (`monitoring.sources.host_metrics`)."""
    if sources.host_metrics == "psutil":
        return collect_psutil_host_metrics(sources.disk_paths)
    return collect_node_metrics(sources, at)


def newest_wal_segment_time(archive_dir: Path) -> datetime | None:
    """When the newest WAL segment reached the archive (its file's modification time); None: none there."""
    from datetime import UTC

    from trading_ops.backup.wal_names import SEGMENT_RE

    times = [entry.stat().st_mtime for entry in os.scandir(archive_dir) if SEGMENT_RE.match(entry.name)]
    return datetime.fromtimestamp(max(times), UTC) if times else None


def collect_freshness_metrics(policy: Policy, at: datetime) -> dict[str, float | None]:
    """Ages at `at`, in seconds, of the newest verified full backup, the newest WAL bundle that did not fail its
    verification, the newest archived WAL segment and the newest passed restore drill, and how long the oldest
    archived WAL file not yet shipped to an object-store repository has waited; None where there is none at all (or,
    for the last, where the repository is on this host's disk)."""
    from trading_ops.backup import repository_from_policy, staleness
    from trading_ops.backup.wal_ship import offhost_lag
    from trading_ops.restore.drill import passed_drill_age

    repository = repository_from_policy(policy)
    freshness = policy.monitoring.freshness
    ages = {
        FRESHNESS_METRICS["full_backup"]: staleness(repository, "full", at, freshness.full_backup.stale_after).age,
        FRESHNESS_METRICS["wal_bundle"]: staleness(repository, "incremental", at, freshness.wal_bundle.stale_after).age,
    }
    newest_segment = newest_wal_segment_time(Path(policy.backup.wal_archive_dir))
    ages[FRESHNESS_METRICS["wal_segment"]] = max(at - newest_segment, timedelta(0)) if newest_segment else None
    metrics = {name: None if age is None else age.total_seconds() for name, age in ages.items()}
    metrics[DRILL_AGE_METRIC] = passed_drill_age(policy.alerting.state_conn_id, at)
    lag = offhost_lag(repository, Path(policy.backup.wal_archive_dir), at, policy.backup.transaction_logs.retention)
    metrics[OFFHOST_LAG_METRIC] = None if lag is None else lag.total_seconds()
    return metrics


def collect_dag_run_metrics(policy: Policy, at: datetime, dags, count) -> dict[str, dict[str, float]]:
    """How overdue each scheduled DAG of `dags` (parsed DAG objects) is at `at`, one series per dag_id, from Airflow's
    record of runs (`count`, see `dag_runs.RunCounter`)."""
    from trading_ops.monitoring import dag_runs

    scheduled = dag_runs.scheduled_dags(dags)
    slack = policy.monitoring.freshness.dag_runs.slack
    return {DAG_RUN_OVERDUE_METRIC: dag_runs.measure(scheduled, at, slack, count)}


def merge_metrics(*parts: dict | None) -> dict:
    """One dict of the collectors' metrics; a source measured down by any collector is down."""
    merged: dict = {}
    for part in parts:
        for name, value in (part or {}).items():
            if name in SOURCE_UP_METRICS.values() and name in merged:
                merged[name] = min(merged[name], value)
            elif name == PROMETHEUS_ERROR and name in merged:
                continue
            else:
                merged[name] = value
    return merged


def missing_sources(
    policy: Policy, host: dict | None, postgres: dict | None, application: dict | None, freshness: dict | None
) -> list[str]:
    """One sentence for each metric source whose metrics the evaluation lacks: its collector failed (None), or the
    source could not be reached."""
    sources = policy.monitoring.sources
    missing = []
    for task, metrics, what in (
        ("collect_host_metrics", host, "host"),
        ("collect_postgres_metrics", postgres, "PostgreSQL"),
        ("collect_application_metrics", application, "application"),
        ("collect_freshness_metrics", freshness, "backup, WAL, drill or DAG run freshness"),
    ):
        if metrics is None:
            missing.append(f"{task} failed: no {what} metric was evaluated.")
    if postgres is not None and not postgres.get("pg_up"):
        missing.append(f"PostgreSQL ({sources.database_conn_id}) is unreachable: only pg_up was measured there.")
    error = merge_metrics(host, application).get(PROMETHEUS_ERROR)
    if error:
        missing.append(f"Prometheus ({sources.prometheus_conn_id}) is unavailable: {error}")
    return missing
