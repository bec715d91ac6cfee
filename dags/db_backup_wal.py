"""
# db_backup_wal

The manual's daily incremental backup ("every day 01:00, kept 7 days, type WAL") and the watch over its 30-day
transaction-log archive. PostgreSQL itself archives every WAL segment as it fills, through `archive_command`
(`plugins/trading_ops/backup/archive_wal.sh`, see the README) into `backup.wal_archive_dir`; this DAG proves that
archive is whole and copies each day's segments into the backup repository as `incremental/<YYYY-MM-DD>/`.

**Schedule**: `0 1 * * *` in Asia/Seoul (written here, the one place it lives), `max_active_runs=1`, no catch-up.

**Dry run** (`dry_run`, off by default: the schedule does the real work): runs every read-only check (the
connection, its user's right to call pg_switch_wal(), WAL archiving on and not failing, the archive directory
and the repository writable, the encryption key when encryption is on), checks the archive's continuity up to the
newest archived segment, and prints the plan: the bundle id, the segments and files it would write, then the
retention plan. It switches no segment, writes no bundle, deletes nothing and sends no alert.

## Tasks
- `switch_wal_segment`: the checks, then `pg_switch_wal()` and a wait (`backup.archive_wait`) until that segment
  is in the archive; fails if `pg_stat_archiver` shows archive_command failing. Logs the RPO: the age of the
  newest archived segment before the switch.
- `check_wal_continuity`: every segment from the newest full backup's base-backup start to the one just switched
  must be in the archive, on the timeline its history says (a gap makes point-in-time recovery past it
  impossible: the run fails and alerts).
- `bundle_wal_segments`: copies the segments archived since the previous bundle, compressed (and encrypted when
  the policy says so) with sha256 checksums and a manifest, into `incremental/<date>/` (date of the run in the
  policy's timezone). Publishes the Asset `trading_db.wal_backup` once verified.
- `verify_wal_bundle`: checksums, and every segment decompresses to a whole segment. Skipped on a dry run.
- `apply_retention`: the same retention as db_backup_full (a dry run prints the plan only).
- `check_backup_freshness`: runs even when the others failed; alerts when the newest verified full backup or the
  newest WAL bundle is older than `backup.stale_after`.

## Idempotency
A bundle's id is the run's date: a retried run finds its bundle and adds nothing; the next bundle starts after
the last segment of the previous one, so every archived segment lands in exactly one bundle. Switching segments
again is harmless (an idle server does not switch).

## Triage
- `switch_wal_segment` failed: read `SELECT * FROM pg_stat_archiver` and the PostgreSQL log for the
  archive_command error (archive volume full or not writable; "already exists with different content" means two
  clusters write to one archive directory).
- `check_wal_continuity` failed: the message names the missing segments. If they are still in the server's
  `pg_wal`, copy them into the archive; otherwise take a full backup now (trigger db_backup_full) so a new base
  backup starts after the gap.
- Freshness alert: `python -m trading_ops backups list`.

## Recovery
Rerun the DAG after fixing the cause; nothing it wrote needs cleaning (unfinished bundles stay `.partial-` and
are removed by retention).

## Owner
sre-dba (DBA on-call).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Asset, dag, task

from trading_ops.backup import tasks
from trading_ops.dag_defaults import cron, default_args, dry_run_param

WAL_BACKUP = Asset("trading_db.wal_backup")


@dag(
    description="Daily WAL backup of trading_db: segment switch, archive continuity, a verified bundle, retention.",
    schedule=cron("0 1 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["database", "backup", "daily"],
    doc_md=__doc__,
    params={"dry_run": dry_run_param(default=False)},
)
def db_backup_wal():
    @task
    def switch_wal_segment() -> dict:
        """pg_switch_wal() and a wait until the segment is archived; a dry run reports the newest archived one."""
        return tasks.switch_wal()

    @task
    def check_wal_continuity(switched: dict) -> dict:
        """Every segment from the newest full backup's base-backup start on is in the archive, on its timeline."""
        return tasks.wal_continuity(switched)

    @task
    def bundle_wal_segments(switched: dict) -> str:
        """The segments archived since the previous bundle, into `incremental/<date>/`; returns the bundle id."""
        return tasks.bundle_wal(switched)

    @task(outlets=[WAL_BACKUP])
    def verify_wal_bundle(bundle_id: str) -> dict:
        return tasks.verify("incremental", bundle_id)

    switched = switch_wal_segment()
    continuity = check_wal_continuity(switched)
    retention = tasks.apply_retention()
    verify_wal_bundle(bundle_wal_segments(switched)) >> retention
    [continuity, retention] >> tasks.check_backup_freshness()


db_backup_wal()
