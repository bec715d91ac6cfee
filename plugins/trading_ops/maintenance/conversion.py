"""The one-off conversion of an unpartitioned market_data or market_data_archive to the monthly layout (`partitions`).

Run it with the db_maintenance DAG paused (`python -m trading_ops.maintenance convert [--dry-run]`, see `cli`).
Writers keep inserting during the bulk copy; they wait only during the swap (an EXCLUSIVE lock while the rows they
inserted meanwhile are copied, the counts compared and the names swapped). The old table is dropped in the swap's
transaction, after the counts matched; if anything fails before, the old table is left as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from trading_ops.errors import UserError
from trading_ops.maintenance.partitions import ensure_partitions, month_start, months_from, partition_name, table_layout
from trading_ops.maintenance.session import execute_with_literals, with_lock_retries
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

MAX_IDENTIFIER = 63


class PartitioningError(UserError):
    """A table is not in a state the conversion can work on; the message says what to do."""


@dataclass
class ConversionPlan:
    table: str
    status: str
    rows_copied: int | None = None
    partitions: list[str] | None = None
    indexes: list[str] | None = None
    grants: int | None = None
    duration_seconds: float | None = None


def _temporary_name(table: str) -> str:
    return f"{table[: MAX_IDENTIFIER - len('_partitioned_new')]}_partitioned_new"


def _check_convertible(conn: psycopg.Connection, schema: str, table: str, time_column: str, key_column: str) -> bool:
    """False when the table is already in the layout; raises with one sentence when it cannot be converted."""
    layout = table_layout(conn, schema, table, time_column)
    if layout is None:
        raise PartitioningError(f"Table {schema}.{table} does not exist.")
    if layout.partitioned:
        if layout.by_time:
            return False
        raise PartitioningError(f"Table {schema}.{table} is already partitioned, but not by range on {time_column}.")
    missing = [column for column in (time_column, key_column) if column not in layout.column_names]
    if missing:
        raise PartitioningError(f"Table {schema}.{table} has no column {missing[0]}.")
    owned, has_triggers, row_security, unique_without_time = conn.execute(
        load_sql("maintenance/convert_inspect_table.sql"),
        {"schema": schema, "table": table, "time_column": time_column},
    ).fetchone()
    problems = [
        (not owned, "this role does not own it"),
        (has_triggers, "it has triggers, which the conversion does not carry over"),
        (row_security, "it has row-level security, which the conversion does not carry over"),
        (bool(unique_without_time), f"unique index {', '.join(unique_without_time)} lacks {time_column}"),
    ]
    reasons = [reason for present, reason in problems if present]
    if reasons:
        raise PartitioningError(f"Table {schema}.{table} cannot be converted: {'; '.join(reasons)}.")
    return True


def convert_to_partitioned(
    conn: psycopg.Connection,
    cfg: Maintenance,
    table: str,
    *,
    through: datetime | None = None,
    dry_run: bool = False,
) -> ConversionPlan:
    """Replace the unpartitioned `table` by the monthly layout holding the same rows, with partitions for every
    month of its rows and, if `through` is given, up to that month. Does nothing to a table already converted."""
    archive = cfg.archive
    schema, time_column, key_column = archive.schema_, archive.time_column, archive.key_column
    started = time.perf_counter()
    if not _check_convertible(conn, schema, table, time_column, key_column):
        return ConversionPlan(table, "already partitioned by month")
    new_table = _temporary_name(table)
    idents = {"table": (schema, table), "new_table": (schema, new_table)}
    columns = {"time_column": time_column, "key_column": key_column}
    oldest, newest, last_key = conn.execute(
        load_sql("maintenance/convert_time_range.sql", table=(schema, table), **columns)
    ).fetchone()
    now_months = [month_start(through)] if through else []
    span = [moment for moment in (oldest, newest, *now_months) if moment is not None]
    months = months_from(min(span), max(span)) if span else []
    names = {"schema": schema, "table": table, "new_table": new_table}
    index_rows = conn.execute(load_sql("maintenance/convert_index_statements.sql"), names).fetchall()
    plan = ConversionPlan(
        table,
        "planned" if dry_run else "converted",
        partitions=[partition_name(table, month) for month in months],
        indexes=[name for name, _, _ in index_rows],
    )
    if dry_run:
        return plan

    leftover = table_layout(conn, schema, new_table, time_column)
    if leftover is not None:
        if not leftover.partitioned:
            raise PartitioningError(f"Table {schema}.{new_table} exists and is not a leftover of a conversion.")
        log.warning("dropping %s.%s, left by an interrupted conversion", schema, new_table)
        conn.execute(load_sql("maintenance/drop_table.sql", table=(schema, new_table)))

    (primary_key,) = conn.execute(load_sql("maintenance/convert_primary_key_name.sql"), names).fetchone() or (
        f"{table[: MAX_IDENTIFIER - 5]}_pkey",
    )
    temporary_primary_key = f"{primary_key[: MAX_IDENTIFIER - 5]}_pnew"
    with conn.transaction():
        conn.execute(load_sql("maintenance/convert_create_parent.sql", **idents, time_column=time_column))
        conn.execute(
            load_sql("maintenance/convert_add_primary_key.sql", **idents, constraint=temporary_primary_key, **columns)
        )
        for _, _, statement in index_rows:
            conn.execute(statement)
    ensure_partitions(conn, cfg, schema, new_table, months, name_prefix=table)
    log.info("%s.%s: %d partitions made, copying rows up to key %s ...", schema, new_table, len(months), last_key)
    with conn.transaction():
        plan.rows_copied = conn.execute(
            load_sql("maintenance/convert_copy_rows.sql", **idents, key_column=key_column), {"last_key": last_key}
        ).rowcount
    log.info("%s.%s: %d rows copied in %.1f s", schema, new_table, plan.rows_copied, time.perf_counter() - started)

    renames = [(temporary_primary_key, primary_key)] + [(temporary, name) for name, temporary, _ in index_rows]

    def swap() -> int:
        with conn.transaction():
            conn.execute(load_sql("maintenance/convert_lock_table.sql", table=(schema, table)))
            late_rows = conn.execute(
                load_sql("maintenance/convert_copy_new_rows.sql", **idents, key_column=key_column),
                {"last_key": last_key},
            ).rowcount
            old_rows, new_rows = conn.execute(load_sql("maintenance/convert_count_rows.sql", **idents)).fetchone()
            if old_rows != new_rows:
                raise PartitioningError(
                    f"Conversion of {schema}.{table} stopped before the swap: the new table has {new_rows} rows, the "
                    f"old one {old_rows} (rows updated or deleted during the copy?); nothing was replaced."
                )
            grants = conn.execute(load_sql("maintenance/convert_grant_statements.sql"), names).fetchall()
            for (statement,) in grants:
                conn.execute(statement)
            plan.grants = len(grants)
            sequence = conn.execute(
                load_sql("maintenance/convert_key_sequence.sql"), {**names, "key_column": key_column}
            ).fetchone()
            if sequence and sequence[3] == "a":
                conn.execute(
                    load_sql(
                        "maintenance/convert_move_sequence.sql",
                        sequence=(sequence[1], sequence[2]),
                        column=(schema, new_table, key_column),
                    )
                )
            conn.execute(load_sql("maintenance/drop_table.sql", table=(schema, table)))
            conn.execute(load_sql("maintenance/rename_table.sql", table=(schema, new_table), new_name=table))
            for temporary, name in renames:
                conn.execute(load_sql("maintenance/rename_index.sql", index=(schema, temporary), new_name=name))
            if sequence and sequence[3] == "i":
                _continue_identity(conn, schema, table, key_column, sequence)
            return late_rows

    late_rows = with_lock_retries(swap, f"swap {schema}.{table}", cfg)
    plan.rows_copied += late_rows
    # The new table starts without statistics: the planner and the bloat estimates need them.
    execute_with_literals(conn, load_sql("maintenance/analyze_table.sql", table=(schema, table)), {"verbose": False})
    plan.duration_seconds = round(time.perf_counter() - started, 3)
    log.info("%s.%s is now partitioned by month (%d rows inserted during the copy)", schema, table, late_rows)
    return plan


def _continue_identity(conn: psycopg.Connection, schema: str, table: str, key_column: str, old_sequence) -> None:
    """The new table's identity got a fresh sequence: give it the old name and continue above every used key."""
    _, old_schema, old_name, _, old_last_value = old_sequence
    new_sequence = conn.execute(
        load_sql("maintenance/convert_key_sequence.sql"), {"schema": schema, "table": table, "key_column": key_column}
    ).fetchone()
    conn.execute(
        load_sql("maintenance/rename_sequence.sql", sequence=(new_sequence[1], new_sequence[2]), new_name=old_name)
    )
    (last_key,) = conn.execute(
        load_sql("maintenance/max_key.sql", table=(schema, table), key_column=key_column)
    ).fetchone()
    conn.execute(
        load_sql("maintenance/convert_set_sequence.sql"),
        {"sequence_oid": new_sequence[0], "value": max(old_last_value or 0, last_key or 0)},
    )
