"""
# log_rotation

Rotates, compresses, chains and prunes the three log classes of the operations manual (section 3, log management):
application logs 30 days / 10 GB, system logs 90 days / 50 GB, audit logs 365 days / 100 GB, all compressed,
audit logs also encrypted; every archive is recorded in a signed chain that proves none was deleted, altered or
added afterwards, on every host the logs live on. Classes, directories, patterns, methods and numbers live in `logs:` of
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
One listing and one mapped rotation per host of `TRADING_OPS_LOG_HOSTS` (unset: the single host `default`, on the
default queue); a host's tasks are `list_log_classes_<host>` and `rotate_log_class_<host>` on the Celery queue
`<host>`, which only the worker on that host serves (`trading_ops/logs/hosts.py`).
- `list_log_classes`: the classes with a path on the host (`host:` of each path in the policy), read at run time.
- `rotate_log_class` (mapped, one per class): removes leftovers of an interrupted run; verifies each archive
  against its `.sha256` sidecar, and the directory's signed chain (`.chain.<class>.jsonl`) against its archives
  and against the chain's head kept in the backup repository; rotates due files (over `rotate_over_size`, or last
  rotated `rotate_after` ago) by rename + reopen or by a lossless copytruncate; compresses (zstd) and, for audit
  logs, encrypts with age to the recipient in connection `audit_log_encryption_key`; records each new archive in
  the chain, signed with the key in connection `audit_log_signing_key`; deletes archives older than the retention
  (measured from the run's time: the scheduled time, or when a manual run was triggered), then oldest-first while
  the class is over its cap, except audit logs, whose retention wins over the cap, each deletion recorded in the
  chain first; stores the chain's new head in the backup repository. Its XCom and log end with the summary: files
  rotated, bytes before/after, archives deleted, space freed, class size against its cap, chain problems.
- `report_hosts` (trigger rule all_done): alerts naming each host whose rotation never started (no worker of its
  queue took it: the scheduler fails a task queued longer than `[scheduler] task_queued_timeout`, 10 min, after
  its requeues, so a dead worker is named within about half an hour), and each host the policy puts paths on that
  has no task; then fails the run, as it does when a host's rotation failed.

## Alerts
Warning when a class is over 90% of its cap (`alert_at_cap_fraction`), when a rotated file is still held by its
writer after `reopen_timeout`, when a writer pads with NULs (not in append mode), or when a step fails (the task
then fails and retries). Critical when an archive fails its checksum or the chain shows a problem (audit logs;
warning for the others), when audit logs exceed their cap, or when a host holding audit logs was not reached.

## How an auditor verifies a year of audit archives
The chain proves which archives were written, with which bytes and which span of lines, and which retention
deleted; the off-host head proves the chain was not cut short or rewritten on the host. The auditor needs the
public key (`logs.chain.public_key`), read access to the log directory of each host (or a copy of it) and to the
backup repository; never the private key.
1. On each host (or on a copy of its audit directory), for each path of `audit_logs`:
   `python -m trading_ops logs verify /var/log/trading-audit --repository /var/backups/trading-ops`
   (`--public-key <key>` when the policy is not at hand). Exit 0 prints, per chain, "verified, N entries,
   M archive(s) held, lines from <first> to <last>, K deleted by retention"; exit 1 prints one line per problem.
2. Check the span: "lines from" reaches back 365 days (the retention) and "to" reaches the last rotation; the
   entries' `lines_from`/`lines_to` (`jq -c '[.seq,.kind,.name,.lines_from,.lines_to]' .chain.audit_logs.jsonl`)
   show no gap between one archive of a file and the next, and every `delete` entry names an archive past the
   retention.
3. Read any archive: `python -m trading_ops logs extract <archive> -i <age identity file>` (checks the sidecar,
   decrypts, decompresses); the chain already vouched for its bytes.
A chain opened on a directory that already held archives enrolls them (`"enrolled": true`): for those, only their
sidecars vouched for them before that day.

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
- "the signed chain of archives shows N problem(s)": the alert lists them (`logs verify <dir>` prints them too).
  "in the chain but missing" / "differs from the archive the chain recorded" / "not in the chain": an archive was
  deleted, replaced or added by hand; "no valid signature" / "reordered" / "not a whole chain entry": the chain
  file was edited; "ends at entry ..., but the off-host head records ..." / "rewritten on the host": the chain was
  cut short, rolled back or rewritten (by someone holding the key). For audit logs this is an incident: keep
  everything as it is (the alert repeats every run; the off-host head is left untouched while the chain does not
  reach it), restore the archives and the chain from backups, or, once investigated, move the chain and the
  off-host head object aside (`objects/log-chains/...` in the repository) so the next run opens a new chain.
  A run killed between writing an archive and recording it (an instant) leaves one "not in the chain" archive:
  its task log names the archive it was writing.
- "log rotation on host X did not run": the worker for queue X is down or not started with `--queues X`; start
  it and clear the host's task. "holds paths of ... but log_rotation has no task": add the host to
  `TRADING_OPS_LOG_HOSTS` where the workers are defined, and start its worker.
- "ran on the worker of host Y": queue X is served by another host's worker; fix that worker's `--queues`.
- "Connection audit_log_signing_key is missing" / "does not belong to logs.chain.public_key": put a key pair from
  `python -m trading_ops logs keygen` in the connection and the policy (README, Log rotation).
- "Connection audit_log_encryption_key is missing" (or holds no age recipient): create or fix it (README, Log
  rotation) and clear the task. Like every error a user must fix, it fails the task at once, without retries.
- "Pidfile ... holds no readable pid" or "The reopen_command of ... is not an executable program": fix that
  path's reopen setting in the policy (a dry run reports it too) and restart the writer: a renamed file is
  archived by a later run once its writer has let go of it.
- Over cap: free space or raise `logs.classes.<class>.max_size`; audit logs are never deleted before retention.

## Recovery
Nothing to roll back: each archive appears only complete (written as `.part`, then renamed), and the plaintext is
removed only after its archive is in place. The chain is rewritten whole under a temporary name and renamed, and
keeps every line it had, even one that is not an entry; a deletion is recorded before the archive goes, and a
recorded deletion the run did not finish is finished by the next run's retention. To read an archive, see README,
"Log rotation".

## Owner
sre-dba (the SRE/DBA team); incident level P3 (`alerting.dag_levels.log_rotation`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import TriggerRule, dag, task

from trading_ops.dag_defaults import cron, default_args, dry_run_param
from trading_ops.logs.hosts import list_task_id, log_hosts, queue_of, rotate_task_id

# From the environment only (no file is read while parsing): the hosts the workers serve (trading_ops/logs/hosts.py).
HOSTS = log_hosts()


@dag(
    description="Rotate, compress, encrypt, chain and prune the application, system and audit logs on every host.",
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
    def list_log_classes(host: str) -> list[str]:
        from trading_ops.logs import tasks

        return tasks.list_log_classes(host)

    @task(map_index_template="{{ task.op_kwargs['log_class'] }}")
    def rotate_log_class(log_class: str, host: str) -> dict:
        from trading_ops.logs import tasks

        return tasks.rotate_log_class(log_class, host)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def report_hosts() -> dict:
        from trading_ops.logs import tasks

        return tasks.report_hosts(HOSTS)

    # Airflow fixes a task's queue for all its map indexes: one listing and one mapped rotation per host.
    rotations = [
        rotate_log_class.override(task_id=rotate_task_id(host), **queue_of(host))
        .partial(host=host)
        .expand(log_class=list_log_classes.override(task_id=list_task_id(host))(host))
        for host in HOSTS
    ]
    rotations >> report_hosts()


log_rotation()
