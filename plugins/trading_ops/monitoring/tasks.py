"""The tasks of the system_health DAG; the only module of the wing that reads Airflow's context (the run's time and
its URL), handing plain values to `collect` and `state`."""

from __future__ import annotations

import logging

from trading_ops.monitoring import collect, heartbeat, state
from trading_ops.policy import load_policy

log = logging.getLogger(__name__)


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def collect_host_metrics() -> dict:
    """From the source in force (`monitoring.sources.host_metrics`: node-exporter through Prometheus, or psutil)."""
    from trading_ops.runtime import run_time

    return collect.collect_host_metrics(load_policy().monitoring.sources, run_time(_context()))


def collect_postgres_metrics() -> dict:
    return collect.collect_postgres_metrics(load_policy().monitoring.sources.database_conn_id)


def collect_application_metrics() -> dict:
    """Queried at the run's time; Prometheus unreachable is measured as `prometheus_up` 0."""
    from trading_ops.runtime import run_time

    sources = load_policy().monitoring.sources
    return collect.collect_application_metrics(
        sources.prometheus_conn_id, sources.prometheus_queries, run_time(_context()), sources.prometheus_timeout
    )


def _parsed_dags() -> list:
    """The DAGs of every DAG bundle of the deployment (`[dag_processor] dag_bundle_config_list`; by default the
    dags folder) as Airflow parses them; a file that fails to parse is logged (its DAG then has no data, which
    alerts)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag

    dags = []
    for bundle in DagBundlesManager().get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = DagBag(dag_folder=str(bundle.path), bundle_path=bundle.path, bundle_name=bundle.name)
        for path, error in bag.import_errors.items():
            log.error("DAG file %s does not parse: %s", path, (error.strip().splitlines() or [""])[-1])
        dags += bag.dags.values()
    return dags


def collect_freshness_metrics() -> dict:
    """Ages of the newest verified full backup, WAL bundle, archived WAL segment and passed restore drill at the
    run's time, and how overdue each scheduled DAG's next successful run is (from Airflow's record, through the Task
    SDK: task code cannot read the metadata database)."""
    from trading_ops.runtime import run_time

    policy = load_policy()
    context = _context()
    at = run_time(context)
    ti = context["ti"]

    def count(dag_id: str, logical_dates, states) -> int:
        return ti.get_dr_count(dag_id, logical_dates=logical_dates, states=states)

    return {
        **collect.collect_freshness_metrics(policy, at),
        **collect.collect_dag_run_metrics(policy, at, _parsed_dags(), count),
    }


def evaluate_alert_rules(
    host: dict | None, postgres: dict | None, application: dict | None, freshness: dict | None
) -> dict:
    """Every rule at the run's time, on what the collectors measured (None: that collector failed)."""
    from trading_ops.alerting import airflow_run_url
    from trading_ops.runtime import run_time

    policy = load_policy()
    context = _context()
    ti = context["ti"]
    return state.check_system_health(
        policy,
        collect.merge_metrics(host, postgres, application, freshness),
        run_time(context),
        airflow_run_url(policy, ti.dag_id, ti.run_id),
        missing=collect.missing_sources(policy, host, postgres, application, freshness),
    )


def ping_heartbeat() -> int:
    """The dead man's switch: reached only when every earlier task of the run succeeded."""
    monitoring = load_policy().monitoring
    return heartbeat.ping(monitoring.heartbeat_conn_id, _context()["ti"].run_id, monitoring.heartbeat_timeout)
