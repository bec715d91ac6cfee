"""What the maintenance tests share: the run's moment and cutoff on the demo data, table checksums, running a step the
way its task does, the conversion to the monthly layout, and the helpers that interrupt a step mid-way.

The demo data ends 2026-11-01 (6-hourly bars, 10 symbols, 12 months), so a run at MOMENT archives the rows before
CUTOFF (2026-08-15 03:00 UTC).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from tests.support.harness import ROOT
from trading_ops.maintenance.archive import archive_old_rows
from trading_ops.maintenance.conversion import convert_to_partitioned
from trading_ops.maintenance.session import APPLICATION_NAME, maintenance_session
from trading_ops.policy import load_policy

MOMENT = datetime(2026, 11, 15, 3, tzinfo=UTC)
CUTOFF = datetime(2026, 8, 15, 3, tzinfo=UTC)
# The conversion makes market_data partitions up to this month (the CLI counts premake_partitions from today).
THROUGH = datetime(2027, 2, 1, tzinfo=UTC)
PAUSE_LOCK = 4242


def cfg():
    return load_policy().maintenance


def run(step, *args, **kwargs):
    """Run one maintenance step the way its task does: its own session with the policy's settings."""
    config = cfg()
    with maintenance_session(config) as conn:
        return step(conn, config, *args, **kwargs)


def convert(*tables: str, dry_run: bool = False) -> list:
    """Convert market_data (partitions through THROUGH) and market_data_archive, or only `tables`."""
    config = cfg()
    with maintenance_session(config) as conn:
        return [
            convert_to_partitioned(
                conn, config, table, through=THROUGH if table == "market_data" else None, dry_run=dry_run
            )
            for table in tables or ("market_data", "market_data_archive")
        ]


def table_counts(conn, time_column="timestamp") -> dict:
    column = sql.Identifier(time_column)
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM market_data), (SELECT count(*) FROM market_data_archive),"
        " (SELECT count(*) FROM market_data m JOIN market_data_archive a USING (id)),"
        " (SELECT count(*) FROM market_data WHERE {column} < %(cutoff)s)"
    ).format(column=column)
    source, archive, both, old_left = conn.execute(query, {"cutoff": CUTOFF}).fetchone()
    return {"source": source, "archive": archive, "total": source + archive, "in_both": both, "old_left": old_left}


def old_rows_checksum(conn, table: str, time_column="timestamp") -> tuple[int, str]:
    """Count and md5 of the rows older than CUTOFF in `table`, in id order: the archive must hold exactly these."""
    query = sql.SQL(
        "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {table} AS t WHERE {column} < %(cutoff)s"
    ).format(table=sql.Identifier(table), column=sql.Identifier(time_column))
    return tuple(conn.execute(query, {"cutoff": CUTOFF}).fetchone())


def index_filenodes(conn, schema: str = "public") -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, pg_relation_filenode(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind = 'i'",
        (schema,),
    ).fetchall()
    return dict(rows)


def wait_for(condition, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout} s")


@pytest.fixture(name="db")
def db_fixture(pg_conn):
    """The test database in autocommit: the test's own reads hold no lock or snapshot the maintenance waits for."""
    pg_conn.autocommit = True
    return pg_conn


