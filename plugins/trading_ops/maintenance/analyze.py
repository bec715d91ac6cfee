"""Refreshing planner statistics: ANALYZE table by table, timed, with the VERBOSE output in the task log.

The manual's `ANALYZE VERBOSE` covers the whole database; so does this, schema by schema (`schemas_to_maintain`:
every user schema, or the policy's `maintenance.schemas`). Partitions are left to their parent: ANALYZE of a
partitioned table samples the hierarchy and analyzes each partition too.
"""

from __future__ import annotations

import json
import logging
import time

import psycopg

from trading_ops.maintenance import MaintenanceError
from trading_ops.maintenance.session import (
    execute_with_literals,
    first_line,
    qualified,
    schemas_to_maintain,
    with_lock_retries,
)
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


def tables_to_analyze(conn: psycopg.Connection, cfg: Maintenance) -> list[tuple[str, str]]:
    schemas = schemas_to_maintain(conn, cfg)
    return conn.execute(load_sql("maintenance/list_tables_to_analyze.sql"), {"schemas": schemas}).fetchall()


def analyze_tables(conn: psycopg.Connection, cfg: Maintenance, *, dry_run: bool = False) -> dict:
    """ANALYZE each table, timed; a table that keeps failing is reported and the others still analyzed. A dry run
    returns the tables it would analyze."""
    started = time.perf_counter()
    timings, failures = {}, {}
    tables = tables_to_analyze(conn, cfg)
    if dry_run:
        names = [qualified(schema, table) for schema, table in tables]
        log.info("dry run: would analyze %d tables: %s", len(names), ", ".join(names) or "none")
        return {"dry_run": True, "would_analyze": names}
    for number, (schema, table) in enumerate(tables, 1):
        name = qualified(schema, table)
        table_started = time.perf_counter()
        statement = load_sql("maintenance/analyze_table.sql", table=(schema, table))
        try:
            with_lock_retries(
                lambda statement=statement: execute_with_literals(conn, statement, {"verbose": cfg.analyze.verbose}),
                f"analyze {name}",
                cfg,
            )
        except psycopg.Error as exc:
            failures[name] = first_line(exc)
            log.error("analyze %d of %d: %s failed: %s", number, len(tables), name, failures[name])
            continue
        timings[name] = round(time.perf_counter() - table_started, 3)
        log.info("analyze %d of %d: %s in %.2f s", number, len(tables), name, timings[name])
    summary = {"tables": timings, "failed": failures, "duration_seconds": round(time.perf_counter() - started, 3)}
    log.info("analyze summary: %s", json.dumps(summary))
    if failures:
        raise MaintenanceError(
            f"ANALYZE failed for {', '.join(failures)} ({next(iter(failures.values()))}); the other tables were "
            "analyzed."
        )
    return summary
