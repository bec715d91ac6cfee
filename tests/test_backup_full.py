"""Full backups on the harness's real PostgreSQL: taken, listed, verified, restored, damaged, killed midway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.support.harness import ROOT
from trading_ops.backup import (
    FULL_ID_RE,
    BackupCorrupt,
    BackupKeyError,
    BackupNotFound,
    EncryptionKey,
    Repository,
    extract_base_backup,
    list_backups,
    readable_dump,
    resolve_backup,
    take_full_backup,
    verify_backup,
)
from trading_ops.db import libpq_env
from trading_ops.pgtools import client

TABLES = ("instruments", "market_data", "market_data_archive", "orders")


@pytest.fixture
def repository(tmp_path):
    return Repository(tmp_path / "repo")


def _counts(conn) -> dict[str, int]:
    return {f"public.{table}": conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def _restore_into_new_database(pg_cluster, dump, name: str) -> dict[str, int]:
    import psycopg

    pg_cluster.create_database(name)
    try:
        subprocess.run(
            [client("pg_restore"), "-j", "2", "--no-owner", "-d", name, str(dump)],
            env={**os.environ, **libpq_env(database=name)},
            check=True,
            capture_output=True,
        )
        with psycopg.connect(pg_cluster.conninfo(name)) as conn:
            return _counts(conn)
    finally:
        pg_cluster.drop_database(name)


def test_full_backup_is_taken_verified_listed_and_restores(pg_cluster, pg_conn, repository):
    # Rows committed before the backup are in it, whatever arrives while it runs is not in the counts.
    pg_conn.execute("INSERT INTO instruments VALUES ('BKUP', 'Backup Corp', 'DEMO', 0.01)")
    pg_conn.commit()
    backup = take_full_backup(repository, "20261101T010000Z")

    manifest = backup.manifest
    assert FULL_ID_RE.match(backup.id) and manifest["type"] == "full"
    assert manifest["row_counts"] == _counts(pg_conn)
    assert {entry["role"] for entry in manifest["files"]} == {"dump", "base"}
    assert all(len(entry["sha256"]) == 64 and entry["size"] > 0 for entry in manifest["files"])
    assert manifest["timeline"] == 1 and manifest["server_version_num"] >= 150000
    assert manifest["wal_start_segment"] <= manifest["wal_stop_segment"]
    assert manifest["compression"] == {"algorithm": "zstd", "level": 1} and manifest["encryption"] is None
    assert (backup.path / "manifest.json").exists() and not repository.partials("full")
    assert backup.verified is None

    verified = verify_backup(repository, backup, wal_archive_dir=pg_cluster.wal_archive_dir)
    assert verified.verified is True
    checks = json.loads((backup.path / "verified.json").read_text())["checks"]
    assert any("pg_verifybackup" in check for check in checks) and "pg_restore --list" in checks

    assert resolve_backup(repository, "latest").id == backup.id
    assert resolve_backup(repository, backup.id).id == backup.id
    assert [entry.summary() for entry in list_backups(repository)] == [verified.summary()]

    with readable_dump(backup) as dump:
        assert dump.read_bytes()[:5] == b"PGDMP"
        assert _restore_into_new_database(pg_cluster, dump, f"{pg_conn.info.dbname}_restored") == _counts(pg_conn)
    assert not dump.exists()

    # The same id again (a retried task) returns the existing backup instead of taking a second one.
    assert take_full_backup(repository, backup.id).manifest == manifest


def test_a_flipped_byte_in_any_file_is_caught(pg_cluster, fresh_db, tmp_path):
    pristine = Repository(tmp_path / "pristine")
    original = take_full_backup(pristine, "20261101T020000Z")
    for role in ("dump", "base", "manifest"):
        repository = Repository(tmp_path / role)
        shutil.copytree(pristine.root, repository.root)
        backup = repository.info("full", original.id)
        path = backup.path / "manifest.json" if role == "manifest" else backup.file_path(role)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        backup = repository.info("full", original.id)

        damage = "a damaged manifest.json" if role == "manifest" else f"file {path.name} does not match"
        with pytest.raises(BackupCorrupt, match=damage):
            verify_backup(repository, backup)
        assert repository.info("full", backup.id).verified is False
        with pytest.raises(BackupNotFound, match="no verified full backup"):
            resolve_backup(repository, "latest")
        # A restore reads nothing from a damaged backup.
        with pytest.raises(BackupCorrupt):
            if role == "base":
                extract_base_backup(backup, tmp_path / f"{role}-data")
            else:
                with readable_dump(backup):
                    pass
    assert verify_backup(pristine, original).verified


def test_a_backup_killed_midway_leaves_nothing_visible_and_the_next_run_succeeds(pg_cluster, fresh_db, repository):
    code = (
        "import sys; from trading_ops.backup import Repository, take_full_backup; "
        "take_full_backup(Repository(sys.argv[1]), '20261101T030000Z')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(repository.root)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        start_new_session=True,
    )
    partial = repository.root / "full" / ".partial-20261101T030000Z"
    deadline = time.monotonic() + 60
    # Kill it once the dump is written and the base backup is streaming.
    while not (partial / "base.tar.zst").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the backup finished before it could be killed"

    assert list_backups(repository) == [] and repository.ids("full") == []
    assert partial.exists() and not (partial / "manifest.json").exists()

    backup = take_full_backup(repository, "20261101T030000Z")
    assert verify_backup(repository, backup, wal_archive_dir=pg_cluster.wal_archive_dir).verified
    assert [entry.id for entry in list_backups(repository)] == ["20261101T030000Z"]
    assert repository.partials("full") == []


def test_encrypted_backup_round_trip(pg_cluster, pg_conn, repository, monkeypatch):
    secret = EncryptionKey.generate()
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_ENCRYPTION_KEY", json.dumps({"conn_type": "generic", "password": secret}))
    key = EncryptionKey.from_connection("backup_encryption_key")
    backup = take_full_backup(repository, "20261101T040000Z", key=key)

    assert backup.manifest["encryption"] == {
        "algorithm": "age-x25519",
        "key_id": key.key_id,
        "key_conn_id": "backup_encryption_key",
    }
    assert key.key_id.startswith("age1") and secret not in (backup.path / "manifest.json").read_text()
    for role in ("dump", "base"):
        stored = backup.file_path(role)
        assert stored.name.endswith(".zst.age")
        assert stored.read_bytes().startswith(b"age-encryption.org/v1")
    # Without a key argument, the key comes from the connection the manifest names.
    assert verify_backup(repository, backup, wal_archive_dir=pg_cluster.wal_archive_dir).verified
    with readable_dump(backup) as dump:
        assert _restore_into_new_database(pg_cluster, dump, f"{pg_conn.info.dbname}_decrypted") == _counts(pg_conn)

    other = EncryptionKey.from_secret(EncryptionKey.generate(), "backup_encryption_key")
    with pytest.raises(BackupKeyError, match=f"was encrypted with key {key.key_id}"), readable_dump(backup, other):
        pass


def test_a_key_that_is_not_an_age_identity_is_one_sentence():
    with pytest.raises(BackupKeyError, match=r"not an age identity .*keygen`\.$"):
        EncryptionKey.from_secret("hunter2", "backup_encryption_key")


def test_tar_member_capture_reads_members_whatever_the_chunking(tmp_path):
    import io
    import tarfile

    from trading_ops.backup.full import TarMemberCapture

    buffer = io.BytesIO()
    contents = {"base/1/1259": os.urandom(70_000), "backup_label": b"START WAL LOCATION: 0/3000028\n", "empty": b""}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    stream = buffer.getvalue()
    for chunk in (1, 511, 512, 4096, len(stream)):
        capture = TarMemberCapture({"backup_label", "empty", "base/1/1259"})
        for start in range(0, len(stream), chunk):
            capture.feed(stream[start : start + chunk])
        assert capture.members == contents, chunk


def test_a_repository_on_object_storage_paths(pg_cluster, pg_conn, tmp_path):
    """The repository code only uses path operations ObjectStoragePath offers (s3:// in production)."""
    from airflow.sdk import ObjectStoragePath

    repository = Repository(ObjectStoragePath(f"file://{tmp_path}/object-store"))
    backup = take_full_backup(repository, "20261101T060000Z")
    assert not isinstance(backup.path, type(tmp_path)) and repository.partials("full") == []
    assert verify_backup(repository, backup, wal_archive_dir=pg_cluster.wal_archive_dir).verified
    assert resolve_backup(repository, "latest").id == backup.id
    with readable_dump(backup) as dump:
        assert _restore_into_new_database(pg_cluster, dump, f"{pg_conn.info.dbname}_objects") == _counts(pg_conn)
