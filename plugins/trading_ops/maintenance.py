"""The daily database maintenance: archive old market data, refresh statistics, rebuild bloated indexes.

The manual's version (`REINDEX DATABASE; ANALYZE VERBOSE; INSERT INTO market_data_archive SELECT ... WHERE
timestamp < NOW() - INTERVAL '3 months'; DELETE ...`) blocks every writer during the REINDEX, moves millions of rows
in one transaction and depends on when it runs. Here:

- archive: the cutoff is the run's logical date minus the retention, so a rerun moves the same rows. Rows move in
  batches of about `batch_size` rows, each one REPEATABLE READ transaction that copies and deletes exactly the same
  rows, so a worker killed at any moment leaves every row in exactly one of the two tables. A backlog is read in
  slices of pages (sequentially, as the manual's statements read it); a daily handful through the primary key.
  When market_data is partitioned by month (see trading_ops.partitioning), partitions entirely older than the cutoff
  move whole: DETACH PARTITION CONCURRENTLY, then ATTACH to the archive; only the partition straddling the cutoff
  moves row by row.
- analyze: ANALYZE table by table, timed, VERBOSE output in the task log.
- reindex: REINDEX INDEX CONCURRENTLY index by index, all of them or only those whose estimated bloat is over the
  policy's threshold; invalid leftovers of interrupted rebuilds are dropped before and after.

Every statement that takes a lock does so under lock_timeout and is retried with backoff (trading_ops.partitioning).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import IsolationLevel

from trading_ops.partitioning import (
    Layout,
    Partition,
    add_months,
    attach_partition,
    detached_partitions,
    ensure_partitions,
    execute_with_literals,
    finish_detach,
    first_line,
    is_monthly_partition,
    list_partitions,
    maintenance_session,
    month_start,
    months_from,
    overlaps,
    partition_name,
    table_layout,
    with_lock_retries,
)
from trading_ops.policy import Maintenance, load_policy
from trading_ops.runtime import run_time
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


class MaintenanceError(RuntimeError):
    """A maintenance step cannot run or did not complete; the message is the one sentence a person needs."""


# --- the run's time --------------------------------------------------------------------------------------------


def run_moment(context) -> datetime:
    """The run's time (`dag_defaults.run_time`) as a plain UTC datetime, for the calendar arithmetic below."""
    return datetime.fromtimestamp(run_time(context).timestamp(), UTC)


def archive_cutoff(moment: datetime, retention_months: int) -> datetime:
    """`moment` minus whole calendar months (in UTC), clamped to the month's last day like PostgreSQL's interval."""
    moment = moment.astimezone(UTC)
    month = add_months(month_start(moment), -retention_months)
    last_day = (add_months(month, 1) - timedelta(days=1)).day
    return moment.replace(year=month.year, month=month.month, day=min(moment.day, last_day))


# --- archive ---------------------------------------------------------------------------------------------------


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


def _qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def inspect_archive(conn: psycopg.Connection, cfg: Maintenance) -> ArchiveTarget:
    """Check that the policy's tables can be archived as configured; raises one sentence before anything changes."""
    archive = cfg.archive
    schema = archive.schema_
    layouts = {}
    for table in (archive.source_table, archive.archive_table):
        layout = table_layout(conn, schema, table, archive.time_column)
        if layout is None:
            raise MaintenanceError(f"Table {schema}.{table} named by maintenance.archive does not exist.")
        for setting in ("time_column", "key_column"):
            column = getattr(archive, setting)
            if column not in layout.column_names:
                raise MaintenanceError(
                    f"Table {schema}.{table} has no column {column!r} (maintenance.archive.{setting})."
                )
        layouts[table] = layout
    source, target = layouts[archive.source_table], layouts[archive.archive_table]
    if source.columns != target.columns:
        raise MaintenanceError(
            f"Tables {schema}.{archive.source_table} and {schema}.{archive.archive_table} do not have the same "
            f"columns in the same order ({', '.join(source.columns)} vs {', '.join(target.columns)})."
        )
    if archive.key_column not in source.integer_columns:
        raise MaintenanceError(
            f"Column {archive.key_column!r} (maintenance.archive.key_column) must be an integer key of "
            f"{schema}.{archive.source_table}."
        )
    moves_partitions = source.partitioned and source.by_time and archive.partition_strategy == "detach_attach"
    if moves_partitions and not (target.partitioned and target.by_time):
        raise MaintenanceError(
            f"{schema}.{archive.source_table} is partitioned but {schema}.{archive.archive_table} is not: convert it "
            "with `python -m trading_ops.partitioning convert`, or set maintenance.archive.partition_strategy to rows."
        )
    if moves_partitions and source.has_default_partition:
        raise MaintenanceError(
            f"{schema}.{archive.source_table} has a DEFAULT partition, which rules out DETACH PARTITION CONCURRENTLY: "
            "move its rows to monthly partitions, or set maintenance.archive.partition_strategy to rows."
        )
    return ArchiveTarget(schema, archive.source_table, archive.archive_table, source, target, moves_partitions)


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


