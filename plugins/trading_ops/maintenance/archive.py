"""Archiving market_data: the cutoff, the checks that the policy's tables fit, whole partitions, then batches.

The manual moves everything older than `NOW() - INTERVAL '3 months'` in one transaction. Here the cutoff is the run's
time minus `retention_months`, so a rerun moves the same rows. When market_data is partitioned by month (see
`partitions`), partitions entirely older than the cutoff move whole: DETACH PARTITION CONCURRENTLY, then ATTACH to
the archive; only the partition straddling the cutoff moves row by row (`batches`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from trading_ops.maintenance import MaintenanceRefused
from trading_ops.maintenance.batches import move_rows
from trading_ops.maintenance.partitions import (
    Layout,
    Partition,
    add_months,
    attach_partition,
    detached_partitions,
    ensure_partitions,
    finish_detach,
    is_monthly_partition,
    list_partitions,
    month_start,
    months_from,
    overlaps,
    partition_name,
    table_layout,
)
from trading_ops.maintenance.session import qualified, some_of, with_lock_retries
from trading_ops.pgtools import parse_lsn
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


def archive_cutoff(moment: datetime, retention_months: int) -> datetime:
    """`moment` minus whole calendar months (in UTC), clamped to the month's last day like PostgreSQL's interval."""
    moment = moment.astimezone(UTC)
    month = add_months(month_start(moment), -retention_months)
    last_day = (add_months(month, 1) - timedelta(days=1)).day
    return moment.replace(year=month.year, month=month.month, day=min(moment.day, last_day))


@dataclass(frozen=True)
class PartitionMove:
    name: str
    lower: datetime
    upper: datetime
    state: str  # attached | detach pending | detached
    bytes: int
    rows_estimate: int
    # The archive already has a partition for this month (rows of the straddling month moved earlier): the rows are
    # copied into it and the emptied partition dropped, instead of attaching a second partition for the month.
    merge_into_archive: bool


@dataclass(frozen=True)
class ArchiveTarget:
    schema: str
    source: str
    archive: str
    source_layout: Layout
    archive_layout: Layout
    moves_partitions: bool


def inspect_archive(conn: psycopg.Connection, cfg: Maintenance) -> ArchiveTarget:
    """Check that the policy's tables can be archived as configured; raises one sentence before anything changes."""
    archive = cfg.archive
    schema = archive.schema_
    layouts = {}
    for table in (archive.source_table, archive.archive_table):
        layout = table_layout(conn, schema, table, archive.time_column)
        if layout is None:
            raise MaintenanceRefused(f"Table {schema}.{table} named by maintenance.archive does not exist.")
        for setting in ("time_column", "key_column"):
            column = getattr(archive, setting)
            if column not in layout.column_names:
                raise MaintenanceRefused(
                    f"Table {schema}.{table} has no column {column!r} (maintenance.archive.{setting})."
                )
        layouts[table] = layout
    source, target = layouts[archive.source_table], layouts[archive.archive_table]
    if source.columns != target.columns:
        raise MaintenanceRefused(
            f"Tables {schema}.{archive.source_table} and {schema}.{archive.archive_table} do not have the same "
            f"columns in the same order ({', '.join(source.columns)} vs {', '.join(target.columns)})."
        )
    if archive.key_column not in source.integer_columns:
        raise MaintenanceRefused(
            f"Column {archive.key_column!r} (maintenance.archive.key_column) must be an integer key of "
            f"{schema}.{archive.source_table}."
        )
    moves_partitions = source.partitioned and source.by_time and archive.partition_strategy == "detach_attach"
    if moves_partitions and not (target.partitioned and target.by_time):
        raise MaintenanceRefused(
            f"{schema}.{archive.source_table} is partitioned but {schema}.{archive.archive_table} is not: convert it "
            "with `python -m trading_ops.maintenance convert`, or set maintenance.archive.partition_strategy to rows."
        )
    if moves_partitions and source.has_default_partition:
        raise MaintenanceRefused(
            f"{schema}.{archive.source_table} has a DEFAULT partition, which rules out DETACH PARTITION CONCURRENTLY: "
            "move its rows to monthly partitions, or set maintenance.archive.partition_strategy to rows."
        )
    _check_privileges(conn, cfg, source, target)
    return ArchiveTarget(schema, archive.source_table, archive.archive_table, source, target, moves_partitions)


