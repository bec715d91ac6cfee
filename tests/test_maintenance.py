"""db_maintenance on the real PostgreSQL of the harness: archive, analyze, reindex, and what happens when they are
interrupted. The demo data ends 2026-11-01 (6-hourly bars, 10 symbols, 12 months), so a run at MOMENT archives the
rows before 2026-08-15 03:00 UTC."""

from __future__ import annotations

import logging
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
from trading_ops import maintenance
from trading_ops.maintenance import MaintenanceError, archive_cutoff, run_moment
from trading_ops.partitioning import APPLICATION_NAME, maintenance_session
from trading_ops.policy import load_policy

MOMENT = datetime(2026, 11, 15, 3, tzinfo=UTC)
CUTOFF = datetime(2026, 8, 15, 3, tzinfo=UTC)
PAUSE_LOCK = 4242


# --- helpers shared with the partitioned and DAG tests ---------------------------------------------------------


def cfg():
    return load_policy().maintenance


def run(step, *args):
    """Run one maintenance step the way its task does: its own session with the policy's settings."""
    config = cfg()
    with maintenance_session(config) as conn:
        return step(conn, config, *args)


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


def index_filenodes(conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, pg_relation_filenode(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = 'i'"
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


# --- the run's time --------------------------------------------------------------------------------------------


def test_cutoff_is_the_run_time_minus_whole_months_like_postgres_intervals(db):
    for moment in (MOMENT, datetime(2026, 5, 31, 18, tzinfo=UTC), datetime(2024, 5, 30, tzinfo=UTC)):
        (expected,) = db.execute(
            "SELECT (%s::timestamptz AT TIME ZONE 'UTC' - interval '3 months') AT TIME ZONE 'UTC'", (moment,)
        ).fetchone()
        assert archive_cutoff(moment, 3) == expected
    assert archive_cutoff(datetime(2026, 5, 31, 18, tzinfo=UTC), 3) == datetime(2026, 2, 28, 18, tzinfo=UTC)


def test_run_time_is_the_data_interval_end_or_run_after_for_manual_runs():
    class DagRun:
        run_after = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

    scheduled = {"data_interval_end": MOMENT, "dag_run": DagRun()}
    manual = {"data_interval_end": None, "dag_run": DagRun()}
    assert run_moment(scheduled) == MOMENT
    assert run_moment(manual) == DagRun.run_after


# --- archive, unpartitioned ------------------------------------------------------------------------------------


def logged_batches(caplog) -> list[int]:
    return [int(message.split(": ")[1].split()[0]) for message in caplog.messages if message.startswith("batch ")]


def test_a_backlog_moves_in_slices_of_pages_exactly_the_rows_older_than_the_cutoff_and_a_rerun_moves_nothing(
    db, make_policy, caplog
):
    make_policy({"maintenance.archive.batch_size": 1000})
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")
    assert old[0] > 0.7 * before["source"], "a backlog: most rows are older than the cutoff"
    # Each batch is a slice of pages holding about 1000 rows by the planner's rows per page: the old rows per slice.
    (pages_per_batch,) = db.execute(
        "SELECT floor(1000 * pg_relation_size('market_data') / 8192 / reltuples)::int FROM pg_class"
        " WHERE relname = 'market_data'"
    ).fetchone()
    per_slice = [
        rows
        for (rows,) in db.execute(
            'SELECT count(*) FROM market_data WHERE "timestamp" < %s'
            " GROUP BY (ctid::text::point)[0]::int / %s ORDER BY 1 DESC",
            (CUTOFF, pages_per_batch),
        )
    ]

    with caplog.at_level(logging.INFO, logger="trading_ops"):
        summary = run(maintenance.archive_old_rows, MOMENT)

    after = table_counts(db)
    assert summary["cutoff"] == CUTOFF.isoformat() and summary["batches_by"] == "pages"
    assert summary["rows_moved"] == old[0] and summary["batches"] == len(per_slice)
    assert sorted(logged_batches(caplog), reverse=True) == per_slice and max(per_slice) <= 1100
    assert summary["partitions_moved"] == 0 and summary["row_bytes_estimate"] > 50 * old[0]
    assert summary["bytes_moved"] > 0 and summary["wal_bytes"] > 0 and summary["duration_seconds"] > 0
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0, "archive": old[0]}
    assert old_rows_checksum(db, "market_data_archive") == old

    again = run(maintenance.archive_old_rows, MOMENT)
    assert again["rows_moved"] == 0 and again["batches"] == 0
    assert table_counts(db) == after


def test_a_daily_handful_moves_in_key_ranges_through_the_primary_key(db, make_policy, caplog):
    make_policy({"maintenance.archive.batch_size": 100})
    moment = datetime(2026, 2, 20, 3, tzinfo=UTC)
    cutoff = archive_cutoff(moment, 3)
    # Ranges of 100 keys, each starting at the next old row's key.
    old_keys = [
        key for (key,) in db.execute('SELECT id FROM market_data WHERE "timestamp" < %s ORDER BY id', (cutoff,))
    ]
    assert 0 < len(old_keys) < 0.1 * table_counts(db)["source"]
    ranges, start = [], None
    for key in old_keys:
        if start is None or key >= start + 100:
            start = key
            ranges.append(0)
        ranges[-1] += 1

    with caplog.at_level(logging.INFO, logger="trading_ops"):
        summary = run(maintenance.archive_old_rows, moment)

    assert summary["batches_by"] == "key ranges" and summary["rows_moved"] == len(old_keys)
    assert logged_batches(caplog) == ranges and max(ranges) <= 100
    archived = [key for (key,) in db.execute("SELECT id FROM market_data_archive ORDER BY id")]
    assert archived == old_keys


def test_time_and_key_columns_come_from_the_policy_and_are_quoted(db, make_policy):
    odd = 'Trade "Time"; DROP TABLE orders; --'
    for table in ("market_data", "market_data_archive"):
        db.execute(
            sql.SQL('ALTER TABLE {} RENAME COLUMN "timestamp" TO {}').format(sql.Identifier(table), sql.Identifier(odd))
        )
    make_policy({"maintenance.archive.time_column": odd, "maintenance.archive.batch_size": 5000})
    old = old_rows_checksum(db, "market_data", odd)

    summary = run(maintenance.archive_old_rows, MOMENT)

    assert summary["rows_moved"] == old[0]
    assert old_rows_checksum(db, "market_data_archive", odd) == old
    assert table_counts(db, odd)["old_left"] == 0
    assert db.execute("SELECT to_regclass('orders') IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize(
    ("change", "policy", "message"),
    [
        (
            "ALTER TABLE market_data_archive DROP COLUMN volume",
            {},
            "Tables public.market_data and public.market_data_archive do not have the same columns in the same order",
        ),
        ("", {"maintenance.archive.time_column": "ts"}, "Table public.market_data has no column 'ts' "),
        ("", {"maintenance.archive.key_column": "symbol"}, "Column 'symbol' (maintenance.archive.key_column) must be"),
        ("DROP TABLE market_data_archive", {}, "Table public.market_data_archive named by maintenance.archive does"),
    ],
)
def test_a_policy_that_does_not_fit_the_tables_stops_with_one_sentence_before_any_change(
    db, make_policy, change, policy, message
):
    if change:
        db.execute(change)
    make_policy(policy)
    source_before = db.execute("SELECT count(*) FROM market_data").fetchone()

    for step in (maintenance.plan_maintenance, maintenance.archive_old_rows):
        with pytest.raises(MaintenanceError) as excinfo:
            run(step, MOMENT)
        text = str(excinfo.value)
        assert message in text and text.endswith(".") and "\n" not in text

    assert db.execute("SELECT count(*) FROM market_data").fetchone() == source_before


def _archive_in_subprocess() -> subprocess.Popen:
    code = "\n".join(
        [
            "from datetime import datetime",
            "from trading_ops import maintenance",
            "from trading_ops.partitioning import maintenance_session",
            "from trading_ops.policy import load_policy",
            "cfg = load_policy().maintenance",
            "with maintenance_session(cfg) as conn:",
            f"    maintenance.archive_old_rows(conn, cfg, datetime.fromisoformat({MOMENT.isoformat()!r}))",
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
    run(maintenance.archive_old_rows, MOMENT)
    final = table_counts(db)
    assert final == {**final, "total": before["total"], "in_both": 0, "old_left": 0}
    assert old_rows_checksum(db, "market_data_archive") == old


def test_a_worker_killed_mid_batch_loses_no_row_and_the_rerun_finishes(pg_cluster, db, make_policy):
    make_policy({"maintenance.archive.batch_size": 500})
    kill_mid_batch_then_rerun(pg_cluster, db, datetime(2000, 1, 1, tzinfo=UTC), 500)


@pytest.mark.parametrize(
    ("release", "retried_because"),
    [
        ("after_timeout", "canceling statement due to lock timeout"),
        ("while_waiting", "could not serialize access due to concurrent update"),
    ],
)
def test_a_batch_conflicting_with_a_writer_is_rolled_back_and_retried(
    pg_cluster, db, make_policy, caplog, release, retried_because
):
    """A writer updates an old row in the batch: the batch waits for its row lock, and either gives up after
    lock_timeout or, when the writer commits, finds the row changed since its snapshot; rolled back, retried."""
    make_policy(
        {"maintenance.archive.batch_size": 100000, "maintenance.lock_timeout": "2s", "maintenance.retry_backoff": "1s"}
    )
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")
    (first_volume,) = db.execute("SELECT volume FROM market_data ORDER BY id LIMIT 1").fetchone()

    def batch_waiting() -> bool:
        return bool(
            db.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (APPLICATION_NAME,),
            ).fetchone()
        )

    with psycopg.connect(pg_cluster.conninfo(db.info.dbname)) as writer:
        writer.execute("UPDATE market_data SET volume = volume + 1 WHERE id = (SELECT min(id) FROM market_data)")

        def commit_writer() -> None:
            wait_for(batch_waiting, what="the batch to wait for the writer's row lock")
            if release == "after_timeout":
                wait_for(lambda: not batch_waiting(), what="the lock timeout")
            writer.commit()

        releaser = threading.Thread(target=commit_writer)
        releaser.start()
        with caplog.at_level(logging.WARNING, logger="trading_ops"):
            summary = run(maintenance.archive_old_rows, MOMENT)
        releaser.join()

    assert f"archive market_data pages 0 to 1266: {retried_because}; retry 1 of 3 in 1.0 s" in caplog.text
    after = table_counts(db)
    assert summary["batches"] == 1 and summary["rows_moved"] == old[0]
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0}
    # The retried batch archived the row as the writer left it.
    archived = db.execute("SELECT volume FROM market_data_archive ORDER BY id LIMIT 1").fetchone()[0]
    assert archived == first_volume + 1


# --- analyze ---------------------------------------------------------------------------------------------------


def test_analyze_times_each_table_and_logs_the_verbose_output(db, caplog, capsys):
    db.execute("DELETE FROM orders WHERE id % 2 = 0")
    with caplog.at_level(logging.INFO):
        summary = run(maintenance.analyze_tables)
    assert set(summary["tables"]) == {
        "public.instruments",
        "public.market_data",
        "public.market_data_archive",
        "public.orders",
    }
    assert all(seconds >= 0 for seconds in summary["tables"].values()) and not summary["failed"]
    # VERBOSE output: INFO messages from the server, logged by the PostgresHook's notice handler (to stdout here).
    assert '"market_data": scanned 185 of 185 pages, containing 14600 live rows' in capsys.readouterr().out
    assert "analyze 2 of 4: public.market_data in" in caplog.text
    (reltuples,) = db.execute("SELECT reltuples FROM pg_class WHERE relname = 'orders'").fetchone()
    assert reltuples == db.execute("SELECT count(*) FROM orders").fetchone()[0]


# --- reindex ---------------------------------------------------------------------------------------------------


def test_bloated_mode_rebuilds_only_the_indexes_whose_estimated_bloat_is_over_the_threshold(db, make_policy):
    make_policy({"maintenance.reindex.bloat_threshold_percent": 40, "maintenance.reindex.min_index_size": "0B"})
    healthy = index_filenodes(db)
    summary = run(maintenance.reindex_indexes)
    assert summary["rebuilt"] == [] and index_filenodes(db) == healthy, "a healthy database does no work"

    db.execute("DELETE FROM market_data WHERE id % 4 <> 0")
    db.execute("ANALYZE market_data")
    estimates = {c.name: c.bloat_percent for c in run(maintenance.choose_indexes)}
    bloated = {name for name, bloat in estimates.items() if bloat is not None and bloat >= 40}
    assert bloated == {"market_data_pkey", "market_data_timestamp_idx", "market_data_symbol_timestamp_idx"}

    summary = run(maintenance.reindex_indexes)

    after = index_filenodes(db)
    rebuilt = {name for name in healthy if after[name] != healthy[name]}
    assert rebuilt == bloated
    assert {entry["index"] for entry in summary["rebuilt"]} == {f"public.{name}" for name in bloated}
    assert all(entry["bytes_after"] < entry["bytes_before"] for entry in summary["rebuilt"])
    assert all(c.bloat_percent < 40 for c in run(maintenance.choose_indexes) if c.name in bloated)


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


def _interrupt(pg_cluster, dbname: str, statement: str) -> None:
    """A concurrent index build on orders cancelled while it waits for a transaction writing to orders: what a
    killed REINDEX or CREATE INDEX CONCURRENTLY leaves behind."""
    cancel_once_it_waits(pg_cluster.conninfo(dbname), "LOCK TABLE orders IN ROW EXCLUSIVE MODE", statement)


def test_invalid_leftovers_are_dropped_and_invalid_indexes_rebuilt(pg_cluster, db, fresh_db):
    _interrupt(pg_cluster, fresh_db, "REINDEX INDEX CONCURRENTLY orders_pkey")
    _interrupt(pg_cluster, fresh_db, "CREATE INDEX CONCURRENTLY orders_symbol_idx ON orders (symbol)")
    invalid = dict(
        db.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname IN ('orders_pkey_ccnew', 'orders_symbol_idx')"
        ).fetchall()
    )
    assert invalid == {"orders_pkey_ccnew": False, "orders_symbol_idx": False}

    summary = run(maintenance.reindex_indexes)

    assert summary["leftovers_dropped"] == ["public.orders_pkey_ccnew"]
    assert "public.orders_symbol_idx" in {entry["index"] for entry in summary["rebuilt"]}
    states = db.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
    ).fetchall()
    assert all(valid for _, valid in states) and "orders_pkey_ccnew" not in dict(states)
    assert db.execute("EXPLAIN SELECT * FROM orders WHERE symbol = 'AAPL'").fetchall()


