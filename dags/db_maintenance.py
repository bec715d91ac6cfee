"""
# db_maintenance: daily archive, analyze and reindex of trading_db

**Purpose.** The manual's daily database maintenance (section 3): move `market_data` rows older than the retention
(3 months) to `market_data_archive`, refresh planner statistics, rebuild bloated indexes. Unlike the manual's SQL it
never blocks the trading writers (no plain `REINDEX`, no long transaction, every lock wait bounded by
`lock_timeout`) and cannot lose or duplicate a row, whenever it is stopped.

**Schedule.** Daily at 03:00 Asia/Seoul (this file's schedule), after the 01:00 backups. Numbers come from
`maintenance:` in `include/config/ops_policy.yaml`; the logic is the `trading_ops.maintenance` wing.

**Scope.** Like the manual's `ANALYZE VERBOSE` and `REINDEX DATABASE`, analyze and reindex cover every user schema
(all but `pg_catalog`, `information_schema` and the TOAST and temporary schemas); the policy's `maintenance.schemas`
(a list, e.g. `[public]`) narrows them. Archiving works on `maintenance.archive`'s tables.

**Dry run.** The `dry_run` param (off by default: the schedule does the real work) has its one meaning: every task
runs its checks and logs what it would do (the plan, the partitions it would create, the partitions and rows it would
move, the tables it would analyze, the indexes it would rebuild or drop) and returns it as XCom; nothing is written.

**Tasks.**
1. `plan_maintenance`: checks the policy against the tables (same columns, integer key, partition layout, the
   schemas named exist) and the connection's role against every step (row privileges on the archive's tables, the
   owner's privileges for ANALYZE, REINDEX and partition DDL, CREATE for new partitions) and stops the run with one
   sentence if they do not fit, before anything changes, without retries. Logs and returns (XCom) the plan: cutoff,
   partitions to move whole, rows to move in batches, partitions to create, the schemas maintained, tables to
   analyze, and every index with its estimated bloat and what happens to it.
2. `create_partitions`: when `market_data` is partitioned by month, makes sure partitions exist for the run's month
   and `premake_partitions` months after it (pg_partman-style premake). Nothing to do when it is not partitioned.
3. `archive_market_data`: cutoff = the run's logical date (manual runs: `run_after`) minus `retention_months`.
   Partitions entirely older than the cutoff are detached (`DETACH PARTITION ... CONCURRENTLY`) and attached to
   the archive; the remaining old rows move in batches of about `batch_size` rows, each its own REPEATABLE READ
   transaction (copy, then delete the same rows). Logs progress per batch and returns the summary (rows and
   partitions moved, bytes, WAL written, duration) as XCom.
4. `analyze_tables`: `ANALYZE (VERBOSE)` table by table with the time each took; the VERBOSE lines are in the log.
5. `reindex_indexes`: drops invalid `_ccnew`/`_ccold` leftovers of interrupted rebuilds, then `REINDEX INDEX
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
  `market_data` is partitioned but the archive is not, `maintenance.schemas` names a schema the database lacks). It
  is not retried: fix what it names, then clear the task; nothing was changed. *Role ... lacks the owner's
  privileges*: grant the connection's role membership in the owner's role, or narrow `maintenance.schemas`.
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
`python -m trading_ops.maintenance convert --dry-run`, then without `--dry-run`, and unpause (README, "Database
maintenance").

**Owner.** sre-dba (failures alert at level P2, `alerting.dag_levels.db_maintenance`; a refused plan is a user
error: no retry, no page).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args, dry_run_param


@dag(
    dag_id="db_maintenance",
    description="Archive old market data, refresh statistics and rebuild bloated indexes without blocking writers.",
    schedule=cron("0 3 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["database", "maintenance", "daily"],
    params={"dry_run": dry_run_param(default=False)},
    doc_md=__doc__,
)
def db_maintenance():
    @task(
        doc_md="Checks the policy against the tables and logs the whole plan; a mismatch stops the run here, with one "
        "sentence, before anything changes."
    )
    def plan_maintenance() -> dict:
        from trading_ops.maintenance import tasks

        return tasks.plan_maintenance()

    @task
    def create_partitions() -> dict:
        from trading_ops.maintenance import tasks

        return tasks.create_partitions()

    @task(
        doc_md="Moves whole monthly partitions older than the cutoff, then the remaining old rows in batches, each one "
        "transaction: rerun it freely."
    )
    def archive_market_data() -> dict:
        from trading_ops.maintenance import tasks

        return tasks.archive_market_data()

    @task
    def analyze_tables() -> dict:
        from trading_ops.maintenance import tasks

        return tasks.analyze_tables()

    @task(
        doc_md="Drops invalid leftovers of interrupted rebuilds, then REINDEX INDEX CONCURRENTLY index by index; one "
        "index failing does not stop the others."
    )
    def reindex_indexes() -> dict:
        from trading_ops.maintenance import tasks

        return tasks.reindex_indexes()

    plan_maintenance() >> create_partitions() >> archive_market_data() >> analyze_tables() >> reindex_indexes()


db_maintenance()
