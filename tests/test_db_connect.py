"""PostgreSQL connections give up when the server does not answer, instead of hanging the task."""

from __future__ import annotations

import json
import socket
import time

import psycopg
import pytest

from trading_ops import db


@pytest.fixture
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_server_that_never_answers_fails_the_connection_after_connect_timeout(silent_server, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SILENT_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": silent_server,
                "login": "postgres",
                "schema": "trading_db",
                "extra": {"connect_timeout": 2},
            }
        ),
    )
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="timeout"):
        db.connect("silent_db")
    assert time.monotonic() - started < 8
    assert db.libpq_env("silent_db")["PGCONNECT_TIMEOUT"] == "2"


def test_every_connection_has_a_connect_timeout_by_default(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PLAIN_DB", "postgresql://postgres@127.0.0.1:5432/trading_db")
    assert db._hook("plain_db", None).connection.extra_dejson["connect_timeout"] == db.CONNECT_TIMEOUT_SECONDS
    assert db.libpq_env("plain_db")["PGCONNECT_TIMEOUT"] == str(db.CONNECT_TIMEOUT_SECONDS)
