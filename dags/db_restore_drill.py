"""
# db_restore_drill

Proves every week that the newest full backup and its WAL restore, and how long that takes: the newest full backup's
base backup recovered to a point marked on the live database a moment before, on a **recovery instance on the
worker** (the machinery of db_restore's point-in-time restores), transferred and verified as a real restore is, and
recorded in the ops state database (`ops.restore_drills`). Production is never written (one restore point record
and a WAL switch aside) and no workload is scaled. Checksums do not prove a backup restores; only a restore does.

**Schedule**: `0 5 * * 0` in Asia/Seoul, Sunday four hours after db_backup_full (`0 1 * * 0`, whose tasks may take
up to its 4-hour timeout), so the week's new full backup is the one drilled. `max_active_runs=1`, no catch-up.

## Tasks
- `mark_recovery_target`: first picks the backup to drill, the newest usable full backup, waiting up to
  `restore.drill.backup_wait` (30m) when there is none yet (a new deployment: db_backup_full's first run starts
  with this DAG's). It is picked before the restore point exists and is the one drilled, whatever finishes later: a
  full backup that finished after the restore point could not recover to it. Then, on the live database
  (`restore.conn_id`), in one REPEATABLE READ transaction: SHARE locks
  on every table (writers wait until the commit, at most `restore.drill.lock_timeout` to get them; readers never
  wait), the per-table row counts, `pg_create_restore_point('trading-ops-drill-<run>-<try>')`; then
  `pg_switch_wal()` and a wait until that segment is in the archive.
- `restore_drill`: the picked full backup's checksums; its WAL chain from the base backup up to the restore
  point's segment (a missing segment fails the drill, naming it); the base backup extracted into a recovery
  instance recovering with `recovery_target_name` (WAL through `python -m trading_ops wal fetch`); the recovery
  point checked: the instance's log says it stopped at exactly that restore point, and every table has the row
  count marked; the database transferred into a scratch database on the instance itself; `verify_integrity` on it
  (row counts, amcheck, invalid objects, sequences, the archive's disjointness). The instance is removed on every
  outcome. The drill is recorded (passed or failed, with the failed phase and why), then a failed one fails the
  task: a P2 alert (`alerting.dag_levels.db_restore_drill`).
- `check_drill_health` (a teardown: runs whether the drill passed or failed, once the target was marked, and
  leaves the run's state to the drill): a P2 alert when this run's drill passed but its RTO is over
  `restore.drill.rto_budget` (1h, half the P1 resolution time of 2h: the rest is for triage, the approval and
  scaling back).
- Not here: **no drill passed within `restore.drill.max_age` (8d)** is system_health's `restore_drill_stale` rule
  (P2, fires and resolves like its other freshness rules), so it alerts even when this DAG is paused or broken.

## Why the point-in-time check is exact
`LOCK TABLE` is not a query, so the transaction's snapshot is taken by the first count, after every lock is held.
With SHARE locks held, no other transaction has uncommitted changes in those tables, and none can commit new ones
until the drill's transaction ends: the counts are the tables' state when the restore point's WAL record is
written. Recovery with `recovery_target_name` stops right after the first record of that name, so a correct
recovery has exactly those counts. One that stopped earlier (an older restore point of the same name, which is why
the name carries the run and the try) or later (the point never reached, replay ran to the end) differs in some
count or in the stop record, and fails the drill.

## What is recorded (`python -m trading_ops drills list`)
Drill id (the run's time), backup id, recovery target, outcome, failed phase and problems, seconds per phase
(`fetch`: the restore_command's time getting WAL, inside `replay`; `extract`, `replay`, `transfer`, `verify`), the
RTO (extract + replay + transfer + verify), sizes (backup, base backup stored and extracted, WAL replayed, the
recovered database). `python -m trading_ops backups list` shows per backup its last drill. Retention never deletes
the newest backup whose drill passed.

## Idempotency
The drill id is the run's time: a retried `restore_drill` records over its own drill; a retried mark makes a new
restore point (the try number is in its name). A recovery instance left by a killed try is removed by the next.

## Triage
- `mark_recovery_target` failed: no usable full backup within `backup_wait` (db_backup_full failing or paused), a
  lock not granted within `lock_timeout` (a long transaction on the live
  database: retried), or the WAL segment not archived (`archive_command` failing: see db_backup_wal's runbook).
- `restore_drill` failed: the message names the phase. `plan`: a damaged base backup (checksum) or a missing WAL
  segment: take a new full backup (trigger db_backup_full) and put the segment back if a copy exists; until then
  point-in-time recovery across the gap is impossible. `extract`/`replay`: the instance's log tail is in the
  message. A recovery point problem: counts or stop record differ; treat as a broken chain. `verify`: the restored
  copy is damaged: the backup must not be trusted.
- `restore_drill_stale` (from system_health): no drill passed in 8 days: the drill fails or does not run
  (paused? see also system_health's `dag_run_stale{dag_id="db_restore_drill"}`): look at its last runs.
- RTO over budget: the phases show where the time goes (replay: more frequent full backups; transfer/verify: more
  `jobs`); a real restore of this size will not fit the P1 resolution time.

## Recovery
Nothing to undo: the instance and its scratch copy are removed with it. Drill by hand: trigger the DAG.

## Owner
sre-dba (DBA on-call).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args
from trading_ops.restore.tasks import db_restore_drill as drill_tasks


@dag(
    description="Weekly restore drill: the newest full backup recovered to a restore point, verified, recorded.",
    schedule=cron("0 5 * * 0"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Replay is bounded by restore.recovery_timeout (2h); the transfer and verification come on top.
    default_args=default_args(execution_timeout=timedelta(hours=4)),
    tags=["database", "restore", "weekly"],
    doc_md=__doc__,
)
def db_restore_drill():
    @task
    def mark_recovery_target() -> dict:
        """Counts and a named restore point on the live database in one snapshot, its segment archived."""
        return drill_tasks.mark_recovery_target()

    @task
    def restore_drill(target: dict) -> dict:
        """Recover the newest full backup to the restore point, transfer, verify, record (P2 when it fails)."""
        return drill_tasks.restore_drill(target)

    @task
    def check_drill_health() -> str | None:
        """Alerts when this run's drill passed over restore.drill.rto_budget (drill age: system_health's rule)."""
        return drill_tasks.check_drill_health()

    marked = mark_recovery_target()
    # A teardown: it runs whether the drill passed or failed, and leaves the run's state to the drill.
    restore_drill(marked) >> check_drill_health().as_teardown(setups=marked)


db_restore_drill()
