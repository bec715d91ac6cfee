"""The db_maintenance DAG's tasks: the only module of the wing that reads Airflow's context.

Each task turns the context into plain values (the run's time through `runtime.run_time`, the `dry_run` param),
opens its own maintenance session with the policy's settings and runs one step. With `dry_run` on, every step runs
its checks and logs what it would do, and nothing is written.
"""

from __future__ import annotations

import logging
from datetime import datetime

from airflow.sdk import get_current_context

from trading_ops.maintenance import analyze, archive, partitions, plan, reindex
from trading_ops.maintenance.session import maintenance_session
from trading_ops.policy import Maintenance, load_policy
from trading_ops.runtime import run_time

log = logging.getLogger(__name__)


def _policy() -> Maintenance:
    return load_policy().maintenance


def _run() -> tuple[datetime, bool]:
    """The run's time and whether it is a dry run."""
    context = get_current_context()
    return run_time(context), bool(context["params"]["dry_run"])


def plan_maintenance() -> dict:
    moment, dry_run = _run()
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        maintenance_plan = plan.plan_maintenance(conn, cfg, moment)
    log.info("%s", plan.describe_plan(maintenance_plan, dry_run=dry_run))
    return maintenance_plan


def create_partitions() -> dict:
    moment, dry_run = _run()
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return partitions.create_future_partitions(conn, cfg, moment, dry_run=dry_run)


def archive_market_data() -> dict:
    moment, dry_run = _run()
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return archive.archive_old_rows(conn, cfg, moment, dry_run=dry_run)


def analyze_tables() -> dict:
    _, dry_run = _run()
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return analyze.analyze_tables(conn, cfg, dry_run=dry_run)


def reindex_indexes() -> dict:
    _, dry_run = _run()
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return reindex.reindex_indexes(conn, cfg, dry_run=dry_run)
