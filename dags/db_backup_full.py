"""
# db_backup_full

The manual's weekly full backup ("every Sunday 01:00, kept 4 weeks, type snapshot"), done the way pgBackRest and
Barman do it: one backup directory `full/<backup-id>/` in the repository (policy `backup.repository`) holding

- a **logical snapshot**: `pg_dump -Fc` of trading_db, the `backup.dump` the manual's recovery procedure feeds to
  `pg_restore`, taken in an exported snapshot so the per-table row counts in the manifest match it exactly;
- a **physical base backup** of the cluster (`pg_basebackup`, WAL from the archive), the starting point for
  point-in-time recovery with the archived WAL;
- `manifest.json`: times, WAL range and timeline, server version, database size, row counts, tool versions, and
  the size and sha256 of every file; compression (`backup.compression`) and optional encryption (age, key from
  the connection named in `backup.encryption.key_conn_id`, its public key recorded as the key id).

**Schedule**: `0 1 * * 0` in Asia/Seoul (policy `backup.full.schedule`), `max_active_runs=1`, no catch-up.

## Tasks
- `take_full_backup`: writes the backup under `full/.partial-<id>/` and renames it to `full/<id>/` only after the
  manifest is complete; the id is the run's logical time in UTC (`20261101T010000Z`).
- `verify_full_backup`: checksums of every file, `pg_restore --list` and a full read of the dump, the base
  backup extracted to a temporary directory and checked by `pg_verifybackup` with its WAL from the archive; the
  result goes to `verified.json`. Publishes the Asset `trading_db.full_backup`.
- `apply_retention`: fulls older than 4 weeks, WAL bundles older than 7 days, archived WAL older than 30 days;
  never a pinned backup, the newest verified full, or WAL a retained base backup needs. Each deletion is
  logged first; the `dry_run` parameter only prints the plan.
- `check_backup_freshness`: runs even when the others failed; alerts (incident level of this DAG) when the newest
  verified full backup is older than `backup.stale_after.full` (8d) or the newest WAL bundle older than
  `backup.stale_after.incremental` (26h).

## Idempotency
The backup id comes from the run's logical time (`run_after` for manual runs), so a retried or cleared run finds
its own backup and does not take a second one; a half-written `.partial-` directory of a killed try is replaced.
Verification can be repeated at will; retention cutoffs come from the run's time too.

## Triage
- `take_full_backup` failed: its log has pg_dump's or pg_basebackup's last stderr lines. Common causes: the
  `trading_db` connection's user lacks REPLICATION (pg_basebackup) or read rights, `max_wal_senders` is 0, the
  repository volume is full (the monitoring DAG watches it). Nothing visible was left behind.
- `verify_full_backup` failed: the backup is marked `verified: false` and `latest` skips it; the message names
  the damaged file or the tool that rejected it. Check the disk, then trigger a new run (a new id, a new backup;
  clearing the failed run only re-verifies the same files). Retention ages the damaged one out, or delete it.
- Freshness alert: `python -m trading_ops backups list` shows what exists and since when.

## Recovery
See the README section "Backups": list, verify, pin by hand. Restores run in `db_restore` (`latest` = the newest
verified full backup).

## Owner
sre-dba (DBA on-call).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task

from trading_ops.backup.dag_tasks import apply_retention, check_backup_freshness
from trading_ops.dag_defaults import cron, default_args

FULL_BACKUP = Asset("trading_db.full_backup")


@dag(
    schedule=cron("0 1 * * 0"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # A full backup of a large database outlasts the default hour.
    default_args=default_args(execution_timeout=timedelta(hours=4)),
    tags=["database", "backup", "weekly"],
    doc_md=__doc__,
    params={
        "dry_run": Param(False, type="boolean", description="Retention only prints what it would delete."),
    },
)
def db_backup_full():
    @task
    def take_full_backup() -> str:
        from trading_ops.backup import tasks

        return tasks.full_backup(tasks.run_moment(get_current_context()))

    @task(outlets=[FULL_BACKUP])
    def verify_full_backup(backup_id: str) -> dict:
        from trading_ops.backup import tasks

        return tasks.verify("full", backup_id)

    verified = verify_full_backup(take_full_backup())
    verified >> apply_retention() >> check_backup_freshness()


db_backup_full()
