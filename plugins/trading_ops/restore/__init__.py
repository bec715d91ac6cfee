"""Restore decides whether a backup may replace trading_db and how, safely: the manual's recovery procedure (scale
`trading-api` to 0, pg_restore, verify, scale back, check the pods).

The default `swap` mode never touches the live database until the restored copy has passed verification: pg_restore
writes into a new staging database, the verification checks it against the backup's manifest, and the swap renames
live -> `<target>_pre_restore_<stamp>` and staging -> `<target>` in one transaction, ending the live database's
sessions only then. The retired database is kept (policy `restore.keep_replaced_database`) so a swap can be rolled
back by renaming back. `in_place` mode runs `pg_restore --clean --if-exists --single-transaction` into the live
database, so a failed restore rolls back.

Entry points
    tasks.*                       the db_restore DAG's tasks (validate_request ... report_restore)
    plan.make_plan(params, moment) -> plan   every check before anything changes; plan.describe_plan prints it
    request.RestoreRequest.from_params, RestoreRefused (a `UserError`)
    database.pg_restore_program, run_pg_restore, swap_databases, drop_expired_retired_databases, ...
    verification.verify_integrity(conn_id, database, row_counts, disjoint=, jobs=) -> IntegrityReport
"""
