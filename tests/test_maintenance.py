"""db_maintenance on the real PostgreSQL of the harness: archive, analyze, reindex, and what happens when they are
interrupted. The demo data ends 2026-11-01 (6-hourly bars, 10 symbols, 12 months), so a run at MOMENT archives the
rows before 2026-08-15 03:00 UTC."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from tests.support.maintenance import (  # noqa: F401 (the `db` and `maintenance_role` fixtures)
    CUTOFF,
    MOMENT,
    cancel_once_it_waits,
    db_fixture,
    index_filenodes,
    kill_mid_batch_then_rerun,
    maintenance_role_fixture,
    old_rows_checksum,
    run,
    table_counts,
    wait_for,
)
from trading_ops.errors import UserError
from trading_ops.maintenance import MaintenanceError, MaintenanceRefused
from trading_ops.maintenance.analyze import analyze_tables
from trading_ops.maintenance.archive import archive_cutoff, archive_old_rows
from trading_ops.maintenance.plan import plan_maintenance
from trading_ops.maintenance.reindex import choose_indexes, reindex_indexes
from trading_ops.maintenance.session import APPLICATION_NAME
from trading_ops.runtime import run_time

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
    assert run_time(scheduled) == MOMENT
    assert run_time(manual) == DagRun.run_after


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
        summary = run(archive_old_rows, MOMENT)

    after = table_counts(db)
    assert summary["cutoff"] == CUTOFF.isoformat() and summary["batches_by"] == "pages"
    assert summary["rows_moved"] == old[0] and summary["batches"] == len(per_slice)
    assert sorted(logged_batches(caplog), reverse=True) == per_slice and max(per_slice) <= 1100
    assert summary["partitions_moved"] == 0 and summary["row_bytes_estimate"] > 50 * old[0]
    assert summary["bytes_moved"] > 0 and summary["wal_bytes"] > 0 and summary["duration_seconds"] > 0
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0, "archive": old[0]}
    assert old_rows_checksum(db, "market_data_archive") == old

    again = run(archive_old_rows, MOMENT)
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
        summary = run(archive_old_rows, moment)

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

    summary = run(archive_old_rows, MOMENT)

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

    # A dry run runs the same checks; a refusal is a user error: the task fails at once, without retries.
    for step, dry_run in ((plan_maintenance, None), (archive_old_rows, True), (archive_old_rows, False)):
        with pytest.raises(MaintenanceRefused) as excinfo:
            run(step, MOMENT, **({} if dry_run is None else {"dry_run": dry_run}))
        text = str(excinfo.value)
        assert isinstance(excinfo.value, UserError)
        assert message in text and text.endswith(".") and "\n" not in text

    assert db.execute("SELECT count(*) FROM market_data").fetchone() == source_before


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
            summary = run(archive_old_rows, MOMENT)
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
        summary = run(analyze_tables)
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
    summary = run(reindex_indexes)
    assert summary["rebuilt"] == [] and index_filenodes(db) == healthy, "a healthy database does no work"

    db.execute("DELETE FROM market_data WHERE id % 4 <> 0")
    db.execute("ANALYZE market_data")
    estimates = {c.name: c.bloat_percent for c in run(choose_indexes)}
    bloated = {name for name, bloat in estimates.items() if bloat is not None and bloat >= 40}
    assert bloated == {"market_data_pkey", "market_data_timestamp_idx", "market_data_symbol_timestamp_idx"}

    summary = run(reindex_indexes)

    after = index_filenodes(db)
    rebuilt = {name for name in healthy if after[name] != healthy[name]}
    assert rebuilt == bloated
    assert {entry["index"] for entry in summary["rebuilt"]} == {f"public.{name}" for name in bloated}
    assert all(entry["bytes_after"] < entry["bytes_before"] for entry in summary["rebuilt"])
    assert all(c.bloat_percent < 40 for c in run(choose_indexes) if c.name in bloated)


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
    before = index_filenodes(db)

    planned = run(reindex_indexes, dry_run=True)
    assert planned["dry_run"] and planned["would_drop"] == ["public.orders_pkey_ccnew"]
    assert "public.orders_symbol_idx" in planned["would_rebuild"]
    assert index_filenodes(db) == before, "a dry run neither drops nor rebuilds"

    summary = run(reindex_indexes)

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
    with (
        psycopg.connect(conninfo) as orders_holder,
        psycopg.connect(conninfo) as instruments_holder,
        psycopg.connect(conninfo, autocommit=True) as watcher,
    ):
        orders_holder.execute("LOCK TABLE orders IN SHARE UPDATE EXCLUSIVE MODE")  # for the whole run
        instruments_holder.execute("LOCK TABLE instruments IN SHARE UPDATE EXCLUSIVE MODE")

        def instruments_reindex_waiting() -> bool:
            return bool(
                watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'"
                    " AND query LIKE %s",
                    (APPLICATION_NAME, "%instruments_pkey%"),
                ).fetchone()
            )

        def release_during_the_backoff() -> None:
            # Watched, not timed: on a busy machine the run may reach instruments_pkey later than any fixed delay.
            wait_for(instruments_reindex_waiting, what="the reindex of instruments_pkey to wait for its lock")
            wait_for(lambda: not instruments_reindex_waiting(), what="its lock timeout")
            instruments_holder.commit()

        release = threading.Thread(target=release_during_the_backoff)
        release.start()
        with caplog.at_level(logging.WARNING, logger="trading_ops"), pytest.raises(MaintenanceError) as excinfo:
            run(reindex_indexes)
        release.join()
        orders_holder.rollback()

    assert not isinstance(excinfo.value, UserError), "an operational failure: Airflow retries it"
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


# --- which schemas -----------------------------------------------------------------------------------------------

PUBLIC_TABLES = {"public.instruments", "public.market_data", "public.market_data_archive", "public.orders"}


def analyze_count(db, schema: str, table: str) -> int:
    (count,) = db.execute(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s", (schema, table)
    ).fetchone()
    return count


def test_analyze_and_reindex_cover_every_user_schema_unless_maintenance_schemas_narrows_them(db, make_policy):
    """The manual's ANALYZE VERBOSE and REINDEX DATABASE cover the whole database, not only public."""
    db.execute("CREATE SCHEMA reporting")
    db.execute("CREATE TABLE reporting.daily_pnl (id bigint PRIMARY KEY, booked_at timestamptz NOT NULL, pnl numeric)")
    db.execute("CREATE INDEX daily_pnl_booked_at_idx ON reporting.daily_pnl (booked_at)")
    db.execute(
        "INSERT INTO reporting.daily_pnl"
        " SELECT g, timestamptz '2026-01-01' + g * interval '1 minute', g FROM generate_series(1, 40000) AS g"
    )
    db.execute("DELETE FROM reporting.daily_pnl WHERE id % 4 <> 0")
    db.execute("ANALYZE reporting.daily_pnl")  # statistics, so that the bloat is measured in both halves
    # Another session's temporary table (and its TOAST schema) is not the maintenance's to touch.
    db.execute("CREATE TEMPORARY TABLE scratch (id int PRIMARY KEY, note text)")
    reporting_indexes = {"reporting.daily_pnl_pkey", "reporting.daily_pnl_booked_at_idx"}
    bloat_policy = {"maintenance.reindex.bloat_threshold_percent": 40, "maintenance.reindex.min_index_size": "0B"}

    make_policy({**bloat_policy, "maintenance.schemas": ["public"]})
    before = index_filenodes(db, "reporting")
    analyzed_before = analyze_count(db, "reporting", "daily_pnl")
    plan = run(plan_maintenance, MOMENT)
    assert plan["schemas"] == ["public"] and set(plan["analyze"]) == PUBLIC_TABLES
    assert {f"{index['schema']}.{index['name']}" for index in plan["reindex"]} & reporting_indexes == set()
    assert set(run(analyze_tables)["tables"]) == PUBLIC_TABLES
    assert run(reindex_indexes)["rebuilt"] == []
    assert analyze_count(db, "reporting", "daily_pnl") == analyzed_before and index_filenodes(db, "reporting") == before

    make_policy(bloat_policy)
    plan = run(plan_maintenance, MOMENT)
    assert plan["schemas"] == ["public", "reporting"]
    assert set(plan["analyze"]) == PUBLIC_TABLES | {"reporting.daily_pnl"}
    choices = {f"{index['schema']}.{index['name']}": index["action"] for index in plan["reindex"]}
    assert {name for name, action in choices.items() if action == "rebuild"} == reporting_indexes

    assert set(run(analyze_tables)["tables"]) == PUBLIC_TABLES | {"reporting.daily_pnl"}
    assert analyze_count(db, "reporting", "daily_pnl") == analyzed_before + 1
    summary = run(reindex_indexes)
    assert {entry["index"] for entry in summary["rebuilt"]} == reporting_indexes and not summary["failed"]
    assert all(entry["bytes_after"] < entry["bytes_before"] for entry in summary["rebuilt"])
    after = index_filenodes(db, "reporting")
    assert all(after[name] != before[name] for name in before) and set(before) == {
        "daily_pnl_pkey",
        "daily_pnl_booked_at_idx",
    }


