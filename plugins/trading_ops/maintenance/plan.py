"""The maintenance plan: what a run would do, read from the catalog, checked before anything changes.

The db_maintenance DAG's first task logs it and returns it (XCom); a policy that does not fit the tables stops the
run there with one sentence (`MaintenanceRefused`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

import psycopg

from trading_ops.maintenance import MaintenanceRefused
from trading_ops.maintenance.analyze import tables_to_analyze
from trading_ops.maintenance.archive import archive_cutoff, describe_archive, plan_archive
from trading_ops.maintenance.partitions import partition_name, partitions_to_premake
from trading_ops.maintenance.reindex import IndexChoice, choose_indexes, describe_indexes
from trading_ops.maintenance.session import qualified, schemas_to_maintain, some_of
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql


def plan_maintenance(conn: psycopg.Connection, cfg: Maintenance, moment: datetime) -> dict:
    """What a run at `moment` would do, without changing anything. Raises MaintenanceRefused when the policy and the
    tables do not fit together."""
    cutoff = archive_cutoff(moment, cfg.archive.retention_months)
    archive = plan_archive(conn, cfg, cutoff)
    premake = partitions_to_premake(conn, cfg, moment) or []
    schemas = schemas_to_maintain(conn, cfg)
    _check_ownership(conn, schemas)
    return {
        "run_time": moment.isoformat(),
        "cutoff": cutoff.isoformat(),
        "archive": archive,
        "partitions_to_create": [partition_name(cfg.archive.source_table, month) for month in premake],
        "schemas": schemas,
        "analyze": [qualified(schema, table) for schema, table in tables_to_analyze(conn, cfg)],
        "reindex": [asdict(choice) for choice in choose_indexes(conn, cfg)],
    }


def _check_ownership(conn: psycopg.Connection, schemas: list[str]) -> None:
    """Refuse tables the session's role cannot maintain: REINDEX needs the owner's privileges, and ANALYZE without
    them skips a table with nothing but a warning, which a successful run would hide."""
    rows = conn.execute(load_sql("maintenance/tables_not_owned.sql"), {"schemas": schemas}).fetchall()
    if rows:
        role = rows[0][0]
        tables = some_of([f"{qualified(schema, table)} (owner {owner})" for _, schema, table, owner in rows])
        raise MaintenanceRefused(
            f"Role {role} lacks the owner's privileges on {tables}, which REINDEX and ANALYZE need: make it a "
            "member of the owner's role, or leave the schema out of maintenance.schemas."
        )


def describe_plan(plan: dict, *, dry_run: bool) -> str:
    title = f"Maintenance plan for the run at {plan['run_time']}"
    lines = [
        f"{title} (dry run: nothing will change)" if dry_run else title,
        *describe_archive(plan["cutoff"], plan["archive"]),
        f"Partitions to create ahead: {', '.join(plan['partitions_to_create']) or 'none'}",
        f"Schemas analyzed and reindexed: {', '.join(plan['schemas']) or 'none'}",
        f"Tables to analyze: {', '.join(plan['analyze']) or 'none'}",
        "Indexes:",
        *describe_indexes([IndexChoice(**index) for index in plan["reindex"]]),
    ]
    return "\n".join(lines)