# Above this share of the scanned tables' rows, batches read pages in order (a sequential scan in slices, the
# manual's access path); below it, they walk the primary key to just the old rows (a daily run's handful).
PAGE_BATCHES_ABOVE = 0.1


@dataclass(frozen=True)
class Batch:
    label: str
    statements: tuple[psycopg.sql.Composable, psycopg.sql.Composable]
    params: dict


def _tables_to_scan(conn: psycopg.Connection, target: ArchiveTarget, cutoff: datetime) -> list[tuple[str, int, float]]:
    """(table, pages, rows) of the tables that can hold rows older than the cutoff: the source itself, or the
    partitions not starting after the cutoff."""
    if target.source_layout.partitioned:
        names = [
            p.name for p in list_partitions(conn, target.schema, target.source) if p.lower is None or p.lower < cutoff
        ]
    else:
        names = [target.source]
    tables = []
    for name in names:
        pages, rows = conn.execute(
            load_sql("maintenance/table_pages.sql"), {"schema": target.schema, "table": name}
        ).fetchone()
        tables.append((name, pages, rows))
    return tables


def _page_batches(cfg: Maintenance, target: ArchiveTarget, cutoff: datetime, tables) -> Iterator[Batch]:
    """Slices of pages holding about batch_size rows each (by the planner's rows per page), table by table."""
    archive = cfg.archive
    for table, pages, rows in tables:
        names = {"table": (target.schema, table), "time_column": archive.time_column}
        statements = (
            load_sql("maintenance/archive_pages_insert.sql", archive=(target.schema, target.archive), **names),
            load_sql("maintenance/archive_pages_delete.sql", **names),
        )
        step = max(1, int(archive.batch_size * pages / rows)) if rows else max(pages, 1)
        for first_page in range(0, pages, step):
            params = {"first_page": first_page, "end_page": first_page + step, "cutoff": cutoff}
            yield Batch(f"{table} pages {first_page} to {first_page + step - 1}", statements, params)


def _key_batches(
    conn: psycopg.Connection, cfg: Maintenance, target: ArchiveTarget, cutoff: datetime
) -> Iterator[Batch]:
    """Ranges of batch_size keys (so at most batch_size rows), each starting at the next old row's key."""
    archive = cfg.archive
    names = {
        "source": (target.schema, target.source),
        "time_column": archive.time_column,
        "key_column": archive.key_column,
    }
    statements = (
        load_sql("maintenance/archive_keys_insert.sql", archive=(target.schema, target.archive), **names),
        load_sql("maintenance/archive_keys_delete.sql", **names),
    )
    next_key = load_sql("maintenance/next_key_to_archive.sql", **names)
    first_key, last_key = conn.execute(
        load_sql("maintenance/archive_key_range.sql", **names), {"cutoff": cutoff}
    ).fetchone()
    while first_key is not None:
        end_key = first_key + archive.batch_size
        yield Batch(
            f"keys {first_key} to {end_key - 1}",
            statements,
            {"first_key": first_key, "end_key": end_key, "cutoff": cutoff},
        )
        (first_key,) = conn.execute(next_key, {"from_key": end_key, "last_key": last_key, "cutoff": cutoff}).fetchone()


def _move_batch(conn: psycopg.Connection, batch: Batch) -> int:
    """Copy then delete one batch in one transaction; returns the rows moved."""
    insert, delete = batch.statements
    with conn.transaction():
        copied = conn.execute(insert, batch.params).rowcount
        deleted = conn.execute(delete, batch.params).rowcount
        if copied != deleted:
            raise MaintenanceError(
                f"Archive batch {batch.label} copied {copied} rows but deleted {deleted}; it was rolled back."
            )
        return copied


