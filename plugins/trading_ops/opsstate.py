"""The ops state database: what trading-ops itself remembers (alert grouping, alert rule state, security findings),
in schema `ops` of its own database (connection `alerting.state_conn_id` / `security.findings_conn_id`, `ops_state`
by default; `make up` creates `trading_ops` beside `trading_db`).

It lives apart from `trading_db` so that a backup of the trading data does not carry it and a restore does not rewind
the alert and findings history to the backup's time.

`connect(conn_id)` opens it ready to use: the schema is created on first use and upgraded by the numbered migrations
in include/sql/opsstate/migrations/ (NNN_name.sql, applied in order, each recorded in `ops.schema_migrations`, all
under one advisory lock, so an existing table is upgraded in place and two DAGs starting together apply nothing twice).
Then, once, the rows of the `ops` tables of the database the state lived in before (`alerting.legacy_state_conn_id`,
trading_db) are copied here and those old tables dropped; while that database cannot be reached the move waits for
the next task and the state works without it. Inside `reading_only()` (the Ops page) the move is never made.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Generator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from trading_ops.paths import SQL_DIR
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

SCHEMA = "ops"
MIGRATIONS_DIR = SQL_DIR / "opsstate" / "migrations"
_MIGRATION_NAME = re.compile(r"(\d{3})_(\w+)\.sql")
# Databases (host, port, name) this process has migrated, and those it has also moved the legacy state into.
_migrated: set[tuple[str, int, str]] = set()
_ready: set[tuple[str, int, str]] = set()
# Set while a reader (the Ops page) connects: the one-time move, which drops the old tables in trading_db, is left to
# the tasks.
_reading_only: contextvars.ContextVar[bool] = contextvars.ContextVar("reading_only", default=False)


@contextmanager
def reading_only() -> Generator[None]:
    """Connections opened inside migrate the ops schema as usual but never move (and drop) the legacy state."""
    token = _reading_only.set(True)
    try:
        yield
    finally:
        _reading_only.reset(token)


def migrations() -> list[tuple[int, str]]:
    """(version, file name) of every migration, in order; numbers must be unique and without gaps."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if not match:
            raise ValueError(f"Migration file {path.name} is not named NNN_name.sql.")
        found.append((int(match[1]), path.name))
    versions = [version for version, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"Migrations in {MIGRATIONS_DIR} must be numbered 001, 002, ... without gaps: {versions}.")
    return found


def migrate(conn: psycopg.Connection) -> list[int]:
    """Create the `ops` schema if needed and apply the migrations it lacks, in one transaction; returns their
    versions."""
    applied_now = []
    with conn.transaction():
        conn.execute(load_sql("opsstate/ensure_schema.sql"))
        applied = {row[0] for row in conn.execute(load_sql("opsstate/applied_migrations.sql"))}
        for version, name in migrations():
            if version in applied:
                continue
            conn.execute(load_sql(f"opsstate/migrations/{name}"))
            conn.execute(load_sql("opsstate/record_migration.sql"), {"version": version, "name": name})
            applied_now.append(version)
    if applied_now:
        log.info("Ops state in %s: applied migration(s) %s", conn.info.dbname, applied_now)
    return applied_now


def move_legacy_state(conn: psycopg.Connection, legacy_conn_id: str) -> dict[str, int] | None:
    """Copy the `ops` tables of `legacy_conn_id`'s database here once, then drop them there.

    Returns the rows copied per table, or None when the move was done before. Rows already here win (they are newer:
    written while the old database could not be reached). The drop comes after the copy is committed: a failure in
    between leaves both copies, and the next connection finishes the drop.
    """
    from trading_ops.db import connection

    source = legacy_conn_id
    moved = conn.execute(load_sql("opsstate/select_move.sql"), {"source": source}).fetchone()
    conn.commit()
    with connection(legacy_conn_id) as legacy:
        if (legacy.info.host, legacy.info.port, legacy.info.dbname) == (
            conn.info.host,
            conn.info.port,
            conn.info.dbname,
        ):
            return None  # the state was never elsewhere
        tables = [row[0] for row in legacy.execute(load_sql("opsstate/legacy_tables.sql"))]
        counts = None
        if moved is None:
            counts = {}
            with conn.transaction():
                for table in tables:
                    identifier = sql.Identifier(SCHEMA, table)
                    [rows] = legacy.execute(load_sql("opsstate/legacy_rows.sql").format(table=identifier)).fetchone()
                    counts[table] = len(rows)
                    if rows:
                        columns = sql.SQL(", ").join(sql.Identifier(column) for column in rows[0])
                        conn.execute(
                            load_sql("opsstate/insert_moved_rows.sql").format(table=identifier, columns=columns),
                            {"rows": Jsonb(rows)},
                        )
                conn.execute(load_sql("opsstate/record_move.sql"), {"source": source, "row_counts": Jsonb(counts)})
            log.info(
                "Moved the ops state of %r (database %s) to %s: %s",
                legacy_conn_id,
                legacy.info.dbname,
                conn.info.dbname,
                counts or "no tables",
            )
        if tables:
            legacy.execute(load_sql("opsstate/drop_legacy_tables.sql"))
            if legacy.execute(load_sql("opsstate/legacy_schema_empty.sql")).fetchone()[0]:
                legacy.execute(load_sql("opsstate/drop_legacy_schema.sql"))
            legacy.commit()
            log.info("Dropped the old ops state tables %s of %r", ", ".join(tables), legacy_conn_id)
        return counts


def _prepare(conn: psycopg.Connection) -> None:
    from trading_ops.policy import load_policy

    key = (conn.info.host, conn.info.port, conn.info.dbname)
    if key in _ready:
        return
    if key not in _migrated:
        migrate(conn)
        _migrated.add(key)
    if _reading_only.get():
        return
    legacy_conn_id = load_policy().alerting.legacy_state_conn_id
    if legacy_conn_id:
        try:
            move_legacy_state(conn, legacy_conn_id)
        except psycopg.Error as exc:
            # The state is usable without the move. The next task (a new process) tries again: trying on every
            # connection would cost a connect_timeout each while that database is down.
            if not conn.closed:
                conn.rollback()
            log.warning(
                "The ops state of %r was not moved yet (%s); the next task tries again",
                legacy_conn_id,
                str(exc).strip(),
            )
    _ready.add(key)


def connect(conn_id: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A connection to the ops state database, its schema created, upgraded and the legacy state moved."""
    from trading_ops.db import connect as connect_postgres

    conn = connect_postgres(conn_id)
    try:
        _prepare(conn)
    except BaseException:
        conn.close()
        raise
    conn.autocommit = autocommit
    return conn


@contextmanager
def connection(conn_id: str, *, autocommit: bool = False) -> Generator[psycopg.Connection]:
    conn = connect(conn_id, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()
