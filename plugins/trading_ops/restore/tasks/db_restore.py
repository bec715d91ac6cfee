"""The tasks of the db_restore DAG, one function each.

`validate_request` turns the run's params and time into the plan (`plan.make_plan`) and adds the workload as it is
now; every later task takes the plan (XCom) and the results of the tasks before it as plain values.
The approval task is an operator of its own (`tasks.approval.ApproveLiveRestore`), since the DAG file needs its
class while parsing and this module's imports (psycopg) must not load then.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from trading_ops import kube
from trading_ops.alerting import Alert, send_alert
from trading_ops.policy import load_policy
from trading_ops.restore import database, workload
from trading_ops.restore.plan import make_plan
from trading_ops.restore.verification import IntegrityError, archive_invariant, verify_integrity

log = logging.getLogger(__name__)


def _workload() -> kube.Workload:
    return kube.Workload.from_policy(load_policy())


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def validate_request() -> dict:
    """Every check that can refuse the restore, before anything changes; returns the plan. A problem the user can
    fix (a bad form value, an unknown or damaged backup, a wrong key) is a `UserError`: the task fails at once,
    without retries, with its one sentence."""
    from trading_ops.runtime import run_time

    context = _context()
    plan = make_plan(dict(context["params"]), run_time(context))
    if plan["request"]["scale_workload"]:
        policy = load_policy()
        plan["workload"] = workload.observe(_workload())
        log.info("Workload:\n%s", "\n".join(workload.plan_lines(plan, policy)))
    return plan


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
    deployment = _workload()
    kube.scale(deployment, 0)
    try:
        kube.wait_for_no_pods(deployment, policy.restore.scale_down_timeout)
    except TimeoutError:
        log.error("Pods did not stop in time; scaling trading-api back to %d before failing", recorded)
        kube.scale(deployment, recorded)
        raise
    log.info("No trading-api pod is left: the database can be replaced")


def desired_replicas(plan: dict, recorded: int | None) -> int | None:
    if recorded is None:
        return None
    floor = load_policy().resources.autoscaling.min_replicas
    return workload.scale_back_target(recorded, plan["request"]["replicas"], floor)


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

    if plan.get("recovery"):
        from trading_ops.restore.pitr import restore_to_staging

        return restore_to_staging(plan)
    policy = load_policy()
    request, conn_id = plan["request"], plan["conn_id"]
    backup = backups.resolve_backup(backups.repository_from_policy(policy), plan["backup"]["id"])
    # Chosen again on this worker, by the same rule the plan printed.
    program = database.pg_restore_program(conn_id, plan["backup"]["pg_dump_major"])
    started_at = datetime.now(UTC).isoformat()
    with backups.readable_dump(backup) as dump:
        if request["restore_mode"] == "swap":
            target = plan["staging_database"]
            # A retry starts from scratch: the staging database is this run's own.
            database.drop_database(conn_id, target)
            database.create_database(conn_id, target, like=request["target_database"])
            try:
                database.run_pg_restore(conn_id, dump, target, program=program, jobs=request["jobs"], clean=False)
            except Exception:
                database.drop_database(conn_id, target)
                raise
        else:
            target = request["target_database"]
            database.terminate_sessions(conn_id, target, policy.restore.connection_drain_timeout)
            database.run_pg_restore(conn_id, dump, target, program=program, jobs=request["jobs"], clean=True)
    return {
        "database": target,
        "restore_started_at": started_at,
        "restore_finished_at": datetime.now(UTC).isoformat(),
    }


def verify_restored_database(plan: dict, restored: dict) -> dict:
    # A point-in-time restore has no manifest for the recovered state: the recovery instance's counts are expected.
    expected_counts = restored.get("row_counts") or plan["backup"]["row_counts"]
    report = verify_integrity(
        plan["conn_id"],
        restored["database"],
        expected_counts,
        disjoint=archive_invariant(load_policy(), expected_counts),
        jobs=plan["request"]["jobs"],
    )
    problems = list(report.problems)
    if plan.get("recovery"):
        from trading_ops.restore.recovery import recovery_point_problems

        problems += recovery_point_problems(plan["recovery"], restored["recovery_point"])
    if problems:
        if plan["request"]["restore_mode"] == "swap":
            database.drop_database(plan["conn_id"], restored["database"])
            where = f"the live database {plan['request']['target_database']} stays in service"
        else:
            where = "the restore ran in place: restore again from another backup"
        raise IntegrityError(
            f"Restored data does not match backup {plan['backup']['id']} ({where}): " + "; ".join(problems)
        )
    return {
        **restored,
        "tables": report.tables_checked,
        "indexes": report.indexes_checked,
        "sequences": report.sequences_checked,
        "amcheck_installed_and_removed": report.amcheck_installed,
    }


def teardown_recovery_instance(plan: dict | None) -> bool:
    """Stop and delete the run's recovery instance if one is left (restore_database removes it itself; this catches
    an attempt that was killed). Returns whether one was found."""
    from pathlib import Path

    from trading_ops.restore.recovery import remove_instance

    if not plan or not plan.get("recovery"):
        return False
    rec = plan["recovery"]
    found = remove_instance(Path(rec["instance_dir"]), rec["base_backup"]["server_major"])
    log.info("Recovery instance %s %s", rec["instance_dir"], "stopped and removed" if found else "is gone already")
    return found


def swap_into_service(plan: dict, verified: dict) -> dict:
    request = plan["request"]
    if request["restore_mode"] != "swap":
        log.info("In-place restore: nothing to swap")
        return {**verified, "retired_database": None}
    identity = database.swap_databases(
        plan["conn_id"],
        request["target_database"],
        plan["staging_database"],
        plan["retired_database"],
        load_policy().restore.connection_drain_timeout,
    )
    return {**verified, "retired_database": plan["retired_database"], "identity_carried": identity}


def report_restore(plan: dict, swapped: dict, pods: list[dict] | None, recorded: int | None) -> dict:
    from trading_ops.runtime import run_time

    policy = load_policy()
    request = plan["request"]
    target = request["target_database"]
    dropped = database.drop_expired_retired_databases(
        plan["conn_id"], target, policy.restore.keep_replaced_database, run_time(_context())
    )
    summary = {
        "backup_id": plan["backup"]["id"],
        "target_database": target,
        "restore_mode": request["restore_mode"],
        "restore_started_at": swapped["restore_started_at"],
        "restore_finished_at": swapped["restore_finished_at"],
        "tables_verified": swapped["tables"],
        "indexes_verified": swapped["indexes"],
        "sequences_verified": swapped.get("sequences"),
        "amcheck_installed_and_removed": swapped.get("amcheck_installed_and_removed"),
        "identity_carried": database.describe_identity(swapped["identity_carried"])
        if swapped.get("identity_carried")
        else None,
        "retired_database": swapped["retired_database"],
        "replicas_before": recorded,
        "replicas_after": desired_replicas(plan, recorded),
        "pods": pods or [],
        "dropped_expired_databases": dropped,
    }
    if plan.get("recovery"):
        summary |= {
            "recovery_target": plan["recovery"]["target"],
            "target_time": plan["recovery"]["target_time"],
            "recovery_point": swapped.get("recovery_point"),
            "timings": swapped.get("timings"),
        }
    lines = [f"{key}: {value}" for key, value in summary.items() if key != "pods"]
    if swapped["retired_database"]:
        lines.append(database.rollback_instructions(target, swapped["retired_database"]))
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
