"""Point-in-time restores through db_restore (dag.test()): a real cluster archiving WAL, a real full backup, rows
written after it, a disaster, then recovery on a real recovery instance, transfer, verify and swap.

One cluster with archiving for the module (its own archive and repository, which the postgres OS user can read,
as the recovery instance's restore_command runs as that user); each test writes into its own database, which the
base backup (cluster-wide) holds too.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.support.archiving import archive_now, archiving_cluster, verified_full_backup
from tests.support.dagbag import fresh_dag

pytestmark = pytest.mark.usefixtures("airflow_db", "second_person_approves")

# Rows written after the full backup are told apart by their price.
MARKS = {"before": 101.5, "after": 102.5}
DATABASES = ("pitr_time", "pitr_latest", "pitr_bundles", "pitr_refused", "pitr_failure")


@pytest.fixture(scope="module")
def pitr_cluster():
    with archiving_cluster("pitr", "pitr_template", copies=DATABASES) as cluster_and_policy:
        yield cluster_and_policy


@pytest.fixture(scope="module")
def full_backup(pitr_cluster):
    """One verified full backup of the cluster, taken before any test writes."""
    cluster, policy = pitr_cluster
    return verified_full_backup(cluster, policy, "pitr_time")


@pytest.fixture
def pitr(pitr_cluster, full_backup, monkeypatch):
    cluster, policy = pitr_cluster
    monkeypatch.setenv("TRADING_OPS_POLICY", str(policy))
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", cluster.uri("postgres"))
    return cluster


@pytest.fixture
def restore_dag():
    dag = fresh_dag("db_restore")
    for task in dag.tasks:
        task.retries = 0
    return dag


def _server_time(conn) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _write_orders(conn, rows: int, note: str) -> None:
    conn.execute(
        "INSERT INTO orders (symbol, side, quantity, price, created_at) "
        "SELECT 'AAPL', 'buy', g, %s, now() FROM generate_series(1, %s) g",
        (MARKS[note], rows),
    )
    conn.commit()


def _disaster(conn) -> None:
    conn.execute("DELETE FROM market_data WHERE id % 2 = 0")
    conn.execute("DROP TABLE orders CASCADE")
    conn.commit()


def _counts(cluster, database: str) -> dict[str, int]:
    with psycopg.connect(cluster.conninfo(database)) as conn:
        return {
            "market_data": conn.execute("SELECT count(*) FROM market_data").fetchone()[0],
            "orders": conn.execute("SELECT count(*) FROM orders").fetchone()[0],
            "after_target": conn.execute("SELECT count(*) FROM orders WHERE price = 102.5").fetchone()[0],
            "before_target": conn.execute("SELECT count(*) FROM orders WHERE price = 101.5").fetchone()[0],
        }


def _real(database: str, **extra) -> dict:
    return {"dry_run": False, "confirm": database, "target_database": database, **extra}


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _no_instance_left(run) -> bool:
    """The run's recovery instance (its directory, named after the run's staging database) is gone."""
    plan = run.get_task_instance("validate_request").xcom_pull(task_ids="validate_request")
    directory = Path(plan["recovery"]["instance_dir"])
    return directory.name.startswith("trading-ops-recovery-") and not directory.exists()


def test_time_restores_exactly_the_rows_committed_before_the_target(pitr, restore_dag, fake_trading_api):
    with psycopg.connect(pitr.conninfo("pitr_time")) as conn:
        _write_orders(conn, 200, "before")
        expected = _counts(pitr, "pitr_time")
        time.sleep(0.3)
        target = _server_time(conn)
        time.sleep(0.3)
        _write_orders(conn, 100, "after")
        _disaster(conn)
    archive_now(pitr)

    run = restore_dag.test(run_conf=_real("pitr_time", recovery_target="time", target_time=target.isoformat(), jobs=2))

    assert run.state == "success", _states(run)
    assert _counts(pitr, "pitr_time") == {**expected, "after_target": 0}
    assert expected["before_target"] == 200
    assert fake_trading_api.scale_requests() == [0, 3]
    report = run.get_task_instance("report_restore").xcom_pull(task_ids="report_restore")
    point = report["recovery_point"]
    assert (
        datetime.fromisoformat(point["last_replayed_at"]) <= target < datetime.fromisoformat(point["stopped_before_at"])
    )
    assert _states(run)["teardown_recovery_instance"] == "success"
    assert _no_instance_left(run)


@pytest.fixture
def archiving_breaks(pitr):
    """Call it to make archive_command fail from then on (the disk of the live server is lost, say); restored
    after the test."""
    with psycopg.connect(pitr.conninfo(), autocommit=True) as conn:
        original = conn.execute("SHOW archive_command").fetchone()[0]

    def set_command(command: str) -> None:
        with psycopg.connect(pitr.conninfo(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
            conn.execute("SELECT pg_reload_conf()")

    yield lambda: set_command("/bin/false")
    set_command(original.replace("'", "''"))


def test_latest_restores_every_row_whose_segment_was_archived(pitr, restore_dag, fake_trading_api, archiving_breaks):
    with psycopg.connect(pitr.conninfo("pitr_latest")) as conn:
        _write_orders(conn, 200, "before")
        expected = _counts(pitr, "pitr_latest")
        archive_now(pitr)
        archiving_breaks()
        # The disaster's WAL never reaches the archive: `latest` is the state before it.
        _disaster(conn)

    run = restore_dag.test(run_conf=_real("pitr_latest", recovery_target="latest"))

    assert run.state == "success", _states(run)
    assert _counts(pitr, "pitr_latest") == expected, "200 of 200 rows written after the full backup are back"
    assert _no_instance_left(run)


def test_a_point_in_time_restore_keeps_the_databases_encoding_and_locale(pitr, restore_dag, fake_trading_api):
    """The transfer (pg_dump without --create) carries no encoding: the staging copy is created like the target."""
    from psycopg import sql

    name = "pitr_latin1"
    with psycopg.connect(pitr.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LOCALE 'C'").format(sql.Identifier(name))
        )
    with psycopg.connect(pitr.conninfo(name)) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes SELECT g, 'caf' || chr(233) FROM generate_series(1, 50) g")
        conn.commit()

    run = restore_dag.test(run_conf=_real(name, recovery_target="latest"))

    assert run.state == "success", _states(run)
    with psycopg.connect(pitr.conninfo()) as conn:
        restored = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    assert restored == ("LATIN1", "C", "C")
    with psycopg.connect(pitr.conninfo(name)) as conn:
        assert conn.execute("SELECT count(*), min(body) FROM notes").fetchone() == (50, "caf\u00e9")


def _databases(cluster) -> set[str]:
    with psycopg.connect(cluster.conninfo()) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def test_a_dry_run_shows_the_base_backup_the_segments_and_where_each_is(pitr, restore_dag, fake_trading_api):
    segment = archive_now(pitr)
    databases = _databases(pitr)

    run = restore_dag.test(run_conf={"target_database": "pitr_refused", "recovery_target": "latest"})

    assert run.state == "success", _states(run)
    plan = run.get_task_instance("validate_request").xcom_pull(task_ids="validate_request")
    recovery = plan["recovery"]
    assert recovery["base_backup"]["id"] == "20261101T000000Z"
    names = [entry["name"] for entry in recovery["segments"]]
    assert names[0] == recovery["base_backup"]["wal_start_segment"] and names[-1] == segment
    assert {entry["source"] for entry in recovery["segments"]} == {"archive"}
    assert recovery["replay_bytes"] == len(names) * 16 * 1024 * 1024
    assert _states(run)["restore_database"] == "skipped"
    assert fake_trading_api.scale_requests() == [] and _databases(pitr) == databases


def _refusal(conf: dict) -> str:
    """The one sentence validate_request's checks refuse `conf` with."""
    from trading_ops.restore.plan import make_plan
    from trading_ops.restore.request import RestoreRefused

    with pytest.raises(RestoreRefused) as refused:
        make_plan({"backup_id": "latest", "restore_mode": "swap", "jobs": 2, **conf}, datetime.now(UTC))
    return str(refused.value)


