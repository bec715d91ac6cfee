"""WAL: the archive_command script, segment switches, continuity and gap detection, bundles, and PITR."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.support.harness import RUN_DIR
from trading_ops.backup import Repository, extract_base_backup, jobs, list_backups, take_full_backup, verify_backup
from trading_ops.backup.access import configure_recovery
from trading_ops.backup.wal import WalArchiveError, check_continuity, missing_segments, switch_and_wait
from trading_ops.backup.wal_names import SEGMENT_RE, name_of
from trading_ops.dev.localpg import ARCHIVE_SCRIPT, LocalCluster
from trading_ops.pgserver import give_to_server_user as _give_to_server_user

SEGMENT = 16 * 1024 * 1024
MOMENT = datetime(2026, 11, 1, 16, 0, tzinfo=UTC)


def _archive(archive_dir: Path, source: Path, name: str) -> subprocess.CompletedProcess:
    argv = ["sh", str(ARCHIVE_SCRIPT), str(archive_dir), str(source), name]
    return subprocess.run(argv, capture_output=True, text=True)


def test_archive_command_copies_durably_and_never_overwrites(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(b"A" * 8192)

    first = _archive(archive, segment, segment.name)
    assert first.returncode == 0, first.stderr
    assert (archive / segment.name).read_bytes() == segment.read_bytes()
    # A retry of the same segment (the server crashed before it recorded success) succeeds.
    assert _archive(archive, segment, segment.name).returncode == 0

    other = tmp_path / "other"
    other.write_bytes(b"B" * 8192)
    clash = _archive(archive, other, segment.name)
    assert clash.returncode == 1 and "different content" in clash.stderr
    assert (archive / segment.name).read_bytes() == b"A" * 8192

    missing = _archive(archive, tmp_path / "absent", "000000010000000000000002")
    assert missing.returncode == 1
    assert sorted(p.name for p in archive.iterdir()) == [segment.name], "no temporary file is left behind"
    usage = subprocess.run(["sh", str(ARCHIVE_SCRIPT), str(archive), str(segment)], capture_output=True, text=True)
    assert usage.returncode == 1 and "usage" in usage.stderr


def test_the_test_cluster_archives_through_the_script(pg_cluster):
    assert str(pg_cluster.archive_script) in (pg_cluster.data_dir / "postgresql.auto.conf").read_text()
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        name = switch_and_wait(conn, pg_cluster.wal_archive_dir, timedelta(seconds=30))
        failed = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0]
    assert (pg_cluster.wal_archive_dir / name).stat().st_size == SEGMENT
    assert failed == 0


def _write_and_switch(conn, rows: int) -> str:
    conn.execute(
        "INSERT INTO orders (symbol, side, quantity, price, created_at) "
        "SELECT 'AAPL', 'buy', 1, 100, now() FROM generate_series(1, %s)",
        (rows,),
    )
    conn.commit()
    return conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def test_wal_backup_is_switched_checked_bundled_and_verified(pg_cluster, pg_conn, make_policy, tmp_path):
    make_policy({"backup.repository": str(tmp_path / "repo")})
    repository = Repository(tmp_path / "repo")
    full_id = jobs.full_backup(MOMENT)
    jobs.verify("full", full_id)
    for _ in range(2):
        _write_and_switch(pg_conn, 100)

    switched = jobs.switch_wal()
    assert SEGMENT_RE.match(switched["last_segment"]) and switched["archiver"]["failed_count"] == 0
    assert switched["rpo_seconds"] is not None and switched["rpo_seconds"] >= 0
    assert switched["newest_segment_age_seconds"] >= 0 and switched["rpo_target_seconds"] == 60
    continuity = jobs.wal_continuity(switched)
    full = repository.info("full", full_id)
    assert continuity["first"] == full.manifest["wal_start_segment"] and continuity["segments_checked"] >= 3

    bundle_id = jobs.wal_bundle(MOMENT, switched)
    assert bundle_id == "2026-11-02", "the date is the run's date in the policy's timezone (Asia/Seoul)"
    summary = jobs.verify("incremental", bundle_id)
    assert summary["verified"] is True and summary["type"] == "incremental"
    bundle = repository.info("incremental", bundle_id)
    segments = [entry["role"] for entry in bundle.manifest["files"] if SEGMENT_RE.match(entry["role"])]
    assert segments[0] == full.manifest["wal_start_segment"] and segments[-1] == switched["last_segment"]
    assert len(segments) == continuity["segments_checked"]
    for name in segments:
        assert (bundle.path / "wal" / f"{name}.zst").exists()

    # A retry of the same run adds nothing; the next day's bundle starts after this one.
    assert jobs.wal_bundle(MOMENT, switched) == bundle_id
    _write_and_switch(pg_conn, 10)
    next_day = jobs.wal_bundle(MOMENT + timedelta(days=1), jobs.switch_wal())
    first_next = repository.info("incremental", next_day).manifest["first_segment"]
    assert first_next == name_of(1, int(segments[-1][8:16], 16) * 256 + int(segments[-1][16:], 16) + 1, SEGMENT)
    assert [b.type for b in list_backups(repository)] == ["incremental", "incremental", "full"]


def test_a_removed_segment_is_reported_as_a_gap(pg_cluster, pg_conn, make_policy, tmp_path):
    names = [_write_and_switch(pg_conn, 10) for _ in range(3)]
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        switch_and_wait(conn, pg_cluster.wal_archive_dir, timedelta(seconds=30))
    copy = tmp_path / "archive"
    # Without the archiver's temporary files: they may vanish while the copy runs.
    shutil.copytree(pg_cluster.wal_archive_dir, copy, ignore=shutil.ignore_patterns(".*"))
    assert check_continuity(copy, names[0], names[-1], SEGMENT) == 3

    (copy / names[1]).unlink()
    assert missing_segments(copy, names[0], names[-1], SEGMENT) == [names[1]]
    with pytest.raises(WalArchiveError, match=f"1 segment\\(s\\) between {names[0]} and {names[-1]} .*{names[1]}"):
        check_continuity(copy, names[0], names[-1], SEGMENT)

    # The DAG's task sees the same gap through the policy's archive directory.
    make_policy({"backup.repository": str(tmp_path / "repo"), "backup.wal_archive_dir": str(copy)})
    take_full_backup(Repository(tmp_path / "repo"), "20261101T000000Z")
    full_start = Repository(tmp_path / "repo").info("full", "20261101T000000Z").manifest["wal_start_segment"]
    (copy / full_start).unlink(missing_ok=True)
    with pytest.raises(WalArchiveError, match="gap"):
        jobs.wal_continuity({"segment_size": SEGMENT, "last_segment": full_start})


def test_continuity_follows_the_timeline_history(tmp_path):
    """Timeline 2 branched off in segment 3: segments 1-2 come from timeline 1, 3-5 from timeline 2."""
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "00000002.history").write_text("1\t0/3000100\tno recovery target specified\n")
    for name in (name_of(1, n, SEGMENT) for n in (1, 2, 3)):
        (archive / name).touch()
    for name in (name_of(2, n, SEGMENT) for n in (3, 4, 5)):
        (archive / name).touch()
    first, last = name_of(1, 1, SEGMENT), name_of(2, 5, SEGMENT)
    assert missing_segments(archive, first, last, SEGMENT) == []
    (archive / name_of(2, 3, SEGMENT)).unlink()
    # Timeline 1's copy of segment 3 does not count: recovery on timeline 2 needs timeline 2's.
    assert missing_segments(archive, first, last, SEGMENT) == [name_of(2, 3, SEGMENT)]
    (archive / "00000002.history").unlink()
    with pytest.raises(WalArchiveError, match="no history file for timeline 2"):
        missing_segments(archive, first, last, SEGMENT)


def _server_time(conn) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def test_point_in_time_recovery_from_base_backup_and_archived_wal(pg_cluster, pg_conn, tmp_path):
    repository = Repository(tmp_path / "repo")
    backup = take_full_backup(repository, "20261101T050000Z")
    assert verify_backup(repository, backup, wal_archive_dir=pg_cluster.wal_archive_dir).verified

    pg_conn.execute("CREATE TABLE pitr_probe (id int PRIMARY KEY, note text)")
    pg_conn.execute("INSERT INTO pitr_probe SELECT g, 'after base backup' FROM generate_series(1, 500) g")
    pg_conn.commit()
    time.sleep(0.3)
    target = _server_time(pg_conn)
    time.sleep(0.3)
    pg_conn.execute("INSERT INTO pitr_probe SELECT g, 'after target' FROM generate_series(501, 600) g")
    pg_conn.commit()
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        switch_and_wait(conn, pg_cluster.wal_archive_dir, timedelta(seconds=30))

    # The postgres OS user must reach the new data directory: the run directory is open to it, tmp_path is not.
    base = RUN_DIR / f"pitr-{backup.id}"
    restored = LocalCluster(
        base,
        password=pg_cluster.password,
        extra_settings={"archive_mode": "off"},
    )
    try:
        extract_base_backup(backup, restored.data_dir)
        with open(restored.data_dir / "postgresql.auto.conf", "a") as conf:
            for key, value in restored.settings().items():
                conf.write(f"{key} = {value}\n")
        configure_recovery(restored.data_dir, pg_cluster.wal_archive_dir, target)
        for directory in (base, restored.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            _give_to_server_user(directory)
        subprocess.run(["chown", "-R", "postgres:postgres", str(restored.data_dir)], check=True)
        restored.data_dir.chmod(0o700)
        try:
            restored.start()
        except RuntimeError as exc:
            raise AssertionError(restored.log_file.read_text()[-3000:]) from exc
        with psycopg.connect(restored.conninfo(pg_conn.info.dbname), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                assert time.monotonic() < deadline, "recovery did not finish"
                time.sleep(0.2)
            notes = dict(conn.execute("SELECT note, count(*) FROM pitr_probe GROUP BY note").fetchall())
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        assert notes == {"after base backup": 500}, "rows after the base backup are there, rows after the target not"
        assert segment.startswith("00000002"), "the recovered cluster was promoted onto a new timeline"
    finally:
        restored.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)