def move_rows(
    conn: psycopg.Connection, cfg: Maintenance, target: ArchiveTarget, cutoff: datetime, pending: RowsToMove
) -> dict:
    """Move the rows older than the cutoff in batches of about batch_size rows, one transaction each, logging
    progress; returns the totals. Rows given an old time after `pending` was counted are left to the next run."""
    tables = _tables_to_scan(conn, target, cutoff)
    by_pages = pending.rows >= PAGE_BATCHES_ABOVE * sum(rows for _, _, rows in tables)
    batches = _page_batches(cfg, target, cutoff, tables) if by_pages else _key_batches(conn, cfg, target, cutoff)
    log.info(
        "%d rows older than %s to move in batches of about %d rows, by %s",
        pending.rows,
        cutoff,
        cfg.archive.batch_size,
        "pages" if by_pages else "key ranges",
    )
    moved = count = 0
    started = time.perf_counter()
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    try:
        for batch in batches:
            rows = with_lock_retries(lambda batch=batch: _move_batch(conn, batch), f"archive {batch.label}", cfg)
            if not rows:
                continue
            moved, count = moved + rows, count + 1
            log.info(
                "batch %d: %d rows moved (%s); %d of %d moved, %d remaining, %.1f s",
                count,
                rows,
                batch.label,
                moved,
                pending.rows,
                max(pending.rows - moved, 0),
                time.perf_counter() - started,
            )
    finally:
        conn.isolation_level = None
    return {"rows": moved, "batches": count, "by": "pages" if by_pages else "key ranges"}


def _average_row_bytes(conn: psycopg.Connection, target: ArchiveTarget) -> int:
    (size,) = conn.execute(
        load_sql("maintenance/average_row_bytes.sql"), {"schema": target.schema, "table": target.source}
    ).fetchone()
    return size


def _wal_position(conn: psycopg.Connection) -> int:
    (lsn,) = conn.execute(load_sql("maintenance/current_wal_lsn.sql")).fetchone()
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def archive_old_rows(conn: psycopg.Connection, cfg: Maintenance, moment: datetime) -> dict:
    """Move everything older than `moment` minus the retention to the archive; returns the run's summary."""
    started = time.perf_counter()
    wal_start = _wal_position(conn)
    cutoff = archive_cutoff(moment, cfg.archive.retention_months)
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
        "source": _qualified(schema, target.source),
        "archive": _qualified(schema, target.archive),
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


# --- premake ---------------------------------------------------------------------------------------------------


def premake_months(moment: datetime, premake: int) -> list[datetime]:
    current = month_start(moment)
    return months_from(current, add_months(current, premake))


def create_future_partitions(conn: psycopg.Connection, cfg: Maintenance, moment: datetime) -> dict:
    """Keep partitions ready for the run's month and the policy's premake_partitions months after it."""
    archive = cfg.archive
    layout = table_layout(conn, archive.schema_, archive.source_table, archive.time_column)
    if layout is None or not (layout.partitioned and layout.by_time):
        log.info("%s.%s is not partitioned by month: no partition to make", archive.schema_, archive.source_table)
        return {"partitioned": False, "created": []}
    months = premake_months(moment, archive.premake_partitions)
    created = ensure_partitions(conn, cfg, archive.schema_, archive.source_table, months)
    log.info("partitions through %s: %d created (%s)", months[-1].date(), len(created), ", ".join(created) or "none")
    return {"partitioned": True, "created": created}


# --- analyze ---------------------------------------------------------------------------------------------------


def tables_to_analyze(conn: psycopg.Connection, cfg: Maintenance) -> list[tuple[str, str]]:
    return conn.execute(load_sql("maintenance/list_tables_to_analyze.sql"), {"schemas": cfg.analyze.schemas}).fetchall()


def analyze_tables(conn: psycopg.Connection, cfg: Maintenance) -> dict:
    """ANALYZE each table, timed; a table that keeps failing is reported and the others still analyzed."""
    started = time.perf_counter()
    timings, failures = {}, {}
    tables = tables_to_analyze(conn, cfg)
    for number, (schema, table) in enumerate(tables, 1):
        name = _qualified(schema, table)
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


# --- reindex ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexChoice:
    schema: str
    table: str
    name: str
    bytes: int
    bloat_percent: float | None
    action: str  # rebuild | skip | drop
    reason: str

    @property
    def qualified(self) -> str:
        return _qualified(self.schema, self.name)


