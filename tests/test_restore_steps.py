"""The restore's building blocks against the harness's real PostgreSQL: pg_restore, verification, swap."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from trading_ops import pgtools
from trading_ops.db import libpq_env
from trading_ops.restore import database
from trading_ops.restore.request import RestoreRefused, RestoreRequest
from trading_ops.restore.verification import verify_integrity

ID = re.compile(r"^\d{8}T\d{6}Z-full$")
VALID = {
    "backup_id": "latest",
    "target_database": "trading_db",
    "restore_mode": "swap",
    "jobs": 2,
    "scale_workload": True,
    "replicas": None,
    "dry_run": False,
    "confirm": "trading_db",
}


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"backup_id": "../../etc/passwd"}, "backup_id '../../etc/passwd' is neither 'latest' nor a backup id"),
        ({"backup_id": "20260101T000000Z-full/../x"}, "is neither 'latest' nor a backup id"),
        ({"target_database": "Trading-DB"}, "target_database 'Trading-DB' is not a plain lower-case"),
        ({"restore_mode": "yolo"}, "restore_mode 'yolo' must be 'swap' or 'in_place'"),
        ({"jobs": 99}, "jobs 99 must be between 1 and 16"),
        ({"confirm": "trading"}, "confirm must equal the target database name 'trading_db'"),
        ({"replicas": -1}, "replicas -1 must not be negative"),
    ],
)
def test_bad_params_are_refused_in_one_sentence(change, sentence):
    with pytest.raises(RestoreRefused) as excinfo:
        RestoreRequest.from_params({**VALID, **change}, ID)
    message = str(excinfo.value)
    assert sentence in message and message.endswith(".") and "\n" not in message


def test_dry_run_needs_no_confirmation():
    request = RestoreRequest.from_params({**VALID, "dry_run": True, "confirm": ""}, ID)
    assert request.dry_run and request.backup_id == "latest"


@pytest.fixture
def pg_restore(pg_cluster) -> str:
    return database.pg_restore_program("trading_db", None)


def test_pg_restore_is_the_installed_version_for_the_dump_and_the_server(pg_cluster):
    """Never the one first on PATH: the version closest above both the dump's pg_dump and the server."""
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        server = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    expected = str(pgtools.installed()[server] / "pg_restore")
    assert database.pg_restore_program("trading_db", None) == expected
    assert database.pg_restore_program("trading_db", server - 1) == expected, "an older dump: the server's version"
    with pytest.raises(pgtools.PostgresToolMissing) as missing:
        database.pg_restore_program("trading_db", 99)
    assert str(missing.value) == (
        "pg_restore of PostgreSQL 99 or newer is not installed on this worker: install postgresql-client-99."
    )


@pytest.fixture
def role_conn(pg_cluster, fresh_db, monkeypatch):
    """A login role of its own behind the `restorer` connection; yields a function running SQL as the superuser."""
    password = "restorer-pw"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE restorer LOGIN PASSWORD '{password}'")
    monkeypatch.setenv(
        "AIRFLOW_CONN_RESTORER", f"postgresql://restorer:{password}@127.0.0.1:{pg_cluster.port}/{fresh_db}"
    )

    def as_superuser(statement: str) -> None:
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(statement)

    yield as_superuser
    as_superuser(f"ALTER DATABASE {fresh_db} OWNER TO postgres")
    as_superuser("DROP ROLE restorer")


def test_a_swap_needs_createdb_and_ownership_of_the_target(role_conn, fresh_db):
    message = (
        f"the role of connection restorer may not swap {fresh_db}: it needs CREATEDB and ownership of {fresh_db} "
        "(or superuser); use restore_mode in_place or another connection."
    )
    with pytest.raises(RestoreRefused) as refused:
        database.check_may_swap("restorer", fresh_db)
    assert str(refused.value) == message
    role_conn("ALTER ROLE restorer CREATEDB")
    with pytest.raises(RestoreRefused, match="may not swap"):
        database.check_may_swap("restorer", fresh_db)
    role_conn(f"ALTER DATABASE {fresh_db} OWNER TO restorer")
    database.check_may_swap("restorer", fresh_db)
    database.check_may_swap("trading_db", fresh_db)  # the harness's superuser


@pytest.fixture
def dump_of(tmp_path):
    def _dump(database: str):
        path = tmp_path / f"{database}.dump"
        env = {**os.environ, **libpq_env("trading_db", database=database)}
        subprocess.run([pgtools.client("pg_dump", at_least=15), "-Fc", "-f", str(path)], check=True, env=env)
        return path

    return _dump


def _counts(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("public.market_data", "public.market_data_archive", "public.orders", "public.instruments")
        }


