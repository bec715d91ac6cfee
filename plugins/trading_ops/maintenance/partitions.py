"""The monthly partition layout of market_data and its archive, and the lock-aware DDL that manages it.

The layout: a table partitioned BY RANGE on the policy's time column, one partition per calendar month in UTC named
`<table>_pYYYYMM`, primary key (key, time) (a partitioned table's unique constraints must contain the partition key),
and no DEFAULT partition, since one rules out DETACH PARTITION CONCURRENTLY. Every row needs a partition for its
month: the daily db_maintenance run keeps `premake_partitions` months ready ahead of the current one, as pg_partman's
premake does, and the archive makes archive partitions as it needs them. `conversion` moves a table to this layout.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from trading_ops.maintenance.session import execute_with_literals, with_lock_retries
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    name: str
    lower: datetime | None
    upper: datetime | None
    detach_pending: bool
    bytes: int
    rows_estimate: int


@dataclass(frozen=True)
class Layout:
    partitioned: bool
    by_time: bool
    has_default_partition: bool
    columns: tuple[str, ...]
    column_names: tuple[str, ...]
    integer_columns: tuple[str, ...]


# --- months and names ------------------------------------------------------------------------------------------


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return month.replace(year=index // 12, month=index % 12 + 1)


def months_from(first: datetime, last: datetime) -> list[datetime]:
    """The month starts from first's month to last's month, both included."""
    months, month = [], month_start(first)
    while month <= last:
        months.append(month)
        month = add_months(month, 1)
    return months


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_p{month:%Y%m}"


def is_monthly_partition(table: str, partition: Partition) -> bool:
    """Named and bounded as this layout makes them: <table>_pYYYYMM holding exactly that UTC month."""
    return (
        partition.lower is not None
        and partition.lower == month_start(partition.lower)
        and partition.upper == add_months(partition.lower, 1)
        and partition.name == partition_name(table, partition.lower)
    )


# --- catalog ---------------------------------------------------------------------------------------------------


def table_layout(conn: psycopg.Connection, schema: str, table: str, time_column: str) -> Layout | None:
    row = conn.execute(
        load_sql("maintenance/table_layout.sql"), {"schema": schema, "table": table, "time_column": time_column}
    ).fetchone()
    if row is None:
        return None
    partitioned, by_time, has_default, columns, names, integers = row
    return Layout(partitioned, by_time, has_default, tuple(columns), tuple(names), tuple(integers))


def list_partitions(conn: psycopg.Connection, schema: str, table: str) -> list[Partition]:
    rows = conn.execute(load_sql("maintenance/list_partitions.sql"), {"schema": schema, "table": table}).fetchall()
    return [Partition(*row) for row in rows]


def detached_partitions(conn: psycopg.Connection, schema: str, table: str) -> list[Partition]:
    """Standalone tables named <table>_pYYYYMM: partitions detached by a run that stopped before finishing."""
    rows = conn.execute(
        load_sql("maintenance/list_detached_partitions.sql"), {"schema": schema, "table": table}
    ).fetchall()
    found = []
    for name, size, rows_estimate in rows:
        lower = datetime.strptime(name[-6:], "%Y%m").replace(tzinfo=UTC)
        found.append(Partition(name, lower, add_months(lower, 1), False, size, rows_estimate))
    return found


def overlaps(partitions: Iterable[Partition], lower: datetime, upper: datetime) -> bool:
    return any(p.lower is not None and p.upper is not None and p.lower < upper and lower < p.upper for p in partitions)


# --- partition DDL ---------------------------------------------------------------------------------------------


def attach_partition(
    conn: psycopg.Connection, schema: str, parent: str, partition: str, lower: datetime, upper: datetime
) -> None:
    """ATTACH `partition` as [lower, upper), first giving its CHECK constraints the parent's names where only the
    names differ (a market_data partition joining the archive). Run it inside the caller's transaction."""
    renames = conn.execute(
        load_sql("maintenance/list_check_constraints_to_rename.sql"),
        {"schema": schema, "parent": parent, "table": partition},
    ).fetchall()
    for name, parent_name in renames:
        rename = load_sql(
            "maintenance/rename_constraint.sql", table=(schema, partition), constraint=name, new_name=parent_name
        )
        conn.execute(rename)
    execute_with_literals(
        conn,
        load_sql("maintenance/attach_partition.sql", parent=(schema, parent), partition=(schema, partition)),
        {"lower": lower, "upper": upper},
    )


