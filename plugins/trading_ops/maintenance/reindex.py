"""Rebuilding bloated indexes without blocking writers: REINDEX INDEX CONCURRENTLY, index by index.

The manual's `REINDEX DATABASE` rebuilds every index under locks that stop every writer. Here each index of the
maintained schemas (`schemas_to_maintain`: every user schema, or the policy's `maintenance.schemas`) is rebuilt
concurrently: all of them (`reindex.mode: all`) or only those whose estimated bloat is over the policy's threshold;
invalid leftovers of interrupted rebuilds are dropped before and after.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import psycopg

from trading_ops.maintenance import MaintenanceError
from trading_ops.maintenance.session import first_line, qualified, schemas_to_maintain, with_lock_retries
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


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
        return qualified(self.schema, self.name)


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
    """Every index of the maintained schemas, with its bloat estimate and what the reindex step does with it."""
    schemas = schemas_to_maintain(conn, cfg)
    rows = conn.execute(load_sql("maintenance/list_indexes.sql"), {"schemas": schemas}).fetchall()
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


def describe_indexes(choices: list[IndexChoice]) -> list[str]:
    """One line per index: what the reindex step does with it, and why."""
    lines = []
    for choice in choices:
        bloat = "n/a" if choice.bloat_percent is None else f"{choice.bloat_percent:g}%"
        lines.append(f"  {choice.action:<7} {choice.qualified} ({choice.bytes} bytes, bloat {bloat}): {choice.reason}")
    return lines


def reindex_indexes(conn: psycopg.Connection, cfg: Maintenance, *, dry_run: bool = False) -> dict:
    """REINDEX CONCURRENTLY the chosen indexes one by one; one failing does not stop the others. A dry run returns
    what it would rebuild and drop."""
    started = time.perf_counter()
    if dry_run:
        choices = choose_indexes(conn, cfg)
        log.info(
            "dry run, mode %s, nothing rebuilt or dropped:\n%s", cfg.reindex.mode, "\n".join(describe_indexes(choices))
        )
        actions = {action: [c.qualified for c in choices if c.action == action] for action in ("rebuild", "drop")}
        return {
            "dry_run": True,
            "mode": cfg.reindex.mode,
            "would_rebuild": actions["rebuild"],
            "would_drop": actions["drop"],
            "skipped": len(choices) - len(actions["rebuild"]) - len(actions["drop"]),
        }
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
