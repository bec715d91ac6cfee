"""Moving old rows to the archive in batches: each batch one REPEATABLE READ transaction that copies rows to the
archive and deletes exactly the same rows, so a worker killed at any moment leaves every row in exactly one table.

A backlog is read in slices of pages (sequentially, as the manual's statements read it); a daily handful through the
primary key, in ranges of keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from psycopg import IsolationLevel

from trading_ops.maintenance import MaintenanceError
from trading_ops.maintenance.partitions import list_partitions
from trading_ops.maintenance.session import with_lock_retries
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

if TYPE_CHECKING:
    from trading_ops.maintenance.archive import ArchiveTarget, RowsToMove

log = logging.getLogger(__name__)


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
