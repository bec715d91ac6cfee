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
   It also reads the `trading-api` deployment: its replica count, the count it will be scaled back to, and the
   HorizontalPodAutoscaler managing it, if any (named in the plan; its bounds are never changed).
2. **stop_if_dry_run** — a dry run ends here (every later step shows as *skipped*).
3. **approve_live_restore** — a live restore waits here for a second person (see *Approving a live restore*):
   nothing has been scaled or changed yet. Anything but an approval by another approver fails the run here.
4. **record_replicas** — reads the replica count of `trading-api` again, just before the scale-down. It is scaled
   back to that count, but never below `resources.autoscaling.min_replicas` (3, the manual's number): a service
   that was already down (0) comes back at 3. Only the `replicas` field sets another count (0 included).
5. **scale_down_workload** — scales `trading-api` to 0 and waits until **no pod** with label `app=trading-api`
   is left, so nothing writes while the data is replaced. If pods do not go away in time it scales back and fails.
6. **restore_database** — `swap` mode (default): creates a new database `<target>_restore_<stamp>` and runs
   `pg_restore --jobs N` into it; the live database is not touched. `in_place` mode: ends the sessions on the
   target and runs `pg_restore --clean --if-exists --single-transaction` into it, so a failure rolls back.
7. **verify_integrity** — the manual's `verify_data_integrity.py`, on any database: per-table row counts equal
   the manifest's, amcheck `bt_index_check` (with heapallindexed) on every leaf btree index (a partitioned table's
   index is checked through its partitions' indexes), no invalid constraint or index, no sequence behind a column
   it feeds (serial, identity, or any `nextval()` column default, owned or not), and, where the database has the
   manual's archive, `market_data` and `market_data_archive` share no key. A copy without amcheck gets it for the
   check, in a schema of its own (`trading_ops_amcheck`), and both are removed again before the swap: the
   database swapped in has exactly the backed-up schema (validate_request checked that amcheck can be installed).
   Any mismatch, or a check that cannot run on the copy, fails the run here at once (a retry would check the
   same copy; it pages as P1), names the table and the numbers, and drops the staging copy: the old database
   stays in service.
8. **swap_databases** — `swap` mode: refuses new connections to the live database, ends its sessions (bounded
   wait), then in **one transaction** gives the restored copy the live database's identity (owner, privileges as
   `GRANT`/`REVOKE` left them, `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET` settings, comment,
   connection limit), renames the live one to `<target>_pre_restore_<stamp>` and the restored copy to `<target>`,
   and checks that the identity came across unchanged (otherwise nothing is swapped). The report lists what was
   carried. The old database, which keeps its identity, is kept for `restore.keep_replaced_database` (policy,
   7 days). Room for the staging copy on the server (the backup's database size, 1.2x) was checked in
   validate_request where it can be known: a Prometheus node metric (`restore.server_free_space.prometheus_query`
   through `monitoring.sources.prometheus_conn_id`) or the policy's `known_free` figure; otherwise the plan says
   "free space not checked" and why.
9. **scale_up_workload** — always runs once the workload was scaled down, **even when a step failed**: the
   service never stays down because a restore failed (it then comes back on the untouched old database).
10. **wait_for_pods** — waits until the ready replica count equals the desired count and lists the pods like
   `kubectl get pods -l app=trading-api`.
11. **report_restore** — the summary (backup, mode, timings, retired database, replica counts) and the rollback
    commands; drops retired databases past their keep period; sends a success notice.

## Approving a live restore
A live restore (`dry_run` off) replaces the production database, so one person cannot do it alone (policy
`restore.approval`: `required`, `approvers`, `timeout`). After the checks, the run waits in
`approve_live_restore` (state *awaiting input*; it holds no worker slot) and shows up in the UI under
**Browse -> Required Actions**, addressed to the users of `restore.approval.approvers` (Airflow user ids). Its text
is the plan: the backup, the recovery target, the mode, what will be replaced (and the name it is kept under), the
workload, its scale-back count and autoscaler, and every step.
- **To approve**: log in as an approver who did **not** trigger the run, read the plan, choose **Approve**. The run
  goes on at once. Over the REST API: `PATCH /api/v2/dags/db_restore/dagRuns/{run_id}/taskInstances/
  approve_live_restore/-1/hitlDetails` with `{"chosen_options": ["Approve"], "params_input": {}}`.
- **To reject**: choose **Reject** (`"chosen_options": ["Reject"]`). The run fails here with "<user> rejected the
  live restore": nothing was scaled, restored or swapped.
- **The triggering user's own answer** (approve or reject) fails the run the same way: trigger it again and ask
  someone else. A user outside `approvers` is refused by the API (403) and, should an auth manager let them
  through, by the task.
- **No answer within `restore.approval.timeout`** (30 min) fails the run the same way; trigger it again when an
  approver is available.
- A run whose triggering user is unknown (`airflow dags trigger` on a worker) is refused before asking, and so is
  one where no approver but the triggering user is listed.
Each of these is a request problem (`UserError`): a notice in `#alerts-info`, no page, no retry. With
`restore.approval.required: false` (only for a test environment) the task says so and the restore goes on.
`make up` creates two local users, `admin` and `approver`, and prints both logins: trigger as one, approve as the
other.

## Point-in-time recovery (`recovery_target` latest or time)
`backup` (the default) restores the chosen full backup's dump: the data as it was when that backup was taken.
`latest` and `time` replay WAL on top of a base backup, so the week's trades since Sunday come back too:
- validate_request picks the newest full backup whose base backup **ended** before the target (`latest`: the
  newest), indexes every WAL file in the WAL archive, the repository's shipped `wal/` and the daily bundles
  under `incremental/`, and refuses a target outside the recoverable window or a missing segment between the base
  backup and the target (timeline-aware: it follows the newest timeline whose history contains the backup's) with
  one sentence naming the window or the segment. It checks what a dump restore checks (the role may swap the
  database and install amcheck, room on the server for the staging copy) and the worker's disk for the base
  backup and its WAL. Nothing is scaled or changed then. The dry run prints the base backup, every WAL segment
  with where it is (archive, repository or which bundle), the estimated replay size and the checks.
- restore_database extracts the base backup into a private directory on the worker
  (`$TMPDIR/trading-ops-recovery-<staging db>`), starts a *recovery instance* (server programs of the backup's
  major version, a free 127.0.0.1 port, `hot_standby = off`, socket-only trust) whose `restore_command` is
  `python -m trading_ops wal fetch %f %p` (checks each file's size and sha256, decrypts, decompresses; a damaged
  file aborts the recovery instead of passing for the end of the WAL), logs the segments fetched while it
  replays, then streams the database into the staging database (schema, per-table `pg_dump | pg_restore` pipes
  `jobs` at a time, indexes and constraints with `pg_restore --jobs`), created with the live database's encoding,
  locale and tablespace. From an object-store repository (the host lost) only the segments this recovery replays
  are downloaded, beside the instance, not the whole WAL archive.
- verify_integrity compares every table's row count with the recovery instance's and checks that recovery
  stopped where asked: the last replayed transaction committed at or before `target_time` and the stop record is
  the first commit after it (`latest`: the newest segment of the chain was replayed). Then swap as usual.
- teardown_recovery_instance stops and deletes the recovery instance on every outcome (restore_database removes
  it itself; this catches an attempt that was killed). Run it on the same worker pool as restore_database.

**Choosing a target.** Find the window with `python -m trading_ops backups window` (or a dry run). For a logical
disaster (a table dropped, rows deleted by mistake) choose `time` a little before it: everything committed at or
before `target_time` comes back, nothing after it. Find the moment in the PostgreSQL log (`log_statement`), the
application's log, or by trying dry runs; several `time` restores in a row are fine (each goes into a new staging
database and keeps the database it replaces). For a lost server or disk choose `latest`: it first closes the live
server's current segment when the server still answers, then replays everything archived; with the policy's
`archive_timeout` (backup.rpo, 60 s) at most that much committed work is missing. A `time` after the last commit
in the WAL recovers to the end of the WAL (the same data) and the plan says so.

**Why a logical transfer from a recovery instance first.** It works when Airflow does not run on the database
host (the worker needs only the repository, the archive and the server programs), never stops or touches the live
cluster's data directory, restores one database without rolling back the cluster's other databases, keeps the
live database for rollback, and reuses the swap and verification of the dump restore. A physical in-place path
(replace the live data directory and recover there) would be faster for very large databases but needs the
database host, stops every database of the cluster and has no verified copy to fall back on; it may come later.

## Idempotency
Every real run restores into a new, uniquely named database (`<target>_restore_<run stamp>`); a retry of
`restore_database` drops and recreates that same staging database first. The swap happens once: a retry after a
successful swap finds the staging name gone and fails without touching anything. Scaling is by absolute counts.

## Triage
- *approve_live_restore failed*: its one sentence says who rejected, or that the triggering user answered, or that
  no one answered in time. Nothing was changed and nothing was scaled; trigger again and have another approver
  answer.
- *validate_request failed*: read its one-sentence error (unknown backup id, checksum mismatch, wrong `confirm`,
  missing database, a role that may not swap, no disk, no suitable `pg_restore`). Nothing was changed and nothing
  was scaled. Such a request problem is sent to `#alerts-info` as a notice, not paged.
- *scale_down_workload failed*: pods did not terminate in `restore.scale_down_timeout`; the deployment was scaled
  back. Check the pods (`kubectl get pods -l app=trading-api -n trading`, finalizers, PDBs) and rerun.
- *restore_database / verify_integrity failed*: the live database was not modified (swap mode) and the service
  was scaled back onto it. The log names the failing object or table and the numbers. Try an older backup.
- *swap_databases failed*: the identity and the renames are one transaction: either all happened or nothing;
  connections to the live database are allowed again. Check for sessions that would not end
  (`pg_stat_activity`), or for a role of the connection that may not set the old owner or a setting.
- *restore_database failed in a PITR*: the log names the instance's FATAL line (e.g. a damaged segment: `wal
  fetch` reports its checksum) or the failing transfer; the staging database was dropped and the instance removed.
  Choose an earlier `target_time` or put the missing segment back, then rerun.
- *wait_for_pods failed*: the database is restored, the pods are not ready: look at the pods' events and logs.

## Rollback after a swap (any recovery_target)
Scale `trading-api` to 0, then as a superuser connected to the `postgres` database:
```sql
ALTER DATABASE trading_db RENAME TO trading_db_rolled_back;
ALTER DATABASE trading_db_pre_restore_<stamp> RENAME TO trading_db;
ALTER DATABASE trading_db WITH ALLOW_CONNECTIONS true;
```
and scale `trading-api` back. The report task prints these lines with the real names.

## Drills: the proof that this runbook will work
`db_restore_drill` (Sundays 05:00, after db_backup_full) runs this DAG's recovery machinery on the worker every
week: the newest full backup and a point-in-time target inside the WAL window, recovered onto a recovery instance
and verified like a real restore; production is never touched and nothing is scaled. `python -m trading_ops
drills list` prints the records (backup, target, outcome, RTO per phase); `backups list` shows when each backup
was last drilled, and retention never deletes the newest backup whose drill passed. Its alerts, and what they
mean for a restore you are about to run:
- *restore_drill failed* (P2, `alerting.dag_levels.db_restore_drill`): the named phase failed on that backup;
  prefer an older drilled backup for a real restore until a new full backup drills clean (db_restore_drill's
  runbook has the triage per phase).
- `restore_drill_stale` (system_health, `monitoring.freshness.restore_drill`, a warning): no drill passed in
  `restore.drill.max_age` (8 days), so no backup is currently proven restorable.
- RTO over `restore.drill.rto_budget` (1h; P2, from the drill's `check_drill_health`): a real restore of this
  size will not fit the P1 resolution time; the drill record's phases say where the time goes.

## Owner
SRE/DBA team (`sre-dba`). A failed run pages as **P1** (policy `alerting.dag_levels.db_restore`), except a request
or policy problem (`errors.UserError`, e.g. a refused form value): that fails at once without retries and goes to the
info channel without paging. Code: `trading_ops.restore` (`tasks.db_restore`, `tasks.approval`, `approval`, `plan`,
`request`, `database`, `verification`, `workload`, `pitr`, `recovery`), `trading_ops.backup.wal_sources` and
`trading_ops.wal_fetch`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from trading_ops.dag_defaults import default_args, dry_run_param
from trading_ops.restore import request as form
from trading_ops.restore.tasks.approval import ApproveLiveRestore

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
            pattern=form.BACKUP_CHOICE_PATTERN,
            title="Backup",
            description_md="`latest` (the newest verified full backup) or a backup id as "
            "`python -m trading_ops backups list` shows it, e.g. `20261101T010000Z`.",
            section=FORM_SECTION_WHAT,
        ),
        "recovery_target": Param(
            "backup",
            type="string",
            enum=list(form.RECOVERY_TARGETS),
            values_display={
                "backup": "backup: the full backup's dump, as it was when the backup was taken",
                "latest": "latest: base backup + every archived WAL segment (the newest consistent state)",
                "time": "time: base backup + WAL up to target_time",
            },
            title="Recover to",
            description_md="**latest** and **time** replay the WAL archive and the daily WAL bundles on a recovery "
            "instance. The recoverable window runs from the end of the oldest full backup's base backup to the "
            "newest archived WAL segment: `python -m trading_ops backups window` prints it, and a dry run shows "
            "it with the base backup and every WAL segment it would use.",
            section=FORM_SECTION_WHAT,
        ),
        "target_time": Param(
            None,
            type=["null", "string"],
            title="Target time",
            description_md="Only for **time**: ISO 8601 with a zone, e.g. `2026-11-07T14:30:00+00:00`. Every "
            "transaction committed at or before it is restored, none after it. A time outside the recoverable "
            "window, or behind a missing WAL segment, is refused before anything changes.",
            section=FORM_SECTION_WHAT,
        ),
        "target_database": Param(
            "trading_db",
            type="string",
            pattern=form.DATABASE_NAME_PATTERN,
            title="Target database",
            description_md="The database to replace. It must exist.",
            section=FORM_SECTION_WHAT,
        ),
        "restore_mode": Param(
            "swap",
            type="string",
            enum=list(form.RESTORE_MODES),
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
            minimum=form.MIN_JOBS,
            maximum=form.MAX_JOBS,
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
            description_md="Leave empty for the replica count observed before the scale-down, but at least "
            "`resources.autoscaling.min_replicas` (3): a service that was down comes back. A number here is used "
            "as it is (0 keeps it down).",
            section=FORM_SECTION_HOW,
        ),
        "dry_run": dry_run_param(default=True, section=FORM_SECTION_SAFETY),
        "confirm": Param(
            None,
            type=["null", "string"],
            title="Confirm",
            description_md="For a real restore, type the target database's name here. A real restore then waits "
            "for a second person's approval (Browse -> Required Actions).",
            section=FORM_SECTION_SAFETY,
        ),
    },
)
def db_restore():
    @task
    def validate_request():
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.validate_request()

    @task.short_circuit
    def stop_if_dry_run(plan: dict) -> bool:
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.proceed_unless_dry_run(plan)

    @task
    def record_replicas(plan: dict) -> int | None:
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.record_replicas(plan)

    @task
    def scale_down_workload(plan: dict, recorded: int | None) -> None:
        from trading_ops.restore.tasks import db_restore as tasks

        tasks.scale_down_workload(plan, recorded)

    @task(retries=2)
    def restore_database(plan: dict):
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.restore_database(plan)

    @task
    def verify_integrity(plan: dict, restored: dict):
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.verify_restored_database(plan, restored)

    @task(trigger_rule="all_done")
    def teardown_recovery_instance(plan: dict) -> bool:
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.teardown_recovery_instance(plan)

    @task
    def swap_databases(plan: dict, verified: dict):
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.swap_into_service(plan, verified)

    @task(trigger_rule="all_done")
    def scale_up_workload(plan: dict, recorded: int | None) -> int:
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.scale_up_workload(plan, recorded)

    @task
    def wait_for_pods(plan: dict, desired: int):
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.wait_for_pods(plan, desired)

    @task(trigger_rule="none_failed")
    def report_restore(plan: dict, swapped: dict, pods: list[dict], recorded: int | None):
        from trading_ops.restore.tasks import db_restore as tasks

        return tasks.report_restore(plan, swapped, pods, recorded)

    plan = validate_request()
    go = stop_if_dry_run(plan)
    approved = ApproveLiveRestore(task_id="approve_live_restore", plan_task_id="validate_request")
    recorded = record_replicas(plan)
    go >> approved >> recorded
    scaled_down = scale_down_workload(plan, recorded)
    restored = restore_database(plan)
    scaled_down >> restored
    restored >> teardown_recovery_instance(plan)
    swapped = swap_databases(plan, verify_integrity(plan, restored))
    desired = scale_up_workload(plan, recorded)
    swapped >> desired
    report_restore(plan, swapped, wait_for_pods(plan, desired), recorded)


db_restore()
