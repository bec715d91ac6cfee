"""The monthly partitioned layout on the real PostgreSQL of the harness: the conversion, the premake of future
partitions, archiving whole partitions, and finishing a partition move that was interrupted."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from tests.support.harness import DEMO_END
from tests.support.insert_probe import InsertProbe
from tests.support.maintenance import (  # noqa: F401 (the `db` and `maintenance_role` fixtures)
    CUTOFF,
    MOMENT,
    cancel_once_it_waits,
    convert,
    db_fixture,
    kill_mid_batch_then_rerun,
    maintenance_role_fixture,
    old_rows_checksum,
    run,
    table_counts,
    wait_for,
)
from trading_ops.maintenance import MaintenanceRefused
from trading_ops.maintenance.archive import archive_old_rows
from trading_ops.maintenance.conversion import PartitioningError
from trading_ops.maintenance.partitions import create_future_partitions
from trading_ops.maintenance.plan import plan_maintenance

MONTHS = [f"2025{month:02d}" for month in (11, 12)] + [f"2026{month:02d}" for month in range(1, 13)] + ["202701"]
SOURCE_PARTITIONS = [f"market_data_p{month}" for month in [*MONTHS, "202702"]]


def partitions_of(db, table: str) -> list[str]:
    return [
        name
        for (name,) in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass ORDER BY c.relname",
            (table,),
        )
    ]


def all_rows_checksum(db, table: str) -> tuple[int, str]:
    query = sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {} AS t")
    return tuple(db.execute(query.format(sql.Identifier(table))).fetchone())


# --- conversion ------------------------------------------------------------------------------------------------


def test_conversion_builds_the_monthly_layout_with_every_row_while_a_writer_keeps_inserting(pg_cluster, db):
    role = f"api_{db.info.dbname}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("GRANT SELECT, INSERT ON market_data TO {}").format(sql.Identifier(role)))
        original = all_rows_checksum(db, "market_data")
        writer = InsertProbe(pg_cluster.conninfo(db.info.dbname), DEMO_END)
        writer.start()
        wait_for(lambda: len(writer.ids) > 20, what="the writer to insert")
        plans = convert()
        written_during = len(writer.ids)
        wait_for(lambda: len(writer.ids) > written_during + 20, what="the writer to insert after the swap")
        writer.stop()

        source, archive = plans
        assert (source.status, archive.status) == ("converted", "converted")
        assert source.partitions == SOURCE_PARTITIONS and source.grants == 2
        assert partitions_of(db, "market_data") == SOURCE_PARTITIONS
        assert partitions_of(db, "market_data_archive") == []
        rows = db.execute("SELECT count(*) FROM market_data").fetchone()[0]
        assert rows == original[0] + len(writer.ids) and source.rows_copied >= original[0]
        written = db.execute("SELECT count(*) FROM market_data WHERE id = ANY(%s)", (writer.ids,)).fetchone()[0]
        assert written == len(writer.ids), "every insert made during the conversion is in the new table"
        assert (
            db.execute(
                "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) FROM market_data t WHERE id <> ALL(%s)",
                (writer.ids,),
            ).fetchone()
            == original
        )

        assert db.execute("SELECT relkind FROM pg_class WHERE relname = 'market_data'").fetchone() == ("p",)
        assert db.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'market_data_pkey'"
        ).fetchone() == ('PRIMARY KEY (id, "timestamp")',)
        indexes = {name for (name,) in db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'market_data'")}
        assert indexes == {"market_data_pkey", "market_data_timestamp_idx", "market_data_symbol_timestamp_idx"}
        (new_id,) = db.execute(
            'INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)'
            " VALUES ('MSFT', '2026-12-24', 1, 1, 1, 1, 5) RETURNING id"
        ).fetchone()
        assert new_id > max(writer.ids) and db.execute("SELECT to_regclass('market_data_id_seq')").fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(
                'INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)'
                " VALUES ('MSFT', '2026-12-24', 1, 1, 1, 1, -5)"
            )
        assert db.execute("SELECT has_table_privilege(%s, 'market_data', 'INSERT')", (role,)).fetchone() == (True,)
        assert [plan.status for plan in convert()] == ["already partitioned by month"] * 2
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_conversion_dry_run_changes_nothing_and_unsupported_tables_are_refused(db):
    before = all_rows_checksum(db, "market_data")
    plans = convert(dry_run=True)
    assert plans[0].status == "planned" and plans[0].partitions == SOURCE_PARTITIONS
    assert plans[0].indexes == ["market_data_symbol_timestamp_idx", "market_data_timestamp_idx"]
    assert db.execute("SELECT relkind FROM pg_class WHERE relname = 'market_data'").fetchone() == ("r",)
    assert all_rows_checksum(db, "market_data") == before

    db.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    db.execute("CREATE TRIGGER touch BEFORE INSERT ON market_data FOR EACH ROW EXECUTE FUNCTION touch()")
    db.execute("CREATE UNIQUE INDEX market_data_symbol_id_key ON market_data (symbol, id)")
    with pytest.raises(PartitioningError) as excinfo:
        convert("market_data")
    assert str(excinfo.value) == (
        "Table public.market_data cannot be converted: it has triggers, which the conversion does not carry over; "
        "unique index market_data_symbol_id_key lacks timestamp."
    )
    assert db.execute("SELECT to_regclass('market_data_partitioned_new')").fetchone() == (None,)


def test_premake_keeps_the_coming_months_ready_and_creates_each_once(db):
    convert()
    moment = datetime(2027, 1, 10, 18, tzinfo=UTC)
    planned = run(create_future_partitions, moment, dry_run=True)
    assert planned == {
        "partitioned": True,
        "created": [],
        "dry_run": True,
        "would_create": ["market_data_p202703", "market_data_p202704"],
    }
    assert partitions_of(db, "market_data") == SOURCE_PARTITIONS, "a dry run creates nothing"
    first = run(create_future_partitions, moment)
    again = run(create_future_partitions, moment)
    assert first == {"partitioned": True, "created": ["market_data_p202703", "market_data_p202704"]}
    assert again == {"partitioned": True, "created": []}
    db.execute(
        'INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)'
        " VALUES ('AAPL', '2027-04-30 23:59', 1, 1, 1, 1, 1)"
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="no partition of relation"):
        db.execute(
            'INSERT INTO market_data (symbol, "timestamp", open, high, low, close, volume)'
            " VALUES ('AAPL', '2027-05-01', 1, 1, 1, 1, 1)"
        )


def test_premake_does_nothing_on_an_unpartitioned_table(db):
    assert run(create_future_partitions, MOMENT) == {"partitioned": False, "created": []}


# --- archive ---------------------------------------------------------------------------------------------------


def test_expired_partitions_move_whole_and_only_the_straddling_month_moves_row_by_row(db, make_policy):
    make_policy({"maintenance.archive.batch_size": 200})
    convert()
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")
    (straddling,) = db.execute(
        'SELECT count(*) FROM market_data WHERE "timestamp" >= \'2026-08-01\' AND "timestamp" < %s', (CUTOFF,)
    ).fetchone()
    moved = [f"market_data_p{month}" for month in MONTHS[:9]]

    planned = run(archive_old_rows, MOMENT, dry_run=True)
    assert planned["dry_run"] and planned["cutoff"] == CUTOFF.isoformat()
    assert [move["name"] for move in planned["partitions_to_move"]] == moved
    assert planned["rows_to_move"] == straddling
    assert table_counts(db) == before and partitions_of(db, "market_data") == SOURCE_PARTITIONS
    assert partitions_of(db, "market_data_archive") == [], "a dry run moves nothing and creates no partition"

    summary = run(archive_old_rows, MOMENT)

    assert summary["partition_names"] == moved and summary["partitions_moved"] == 9
    assert summary["rows_moved"] == straddling and summary["batches"] >= -(-straddling // 200)
    assert summary["partition_bytes"] > 0 and summary["bytes_moved"] > summary["partition_bytes"]
    assert partitions_of(db, "market_data_archive") == [f"market_data_archive_p{month}" for month in MONTHS[:10]]
    assert partitions_of(db, "market_data") == SOURCE_PARTITIONS[9:]
    after = table_counts(db)
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0}
    assert old_rows_checksum(db, "market_data_archive") == old

    assert run(archive_old_rows, MOMENT)["partitions_moved"] == 0
    assert table_counts(db) == after

    # A month later August has expired whole, but the archive already holds its first half: the rest is merged
    # into that partition and the emptied source partition dropped.
    summary = run(archive_old_rows, datetime(2026, 12, 15, 3, tzinfo=UTC))
    assert summary["partition_names"] == ["market_data_p202608"]
    assert "market_data_p202608" not in partitions_of(db, "market_data")
    assert db.execute("SELECT to_regclass('market_data_p202608')").fetchone() == (None,)
    final = table_counts(db)
    assert final["total"] == before["total"] and final["in_both"] == 0
    assert db.execute('SELECT min("timestamp") FROM market_data').fetchone()[0] >= datetime(2026, 9, 15, 3, tzinfo=UTC)


def _leave_detach_pending(pg_cluster, dbname: str, partition: str) -> None:
    """DETACH PARTITION CONCURRENTLY cancelled while it waits for a reader of the table: the partition stays
    "detach pending", as after a worker killed in that step."""
    cancel_once_it_waits(
        pg_cluster.conninfo(dbname),
        "SELECT count(*) FROM market_data",
        sql.SQL("ALTER TABLE market_data DETACH PARTITION {} CONCURRENTLY").format(sql.Identifier(partition)),
    )


def test_a_partition_move_interrupted_after_detach_is_finished_by_the_next_run(pg_cluster, db):
    convert()
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")
    db.execute("ALTER TABLE market_data DETACH PARTITION market_data_p202512")  # stopped before the attach
    _leave_detach_pending(pg_cluster, db.info.dbname, "market_data_p202601")
    assert db.execute(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'market_data_p202601'::regclass"
    ).fetchone() == (True,)
    assert table_counts(db)["total"] < before["total"], "a detached partition is in neither table"

    plan = run(plan_maintenance, MOMENT)
    states = {move["name"]: move["state"] for move in plan["archive"]["partitions_to_move"]}
    assert states["market_data_p202512"] == "detached" and states["market_data_p202601"] == "detach pending"
    (straddling,) = db.execute(
        'SELECT count(*) FROM market_data WHERE "timestamp" >= \'2026-08-01\' AND "timestamp" < %s', (CUTOFF,)
    ).fetchone()
    assert plan["archive"]["rows_to_move"] == straddling

    run(archive_old_rows, MOMENT)

    after = table_counts(db)
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0}
    assert old_rows_checksum(db, "market_data_archive") == old
    assert {"market_data_archive_p202512", "market_data_archive_p202601"} <= set(
        partitions_of(db, "market_data_archive")
    )


def test_a_worker_killed_mid_batch_on_the_partitioned_layout_loses_no_row(pg_cluster, db, make_policy):
    make_policy({"maintenance.archive.batch_size": 100})
    convert()
    kill_mid_batch_then_rerun(pg_cluster, db, datetime(2026, 8, 1, tzinfo=UTC), 100)


def test_the_layouts_must_fit_the_strategy_and_the_rows_strategy_works_on_any_layout(db, make_policy):
    convert("market_data")
    with pytest.raises(MaintenanceRefused) as excinfo:
        run(archive_old_rows, MOMENT)
    assert str(excinfo.value) == (
        "public.market_data is partitioned but public.market_data_archive is not: convert it with "
        "`python -m trading_ops.maintenance convert`, or set maintenance.archive.partition_strategy to rows."
    )

    make_policy({"maintenance.archive.partition_strategy": "rows", "maintenance.archive.batch_size": 2000})
    before = table_counts(db)
    old = old_rows_checksum(db, "market_data")
    summary = run(archive_old_rows, MOMENT)
    assert summary["partitions_moved"] == 0 and summary["rows_moved"] == old[0]
    after = table_counts(db)
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0}
    assert old_rows_checksum(db, "market_data_archive") == old


def test_a_default_partition_rules_out_concurrent_detach_with_one_sentence(db):
    convert()
    db.execute("CREATE TABLE market_data_default PARTITION OF market_data DEFAULT")
    with pytest.raises(
        MaintenanceRefused, match=r"has a DEFAULT partition, which rules out DETACH PARTITION CONCURRENTLY"
    ):
        run(plan_maintenance, MOMENT)
    assert len(partitions_of(db, "market_data")) == len(SOURCE_PARTITIONS) + 1


def test_partition_ddl_needs_the_owners_privileges_on_every_partition_and_create_on_the_schema(
    pg_cluster, db, maintenance_role
):
    convert()  # by the superuser, who owns the partitions
    role = maintenance_role("instruments", "market_data", "market_data_archive", "orders")
    identifier = sql.Identifier(role)
    with pytest.raises(MaintenanceRefused) as excinfo:
        run(plan_maintenance, MOMENT)
    first = ", ".join(f"{name} (owner {pg_cluster.superuser})" for name in SOURCE_PARTITIONS[:3])
    assert str(excinfo.value) == (
        f"Role {role} lacks the owner's privileges on {first} and {len(SOURCE_PARTITIONS) - 3} more in schema public, "
        "which the partition DDL of public.market_data needs: make it the owner or a member of the owner's role."
    )

    for partition in SOURCE_PARTITIONS:
        db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(partition), identifier))
    with pytest.raises(MaintenanceRefused) as excinfo:
        run(archive_old_rows, MOMENT, dry_run=True)
    assert (
        str(excinfo.value)
        == f"Role {role} cannot create the partitions of public.market_data: it lacks CREATE on public."
    )

    db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(identifier))
    before = table_counts(db)
    planned = run(archive_old_rows, MOMENT, dry_run=True)
    summary = run(archive_old_rows, MOMENT)
    assert summary["partition_names"] == [move["name"] for move in planned["partitions_to_move"]]
    assert summary["partitions_moved"] == 9 and summary["rows_moved"] == planned["rows_to_move"]
    after = table_counts(db)
    assert after == {**after, "total": before["total"], "in_both": 0, "old_left": 0}
    assert run(create_future_partitions, datetime(2027, 1, 10, tzinfo=UTC))["created"] == [
        "market_data_p202703",
        "market_data_p202704",
    ]


def test_the_conversion_command_plans_then_converts_both_tables(db, capsys):
    import json

    from trading_ops.maintenance.cli import main

    main(["convert", "--dry-run"])
    planned = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(plan["table"], plan["status"]) for plan in planned] == [
        ("market_data", "planned"),
        ("market_data_archive", "planned"),
    ]
    assert db.execute("SELECT relkind FROM pg_class WHERE relname = 'market_data'").fetchone() == ("r",)

    main(["convert"])
    converted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(plan["table"], plan["status"]) for plan in converted] == [
        ("market_data", "converted"),
        ("market_data_archive", "converted"),
    ]
    assert converted[0]["rows_copied"] == 14600
    kinds = db.execute(
        "SELECT relname, relkind FROM pg_class WHERE relname IN ('market_data', 'market_data_archive') ORDER BY 1"
    ).fetchall()
    assert kinds == [("market_data", "p"), ("market_data_archive", "p")]


def test_the_conversion_command_refuses_a_table_it_cannot_convert_with_one_sentence(db, capsys):
    from trading_ops.maintenance.cli import main

    db.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    db.execute("CREATE TRIGGER touch BEFORE INSERT ON market_data FOR EACH ROW EXECUTE FUNCTION touch()")
    with pytest.raises(SystemExit) as excinfo:
        main(["convert"])
    assert excinfo.value.code == 1
    assert capsys.readouterr().err == (
        "Table public.market_data cannot be converted: it has triggers, which the conversion does not carry over.\n"
    )
    assert db.execute("SELECT relkind FROM pg_class WHERE relname = 'market_data'").fetchone() == ("r",)
