"""The steps of the db_restore DAG, one function per task, each taking the plan `validate_request` made.

The plan is plain JSON (it travels as XCom): the request, the resolved backup, and the names the run will use.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from trading_ops import kube, restore
from trading_ops.alerting import Alert, send_alert
from trading_ops.policy import load_policy

log = logging.getLogger(__name__)


def _workload() -> kube.Workload:
    return kube.Workload.from_policy(load_policy())


def _stamp(run_stamp: datetime) -> datetime:
    return run_stamp.astimezone(UTC)


# --- validate ------------------------------------------------------------------------------------------------


def validate_request(params: dict, run_stamp: datetime) -> dict:
    """Every check that can refuse the restore, before anything changes; returns the plan.

    A problem the user can fix (a bad form value, an unknown or damaged backup, a wrong key) fails the task
    at once, without retries, with its one-sentence explanation.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from trading_ops import backup as backups

    try:
        return _plan(params, run_stamp)
    except (restore.RestoreRefused, backups.BackupNotFound, backups.BackupCorrupt, backups.BackupKeyError) as exc:
        raise AirflowFailException(str(exc)) from None


def _plan(params: dict, run_stamp: datetime) -> dict:
    from trading_ops import backup as backups

    policy = load_policy()
    request = restore.RestoreRequest.from_params(dict(params), backups.FULL_ID_RE)
    conn_id = policy.restore.conn_id
    backup = backups.resolve_backup(backups.repository_from_policy(policy), request.backup_id)
    files = backups.check_checksums(backup)
    if not restore.database_exists(conn_id, request.target_database):
        raise restore.RestoreRefused(f"target database {request.target_database!r} does not exist on {conn_id}.")
    scratch = Path(tempfile.gettempdir())
    restore.check_disk_space(scratch, backup.file_entry("dump")["raw_size"])
    # Decrypting and reading the table of contents proves the key and the dump before anything is scaled.
    with backups.readable_dump(backup, scratch_dir=scratch) as dump:
        items = restore.list_dump(dump)
    stamp = _stamp(run_stamp)
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
        },
        "staging_database": restore.staging_name(request.target_database, stamp),
        "retired_database": restore.retired_name(request.target_database, stamp),
    }
    log.info("Restore plan:\n%s", describe_plan(plan))
    return plan


def describe_plan(plan: dict) -> str:
    request, backup = plan["request"], plan["backup"]
    target = request["target_database"]
    workload = _workload()
    lines = [
        f"{'DRY RUN: nothing will change' if request['dry_run'] else 'REAL RUN'}",
        f"backup            {backup['id']} taken {backup['taken_at']}, {backup['size']} bytes, "
        f"{backup['dump_items']} dump items, {backup['files_checked']} file checksums verified"
        f"{', decrypted' if backup['encrypted'] else ''}",
    ]
    if request["scale_workload"]:
        replicas = (
            f"{request['replicas']} replicas"
            if request["replicas"] is not None
            else "the replica count observed before"
        )
        lines.append(f"1. scale {workload.namespace}/{workload.deployment} to 0 and wait until no pod is left")
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


def proceed_unless_dry_run(plan: dict) -> bool:
    if plan["request"]["dry_run"]:
        log.info("Dry run: every check passed and nothing was changed. Untick dry_run and confirm to restore.")
        return False
    return True


# --- workload -----------------------------------------------------------------------------------------------


def record_replicas(plan: dict) -> int | None:
    if not plan["request"]["scale_workload"]:
        log.info("scale_workload is off: trading-api stays as it is")
        return None
    replicas = kube.current_replicas(_workload())
    log.info("trading-api runs %d replicas now", replicas)
    return replicas


def scale_down_workload(plan: dict, recorded: int | None) -> None:
    if recorded is None:
        return
    policy = load_policy()
    workload = _workload()
    kube.scale(workload, 0)
    try:
        kube.wait_for_no_pods(workload, policy.restore.scale_down_timeout)
    except TimeoutError:
        log.error("Pods did not stop in time; scaling trading-api back to %d before failing", recorded)
        kube.scale(workload, recorded)
        raise
    log.info("No trading-api pod is left: the database can be replaced")


def desired_replicas(plan: dict, recorded: int | None) -> int | None:
    requested = plan["request"]["replicas"]
    return requested if requested is not None else recorded


