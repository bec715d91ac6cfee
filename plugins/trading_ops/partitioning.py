"""Monthly range partitions for market_data and its archive, and the lock-aware DDL that manages them.

The partitioned layout: a table partitioned BY RANGE on the policy's time column, one partition per calendar month
in UTC named `<table>_pYYYYMM`, primary key (key, time) (a partitioned table's unique constraints must contain the
partition key), and no DEFAULT partition, since one rules out DETACH PARTITION CONCURRENTLY. Every row needs a
partition for its month: the daily db_maintenance run keeps `premake_partitions` months ready ahead of the current
one, as pg_partman's premake does, and makes archive partitions as the archive needs them.

Every statement that takes a lock runs in a session whose lock_timeout bounds the wait (DDL waiting in the lock
queue stalls every writer queued behind it) and is retried with backoff by `with_lock_retries`.

Convert an unpartitioned market_data and market_data_archive once, with the db_maintenance DAG paused:

    python -m trading_ops.partitioning convert --dry-run   # what it would do
    python -m trading_ops.partitioning convert

Writers keep inserting during the bulk copy; they wait only during the swap (an EXCLUSIVE lock while the rows they
inserted meanwhile are copied, the counts compared and the names swapped). The old table is dropped in the swap's
transaction, after the counts matched; if anything fails before, the old table is left as it was.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
from psycopg import ClientCursor, errors, sql

from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

APPLICATION_NAME = "trading-ops db_maintenance"
# Lock waits, serialization conflicts with a concurrent writer and deadlocks all clear up by waiting and retrying.
RETRYABLE_ERRORS = (errors.LockNotAvailable, errors.SerializationFailure, errors.DeadlockDetected)
MAX_IDENTIFIER = 63

T = TypeVar("T")


class PartitioningError(RuntimeError):
    """A table is not in a state this module can work on; the message says what to do."""


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


# --- sessions, locks and DDL ----------------------------------------------------------------------------------


def _milliseconds(duration: timedelta) -> str:
    return f"{int(duration.total_seconds() * 1000)}ms"


def configure_session(conn: psycopg.Connection, cfg: Maintenance) -> None:
    conn.execute(
        load_sql("maintenance/configure_session.sql"),
        {
            "lock_timeout": _milliseconds(cfg.lock_timeout),
            "statement_timeout": _milliseconds(cfg.statement_timeout),
            "application_name": APPLICATION_NAME,
        },
    )


@contextmanager
def maintenance_session(cfg: Maintenance) -> Generator[psycopg.Connection]:
    """An autocommit connection (REINDEX/DETACH CONCURRENTLY refuse transaction blocks) with the policy's timeouts."""
    from trading_ops.db import connection

    with connection(cfg.conn_id, autocommit=True) as conn:
        configure_session(conn, cfg)
        yield conn


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def with_lock_retries(action: Callable[[], T], what: str, cfg: Maintenance) -> T:
    """Run `action`; on a lock timeout or a serialization conflict wait retry_backoff (doubling) and run it again."""
    for attempt in itertools.count():
        try:
            return action()
        except RETRYABLE_ERRORS as exc:
            if attempt >= cfg.lock_retries:
                raise
            delay = cfg.retry_backoff.total_seconds() * 2**attempt
            log.warning("%s: %s; retry %d of %d in %.1f s", what, first_line(exc), attempt + 1, cfg.lock_retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def execute_with_literals(conn: psycopg.Connection, statement: sql.Composable, params: dict) -> None:
    """Run a utility statement whose values PostgreSQL cannot take as server-side parameters (partition bounds,
    ANALYZE options): psycopg's client-side binding quotes them as literals."""
    with ClientCursor(conn) as cursor:
        cursor.execute(statement, params)


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
    existing = list_partitions(conn, schema, parent)
    leftovers = {p.name for p in detached_partitions(conn, schema, prefix)}
    created = []
    for month in months:
        upper = add_months(month, 1)
        if overlaps(existing, month, upper):
            continue
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


# --- conversion ------------------------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> None:
    from trading_ops.policy import load_policy

    parser = argparse.ArgumentParser(prog="python -m trading_ops.partitioning", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="convert the source and archive tables to monthly partitions")
    convert.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_policy().maintenance
    # Not a cutoff: the conversion makes partitions for the months the writers are about to use, from today.
    through = add_months(month_start(datetime.now(UTC)), cfg.archive.premake_partitions)
    with maintenance_session(cfg) as conn:
        for table, until in ((cfg.archive.source_table, through), (cfg.archive.archive_table, None)):
            plan = convert_to_partitioned(conn, cfg, table, through=until, dry_run=args.dry_run)
            print(json.dumps(asdict(plan), default=str))


if __name__ == "__main__":
    main()
