"""
# db_maintenance: daily archive, analyze and reindex of trading_db

**Purpose.** The manual's daily database maintenance (section 3): move `market_data` rows older than the retention
(3 months) to `market_data_archive`, refresh planner statistics, rebuild bloated indexes. Unlike the manual's SQL it
never blocks the trading writers (no plain `REINDEX`, no long transaction, every lock wait bounded by
`lock_timeout`) and cannot lose or duplicate a row, whenever it is stopped.

**Schedule.** Daily at 03:00 Asia/Seoul (policy `maintenance.schedule`), after the 01:00 backups. Numbers come from
`maintenance:` in `include/config/ops_policy.yaml`.

**Tasks.**
1. `plan_maintenance`: checks the policy against the tables (same columns, integer key, partition layout) and
   stops the run with one sentence if they do not fit, before anything changes. Logs and returns (XCom) the plan:
   cutoff, partitions to move whole, rows to move in batches, partitions to create, tables to analyze, and every
   index with its estimated bloat and what happens to it.
2. `check_dry_run`: with the parameter `dry_run` on, the run stops here and the other tasks are skipped.
3. `create_partitions`: when `market_data` is partitioned by month, makes sure partitions exist for the run's month
   and `premake_partitions` months after it (pg_partman-style premake). Nothing to do when it is not partitioned.
4. `archive_market_data`: cutoff = the run's logical date (manual runs: `run_after`) minus `retention_months`.
   Partitions entirely older than the cutoff are detached (`DETACH PARTITION ... CONCURRENTLY`) and attached to
   the archive; the remaining old rows move in batches of about `batch_size` rows, each its own REPEATABLE READ
   transaction (copy, then delete the same rows). Logs progress per batch and returns the summary (rows and
   partitions moved, bytes, WAL written, duration) as XCom.
5. `analyze_tables`: `ANALYZE (VERBOSE)` table by table with the time each took; the VERBOSE lines are in the log.
6. `reindex_indexes`: drops invalid `_ccnew`/`_ccold` leftovers of interrupted rebuilds, then `REINDEX INDEX
   CONCURRENTLY` index by index: all of them (`reindex.mode: all`) or only those at least `min_index_size` big with
   an estimated bloat over `bloat_threshold_percent` (`bloated`); invalid indexes are rebuilt; leftovers are dropped
   again at the end. One index failing does not stop the others; the task then fails naming them.

Archiving comes first (the manual's order is the reverse) because deleting the archived rows is what leaves the
statistics stale and the indexes bloated, and the bloat estimate needs fresh statistics.

**Idempotency.** Rerun any task or the whole run freely. The cutoff depends only on the run's logical date, so a
rerun moves the rows the first attempt did not. A batch is one transaction: killed mid-way it rolls back, and the
rerun moves it again. A partition left detached or "detach pending" by a stopped run is found by the next run
(`DETACH ... FINALIZE`, then attached to the archive). Reindex and analyze only rebuild and refresh.

**How to rerun.** Clear the failed task (or the run) in the UI; or trigger the DAG with `{"dry_run": true}` first to
see the plan. A manual trigger without a logical date archives relative to the moment it was triggered.

**Triage.**
- *Plan failed with one sentence*: the policy and the tables disagree (e.g. `market_data_archive` lacks a column,
  `market_data` is partitioned but the archive is not). Fix what it names; nothing was changed.
- *Lock timeouts in the log* (`canceling statement due to lock timeout`, then `retry n of m`): a long transaction
  holds a lock; the task gives up waiting rather than stall the writers behind it. Find it with
  `SELECT pid, state, xact_start, query FROM pg_stat_activity ORDER BY xact_start` and let it finish or end it.
- *Reindex failed*: the task names the indexes and the error, the other indexes were rebuilt. Invalid copies
  (`<index>_ccnew`) were dropped at the end; if one remains (its drop also timed out), the next run drops it, or
  run `DROP INDEX CONCURRENTLY <index>_ccnew;`. A unique index failing with a duplicate key has duplicates: fix the
  data, then clear the task. The old index stays valid and in use throughout.
- *Archive: rows left behind* (warning): rows were locked by another session or inserted meanwhile; the next run
  moves them. *Serialization errors* are retried automatically (a writer changed an old row during a batch).
- *`no partition of relation found for row`* in the application: the premade partitions ran out (this DAG did not
  run for `premake_partitions` months); clear `create_partitions`.
- Session: the DAG's connections show as `application_name = 'trading-ops db_maintenance'` in pg_stat_activity.

**Recovery.** Interrupted runs need nothing but a rerun (see Idempotency). To check the archive's integrity:
`SELECT count(*) FROM market_data m JOIN market_data_archive a USING (id);` must be 0. To move to the partitioned
layout (where archiving is a catalog change instead of a rewrite): pause this DAG, run
`python -m trading_ops.partitioning convert --dry-run`, then without `--dry-run`, and unpause (README, "Database
maintenance").

**Owner.** sre-dba (failures page at level P2, `alerting.dag_levels.db_maintenance`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from trading_ops.dag_defaults import cron, default_args


@dag(
    dag_id="db_maintenance",
    schedule=cron("0 3 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["database", "maintenance", "daily"],
    params={
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Only log the plan (indexes and their bloat, partitions and rows to archive); change nothing.",
        )
    },
    doc_md=__doc__,
)
def db_maintenance():
    @task
    def plan_maintenance(**context) -> dict:
        from trading_ops.maintenance import plan_task

        return plan_task(context)

    @task.short_circuit
    def check_dry_run(params=None) -> bool:
        return not params["dry_run"]

    @task
    def create_partitions(**context) -> dict:
        from trading_ops.maintenance import create_partitions_task

        return create_partitions_task(context)

    @task
    def archive_market_data(**context) -> dict:
        from trading_ops.maintenance import archive_task

        return archive_task(context)

    @task
    def analyze_tables() -> dict:
        from trading_ops.maintenance import analyze_task

        return analyze_task()

    @task
    def reindex_indexes() -> dict:
        from trading_ops.maintenance import reindex_task

        return reindex_task()

    (
        plan_maintenance()
        >> check_dry_run()
        >> create_partitions()
        >> archive_market_data()
        >> analyze_tables()
        >> reindex_indexes()
    )


db_maintenance()
