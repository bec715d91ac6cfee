"""Maintenance sessions, the lock discipline of every maintenance statement, and the schemas a run maintains.

Every statement that takes a lock runs in a session whose lock_timeout bounds the wait (DDL waiting in the lock queue
stalls every writer queued behind it) and is retried with backoff by `with_lock_retries`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import psycopg
from psycopg import ClientCursor, errors, sql

from trading_ops.maintenance import MaintenanceRefused
from trading_ops.policy import Maintenance
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

APPLICATION_NAME = "trading-ops db_maintenance"
# Lock waits, serialization conflicts with a concurrent writer and deadlocks all clear up by waiting and retrying.
RETRYABLE_ERRORS = (errors.LockNotAvailable, errors.SerializationFailure, errors.DeadlockDetected)

T = TypeVar("T")


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


def schemas_to_maintain(conn: psycopg.Connection, cfg: Maintenance) -> list[str]:
    """The schemas whose tables are analyzed and indexes rebuilt: the policy's `maintenance.schemas`, or every user
    schema of the database when it names none. A named schema the database lacks is refused: it would be skipped
    silently."""
    existing = [name for (name,) in conn.execute(load_sql("maintenance/list_user_schemas.sql"))]
    if cfg.schemas is None:
        return existing
    missing = [name for name in cfg.schemas if name not in existing]
    if missing:
        raise MaintenanceRefused(
            f"maintenance.schemas names {', '.join(missing)}, which database {conn.info.dbname} does not have."
        )
    return list(cfg.schemas)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def qualified(schema: str, name: str) -> str:
    return f"{schema}.{name}"


def some_of(names: list[str], shown: int = 3) -> str:
    """The first few names, and how many more: a refusal stays one readable sentence however many there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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
