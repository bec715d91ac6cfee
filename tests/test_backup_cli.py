"""`python -m trading_ops backups ...`: list, show, verify, pin, retention, keygen, run as a person would."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.harness import ROOT
from trading_ops.backup import EncryptionKey, Repository, take_full_backup


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trading_ops", "backups", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "plugins")},
        timeout=300,
    )


def test_list_verify_pin_and_a_damaged_backup(pg_cluster, fresh_db, make_policy, tmp_path):
    make_policy({"backup.repository": str(tmp_path / "repo")})
    repository = Repository(tmp_path / "repo")
    backup = take_full_backup(repository, "20261101T010000Z")

    listing = _cli("list")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()[:2]
    assert header.split()[:4] == ["ID", "TYPE", "TIME", "(UTC)"]
    assert row.split()[:2] == [backup.id, "full"] and "never" in row

    verified = _cli("verify", "latest")
    assert verified.returncode == 0, verified.stderr
    assert "pg_verifybackup" in verified.stdout and "yes" in _cli("list").stdout

    assert _cli("pin", backup.id, "--reason", "quarter-end audit").returncode == 0
    assert _cli("list").stdout.splitlines()[1].rstrip().endswith("pinned")
    assert (backup.path / "PINNED").read_text() == "quarter-end audit\n"
    assert '"pinned": true' in _cli("list", "--json").stdout
    assert _cli("unpin", backup.id).returncode == 0 and not (backup.path / "PINNED").exists()

    retention = _cli("retention")
    assert retention.returncode == 0
    assert f"(dry run) keep full {backup.id}: newest verified full backup" in retention.stdout

    stored = backup.file_path("dump")
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    damaged = _cli("verify", backup.id, "--quick")
    assert damaged.returncode == 1
    assert damaged.stderr.strip() == (
        f"Backup {backup.id} file {stored.name} does not match its manifest checksum: the file is damaged."
    )
    assert "FAILED" in _cli("list").stdout

    missing = _cli("show", "20200101T000000Z")
    assert missing.returncode == 1 and missing.stderr.strip().startswith("There is no full backup 20200101T000000Z")
    bad = _cli("show", "last-week")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "'last-week' is not a backup id: use 'latest', a full backup id like 20261101T010000Z, "
        "or an incremental date like 2026-11-01."
    ]


def test_keygen_prints_an_age_identity(tmp_path):
    result = _cli("keygen")
    assert result.returncode == 0
    secret = result.stdout.strip()
    assert EncryptionKey.from_secret(secret).key_id in result.stderr
