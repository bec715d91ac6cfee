"""The restore's plan: every check that can refuse the restore, run before anything changes, and what the run will
do, printed.

The plan is plain JSON (it travels as XCom to every later task): the request, the resolved backup, the pg_dump
version its dump needs, and the names the run will use. A dry run ends after it.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime
from pathlib import Path

from trading_ops import kube
from trading_ops.policy import load_policy
from trading_ops.restore import database
from trading_ops.restore.request import RestoreRefused, RestoreRequest

log = logging.getLogger(__name__)


def make_plan(params: dict, moment: datetime) -> dict:
    """Check the request, the backup (checksums, key, readable dump), the target, the role, the disk and pg_restore;
    returns the plan, or raises a `UserError` naming the first problem. `moment` (the run's time) stamps the staging
    and retired database names."""
    from trading_ops import backup as backups

    policy = load_policy()
    request = RestoreRequest.from_params(params)
    if request.recovery_target != "backup":
        from trading_ops.restore.pitr import make_recovery_plan

        return make_recovery_plan(request, policy, moment)
    conn_id = policy.restore.conn_id
    backup = backups.resolve_backup(backups.repository_from_policy(policy), request.backup_id)
    files = backups.check_checksums(backup)
    if not database.database_exists(conn_id, request.target_database):
        raise RestoreRefused(f"target database {request.target_database!r} does not exist on {conn_id}.")
    database.check_amcheck_available(conn_id)
    if request.restore_mode == "swap":
        database.check_may_swap(conn_id, request.target_database)
        free_space = database.check_server_free_space(policy, backup.manifest["database_size"], moment)
    else:
        free_space = {"checked": False, "reason": "an in-place restore needs no staging copy"}
    scratch = Path(tempfile.gettempdir())
    database.check_disk_space(scratch, backup.file_entry("dump")["raw_size"])
    dump_major = backup.pg_dump_major
    pg_restore = database.pg_restore_program(conn_id, dump_major)
    # Decrypting and reading the table of contents proves the key and the dump before anything is scaled.
    with backups.readable_dump(backup, scratch_dir=scratch) as dump:
        items = database.list_dump(dump, pg_restore)
    plan = {
        "request": request.to_dict(),
        "conn_id": conn_id,
        "backup": {
            "id": backup.id,
            "taken_at": backup.manifest["start_time"],
            "size": backup.size,
            "files_checked": files,
            "encrypted": bool(backup.manifest.get("encryption")),
            "row_counts": backup.manifest["row_counts"],
            "dump_items": items,
            "pg_dump_major": dump_major,
        },
        "pg_restore": pg_restore,
        "server_free_space": free_space,
        "staging_database": database.staging_name(request.target_database, moment),
        "retired_database": database.retired_name(request.target_database, moment),
    }
    log.info("Restore plan:\n%s", describe_plan(plan, kube.Workload.from_policy(policy)))
    return plan


def describe_plan(plan: dict, workload: kube.Workload) -> str:
    request, backup = plan["request"], plan["backup"]
    target = request["target_database"]
    lines = [
        f"{'DRY RUN: nothing will change' if request['dry_run'] else 'REAL RUN'}",
        f"backup            {backup['id']} taken {backup['taken_at']}, {backup['size']} bytes, "
        f"{backup['dump_items']} dump items, {backup['files_checked']} file checksums verified"
        f"{', decrypted' if backup['encrypted'] else ''}",
        f"pg_restore        {plan['pg_restore']}",
        f"server disk       {database.describe_free_space(plan['server_free_space'])}",
    ]
    if request["scale_workload"]:
        replicas = (
            f"{request['replicas']} replicas"
            if request["replicas"] is not None
            else "the replica count observed before, at least resources.autoscaling.min_replicas"
        )
        lines.append(f"1. scale {workload} to 0 and wait until no pod is left")
    if request["restore_mode"] == "swap":
        lines += [
            f"2. pg_restore --jobs {request['jobs']} into new database {plan['staging_database']}",
            f"3. verify {len(backup['row_counts'])} table row counts, amcheck, constraints, sequences",
            f"4. swap: {target} -> {plan['retired_database']} (kept), {plan['staging_database']} -> {target}",
        ]
    else:
        lines += [
            f"2. end sessions on {target}; pg_restore --clean --if-exists --single-transaction into it",
            f"3. verify {len(backup['row_counts'])} table row counts, amcheck, constraints, sequences",
        ]
    if request["scale_workload"]:
        lines.append(f"5. scale {workload.deployment} back to {replicas} and wait until all are ready")
    return "\n".join(lines)