def _decide(cfg: Maintenance, valid: bool, leftover: bool, exclusion: bool, size: int, bloat) -> tuple[str, str]:
    reindex = cfg.reindex
    if leftover:
        return "drop", "invalid leftover of an interrupted REINDEX CONCURRENTLY"
    if exclusion:
        return "skip", "exclusion constraint: PostgreSQL cannot rebuild it concurrently"
    if not valid:
        return "rebuild", "invalid (an interrupted CREATE INDEX CONCURRENTLY)"
    if reindex.mode == "all":
        return "rebuild", "mode all"
    if bloat is None:
        return "skip", "no bloat estimate (not btree, or no statistics yet)"
    if size < reindex.min_index_size:
        return "skip", f"smaller than min_index_size ({reindex.min_index_size} bytes)"
    if bloat < reindex.bloat_threshold_percent:
        return "skip", f"bloat under {reindex.bloat_threshold_percent:g}%"
    return "rebuild", f"bloat at or over {reindex.bloat_threshold_percent:g}%"


def choose_indexes(conn: psycopg.Connection, cfg: Maintenance) -> list[IndexChoice]:
    """Every index of the policy's schemas, with its bloat estimate and what the reindex step does with it."""
    rows = conn.execute(load_sql("maintenance/list_indexes.sql"), {"schemas": cfg.reindex.schemas}).fetchall()
    choices = []
    for schema, table, name, _method, valid, leftover, exclusion, size, bloat in rows:
        bloat = float(bloat) if bloat is not None else None
        action, reason = _decide(cfg, valid, leftover, exclusion, size, bloat)
        choices.append(IndexChoice(schema, table, name, size, bloat, action, reason))
    return choices


def drop_leftover_indexes(conn: psycopg.Connection, cfg: Maintenance) -> list[str]:
    """DROP INDEX CONCURRENTLY every invalid _ccnew/_ccold copy; returns the names dropped. One that cannot be
    dropped now (its lock is held, e.g. by a REINDEX another session is running) is left for the next pass."""
    dropped = []
    for choice in choose_indexes(conn, cfg):
        if choice.action != "drop":
            continue
        statement = load_sql("maintenance/drop_index.sql", index=(choice.schema, choice.name))
        try:
            with_lock_retries(lambda statement=statement: conn.execute(statement), f"drop {choice.qualified}", cfg)
        except psycopg.Error as exc:
            log.warning("could not drop leftover %s: %s", choice.qualified, first_line(exc))
            continue
        log.info("dropped invalid leftover index %s", choice.qualified)
        dropped.append(choice.qualified)
    return dropped


def _index_size(conn: psycopg.Connection, cfg: Maintenance, choice: IndexChoice) -> int | None:
    return next((c.bytes for c in choose_indexes(conn, cfg) if c.qualified == choice.qualified), None)


def reindex_indexes(conn: psycopg.Connection, cfg: Maintenance) -> dict:
    """REINDEX CONCURRENTLY the chosen indexes one by one; one failing does not stop the others."""
    started = time.perf_counter()
    dropped = drop_leftover_indexes(conn, cfg)
    choices = choose_indexes(conn, cfg)
    chosen = [choice for choice in choices if choice.action == "rebuild"]
    log.info("%d of %d indexes to rebuild (mode %s)", len(chosen), len(choices), cfg.reindex.mode)
    rebuilt, failures = [], {}
    for number, choice in enumerate(chosen, 1):
        bloat = "unknown" if choice.bloat_percent is None else f"{choice.bloat_percent:g}%"
        log.info(
            "reindex %d of %d: %s (%d bytes, bloat %s, %s)",
            number,
            len(chosen),
            choice.qualified,
            choice.bytes,
            bloat,
            choice.reason,
        )
        statement = load_sql("maintenance/reindex_index.sql", index=(choice.schema, choice.name))

        def rebuild(statement=statement) -> None:
            # A lock timeout part-way leaves an invalid _ccnew copy that would slow every write: drop it first.
            drop_leftover_indexes(conn, cfg)
            conn.execute(statement)

        index_started = time.perf_counter()
        try:
            with_lock_retries(rebuild, f"reindex {choice.qualified}", cfg)
        except psycopg.Error as exc:
            failures[choice.qualified] = first_line(exc)
            log.error("reindex %d of %d: %s failed: %s", number, len(chosen), choice.qualified, first_line(exc))
            continue
        after = _index_size(conn, cfg, choice)
        log.info(
            "reindex %d of %d: %s rebuilt in %.2f s, %d -> %s bytes",
            number,
            len(chosen),
            choice.qualified,
            time.perf_counter() - index_started,
            choice.bytes,
            after,
        )
        rebuilt.append({"index": choice.qualified, "bytes_before": choice.bytes, "bytes_after": after})
    dropped += drop_leftover_indexes(conn, cfg)
    summary = {
        "mode": cfg.reindex.mode,
        "rebuilt": rebuilt,
        "skipped": len(choices) - len(chosen) - len([c for c in choices if c.action == "drop"]),
        "failed": failures,
        "leftovers_dropped": dropped,
        "duration_seconds": round(time.perf_counter() - started, 3),
    }
    log.info("reindex summary: %s", json.dumps(summary))
    if failures:
        raise MaintenanceError(
            f"REINDEX failed for {len(failures)} of {len(chosen)} indexes ({', '.join(failures)}: "
            f"{next(iter(failures.values()))}); the others were rebuilt and leftovers dropped."
        )
    return summary


