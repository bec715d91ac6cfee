"""Collecting the metrics system_health evaluates: the host (psutil), PostgreSQL, and the application (a
Prometheus-compatible query API). Metrics are plain `{name: number}` dicts; a source that cannot be read is named in
one sentence (`missing_sources`) so the evaluation can fail after alerting on the others.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from pathlib import Path

from trading_ops.policy import Policy

log = logging.getLogger(__name__)


class MonitoringError(RuntimeError):
    """A metric source answered with an error, or alerts could not be delivered."""


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def collect_host_metrics(disk_paths: dict[str, str]) -> dict[str, float]:
    """CPU and memory usage of this host and usage of each named volume, in percent."""
    import psutil

    metrics = {
        "cpu_usage_percent": psutil.cpu_percent(interval=1),
        "memory_usage_percent": psutil.virtual_memory().percent,
    }
    for name, path in disk_paths.items():
        # A directory not created yet (no backup so far) lives on the volume of its nearest existing parent.
        volume = _existing_ancestor(Path(path))
        if volume != Path(path):
            log.warning("Disk path %s (%s) does not exist; measuring its volume at %s", path, name, volume)
        metrics[f"disk_usage_percent.{name}"] = psutil.disk_usage(str(volume)).percent
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


def _sample_value(name: str, data: dict) -> float | None:
    """The value of an instant query's answer: a scalar or a one-series vector; None for no data or NaN.

    Several series fail: which one to take (the worst instance? their sum?) depends on the metric, so the query in
    the policy must aggregate, not this code guess.
    """
    if data["resultType"] == "scalar":
        raw = data["result"][1]
    elif len(data["result"]) > 1:
        labels = ", ".join(
            "{" + ", ".join(f'{key}="{value}"' for key, value in series["metric"].items()) + "}"
            for series in data["result"][:5]
        )
        raise MonitoringError(
            f"The {name} query answered {len(data['result'])} series ({labels}) where one is needed: aggregate it in "
            "prometheus_queries (max, sum, avg)."
        )
    elif data["result"]:
        raw = data["result"][0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def collect_application_metrics(
    conn_id: str, queries: dict[str, str], at: datetime, timeout: timedelta
) -> dict[str, float | None]:
    """Each named PromQL query evaluated at `at` through the Prometheus HTTP API (GET /api/v1/query) of the
    Airflow HTTP connection `conn_id` (its host, port, scheme, credentials and TLS options)."""
    from trading_ops.http_connections import http_session

    session, base_url = http_session(conn_id)
    endpoint = f"{base_url}/api/v1/query"
    metrics: dict[str, float | None] = {}
    with session:
        for name, query in queries.items():
            response = session.get(
                endpoint, params={"query": query, "time": f"{at.timestamp():.3f}"}, timeout=timeout.total_seconds()
            )
            try:
                body = response.json()
            except ValueError:
                response.raise_for_status()
                raise MonitoringError(
                    f"Prometheus at {endpoint} answered {name} with a body that is not JSON."
                ) from None
            if body.get("status") != "success":
                raise MonitoringError(
                    f"Prometheus at {endpoint} refused the {name} query: {body.get('errorType')}: {body.get('error')}."
                )
            metrics[name] = _sample_value(name, body["data"])
    return metrics


def missing_sources(policy: Policy, host: dict | None, postgres: dict | None, application: dict | None) -> list[str]:
    """One sentence for each metric source whose metrics the evaluation lacks: its collector failed (None), or
    PostgreSQL did not answer."""
    missing = []
    if host is None:
        missing.append("collect_host_metrics failed: no host metric was evaluated.")
    if postgres is None:
        missing.append("collect_postgres_metrics failed: no PostgreSQL metric was evaluated.")
    elif not postgres.get("pg_up"):
        missing.append(
            f"PostgreSQL ({policy.monitoring.sources.database_conn_id}) is unreachable: only pg_up was measured there."
        )
    if application is None and policy.monitoring.sources.prometheus_conn_id:
        missing.append("collect_application_metrics failed: no application metric was evaluated.")
    return missing
