"""The tasks of the system_health DAG; the only module of the wing that reads Airflow's context (the run's time and
its URL), handing plain values to `collect` and `state`."""

from __future__ import annotations

from trading_ops.monitoring import collect, state
from trading_ops.policy import load_policy


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def collect_host_metrics() -> dict:
    return collect.collect_host_metrics(load_policy().monitoring.sources.disk_paths)


def collect_postgres_metrics() -> dict:
    return collect.collect_postgres_metrics(load_policy().monitoring.sources.database_conn_id)


def collect_application_metrics() -> dict:
    """Skipped when no Prometheus connection is set; queried at the run's time otherwise."""
    from airflow.sdk.exceptions import AirflowSkipException

    from trading_ops.runtime import run_time

    sources = load_policy().monitoring.sources
    if not sources.prometheus_conn_id:
        raise AirflowSkipException("monitoring.sources.prometheus_conn_id is not set: no application metrics.")
    return collect.collect_application_metrics(
        sources.prometheus_conn_id, sources.prometheus_queries, run_time(_context()), sources.prometheus_timeout
    )


def evaluate_alert_rules(host: dict | None, postgres: dict | None, application: dict | None) -> dict:
    """Every rule at the run's time, on what the collectors measured (None: that collector failed)."""
    from trading_ops.alerting import airflow_run_url
    from trading_ops.runtime import run_time

    policy = load_policy()
    context = _context()
    ti = context["ti"]
    return state.check_system_health(
        policy,
        {**(host or {}), **(postgres or {}), **(application or {})},
        run_time(context),
        airflow_run_url(policy, ti.dag_id, ti.run_id),
        missing=collect.missing_sources(policy, host, postgres, application),
    )
