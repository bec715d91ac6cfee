"""
# db_wal_ship

Takes the WAL archive off the database host. PostgreSQL's `archive_command` (`archive_wal.sh`) writes every
segment into `backup.wal_archive_dir` on the host; this DAG copies each archived segment and timeline history
file into the repository's `wal/` (compressed, and encrypted when the policy says so, like the bundles), so a lost
host costs at most `backup.wal_ship_within` (5m) of committed work instead of a day. Only an object-storage
repository (`backup.repository: s3://...`) is shipped to; with a local repository the run says so and ends.

**Why a shipping step and not an archive-push command in archive_command**: the store's credentials are the
Airflow connection `backup.repository_conn_id`, which the database host (archive_command runs there as postgres,
once per segment, without Airflow) should not hold; and a store outage inside archive_command would stall
PostgreSQL's archiver and fill `pg_wal`. The local archive stays the fast first copy, and shipping never blocks
the server. Worst case off-host delay: one schedule interval (1 minute) plus one run, inside the 5 minutes.

**Schedule**: `* * * * *` (every minute), `max_active_runs=1`, no catch-up: a run ships everything not yet shipped,
so a skipped minute is caught up by the next run.

**Dry run** (`dry_run`): checks the repository (with the connection's credentials) and the encryption key, lists
what it would ship; uploads nothing.

## Tasks
- `ship_wal`: every archived file the repository's `wal/` lacks: the file, then its record `<name>.json`
  (checksums, archived_at, shipped_at) which publishes it. Logs the longest off-host delay of the run.

## Idempotency
A file whose record exists is skipped; an upload killed midway left no record, so the next run uploads it again.
If the archive's file changed after it was shipped, its checksum is compared: the same content is success, a
different one fails the run (`WalShipConflict`: two clusters share the repository prefix, or the cluster was
re-initialised).

## Triage
- "refused the credentials of connection ...": fix the `aws` connection (login = access key id, password =
  secret, extra `endpoint_url` / `region_name`).
- "... failed while shipping WAL file ...": the store failed or dropped the connection; the next run retries.
- `WalShipConflict`: give this cluster its own repository prefix; never delete the other cluster's WAL.
- Off-host delay over the limit (system_health's `wal_offhost_stale`, P2, measured every 5 minutes from the
  archive and the repository whatever this DAG does): is this DAG paused or failing, or the scheduler down?
  (system_health's heartbeat).

## Recovery
Nothing to clean: unpublished uploads are invisible, and retention removes shipped WAL after
`backup.transaction_logs.retention` (30d), never a segment a kept base backup needs. `db_restore` and
`wal fetch` read the repository's copy of any segment the local archive lacks.

## Owner
sre-dba (DBA on-call).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from trading_ops.backup import tasks
from trading_ops.dag_defaults import cron, default_args, dry_run_param


@dag(
    description="Every minute: archived WAL segments copied off the database host into the object-store repository.",
    schedule=cron("* * * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Retries soon (a dropped connection), inside the off-host budget; later runs wait (max_active_runs=1).
    default_args=default_args(retry_delay=timedelta(seconds=15), max_retry_delay=timedelta(minutes=1)),
    dagrun_timeout=timedelta(minutes=10),
    tags=["database", "backup"],
    doc_md=__doc__,
    params={"dry_run": dry_run_param(default=False)},
)
def db_wal_ship():
    @task(execution_timeout=timedelta(minutes=9))
    def ship_wal() -> dict:
        """The archived WAL files the repository lacks, each uploaded then published by its record."""
        return tasks.ship_wal()

    ship_wal()


db_wal_ship()
