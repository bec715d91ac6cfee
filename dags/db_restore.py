"""
# db_restore — restore trading_db from a backup (manual, P1 runbook)

The operations manual's recovery procedure (scale `trading-api` to 0, `pg_restore`, verify, scale back, check the
pods), made safe. Trigger it by hand from the Airflow UI (**Trigger DAG** opens a form) or the REST API with `conf`.
It **defaults to a dry run**: the first run prints the plan and the checks and changes nothing.

## What it does, step by step
1. **validate_request** — checks the form, resolves `latest` in the backup catalog, verifies every file of the
   backup against its manifest's sha256, picks the installed `pg_restore` able to read the dump (the manifest's
   pg_dump version) and talk to the server, proves the dump can be decrypted and read (`pg_restore --list`),
   checks that the target database exists, that the connection's role may swap it (CREATEDB and ownership, swap
   mode) and that there is disk room for the decompressed dump. Any problem stops the run here with one sentence,
   before anything is touched, without a retry. Prints the plan.
2. **stop_if_dry_run** — a dry run ends here (every later step shows as *skipped*).
3. **record_replicas** — reads the current replica count of the `trading-api` deployment (the count it is scaled
   back to, unless the `replicas` field says otherwise).
4. **scale_down_workload** — scales `trading-api` to 0 and waits until **no pod** with label `app=trading-api`
   is left, so nothing writes while the data is replaced. If pods do not go away in time it scales back and fails.
5. **restore_database** — `swap` mode (default): creates a new database `<target>_restore_<stamp>` and runs
   `pg_restore --jobs N` into it; the live database is not touched. `in_place` mode: ends the sessions on the
   target and runs `pg_restore --clean --if-exists --single-transaction` into it, so a failure rolls back.
6. **verify_integrity** — the manual's `verify_data_integrity.py`: per-table row counts equal the manifest's,
   amcheck `bt_index_check` (with heapallindexed) on every btree index, no invalid constraint or index, sequences
   not behind their columns, `market_data` and `market_data_archive` share no key. Any mismatch fails the run
   here at once (a retry would check the same copy), names the table and the numbers, and drops the staging copy:
   the old database stays in service.
7. **swap_databases** — `swap` mode: refuses new connections to the live database, ends its sessions (bounded
   wait), then in **one transaction** renames it to `<target>_pre_restore_<stamp>` and the restored copy to
   `<target>`. The old database is kept for `restore.keep_replaced_database` (policy, 7 days).
8. **scale_up_workload** — always runs once the workload was scaled down, **even when a step failed**: the
   service never stays down because a restore failed (it then comes back on the untouched old database).
9. **wait_for_pods** — waits until the ready replica count equals the desired count and lists the pods like
   `kubectl get pods -l app=trading-api`.
10. **report_restore** — the summary (backup, mode, timings, retired database, replica counts) and the rollback
    commands; drops retired databases past their keep period; sends a success notice.

## Idempotency
Every real run restores into a new, uniquely named database (`<target>_restore_<run stamp>`); a retry of
`restore_database` drops and recreates that same staging database first. The swap happens once: a retry after a
successful swap finds the staging name gone and fails without touching anything. Scaling is by absolute counts.

## Triage
- *validate_request failed*: read its one-sentence error (unknown backup id, checksum mismatch, wrong `confirm`,
  missing database, a role that may not swap, no disk, no suitable `pg_restore`). Nothing was changed and nothing
  was scaled. Such a request problem is sent to `#alerts-info` as a notice, not paged.
- *scale_down_workload failed*: pods did not terminate in `restore.scale_down_timeout`; the deployment was scaled
  back. Check the pods (`kubectl get pods -l app=trading-api -n trading`, finalizers, PDBs) and rerun.
- *restore_database / verify_integrity failed*: the live database was not modified (swap mode) and the service
  was scaled back onto it. The log names the failing object or table and the numbers. Try an older backup.
- *swap_databases failed*: the renames are one transaction: either both happened or neither; connections to the
  live database are allowed again. Check for sessions that would not end (`pg_stat_activity`).
- *wait_for_pods failed*: the database is restored, the pods are not ready: look at the pods' events and logs.

## Rollback after a swap
Scale `trading-api` to 0, then as a superuser connected to the `postgres` database:
```sql
ALTER DATABASE trading_db RENAME TO trading_db_rolled_back;
ALTER DATABASE trading_db_pre_restore_<stamp> RENAME TO trading_db;
ALTER DATABASE trading_db WITH ALLOW_CONNECTIONS true;
```
and scale `trading-api` back. The report task prints these lines with the real names.

## Owner
SRE/DBA team (`sre-dba`). A failed run pages as **P1** (policy `alerting.dag_levels.db_restore`), except a request
or policy problem (`errors.UserError`, e.g. a refused form value): that fails at once without retries and goes to the
info channel without paging. Code: `trading_ops.restore` (`tasks`, `plan`, `request`, `database`, `verification`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from trading_ops.dag_defaults import default_args, dry_run_param

FORM_SECTION_WHAT = "What to restore"
FORM_SECTION_HOW = "How"
FORM_SECTION_SAFETY = "Safety"


@dag(
    description="Restore trading_db from a full backup: verify, swap in, scale trading-api down and back (manual).",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["database", "restore", "kubernetes", "manual"],
    doc_md=__doc__,
    default_args=default_args(retry_delay=timedelta(seconds=30), execution_timeout=timedelta(hours=4)),
    params={
        "backup_id": Param(
            "latest",
            type="string",
            pattern=r"^(latest|[0-9]{8}T[0-9]{6}Z)$",
            title="Backup",
            description_md="`latest` (the newest verified full backup) or a backup id as "
            "`python -m trading_ops backups list` shows it, e.g. `20261101T010000Z`.",
            section=FORM_SECTION_WHAT,
        ),
        "target_database": Param(
            "trading_db",
            type="string",
            pattern=r"^[a-z_][a-z0-9_]{0,62}$",
            title="Target database",
            description_md="The database to replace. It must exist.",
            section=FORM_SECTION_WHAT,
        ),
        "restore_mode": Param(
            "swap",
            type="string",
            enum=["swap", "in_place"],
            values_display={
                "swap": "swap: restore into a new database, verify, then swap names (safe)",
                "in_place": "in_place: pg_restore --clean into the live database",
            },
            title="Restore mode",
            description_md="**swap** never touches the live database until the restored copy passed "
            "verification and keeps the old one for rollback. **in_place** needs no extra disk but replaces "
            "the live data directly (in one transaction).",
            section=FORM_SECTION_HOW,
        ),
        "jobs": Param(
            2,
            type="integer",
            minimum=1,
            maximum=16,
            title="Parallel pg_restore jobs",
            description_md="`pg_restore --jobs` in swap mode (in-place restores run as one transaction, serially).",
            section=FORM_SECTION_HOW,
        ),
        "scale_workload": Param(
            True,
            type="boolean",
            title="Scale trading-api down and up",
            description_md="Stop the `trading-api` deployment while the data is replaced, then bring it back.",
            section=FORM_SECTION_HOW,
        ),
        "replicas": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            title="Replicas after the restore",
            description_md="Leave empty to restore the replica count observed before the scale-down.",
            section=FORM_SECTION_HOW,
        ),
        "dry_run": dry_run_param(default=True, section=FORM_SECTION_SAFETY),
        "confirm": Param(
            None,
            type=["null", "string"],
            title="Confirm",
            description_md="For a real restore, type the target database's name here.",
            section=FORM_SECTION_SAFETY,
        ),
    },
)
def db_restore():
    @task
    def validate_request():
        from trading_ops.restore import tasks

        return tasks.validate_request()

    @task.short_circuit
    def stop_if_dry_run(plan: dict) -> bool:
        from trading_ops.restore import tasks

        return tasks.proceed_unless_dry_run(plan)

    @task
    def record_replicas(plan: dict) -> int | None:
        from trading_ops.restore import tasks

        return tasks.record_replicas(plan)

    @task
    def scale_down_workload(plan: dict, recorded: int | None) -> None:
        from trading_ops.restore import tasks

        tasks.scale_down_workload(plan, recorded)

    @task(retries=2)
    def restore_database(plan: dict):
        from trading_ops.restore import tasks

        return tasks.restore_database(plan)

    @task
    def verify_integrity(plan: dict, restored: dict):
        from trading_ops.restore import tasks

        return tasks.verify_restored_database(plan, restored)

    @task
    def swap_databases(plan: dict, verified: dict):
        from trading_ops.restore import tasks

        return tasks.swap_into_service(plan, verified)

    @task(trigger_rule="all_done")
    def scale_up_workload(plan: dict, recorded: int | None) -> int:
        from trading_ops.restore import tasks

        return tasks.scale_up_workload(plan, recorded)

    @task
    def wait_for_pods(plan: dict, desired: int):
        from trading_ops.restore import tasks

        return tasks.wait_for_pods(plan, desired)

    @task(trigger_rule="none_failed")
    def report_restore(plan: dict, swapped: dict, pods: list[dict], recorded: int | None):
        from trading_ops.restore import tasks

        return tasks.report_restore(plan, swapped, pods, recorded)

    plan = validate_request()
    go = stop_if_dry_run(plan)
    recorded = record_replicas(plan)
    go >> recorded
    scaled_down = scale_down_workload(plan, recorded)
    restored = restore_database(plan)
    scaled_down >> restored
    swapped = swap_databases(plan, verify_integrity(plan, restored))
    desired = scale_up_workload(plan, recorded)
    swapped >> desired
    report_restore(plan, swapped, wait_for_pods(plan, desired), recorded)


db_restore()