# --- plan ------------------------------------------------------------------------------------------------------


def plan_maintenance(conn: psycopg.Connection, cfg: Maintenance, moment: datetime) -> dict:
    """What a run at `moment` would do, read from the catalog without changing anything. Raises MaintenanceError
    when the policy and the tables do not fit together."""
    cutoff = archive_cutoff(moment, cfg.archive.retention_months)
    target = inspect_archive(conn, cfg)
    moves = partition_moves(conn, target, cutoff)
    # Rows of the partitions moved whole would not be counted once they are gone: count what batches will move.
    pending = rows_to_move(conn, cfg, cutoff).rows - sum(_partition_rows(conn, target, move) for move in moves)
    existing = list_partitions(conn, target.schema, target.source) if target.source_layout.partitioned else []
    premake = [
        partition_name(target.source, month)
        for month in premake_months(moment, cfg.archive.premake_partitions)
        if target.source_layout.partitioned and not overlaps(existing, month, add_months(month, 1))
    ]
    return {
        "run_time": moment.isoformat(),
        "cutoff": cutoff.isoformat(),
        "archive": {
            "source": _qualified(target.schema, target.source),
            "archive": _qualified(target.schema, target.archive),
            "source_partitioned": target.source_layout.partitioned,
            "archive_partitioned": target.archive_layout.partitioned,
            "strategy": cfg.archive.partition_strategy,
            "partitions_to_move": [
                asdict(move) | {"lower": str(move.lower), "upper": str(move.upper)} for move in moves
            ],
            "rows_to_move": pending,
            "batch_size": cfg.archive.batch_size,
        },
        "partitions_to_create": premake,
        "analyze": [_qualified(schema, table) for schema, table in tables_to_analyze(conn, cfg)],
        "reindex": [asdict(choice) for choice in choose_indexes(conn, cfg)],
    }


def _partition_rows(conn: psycopg.Connection, target: ArchiveTarget, move: PartitionMove) -> int:
    """Rows of a partition that rows_to_move counted: queries on the parent no longer see a detached partition, nor
    one whose DETACH CONCURRENTLY is pending."""
    if move.state != "attached":
        return 0
    (rows,) = conn.execute(load_sql("maintenance/count_table_rows.sql", table=(target.schema, move.name))).fetchone()
    return rows


def describe_plan(plan: dict) -> str:
    archive = plan["archive"]
    lines = [
        f"Maintenance plan for the run at {plan['run_time']}",
        f"Archive {archive['source']} -> {archive['archive']}: rows older than {plan['cutoff']}",
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
    lines.append(f"Partitions to create ahead: {', '.join(plan['partitions_to_create']) or 'none'}")
    lines.append(f"Tables to analyze: {', '.join(plan['analyze']) or 'none'}")
    lines.append("Indexes:")
    for index in plan["reindex"]:
        bloat = "n/a" if index["bloat_percent"] is None else f"{index['bloat_percent']:g}%"
        lines.append(
            f"  {index['action']:<7} {index['schema']}.{index['name']} ({index['bytes']} bytes, bloat {bloat}): "
            f"{index['reason']}"
        )
    return "\n".join(lines)


# --- task entry points (called by dags/db_maintenance.py) -------------------------------------------------------


def _policy() -> Maintenance:
    return load_policy().maintenance


def plan_task(context) -> dict:
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        plan = plan_maintenance(conn, cfg, run_moment(context))
    log.info("%s", describe_plan(plan))
    return plan


def create_partitions_task(context) -> dict:
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return create_future_partitions(conn, cfg, run_moment(context))


def archive_task(context) -> dict:
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return archive_old_rows(conn, cfg, run_moment(context))


def analyze_task() -> dict:
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return analyze_tables(conn, cfg)


def reindex_task() -> dict:
    cfg = _policy()
    with maintenance_session(cfg) as conn:
        return reindex_indexes(conn, cfg)
