"""Restore decides whether a backup may replace trading_db and how, safely: the manual's recovery procedure (scale
`trading-api` to 0, pg_restore, verify, scale back, check the pods).

The default `swap` mode never touches the live database until the restored copy has passed verification: pg_restore
writes into a new staging database, the verification checks it against the backup's manifest, and the swap renames
live -> `<target>_pre_restore_<stamp>` and staging -> `<target>` in one transaction, ending the live database's
sessions only then. The retired database is kept (policy `restore.keep_replaced_database`) so a swap can be rolled
back by renaming back. A point-in-time restore (`recovery_target` latest or time, swap mode only) starts a
recovery instance of the base backup on the worker, replays the WAL archive and bundles to the target, and moves the
database from it into the staging database (`pitr`, `recovery`); verification and swap are the same. `in_place` mode
runs `pg_restore --clean --if-exists --single-transaction` into the live database, so a failed restore rolls back.

The swap's transaction also gives the restored database the live one's identity (owner, ACL, `ALTER DATABASE ...
SET` settings, comment, connection limit), which a dump restored into a new database lacks; the staging database is
created with the live one's encoding, locale and tablespace. The verification installs amcheck in a copy that lacks
it and removes it again before the swap.

A live restore waits for a second person's approval before anything is scaled (`approval`, policy
`restore.approval`): only an approver other than the user who triggered the run lets it go on. The workload is
scaled back to the count seen before, never below `resources.autoscaling.min_replicas` unless the form says so;
an HPA managing it is named in the plan and left as it was (`workload`).

Entry points
    tasks.db_restore.*            the db_restore DAG's tasks (validate_request ... report_restore); the tasks
                                  package is the only place of the wing touching Airflow's context
    tasks.approval.ApproveLiveRestore   the approval task (HITL ApprovalOperator); approval.check_answer decides
    workload.observe, scale_back_target, describe   the deployment before, and what it is scaled back to
    plan.make_plan(params, moment) -> plan   every check before anything changes; plan.describe_plan prints it
    request.RestoreRequest.from_params, RestoreRefused (a `UserError`)
    database.pg_restore_program, run_pg_restore, swap_databases, drop_expired_retired_databases, ...
    verification.verify_integrity(conn_id, database, row_counts, disjoint=, jobs=) -> IntegrityReport
    pitr.make_recovery_plan, pitr.restore_to_staging   the plan and the restore step of a point-in-time restore
    recovery.RecoveryInstance, transfer, row_counts, recovery_point_problems, remove_instance
    drill.mark_recovery_target, run_drill, record_drill, list_drills   the weekly restore drill (db_restore_drill);
                                  tasks.db_restore_drill.* its tasks
"""