@pytest.fixture(name="maintenance_role")
def maintenance_role_fixture(pg_cluster, db, monkeypatch):
    """`become(*tables)`: make a login role that is no superuser and owns those tables of public, and point the
    `trading_db` connection at it for the rest of the test. The role is dropped afterwards (what it owns is given back
    to the superuser first)."""
    role, password = f"maint_{db.info.dbname}", "maintenance-role-password"
    made = []

    def become(*tables: str) -> str:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        made.append(role)
        for table in tables:
            db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(role)))
        uri = f"postgresql://{role}:{password}@127.0.0.1:{pg_cluster.port}/{db.info.dbname}"
        monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", uri)
        return role

    yield become
    for name in made:
        db.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _archive_in_subprocess() -> subprocess.Popen:
    code = "\n".join(
        [
            "from datetime import datetime",
            "from trading_ops.maintenance.archive import archive_old_rows",
            "from trading_ops.maintenance.session import maintenance_session",
            "from trading_ops.policy import load_policy",
            "cfg = load_policy().maintenance",
            "with maintenance_session(cfg) as conn:",
            f"    archive_old_rows(conn, cfg, datetime.fromisoformat({MOMENT.isoformat()!r}))",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_mid_batch_then_rerun(pg_cluster, db, batched_from: datetime, batch_size: int) -> None:
    """Pause the archive inside a batch after its first two (a row trigger waits on an advisory lock this test
    holds), SIGKILL the worker there, let the server roll the batch back, then check the tables and rerun. Rows
    older than `batched_from` move before the batches (whole partitions)."""
    batched = '"timestamp" >= %(from)s AND "timestamp" < %(cutoff)s'
    bounds = {"from": batched_from, "cutoff": CUTOFF}
    (pause_key,) = db.execute(
        f"SELECT id FROM market_data WHERE {batched} ORDER BY id OFFSET %(offset)s LIMIT 1",
        {**bounds, "offset": 2 * batch_size + batch_size // 2},
    ).fetchone()
    db.execute(
        "CREATE FUNCTION pause_archive() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$BEGIN PERFORM pg_advisory_xact_lock_shared({PAUSE_LOCK}); RETURN OLD; END$$"
    )
    db.execute(
        sql.SQL(
            "CREATE TRIGGER pause_archive BEFORE DELETE ON market_data FOR EACH ROW WHEN (OLD.id = {key})"
            " EXECUTE FUNCTION pause_archive()"
        ).format(key=sql.Literal(pause_key))
    )
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")

    with psycopg.connect(pg_cluster.conninfo(db.info.dbname), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (PAUSE_LOCK,))
        worker = _archive_in_subprocess()
        try:
            backend = wait_for(
                lambda: holder.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event = 'advisory'",
                    (APPLICATION_NAME,),
                ).fetchone(),
                what="the archive paused in its third batch",
            )[0]
            # Inside the paused transaction the batch is already copied to the archive and partly deleted.
            worker.kill()
            worker.wait(30)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == -9
        paused = table_counts(db)
        holder.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
        wait_for(
            lambda: not holder.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone(),
            what="the killed worker's session to end",
        )

    after_kill = table_counts(db)
    assert paused["in_both"] == 0 and after_kill["in_both"] == 0
    assert after_kill["total"] == before["total"]
    # The batches before the paused one were committed, in key order; the paused one, already copied to the archive
    # up to the paused row, rolled back.
    archived = [key for (key,) in db.execute(f"SELECT id FROM market_data_archive WHERE {batched}", bounds)]
    (first_left,) = db.execute(f"SELECT min(id) FROM market_data WHERE {batched}", bounds).fetchone()
    assert archived and max(archived) < first_left <= pause_key

    db.execute("DROP TRIGGER pause_archive ON market_data")
    run(archive_old_rows, MOMENT)
    final = table_counts(db)
    assert final == {**final, "total": before["total"], "in_both": 0, "old_left": 0}
    assert old_rows_checksum(db, "market_data_archive") == old


def cancel_once_it_waits(conninfo: str, hold: str, statement) -> None:
    """Run `statement` while another session, in an open transaction, holds the lock `hold` takes; cancel it once
    it waits there: what a worker killed in the middle of that statement leaves behind."""
    with (
        psycopg.connect(conninfo) as holder,
        psycopg.connect(conninfo, autocommit=True) as runner,
        psycopg.connect(conninfo, autocommit=True) as watcher,
    ):
        holder.execute(hold)
        pid = runner.info.backend_pid

        def cancel_when_waiting() -> None:
            wait_for(
                lambda: watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)
                ).fetchone(),
                what="the statement to wait for the lock",
            )
            watcher.execute("SELECT pg_cancel_backend(%s)", (pid,))

        canceller = threading.Thread(target=cancel_when_waiting)
        canceller.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            runner.execute(statement)
        canceller.join()
        holder.rollback()
