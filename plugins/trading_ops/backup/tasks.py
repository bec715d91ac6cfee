"""The backup DAGs' boundary with Airflow: the only module of the wing that reads a task's context.

Each function turns the context into plain values (the run's time through `runtime.run_time`, the `dry_run`
param, the task's ids) and calls `jobs`. The retention and freshness tasks both DAGs end with are defined here
once. Only `airflow.sdk` and `runtime` are imported at module level: the DAG files import this while parsing.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import TriggerRule, get_current_context, task

from trading_ops.runtime import run_time


def _run() -> tuple[datetime, bool]:
    """(the run's time, whether it is a dry run)."""
    context = get_current_context()
    return run_time(context), bool(context["params"]["dry_run"])


def take_full_backup() -> str:
    from trading_ops.backup import jobs

    moment, dry_run = _run()
    return jobs.full_backup(moment, dry_run=dry_run)


def verify(backup_type, backup_id: str) -> dict:
    """Verify the backup the run wrote; a dry run wrote none, so the task is skipped (and publishes no Asset)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from trading_ops.backup import jobs

    if _run()[1]:
        raise AirflowSkipException(f"Dry run: {backup_id} was not written, so there is nothing to verify.")
    return jobs.verify(backup_type, backup_id)


def switch_wal() -> dict:
    from trading_ops.backup import jobs

    return jobs.switch_wal(dry_run=_run()[1])


def wal_continuity(switched: dict) -> dict:
    from trading_ops.backup import jobs

    return jobs.wal_continuity(switched)


def ship_wal() -> dict:
    from trading_ops.backup import jobs

    return jobs.wal_ship(dry_run=_run()[1])


def bundle_wal(switched: dict) -> str:
    from trading_ops.backup import jobs

    moment, dry_run = _run()
    return jobs.wal_bundle(moment, switched, dry_run=dry_run)


# After a skipped verification too (a dry run): what retention would delete is part of the plan.
@task(trigger_rule=TriggerRule.NONE_FAILED)
def apply_retention() -> dict:
    """Deletes fulls older than `backup.full.retention` (4w), WAL bundles older than 7 days and archived WAL older
    than 30 days; never a pinned backup, the newest verified full, or WAL a retained base backup needs. Each
    deletion is logged first; a dry run logs the plan and deletes nothing."""
    from trading_ops.backup import jobs

    moment, dry_run = _run()
    return jobs.retention(moment, dry_run=dry_run)


# Runs even when the backup failed: a stale repository is what the alert is for.
@task(trigger_rule=TriggerRule.ALL_DONE)
def check_backup_freshness() -> list[str]:
    """Alerts (the DAG's incident level) when the newest verified full backup is older than
    `backup.stale_after.full` (8d) or the newest WAL bundle older than `backup.stale_after.incremental` (26h).
    Runs even when the other tasks failed; a dry run logs what it would alert."""
    from trading_ops.backup import jobs

    moment, dry_run = _run()
    ti = get_current_context()["ti"]
    return jobs.freshness(moment, ti.dag_id, ti.task_id, dry_run=dry_run)
