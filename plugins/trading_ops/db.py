"""PostgreSQL access through the Airflow connections of the project (`trading_db` by default).

Credentials come from the Airflow connection at run time; subprocesses (pg_dump, pg_restore, pg_basebackup) get
them through libpq environment variables, so a password never appears in a command line or a log line.

Every connection gives up after `CONNECT_TIMEOUT_SECONDS` when the server does not answer (libpq waits forever by
default, so a down or unroutable server would hang a task until its execution_timeout); a connection's extra
`connect_timeout` overrides it.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import psycopg

CONNECT_TIMEOUT_SECONDS = 10


def _hook(conn_id: str, database: str | None):
    import json

    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id, database=database, enable_log_db_messages=True)
    extra = hook.connection.extra_dejson or {}
    if "connect_timeout" not in extra:
        # The hook hands the connection's extra to psycopg as connection parameters.
        hook.connection.extra = json.dumps({**extra, "connect_timeout": CONNECT_TIMEOUT_SECONDS})
    return hook


def connect(
    conn_id: str = "trading_db", *, database: str | None = None, autocommit: bool = False
) -> psycopg.Connection:
    """A psycopg 3 connection made by the provider's PostgresHook (notices go to the task log)."""
    connection = _hook(conn_id, database).get_conn()
    connection.autocommit = autocommit
    return connection


@contextmanager
def connection(
    conn_id: str = "trading_db", *, database: str | None = None, autocommit: bool = False
) -> Generator[psycopg.Connection]:
    conn = connect(conn_id, database=database, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def libpq_env(conn_id: str = "trading_db", *, database: str | None = None) -> dict[str, str]:
    """PG* environment variables for a client program; merge into os.environ for subprocess.run(env=...)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    env = {
        "PGHOST": conn.host or "127.0.0.1",
        "PGPORT": str(conn.port or 5432),
        "PGUSER": conn.login or "postgres",
        "PGDATABASE": database or conn.schema or "postgres",
        "PGAPPNAME": "trading-ops",
        "PGCONNECT_TIMEOUT": str((conn.extra_dejson or {}).get("connect_timeout", CONNECT_TIMEOUT_SECONDS)),
    }
    if conn.password:
        env["PGPASSWORD"] = conn.password
    sslmode = (conn.extra_dejson or {}).get("sslmode")
    if sslmode:
        env["PGSSLMODE"] = sslmode
    return env
