"""Evaluation times of the monitoring tests (a fixed first run and the minutes after it, as system_health passes
each run's time) and the metrics of a healthy platform, which a test changes where its story happens: every rule
alerts on missing data, so a test that measured only its own metric would see every other rule go "no data"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trading_ops.policy import Policy

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def healthy_metrics(policy: Policy) -> dict:
    """A value well inside every threshold for every metric system_health measures (no replication: no lag)."""
    metrics = {
        "cpu_usage_percent": 20.0,
        "memory_usage_percent": 40.0,
        **{f"disk_usage_percent.{name}": 50.0 for name in policy.monitoring.sources.disk_paths},
        "pg_up": 1.0,
        "pg_connections": 10.0,
        "pg_max_connections": 100.0,
        "pg_connection_usage_percent": 10.0,
        "pg_replicas": 0.0,
        "pg_replication_lag_seconds": None,
        "pg_longest_transaction_seconds": 1.0,
        "pg_wal_archive_failed_count": 0.0,
        "pg_wal_archive_failing": 0.0,
        "pg_database_size_bytes": 1e9,
        "prometheus_up": 1.0,
        "api_latency_p95_ms": 120.0,
        "api_latency_p99_ms": 300.0,
        "error_rate_percent": 0.05,
        "request_rate_per_second": 900.0,
        "backup_full_age_seconds": 86400.0,
        "backup_wal_bundle_age_seconds": 3600.0,
        "wal_archive_age_seconds": 60.0,
        "restore_drill_age_seconds": 86400.0,
        "wal_offhost_lag_seconds": 0.0,
        "dag_run_overdue_seconds": {'dag_id="system_health"': -14100.0},
    }
    assert set(metrics) == set(policy.monitoring.sources.metric_names()), "a metric the helper does not know"
    return metrics