def test_maintenance_schemas_naming_a_schema_the_database_lacks_is_refused_before_any_change(db, make_policy):
    make_policy({"maintenance.schemas": ["public", "reportng"]})
    for step in (plan_maintenance, analyze_tables, reindex_indexes):
        with pytest.raises(MaintenanceRefused) as excinfo:
            run(step, *([MOMENT] if step is plan_maintenance else []))
        assert str(excinfo.value) == (
            f"maintenance.schemas names reportng, which database {db.info.dbname} does not have."
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"maintenance.schemas": ["pg_catalog"]}, "maintenance.schemas.0: 'pg_catalog' is a system schema"),
        ({"maintenance.schemas": ["pg_toast_temp_3"]}, "maintenance.schemas.0: 'pg_toast_temp_3' is a system schema"),
        ({"maintenance.schemas": []}, "maintenance.schemas: List should have at least 1 item"),
        ({"maintenance.reindex.schemas": ["public"]}, "maintenance.reindex.schemas is not a known setting"),
        ({"maintenance.analyze.schemas": ["public"]}, "maintenance.analyze.schemas is not a known setting"),
    ],
)
def test_the_schemas_key_is_one_list_of_user_schemas(make_policy, changes, message):
    from trading_ops.policy import PolicyError, load_policy

    path = make_policy(changes)
    with pytest.raises(PolicyError) as excinfo:
        load_policy(path)
    assert message in str(excinfo.value)


