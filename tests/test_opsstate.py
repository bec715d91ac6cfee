"""The ops state database (`trading_ops.opsstate`) on the real PostgreSQL: migrations applied once and in place, the
one-time move out of trading_db, and a restore of trading_db that leaves the alert and findings history alone."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from trading_ops import opsstate
from trading_ops.paths import SQL_DIR

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _forget_prepared_databases():
    opsstate._migrated.clear()
    opsstate._ready.clear()


def versions(conn) -> list[int]:
    return [row[0] for row in conn.execute("SELECT version FROM ops.schema_migrations ORDER BY version")]


def test_migrations_create_the_schema_on_first_use_and_run_once(ops_conn):
    expected = [version for version, _ in opsstate.migrations()]
    assert expected[:2] == [1, 2]
    assert opsstate.migrate(ops_conn) == expected
    assert opsstate.migrate(ops_conn) == [], "a second DAG run applies nothing"
    assert versions(ops_conn) == expected
    tables = {row[0] for row in ops_conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'ops' ORDER BY 1")}
    assert tables == {
        "alert_groups",
        "alert_rule_state",
        "incident_events",
        "incidents",
        "restore_drills",
        "schema_migrations",
        "security_check_runs",
        "security_findings",
        "state_moves",
    }


def test_an_existing_table_is_upgraded_in_place(ops_conn):
    """A database holding the old tables (no migration record): 001 adopts them, 002 alters alert_rule_state."""
    ops_conn.execute("CREATE SCHEMA ops")
    ops_conn.execute((SQL_DIR / "opsstate/migrations/001_ops_schema.sql").read_text())
    ops_conn.execute(
        "INSERT INTO ops.alert_rule_state VALUES ('high_priority', 'firing', %(t)s, %(t)s, 2.5, %(t)s)", {"t": T0}
    )
    ops_conn.commit()

    opsstate.migrate(ops_conn)

    assert ops_conn.execute(
        "SELECT rule, state, last_value, no_data_since, fired_on_no_data FROM ops.alert_rule_state"
    ).fetchall() == [("high_priority", "firing", 2.5, None, False)]


def test_two_migrations_at_once_wait_for_one_lock(pg_cluster, ops_state_db):
    errors, waits = [], []

    def second_migration():
        try:
            with psycopg.connect(pg_cluster.conninfo(ops_state_db)) as second:
                errors.append(opsstate.migrate(second))
        except psycopg.Error as exc:
            errors.append(exc)

    with (
        psycopg.connect(pg_cluster.conninfo(ops_state_db)) as first,
        psycopg.connect(pg_cluster.conninfo(ops_state_db), autocommit=True) as watcher,
    ):
        with first.transaction():
            opsstate.migrate(first)  # inside an outer transaction: the lock is held until it commits
            thread = threading.Thread(target=second_migration)
            thread.start()
            deadline = time.monotonic() + 10
            while not waits and time.monotonic() < deadline:
                waits = watcher.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> %s",
                    (first.info.backend_pid,),
                ).fetchall()
                time.sleep(0.02)
        thread.join(timeout=10)
    assert waits == [("advisory",)]
    assert errors == [[]], "the second one found every migration applied"


def _old_ops_tables(conn) -> None:
    """The ops tables as trading_db held them before the ops state had its own database."""
    conn.execute("CREATE SCHEMA ops")
    conn.execute((SQL_DIR / "opsstate/migrations/001_ops_schema.sql").read_text())
    conn.execute("DROP TABLE ops.state_moves")
    conn.execute(
        "INSERT INTO ops.alert_rule_state VALUES ('high_priority', 'firing', %(t)s, %(t)s, 2.5, %(t)s)", {"t": T0}
    )
    conn.execute(
        "INSERT INTO ops.alert_groups (group_key, dedup_key, level, source, summary, first_seen_at, last_sent_at, "
        "sent) VALUES ('g1', 'trading-ops/system_health/high_priority', 'P1', 'system_health/high_priority', "
        "'high_priority: error_rate_percent > 1 for 5m', %(t)s, %(t)s, true)",
        {"t": T0},
    )
    conn.execute(
        "INSERT INTO ops.security_check_runs VALUES ('ssl_cert_check', 'run1', 'security_checks_daily', %(t)s, "
        "%(t)s, 1, 0, 0, 0, '[]')",
        {"t": T0},
    )
    conn.execute(
        "INSERT INTO ops.security_findings VALUES ('ssl_cert_check', 'run1', 'db:5432 tls', 'critical', 'no TLS', "
        "'{}', 'new', %(t)s, false, NULL, NULL)",
        {"t": T0},
    )
    conn.commit()


def test_the_old_state_in_trading_db_is_moved_once_and_dropped_there(pg_conn, ops_conn):
    _old_ops_tables(pg_conn)
    # A reader (the Ops page) gets a migrated ops state but never moves, and so never drops, the old tables.
    with opsstate.reading_only(), opsstate.connection("ops_state") as conn:
        assert conn.execute("SELECT count(*) FROM ops.alert_rule_state").fetchone() == (0,)
    assert pg_conn.execute("SELECT count(*) FROM ops.alert_rule_state").fetchone() == (1,), "still in trading_db"
    pg_conn.rollback()  # its lock on the old table would hold up the move's DROP below

    with opsstate.connection("ops_state") as conn:
        assert conn.execute("SELECT rule, state, last_value FROM ops.alert_rule_state").fetchall() == [
            ("high_priority", "firing", 2.5)
        ]
        assert conn.execute("SELECT check_name, subject FROM ops.security_findings").fetchall() == [
            ("ssl_cert_check", "db:5432 tls")
        ]
        assert conn.execute("SELECT count(*) FROM ops.alert_groups").fetchone() == (1,)
        assert conn.execute("SELECT source, row_counts FROM ops.state_moves").fetchall() == [
            (
                "trading_db",
                {"alert_groups": 1, "alert_rule_state": 1, "security_check_runs": 1, "security_findings": 1},
            )
        ]
    assert pg_conn.execute("SELECT to_regnamespace('ops')").fetchone() == (None,), "trading_db no longer has it"

    # An old backup restored into trading_db brings the tables back: they are stale, dropped, never copied again.
    _old_ops_tables(pg_conn)
    pg_conn.execute("UPDATE ops.alert_rule_state SET state = 'ok', active_since = NULL, fired_at = NULL")
    pg_conn.commit()
    opsstate._ready.clear()
    with opsstate.connection("ops_state") as conn:
        assert conn.execute("SELECT state FROM ops.alert_rule_state").fetchall() == [("firing",)]
    assert pg_conn.execute("SELECT to_regnamespace('ops')").fetchone() == (None,)


def test_the_state_works_while_trading_db_is_down_and_moves_later(pg_conn, ops_conn, monkeypatch, caplog):
    from trading_ops.dev.localpg import free_port

    _old_ops_tables(pg_conn)
    live = os.environ["AIRFLOW_CONN_TRADING_DB"]
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_db")
    with opsstate.connection("ops_state") as conn:
        conn.execute(
            "INSERT INTO ops.alert_rule_state VALUES ('high_priority', 'ok', NULL, NULL, 0.2, %(t)s)",
            {"t": T0 + timedelta(hours=1)},
        )
        conn.commit()
    assert "was not moved yet" in caplog.text

    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", live)
    opsstate._migrated.clear()
    opsstate._ready.clear()  # the next task: a new process
    with opsstate.connection("ops_state") as conn:
        assert conn.execute("SELECT state, last_value FROM ops.alert_rule_state").fetchall() == [("ok", 0.2)], (
            "the newer row written meanwhile wins"
        )
        assert conn.execute("SELECT count(*) FROM ops.security_findings").fetchone() == (1,)


def test_a_restore_of_trading_db_leaves_the_alert_and_findings_history_untouched(
    pg_cluster, fresh_db, ops_conn, alert_fakes, tmp_path
):
    """Alerts and findings recorded before and after a backup of trading_db are all there after its restore."""
    from tests.support.monitoring import minutes
    from trading_ops import pgtools
    from trading_ops.alerting import Alert, send_alert
    from trading_ops.db import libpq_env
    from trading_ops.monitoring import state
    from trading_ops.policy import load_policy
    from trading_ops.restore import database
    from trading_ops.security.findings import Finding, RunInfo, record_findings

    def record(run: int, at: datetime) -> None:
        send_alert(Alert("warning", "db_backup_full.verify", f"verification {run} failed", raised_at=at))
        with opsstate.connection("ops_state") as conn:
            record_findings(
                conn,
                "ops",
                "ssl_cert_check",
                RunInfo("security_checks_daily", f"run{run}", at, "http://127.0.0.1:8080/x"),
                [Finding("ssl_cert_check", "warning", f"host{run}:443 expiry", "expires soon")],
                [],
                date(2026, 11, 20),
            )
        state.check_system_health(load_policy(), {"error_rate_percent": 2.0}, at)

    record(1, minutes(0))
    dump = tmp_path / "trading_db.dump"
    subprocess.run(
        [pgtools.client("pg_dump", at_least=15), "-Fc", "-f", str(dump)],
        check=True,
        env={**os.environ, **libpq_env("trading_db")},
    )
    record(2, minutes(5))

    stamp = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)
    staging = database.staging_name(fresh_db, stamp)
    database.create_database("trading_db", staging)
    database.run_pg_restore(
        "trading_db", dump, staging, program=pgtools.client("pg_restore", at_least=15), jobs=1, clean=False
    )
    retired = database.retired_name(fresh_db, stamp)
    database.swap_databases("trading_db", fresh_db, staging, retired, timedelta(seconds=10))
    pg_cluster.drop_database(retired)

    assert ops_conn.execute(
        "SELECT summary FROM ops.alert_groups WHERE source = %s ORDER BY summary", ("db_backup_full.verify",)
    ).fetchall() == [
        ("verification 1 failed",),
        ("verification 2 failed",),
    ]
    assert ops_conn.execute("SELECT run_id FROM ops.security_check_runs ORDER BY run_id").fetchall() == [
        ("run1",),
        ("run2",),
    ]
    assert ops_conn.execute(
        "SELECT state, evaluated_at FROM ops.alert_rule_state WHERE rule = 'high_priority'"
    ).fetchone() == (
        "firing",
        minutes(5),
    ), "the rule fired after the backup and stays fired"
    with psycopg.connect(pg_cluster.conninfo(fresh_db)) as restored:
        assert restored.execute("SELECT to_regnamespace('ops')").fetchone() == (None,), "the backup carried no ops"