def test_a_missing_middle_segment_and_a_target_outside_the_window_are_refused(
    pitr, full_backup, restore_dag, fake_trading_api
):
    from trading_ops.backup.wal import archived_segments

    archive_now(pitr)
    archive_now(pitr)
    start = full_backup.manifest["wal_start_segment"]
    chain = [name for name in archived_segments(pitr.wal_archive_dir, 16 * 1024 * 1024) if name > start]
    hidden = chain[len(chain) // 2 - 1]
    (pitr.wal_archive_dir / hidden).rename(pitr.wal_archive_dir / f".{hidden}.hidden")
    databases = _databases(pitr)
    latest = _real("pitr_refused", recovery_target="latest")
    too_early = _real("pitr_refused", recovery_target="time", target_time="2020-01-01T00:00:00+00:00")
    try:
        gap = restore_dag.test(run_conf=latest)
        gap_error = _refusal(latest)
    finally:
        (pitr.wal_archive_dir / f".{hidden}.hidden").rename(pitr.wal_archive_dir / hidden)
    outside = fresh_dag("db_restore").test(run_conf=too_early)

    for run in (gap, outside):
        states = _states(run)
        assert run.state == "failed" and states["validate_request"] == "failed", states
        assert states["scale_down_workload"] == "upstream_failed"
    assert fake_trading_api.scale_requests() == [] and _databases(pitr) == databases
    assert f"WAL segment {hidden} is missing between base backup 20261101T000000Z" in gap_error
    window_error = _refusal(too_early)
    assert "is outside the recoverable window" in window_error and "Recoverable window: " in window_error


def test_wal_only_in_encrypted_bundles_recovers(pitr, restore_dag, fake_trading_api, monkeypatch):
    """The archive directory is pruned: every segment comes from an age-encrypted daily bundle."""
    from trading_ops import backup as backups
    from trading_ops.backup.wal import archived_segments, bundle_segments

    secret = backups.EncryptionKey.generate()
    key = backups.EncryptionKey.from_secret(secret)
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_ENCRYPTION_KEY", f'{{"conn_type": "generic", "password": "{secret}"}}')
    with psycopg.connect(pitr.conninfo("pitr_bundles")) as conn:
        _write_orders(conn, 200, "before")
        expected = _counts(pitr, "pitr_bundles")
        time.sleep(0.3)
        target = _server_time(conn)
        time.sleep(0.3)
        _write_orders(conn, 100, "after")
        _disaster(conn)
    last = archive_now(pitr)
    segment_size = 16 * 1024 * 1024
    bundle_segments(
        backups.repository_from_policy(),
        "2026-11-02",
        pitr.wal_archive_dir,
        first=None,
        last=last,
        segment_size=segment_size,
        compression=backups.Compression(),
        key=key,
        extra={},
    )
    pruned = pitr.wal_archive_dir.parent / "wal-archive-pruned"
    pruned.mkdir()
    for name in archived_segments(pitr.wal_archive_dir, segment_size):
        (pitr.wal_archive_dir / name).rename(pruned / name)
    try:
        run = restore_dag.test(run_conf=_real("pitr_bundles", recovery_target="time", target_time=target.isoformat()))
        plan = run.get_task_instance("validate_request").xcom_pull(task_ids="validate_request")
    finally:
        for path in pruned.iterdir():
            path.rename(pitr.wal_archive_dir / path.name)
        pruned.rmdir()

    assert run.state == "success", _states(run)
    assert {entry["source"] for entry in plan["recovery"]["segments"]} == {"bundle 2026-11-02"}
    assert _counts(pitr, "pitr_bundles") == {**expected, "after_target": 0}
    report = run.get_task_instance("report_restore").xcom_pull(task_ids="report_restore")
    assert report["recovery_point"]["sources"] == ["bundle 2026-11-02"]
    assert _no_instance_left(run)


def test_the_recovery_instance_is_gone_after_a_failure(pitr, restore_dag, fake_trading_api, monkeypatch):
    from trading_ops.restore import recovery

    def broken_transfer(instance, *args, **kwargs):
        assert instance.is_running() and instance.base_dir.exists()
        raise RuntimeError("the staging server went away")

    monkeypatch.setattr(recovery, "transfer", broken_transfer)
    before = _counts(pitr, "pitr_failure")
    databases = _databases(pitr)

    run = restore_dag.test(run_conf=_real("pitr_failure", recovery_target="latest"))

    states = _states(run)
    assert run.state == "failed" and states["restore_database"] == "failed", states
    assert states["teardown_recovery_instance"] == "success"
    assert _no_instance_left(run)
    assert _counts(pitr, "pitr_failure") == before and _databases(pitr) == databases
    assert fake_trading_api.scale_requests() == [0, 3]


def test_backups_window_prints_the_recoverable_window(pitr, capsys):
    from trading_ops.__main__ import main

    assert main(["backups", "window"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Recoverable window: ") and "end of base backup 20261101T000000Z" in printed
    assert "newest archived WAL 0000000" in printed


def test_wal_fetch_hands_out_only_files_that_match_their_checksum(tmp_path):
    import hashlib
    import json

    import zstandard

    from trading_ops.wal_fetch import DAMAGED, NOT_FOUND, fetch

    content = os.urandom(8192)
    stored = zstandard.ZstdCompressor().compress(content)
    (tmp_path / "segment.zst").write_bytes(stored)
    entry = {
        "source": "bundle 2026-11-02",
        "path": str(tmp_path / "segment.zst"),
        "size": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
        "raw_size": len(content),
        "compression": "zstd",
    }
    index = tmp_path / "index.json"
    log = tmp_path / "fetched.jsonl"
    name = "000000010000000000000003"
    index.write_text(json.dumps({"files": {name: entry}, "log": str(log), "identity_file": None}))

    assert fetch(name, tmp_path / "RECOVERYXLOG", index) == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == content
    assert fetch("000000010000000000000004", tmp_path / "other", index) == NOT_FOUND
    damaged = bytearray(stored)
    damaged[-1] ^= 0xFF
    (tmp_path / "segment.zst").write_bytes(bytes(damaged))
    assert fetch(name, tmp_path / "again", index) == DAMAGED and not (tmp_path / "again").exists()
    assert "checksum" in log.read_text().splitlines()[-1]
    # A file the index lists without a checksum (a WAL archive's plain copy has none) that does not decompress: the
    # decompressor's own error stops the recovery too, with a status PostgreSQL does not read as "no such file".
    (tmp_path / "segment.zst").write_bytes(b"not a zstd frame at all")
    unchecked = {**entry, "sha256": None, "size": len(b"not a zstd frame at all")}
    index.write_text(json.dumps({"files": {name: unchecked}, "log": str(log), "identity_file": None}))
    assert fetch(name, tmp_path / "again", index) == DAMAGED > 125 and not (tmp_path / "again").exists()
    assert (tmp_path / "index.json").unlink() is None and fetch(name, tmp_path / "again", index) == DAMAGED


def test_wal_fetch_imports_no_airflow(tmp_path):
    """PostgreSQL runs `wal fetch` once per segment: the whole command line imports Airflow (about 3 s a call), so
    the `wal` commands must not, or a replay of a day of WAL takes hours."""
    import subprocess
    import sys

    index = tmp_path / "index.json"
    index.write_text('{"files": {}, "log": "' + str(tmp_path / "fetched.jsonl") + '"}')
    probe = (
        "import sys\n"
        "from trading_ops.__main__ import main\n"
        "status = main(['wal', 'fetch', '000000010000000000000001', sys.argv[1]])\n"
        "print(status, sorted({name.split('.')[0] for name in sys.modules} & {'airflow', 'psycopg', 'pydantic'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "segment")],
        capture_output=True,
        text=True,
        env={**os.environ, "TRADING_OPS_WAL_INDEX": str(index)},
        check=True,
    )
    assert result.stdout.split() == ["1", "[]"], result.stdout + result.stderr