def _check_privileges(conn: psycopg.Connection, cfg: Maintenance, source: Layout, target: Layout) -> None:
    """Refuse a role that could not finish the archive: batches need to read and delete the old rows and insert them
    into the archive; the partition DDL of a partitioned table needs its owner's privileges and CREATE on the schema."""
    archive = cfg.archive
    schema = archive.schema_
    needs = (
        ("source_table", source.partitioned, ("select", "delete")),
        ("archive_table", target.partitioned, ("insert",)),
    )
    for setting, partitioned, privileges in needs:
        table = getattr(archive, setting)
        with conn.cursor(row_factory=dict_row) as cursor:
            rights = cursor.execute(
                load_sql("maintenance/archive_privileges.sql"), {"schema": schema, "table": table}
            ).fetchone()
        role, name = rights["role_name"], f"{schema}.{table}"
        missing = [privilege.upper() for privilege in privileges if not rights[f"can_{privilege}"]]
        if missing:
            raise MaintenanceRefused(
                f"Role {role} lacks {' and '.join(missing)} on {name} (maintenance.archive.{setting}), which archiving "
                "needs."
            )
        if partitioned and rights["not_owned"]:
            raise MaintenanceRefused(
                f"Role {role} lacks the owner's privileges on {some_of(rights['not_owned'])} in schema {schema}, "
                f"which the partition DDL of {name} needs: make it the owner or a member of the owner's role."
            )
        if partitioned and not rights["can_create"]:
            raise MaintenanceRefused(
                f"Role {role} cannot create the partitions of {name}: it lacks CREATE on {schema}."
            )


def partition_moves(conn: psycopg.Connection, target: ArchiveTarget, cutoff: datetime) -> list[PartitionMove]:
    """Monthly partitions entirely older than the cutoff, including those a stopped run left detached or pending."""
    if not target.moves_partitions:
        return []
    candidates: list[tuple[Partition, str]] = []
    for partition in list_partitions(conn, target.schema, target.source):
        if partition.upper is not None and partition.upper <= cutoff and is_monthly_partition(target.source, partition):
            candidates.append((partition, "detach pending" if partition.detach_pending else "attached"))
    for partition in detached_partitions(conn, target.schema, target.source):
        if partition.upper <= cutoff:
            candidates.append((partition, "detached"))
        else:
            log.warning("%s is detached but not older than the cutoff: left alone", partition.name)
    archived = list_partitions(conn, target.schema, target.archive)
    # A pending detach makes PostgreSQL refuse any other DETACH CONCURRENTLY on the table: finalize those first.
    candidates.sort(key=lambda candidate: (candidate[1] != "detach pending", candidate[0].lower))
    return [
        PartitionMove(p.name, p.lower, p.upper, state, p.bytes, p.rows_estimate, overlaps(archived, p.lower, p.upper))
        for p, state in candidates
    ]


def _move_partition(conn: psycopg.Connection, cfg: Maintenance, target: ArchiveTarget, move: PartitionMove) -> None:
    schema = target.schema
    if move.state != "detached":
        finish_detach(conn, cfg, schema, target.source, move.name, pending=move.state == "detach pending")
    if move.merge_into_archive:
        ensure_partitions(conn, cfg, schema, target.archive, months_from(move.lower, move.lower))

        def merge() -> None:
            with conn.transaction():
                conn.execute(
                    load_sql(
                        "maintenance/copy_table_rows.sql", target=(schema, target.archive), source=(schema, move.name)
                    )
                )
                conn.execute(load_sql("maintenance/drop_table.sql", table=(schema, move.name)))

        with_lock_retries(merge, f"merge {move.name} into {target.archive}", cfg)
        return
    archived_name = partition_name(target.archive, move.lower)

    def attach() -> None:
        # One transaction: the partition is either still the detached <source>_pYYYYMM, found again by the next
        # run, or attached to the archive under its archive name.
        with conn.transaction():
            conn.execute(load_sql("maintenance/rename_table.sql", table=(schema, move.name), new_name=archived_name))
            attach_partition(conn, schema, target.archive, archived_name, move.lower, move.upper)

    with_lock_retries(attach, f"attach {move.name} to {target.archive}", cfg)


@dataclass(frozen=True)
class RowsToMove:
    rows: int
    oldest: datetime | None


def rows_to_move(conn: psycopg.Connection, cfg: Maintenance, cutoff: datetime) -> RowsToMove:
    archive = cfg.archive
    row = conn.execute(
        load_sql(
            "maintenance/count_rows_to_archive.sql",
            source=(archive.schema_, archive.source_table),
            time_column=archive.time_column,
        ),
        {"cutoff": cutoff},
    ).fetchone()
    return RowsToMove(*row)


def _average_row_bytes(conn: psycopg.Connection, target: ArchiveTarget) -> int:
    (size,) = conn.execute(
        load_sql("maintenance/average_row_bytes.sql"), {"schema": target.schema, "table": target.source}
    ).fetchone()
    return size


def _wal_position(conn: psycopg.Connection) -> int:
    (lsn,) = conn.execute(load_sql("maintenance/current_wal_lsn.sql")).fetchone()
    return parse_lsn(lsn)


