"""
# log_rotation

Rotates, compresses and prunes the three log classes of the operations manual (section 3, log management):
application logs 30 days / 10 GB, system logs 90 days / 50 GB, audit logs 365 days / 100 GB, all compressed,
audit logs also encrypted. Classes, directories, patterns, methods and numbers live in `logs:` of
`include/config/ops_policy.yaml`; the code is the `plugins/trading_ops/logs/` wing (`rotate.py` has the
no-line-lost algorithms, `retention.py` the retention and cap rules).

**Schedule**: daily at 00:30 Asia/Seoul.

**Param `dry_run`** (default false, for scheduled and manual runs alike): print the full plan, run every check,
change nothing. A dry run lists every action in the task log and in its XCom summary ("DRY RUN, would: ..."),
verifies every archive against its sidecar, reads the encryption key's connection, the pidfiles and the reopen
commands' programs, and writes, renames, compresses, deletes and sends nothing (alerts are listed, not sent).
Trigger with `{"dry_run": true}` to see what a run would do. Size-cap deletions are planned from the sizes before
this run's compression, so a dry run may list more deletions than the real run makes.

## Tasks
- `list_log_classes`: the class names from the policy (read at run time, never while parsing).
- `rotate_log_class` (mapped, one per class): removes leftovers of an interrupted run; verifies each archive
  against its `.sha256` sidecar; rotates due files (over `rotate_over_size`, or last rotated `rotate_after` ago)
  by rename + reopen or by a lossless copytruncate; compresses (zstd) and, for audit logs, encrypts with age to
  the recipient in connection `audit_log_encryption_key`; deletes archives older than the retention (measured
  from the run's time: the scheduled time, or when a manual run was triggered), then oldest-first while the
  class is over its cap, except audit logs, whose retention wins over the cap. Its XCom and log end with the
  summary: files rotated, bytes before/after, archives deleted, space freed, class size against its cap.

## Alerts
Warning when a class is over 90% of its cap (`alert_at_cap_fraction`), when a rotated file is still held by its
writer after `reopen_timeout`, when a writer pads with NULs (not in append mode), or when a step fails (the task
then fails and retries). Critical when an archive fails its checksum (audit logs) or audit logs exceed their cap.

## Idempotency
Safe to rerun or clear at any time: a file is rotated only when due (its last rotation is read from the archive
names, stamped with the run's time), retention uses the run's time, and an interrupted run leaves only
`.part` files, which the next run removes, or rotated plaintext files, which the next run archives. Rotations
never lose a line: a crash can at worst archive the same lines twice (copytruncate).

## Triage
- Read the `rotate_log_class` log of the failing class: every action and problem is a line.
- "still open for writing by pid [...]": the writer did not reopen after the rename. Check `pidfile` /
  `reopen_command` for that path in the policy, or restart the writer; the next run archives the file.
- "fail their integrity check": an archive differs from its sidecar, or one of them is missing. Do not delete
  anything; compare with backups (`sha256sum -c <archive>.sha256`) and treat audit archives as an incident.
- "Connection audit_log_encryption_key is missing" (or holds no age recipient): create or fix it (README, Log
  rotation) and clear the task. Like every error a user must fix, it fails the task at once, without retries.
- "Pidfile ... holds no readable pid" or "The reopen_command of ... is not an executable program": fix that
  path's reopen setting in the policy (a dry run reports it too) and restart the writer: a renamed file is
  archived by a later run once its writer has let go of it.
- Over cap: free space or raise `logs.classes.<class>.max_size`; audit logs are never deleted before retention.

## Recovery
Nothing to roll back: each archive appears only complete (written as `.part`, then renamed), and the plaintext is
removed only after its archive is in place. To read an archive, see README, "Log rotation".

## Owner
sre-dba (the SRE/DBA team); incident level P3 (`alerting.dag_levels.log_rotation`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args, dry_run_param


@dag(
    description="Rotate, compress, encrypt and prune the application, system and audit logs.",
    schedule=cron("30 0 * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # Verifying every audit archive reads the whole class (up to 100 GB): more than the default hour.
    default_args=default_args(execution_timeout=timedelta(hours=4)),
    tags=["logs", "maintenance", "daily"],
    doc_md=__doc__,
    params={"dry_run": dry_run_param(default=False)},
)
def log_rotation():
    @task
    def list_log_classes() -> list[str]:
        from trading_ops.logs import tasks

        return tasks.list_log_classes()

    @task(map_index_template="{{ task.op_kwargs['log_class'] }}")
    def rotate_log_class(log_class: str) -> dict:
        from trading_ops.logs import tasks

        return tasks.rotate_log_class(log_class)

    rotate_log_class.expand(log_class=list_log_classes())


log_rotation()