# --- privileges ----------------------------------------------------------------------------------------------------


def test_the_plan_refuses_a_role_that_could_not_finish_the_run_and_one_it_accepts_can(
    pg_cluster, db, make_policy, maintenance_role
):
    """The privileges every step needs are checked by the plan, in a dry run too: a plan that passes predicts a run
    that passes."""
    db.execute("CREATE SCHEMA reporting")
    db.execute("CREATE TABLE reporting.daily_pnl (id bigint PRIMARY KEY)")
    role = maintenance_role("instruments", "market_data", "orders")
    superuser = pg_cluster.superuser

    with pytest.raises(MaintenanceRefused) as excinfo:
        run(plan_maintenance, MOMENT)
    assert str(excinfo.value) == (
        f"Role {role} lacks INSERT on public.market_data_archive (maintenance.archive.archive_table), which archiving "
        "needs."
    )

    db.execute(sql.SQL("GRANT INSERT ON market_data_archive TO {}").format(sql.Identifier(role)))
    with pytest.raises(MaintenanceRefused) as excinfo:
        run(plan_maintenance, MOMENT)
    assert str(excinfo.value) == (
        f"Role {role} lacks the owner's privileges on public.market_data_archive (owner {superuser}), "
        f"reporting.daily_pnl (owner {superuser}), which REINDEX and ANALYZE need: make it a member of the owner's "
        "role, or leave the schema out of maintenance.schemas."
    )

    db.execute(sql.SQL("ALTER TABLE market_data_archive OWNER TO {}").format(sql.Identifier(role)))
    make_policy({"maintenance.schemas": ["public"], "maintenance.reindex.mode": "all"})
    plan = run(plan_maintenance, MOMENT)
    assert plan["schemas"] == ["public"] and set(plan["analyze"]) == PUBLIC_TABLES
    before = index_filenodes(db)
    assert run(archive_old_rows, MOMENT)["rows_moved"] == plan["archive"]["rows_to_move"] > 0
    assert set(run(analyze_tables)["tables"]) == PUBLIC_TABLES
    assert {entry["index"] for entry in run(reindex_indexes)["rebuilt"]} == {f"public.{name}" for name in before}