def plan_archive(conn: psycopg.Connection, cfg: Maintenance, cutoff: datetime) -> dict:
    """What archiving at `cutoff` would move, read from the catalog; raises MaintenanceRefused (one sentence) when
    the policy and the tables do not fit together."""
    target = inspect_archive(conn, cfg)
    moves = partition_moves(conn, target, cutoff)
    # Rows of the partitions moved whole would not be counted once they are gone: count what batches will move.
    pending = rows_to_move(conn, cfg, cutoff).rows - sum(_partition_rows(conn, target, move) for move in moves)
    return {
        "source": qualified(target.schema, target.source),
        "archive": qualified(target.schema, target.archive),
        "source_partitioned": target.source_layout.partitioned,
        "archive_partitioned": target.archive_layout.partitioned,
        "strategy": cfg.archive.partition_strategy,
        "partitions_to_move": [asdict(move) | {"lower": str(move.lower), "upper": str(move.upper)} for move in moves],
        "rows_to_move": pending,
        "batch_size": cfg.archive.batch_size,
    }


def describe_archive(cutoff: str, archive: dict) -> list[str]:
    """The lines of a maintenance plan that say what `plan_archive` found."""
    lines = [
        f"Archive {archive['source']} -> {archive['archive']}: rows older than {cutoff}",
        f"  layout: source {'partitioned' if archive['source_partitioned'] else 'unpartitioned'}, archive "
        f"{'partitioned' if archive['archive_partitioned'] else 'unpartitioned'}, strategy {archive['strategy']}",
    ]
    for move in archive["partitions_to_move"]:
        how = "merge its rows into the archive's partition" if move["merge_into_archive"] else "attach to the archive"
        lines.append(
            f"  partition {move['name']} [{move['lower']}, {move['upper']}) {move['state']}, about "
            f"{move['rows_estimate']} rows, {move['bytes']} bytes: detach, {how}"
        )
    lines.append(f"  rows to move in batches of about {archive['batch_size']}: {archive['rows_to_move']}")
    return lines


def archive_old_rows(conn: psycopg.Connection, cfg: Maintenance, moment: datetime, *, dry_run: bool = False) -> dict:
    """Move everything older than `moment` minus the retention to the archive; returns the run's summary. A dry run
    runs the same checks and returns what it would move, moving nothing."""
    cutoff = archive_cutoff(moment, cfg.archive.retention_months)
    if dry_run:
        plan = plan_archive(conn, cfg, cutoff)
        log.info("dry run, nothing moved:\n%s", "\n".join(describe_archive(cutoff.isoformat(), plan)))
        return {"dry_run": True, "cutoff": cutoff.isoformat(), **plan}
    started = time.perf_counter()
    wal_start = _wal_position(conn)
    target = inspect_archive(conn, cfg)
    schema = target.schema
    moves = partition_moves(conn, target, cutoff)
    for number, move in enumerate(moves, 1):
        log.info(
            "partition %d of %d: %s [%s, %s), %s, about %d rows, %d bytes, %s",
            number,
            len(moves),
            move.name,
            move.lower.date(),
            move.upper.date(),
            move.state,
            move.rows_estimate,
            move.bytes,
            "rows merged into the archive's partition" if move.merge_into_archive else "attached to the archive",
        )
        _move_partition(conn, cfg, target, move)
    pending = rows_to_move(conn, cfg, cutoff)
    if pending.rows and target.archive_layout.partitioned:
        last_month = cutoff - timedelta(microseconds=1)
        ensure_partitions(conn, cfg, schema, target.archive, months_from(pending.oldest, last_month))
    rows = move_rows(conn, cfg, target, cutoff, pending) if pending.rows else {"rows": 0, "batches": 0, "by": None}
    partition_bytes = sum(move.bytes for move in moves)
    row_bytes = rows["rows"] * _average_row_bytes(conn, target) if rows["rows"] else 0
    summary = {
        "cutoff": cutoff.isoformat(),
        "source": qualified(schema, target.source),
        "archive": qualified(schema, target.archive),
        "partitioned": target.moves_partitions,
        "partitions_moved": len(moves),
        "partition_names": [move.name for move in moves],
        "partition_rows_estimate": sum(move.rows_estimate for move in moves),
        "partition_bytes": partition_bytes,
        "rows_moved": rows["rows"],
        "row_bytes_estimate": row_bytes,
        "batches": rows["batches"],
        "batches_by": rows["by"],
        "bytes_moved": partition_bytes + row_bytes,
        "wal_bytes": _wal_position(conn) - wal_start,
        "duration_seconds": round(time.perf_counter() - started, 3),
    }
    log.info("archive summary: %s", json.dumps(summary))
    return summary


def _partition_rows(conn: psycopg.Connection, target: ArchiveTarget, move: PartitionMove) -> int:
    """Rows of a partition that rows_to_move counted: queries on the parent no longer see a detached partition, nor
    one whose DETACH CONCURRENTLY is pending."""
    if move.state != "attached":
        return 0
    (rows,) = conn.execute(load_sql("maintenance/count_table_rows.sql", table=(target.schema, move.name))).fetchone()
    return rows