def missing_months(conn: psycopg.Connection, schema: str, parent: str, months: Iterable[datetime]) -> list[datetime]:
    """The months no partition of `parent` covers yet."""
    existing = list_partitions(conn, schema, parent)
    return [month for month in months if not overlaps(existing, month, add_months(month, 1))]


def ensure_partitions(
    conn: psycopg.Connection,
    cfg: Maintenance,
    schema: str,
    parent: str,
    months: Iterable[datetime],
    *,
    name_prefix: str | None = None,
) -> list[str]:
    """Make sure each month has a partition; returns the names created. Each is created as a standalone table and
    attached in one transaction (no writer is blocked, and a failure leaves nothing half-made). A detached
    <table>_pYYYYMM of that month, left by an interrupted run, is attached again instead."""
    prefix = name_prefix or parent
    leftovers = {p.name for p in detached_partitions(conn, schema, prefix)}
    created = []
    for month in missing_months(conn, schema, parent, months):
        upper = add_months(month, 1)
        name = partition_name(prefix, month)

        def create(name=name, month=month, upper=upper) -> None:
            with conn.transaction():
                if name not in leftovers:
                    conn.execute(
                        load_sql(
                            "maintenance/create_partition_table.sql", partition=(schema, name), parent=(schema, parent)
                        )
                    )
                attach_partition(conn, schema, parent, name, month, upper)

        with_lock_retries(create, f"create partition {schema}.{name}", cfg)
        log.info("partition %s.%s created for [%s, %s)", schema, name, month.date(), upper.date())
        created.append(name)
    return created


def finish_detach(
    conn: psycopg.Connection, cfg: Maintenance, schema: str, parent: str, partition: str, *, pending: bool
) -> None:
    """Detach `partition` without blocking writers, or FINALIZE the DETACH CONCURRENTLY an earlier run started
    (`pending`). A retry re-reads the state first: a lock timeout in the second phase of DETACH CONCURRENTLY leaves
    the partition pending."""
    attempts = itertools.count()

    def detach() -> None:
        is_pending = pending
        if next(attempts):
            state = {p.name: p for p in list_partitions(conn, schema, parent)}.get(partition)
            if state is None:
                return
            is_pending = state.detach_pending
        name = "finalize_partition_detach.sql" if is_pending else "detach_partition_concurrently.sql"
        conn.execute(load_sql(f"maintenance/{name}", parent=(schema, parent), partition=(schema, partition)))

    with_lock_retries(detach, f"detach {schema}.{partition}", cfg)


# --- premake ---------------------------------------------------------------------------------------------------


def premake_months(moment: datetime, premake: int) -> list[datetime]:
    current = month_start(moment)
    return months_from(current, add_months(current, premake))


def partitions_to_premake(conn: psycopg.Connection, cfg: Maintenance, moment: datetime) -> list[datetime] | None:
    """The months of the run's month and the premake_partitions after it that have no partition yet; None when the
    source table is not partitioned by month."""
    archive = cfg.archive
    layout = table_layout(conn, archive.schema_, archive.source_table, archive.time_column)
    if layout is None or not (layout.partitioned and layout.by_time):
        return None
    months = premake_months(moment, archive.premake_partitions)
    return missing_months(conn, archive.schema_, archive.source_table, months)


def create_future_partitions(
    conn: psycopg.Connection, cfg: Maintenance, moment: datetime, *, dry_run: bool = False
) -> dict:
    """Keep partitions ready for the run's month and the policy's premake_partitions months after it."""
    archive = cfg.archive
    months = partitions_to_premake(conn, cfg, moment)
    if months is None:
        log.info("%s.%s is not partitioned by month: no partition to make", archive.schema_, archive.source_table)
        return {"partitioned": False, "created": []}
    last = premake_months(moment, archive.premake_partitions)[-1].date()
    if dry_run:
        names = [partition_name(archive.source_table, month) for month in months]
        log.info("dry run: partitions through %s: would create %s", last, ", ".join(names) or "none")
        return {"partitioned": True, "created": [], "dry_run": True, "would_create": names}
    created = ensure_partitions(conn, cfg, archive.schema_, archive.source_table, months)
    log.info("partitions through %s: %d created (%s)", last, len(created), ", ".join(created) or "none")
    return {"partitioned": True, "created": created}