def test_a_lock_timeout_is_retried_with_backoff_and_one_failing_index_does_not_stop_the_others(
    pg_cluster, db, fresh_db, make_policy, caplog
):
    make_policy(
        {
            "maintenance.reindex.mode": "all",
            "maintenance.lock_timeout": "1s",
            "maintenance.lock_retries": 1,
            "maintenance.retry_backoff": "1s",
        }
    )
    before = index_filenodes(db)
    conninfo = pg_cluster.conninfo(fresh_db)
    with psycopg.connect(conninfo) as orders_holder, psycopg.connect(conninfo) as instruments_holder:
        orders_holder.execute("LOCK TABLE orders IN SHARE UPDATE EXCLUSIVE MODE")  # for the whole run
        instruments_holder.execute("LOCK TABLE instruments IN SHARE UPDATE EXCLUSIVE MODE")
        release = threading.Timer(1.5, instruments_holder.commit)  # released during the backoff
        release.start()
        with caplog.at_level(logging.WARNING, logger="trading_ops"), pytest.raises(MaintenanceError) as excinfo:
            run(maintenance.reindex_indexes)
        release.join()
        orders_holder.rollback()

    assert str(excinfo.value).startswith(
        "REINDEX failed for 2 of 8 indexes (public.orders_created_at_idx, public.orders_pkey: canceling statement "
        "due to lock timeout); the others were rebuilt"
    )
    assert "reindex public.instruments_pkey: canceling statement due to lock timeout; retry 1 of 1 in 1.0 s" in (
        caplog.text
    )
    after = index_filenodes(db)
    changed = {name for name in before if after.get(name) != before[name]}
    assert changed == set(before) - {"orders_pkey", "orders_created_at_idx"}
    assert not db.execute("SELECT 1 FROM pg_index WHERE NOT indisvalid").fetchall()