def test_restore_into_staging_verify_and_swap(pg_cluster, fresh_db, dump_of, pg_restore, caplog):
    expected = _counts(pg_cluster.conninfo(fresh_db))
    dump = dump_of(fresh_db)
    with psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as conn:
        conn.execute("DROP TABLE orders")
        conn.execute("DELETE FROM market_data WHERE id % 2 = 0")
    stamp = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    staging = database.staging_name(fresh_db, stamp)
    database.create_database("trading_db", staging)
    with caplog.at_level("INFO"):
        items = database.run_pg_restore("trading_db", dump, staging, program=pg_restore, jobs=2, clean=False)
    assert items > 10 and "processing data for table" in caplog.text
    report = verify_integrity(
        "trading_db", staging, expected, disjoint=("public.market_data", "public.market_data_archive", "id")
    )
    assert report.ok, report.problems
    assert report.indexes_checked >= 6 and report.sequences_checked >= 2

    # A session on the live database is ended by the swap, and only then.
    blocker = psycopg.connect(pg_cluster.conninfo(fresh_db))
    retired = database.retired_name(fresh_db, stamp)
    database.swap_databases("trading_db", fresh_db, staging, retired, timedelta(seconds=10))
    assert blocker.closed or blocker.broken or _is_dead(blocker)
    assert _counts(pg_cluster.conninfo(fresh_db)) == expected
    with psycopg.connect(pg_cluster.conninfo("postgres")) as conn:
        allowed = dict(conn.execute("SELECT datname, datallowconn FROM pg_database").fetchall())
    assert allowed[fresh_db] is True and allowed[retired] is False
    pg_cluster.drop_database(retired)


def _is_dead(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_verification_names_the_table_and_the_numbers(pg_cluster, fresh_db):
    expected = _counts(pg_cluster.conninfo(fresh_db))
    with psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id <= 5")
        conn.execute("INSERT INTO market_data_archive SELECT * FROM market_data ORDER BY id LIMIT 3")
        conn.execute("SELECT setval(pg_get_serial_sequence('market_data', 'id'), 10)")
    report = verify_integrity(
        "trading_db", fresh_db, expected, disjoint=("public.market_data", "public.market_data_archive", "id")
    )
    assert not report.ok
    joined = "\n".join(report.problems)
    assert f"public.orders has {expected['public.orders'] - 5} rows but the backup manifest says" in joined
    assert "3 id value(s) are in both public.market_data and public.market_data_archive" in joined
    assert re.search(r"sequence public\.market_data_id_seq is at 10, behind public\.market_data\.id max \d+", joined)


def test_amcheck_catches_a_corrupt_index(pg_cluster, fresh_db):
    """Make the index disagree with its heap behind PostgreSQL's back, as disk corruption would."""
    with psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as conn:
        conn.execute("CREATE TABLE corrupt_me (id int PRIMARY KEY)")
        conn.execute("INSERT INTO corrupt_me SELECT generate_series(1, 1000)")
        # Rows written with the index disabled are missing from it: heapallindexed finds them.
        conn.execute("UPDATE pg_index SET indisready = false WHERE indexrelid = 'corrupt_me_pkey'::regclass")
        conn.execute("INSERT INTO corrupt_me SELECT generate_series(1001, 1100)")
        conn.execute("UPDATE pg_index SET indisready = true WHERE indexrelid = 'corrupt_me_pkey'::regclass")
    report = verify_integrity("trading_db", fresh_db, {})
    assert any("corrupt_me_pkey failed amcheck" in problem for problem in report.problems), report.problems


def test_in_place_restore_rolls_back_on_failure(pg_cluster, fresh_db, dump_of, pg_restore, tmp_path):
    before = _counts(pg_cluster.conninfo(fresh_db))
    broken = tmp_path / "broken.dump"
    good = dump_of(fresh_db).read_bytes()
    broken.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(RuntimeError, match="pg_restore exited with"):
        database.run_pg_restore("trading_db", broken, fresh_db, program=pg_restore, jobs=1, clean=True)
    assert _counts(pg_cluster.conninfo(fresh_db)) == before


def test_expired_retired_databases_are_dropped(pg_cluster, fresh_db):
    old = database.retired_name(fresh_db, datetime(2026, 11, 1, tzinfo=UTC))
    recent = database.retired_name(fresh_db, datetime(2026, 11, 25, tzinfo=UTC))
    for name in (old, recent):
        pg_cluster.create_database(name)
    now = datetime(2026, 11, 26, tzinfo=UTC)
    assert database.drop_expired_retired_databases("trading_db", fresh_db, timedelta(days=7), now) == [old]
    assert database.database_exists("trading_db", recent) and not database.database_exists("trading_db", old)
    pg_cluster.drop_database(recent)