def scale_up_workload(plan: dict, recorded: int | None) -> int:
    from airflow.sdk.exceptions import AirflowSkipException

    if plan is None or recorded is None:
        raise AirflowSkipException("trading-api was not scaled down by this run")
    desired = desired_replicas(plan, recorded)
    kube.scale(_workload(), desired)
    return desired


def wait_for_pods(plan: dict, desired: int) -> list[dict]:
    pods = kube.wait_for_ready(_workload(), desired, load_policy().restore.scale_up_timeout)
    return [pod.__dict__ for pod in pods]


# --- database -------------------------------------------------------------------------------------------------


def restore_database(plan: dict) -> dict:
    from trading_ops import backup as backups

    policy = load_policy()
    request, conn_id = plan["request"], plan["conn_id"]
    backup = backups.resolve_backup(backups.repository_from_policy(policy), plan["backup"]["id"])
    started_at = datetime.now(UTC).isoformat()
    with backups.readable_dump(backup) as dump:
        if request["restore_mode"] == "swap":
            database = plan["staging_database"]
            # A retry starts from scratch: the staging database is this run's own.
            restore.drop_database(conn_id, database)
            restore.create_database(conn_id, database)
            try:
                restore.run_pg_restore(conn_id, dump, database, jobs=request["jobs"], clean=False)
            except Exception:
                restore.drop_database(conn_id, database)
                raise
        else:
            database = request["target_database"]
            restore.terminate_sessions(conn_id, database, policy.restore.connection_drain_timeout)
            restore.run_pg_restore(conn_id, dump, database, jobs=request["jobs"], clean=True)
    return {
        "database": database,
        "restore_started_at": started_at,
        "restore_finished_at": datetime.now(UTC).isoformat(),
    }


def verify_restored_database(plan: dict, restored: dict) -> dict:
    policy = load_policy()
    archive = policy.maintenance.archive
    report = restore.verify_integrity(
        plan["conn_id"],
        restored["database"],
        plan["backup"]["row_counts"],
        disjoint=(
            f"{archive.schema_}.{archive.source_table}",
            f"{archive.schema_}.{archive.archive_table}",
            archive.key_column,
        ),
        jobs=plan["request"]["jobs"],
    )
    if not report.ok:
        if plan["request"]["restore_mode"] == "swap":
            restore.drop_database(plan["conn_id"], restored["database"])
            where = f"the live database {plan['request']['target_database']} stays in service"
        else:
            where = "the restore ran in place: restore again from another backup"
        raise restore.IntegrityError(
            f"Restored data does not match backup {plan['backup']['id']} ({where}): " + "; ".join(report.problems)
        )
    return {**restored, "tables": report.tables_checked, "indexes": report.indexes_checked}


def swap_into_service(plan: dict, verified: dict) -> dict:
    request = plan["request"]
    if request["restore_mode"] != "swap":
        log.info("In-place restore: nothing to swap")
        return {**verified, "retired_database": None}
    restore.swap_databases(
        plan["conn_id"],
        request["target_database"],
        plan["staging_database"],
        plan["retired_database"],
        load_policy().restore.connection_drain_timeout,
    )
    return {**verified, "retired_database": plan["retired_database"]}


def report_restore(
    plan: dict, swapped: dict, pods: list[dict] | None, recorded: int | None, run_stamp: datetime
) -> dict:
    policy = load_policy()
    request = plan["request"]
    target = request["target_database"]
    dropped = restore.drop_expired_retired_databases(
        plan["conn_id"], target, policy.restore.keep_replaced_database, _stamp(run_stamp)
    )
    summary = {
        "backup_id": plan["backup"]["id"],
        "target_database": target,
        "restore_mode": request["restore_mode"],
        "restore_started_at": swapped["restore_started_at"],
        "restore_finished_at": swapped["restore_finished_at"],
        "tables_verified": swapped["tables"],
        "indexes_verified": swapped["indexes"],
        "retired_database": swapped["retired_database"],
        "replicas_before": recorded,
        "replicas_after": desired_replicas(plan, recorded),
        "pods": pods or [],
        "dropped_expired_databases": dropped,
    }
    lines = [f"{key}: {value}" for key, value in summary.items() if key != "pods"]
    if swapped["retired_database"]:
        lines.append(restore.rollback_instructions(target, swapped["retired_database"]))
    log.info("Restore report\n%s", "\n".join(lines))
    send_alert(
        Alert(
            severity="info",
            source="db_restore",
            summary=f"{target} restored from backup {plan['backup']['id']} ({request['restore_mode']})",
            details={k: v for k, v in summary.items() if k != "pods"},
        )
    )
    return summary
