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

**Schedule**: `0 1 * * 0` in Asia/Seoul (written here, the one place it lives), `max_active_runs=1`, no catch-up.

**Dry run** (`dry_run`, off by default: the schedule does the real work): prints the full plan (backup id,
repository, the files it would write, then the retention plan) and runs every read-only check a real run depends
on (the connection, its user's REPLICATION attribute, WAL archiving on and not failing, the repository writable,
the encryption key when encryption is on, pg_dump and pg_basebackup fitting the server); it takes no backup,
deletes nothing and sends no alert. A real run runs the same checks first: a problem a person must fix (say, a
user without REPLICATION) stops it at once with one sentence, without retries.

## Tasks
- `take_full_backup`: the checks and the plan, then writes the backup under `full/.partial-<id>/` and renames it
  to `full/<id>/` only after the manifest is complete; the id is the run's time in UTC (`20261101T010000Z`).
- `verify_full_backup`: checksums of every file, `pg_restore --list` and a full read of the dump, the base
  backup extracted to a temporary directory and checked by `pg_verifybackup` with its WAL from the archive; the
  result goes to `verified.json`. Publishes the Asset `trading_db.full_backup`. Skipped on a dry run.
- `apply_retention`: fulls older than 4 weeks, WAL bundles older than 7 days, archived WAL older than 30 days;
  never a pinned backup, the newest verified full, or WAL a retained base backup needs. Each deletion is
  logged first; a dry run only prints the plan.
- `check_backup_freshness`: runs even when the others failed; alerts (incident level of this DAG) when the newest
  verified full backup is older than `backup.stale_after.full` (8d) or the newest WAL bundle older than
  `backup.stale_after.incremental` (26h).

## Idempotency
The backup id comes from the run's logical time (`run_after` for manual runs), so a retried or cleared run finds
its own backup and does not take a second one; a half-written `.partial-` directory of a killed try is replaced.
Verification can be repeated at will; retention cutoffs come from the run's time too.

## Triage
- `take_full_backup` failed: its log names the check that refused (no REPLICATION attribute, `max_wal_senders`
  0, archiving off or failing, repository not writable, key missing) or has pg_dump's or pg_basebackup's last
  stderr lines (read rights, the repository volume full: the monitoring DAG watches it). Nothing visible was left
  behind. A dry run shows whether the fix worked without taking a backup.
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

from airflow.sdk import Asset, dag, task

from trading_ops.backup import tasks
from trading_ops.dag_defaults import cron, default_args, dry_run_param

FULL_BACKUP = Asset("trading_db.full_backup")


@dag(
    description="Weekly full backup of trading_db (pg_dump + pg_basebackup), verified, with retention.",
    schedule=cron("0 1 * * 0"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # A full backup of a large database outlasts the default hour.
    default_args=default_args(execution_timeout=timedelta(hours=4)),
    tags=["database", "backup", "weekly"],
    doc_md=__doc__,
    params={"dry_run": dry_run_param(default=False)},
)
def db_backup_full():
    @task
    def take_full_backup() -> str:
        """Checks, logs the plan, then (unless a dry run) writes `full/<id>/` atomically; returns the id."""
        return tasks.take_full_backup()

    @task(outlets=[FULL_BACKUP])
    def verify_full_backup(backup_id: str) -> dict:
        """Checksums, a full read of the dump by pg_restore, pg_verifybackup on the extracted base backup with its
        WAL; a damaged backup is marked `verified: false` and the task fails (P2)."""
        return tasks.verify("full", backup_id)

    verified = verify_full_backup(take_full_backup())
    verified >> tasks.apply_retention() >> tasks.check_backup_freshness()


db_backup_full()
