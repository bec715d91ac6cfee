"""The one implementation of compression, age encryption and sha256 (trading_ops.streams), for backup files and
log archives alike: every compression round-trips with and without encryption, both kinds of file are the same
stream, one parser reads every age key, and archives in the old log format still verify and extract."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519

from tests.support.logs import logs_cli
from trading_ops.logs.archives import ArchiveFormat, extract_archive, write_archive
from trading_ops.logs.verify import archive_problem
from trading_ops.streams import (
    Compression,
    EncryptionKey,
    EncryptionKeyError,
    Recipients,
    parse_age_keys,
    read_stream,
    write_stream,
)

PAYLOAD = os.urandom(300_000) + b"trading " * 200_000


@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip(algorithm, encrypted):
    compression = Compression(algorithm, 1)
    key = EncryptionKey.from_secret(EncryptionKey.generate()) if encrypted else None
    stored = io.BytesIO()
    entry = write_stream(io.BytesIO(PAYLOAD), stored, "file", compression, key)
    data = stored.getvalue()
    assert (entry.size, entry.sha256, entry.raw_size) == (len(data), hashlib.sha256(data).hexdigest(), len(PAYLOAD))
    if algorithm != "none" and not encrypted:
        assert len(data) < len(PAYLOAD) * 0.6
    if encrypted:
        assert data.startswith(b"age-encryption.org/v1") and b"trading trading" not in data
    restored = io.BytesIO()
    read_stream(io.BytesIO(data), restored, compression, [key] if key else [])
    assert restored.getvalue() == PAYLOAD


def test_the_wrong_key_is_one_sentence():
    right, wrong = (EncryptionKey.from_secret(EncryptionKey.generate()) for _ in range(2))
    stored = io.BytesIO()
    write_stream(io.BytesIO(PAYLOAD), stored, "file", Compression(), right)
    with pytest.raises(EncryptionKeyError, match=f"cannot be decrypted with key {wrong.key_id}"):
        read_stream(io.BytesIO(stored.getvalue()), io.BytesIO(), Compression(), [wrong])


def test_a_truncated_gzip_stream_is_an_error():
    stored = io.BytesIO()
    write_stream(io.BytesIO(PAYLOAD), stored, "file", Compression("gzip", 1), None)
    with pytest.raises(ValueError, match="truncated"):
        read_stream(io.BytesIO(stored.getvalue()[:-100]), io.BytesIO(), Compression("gzip", 1))


# --- backup files and log archives: one stream -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
def test_a_log_archive_holds_exactly_the_stream_a_backup_file_holds(tmp_path, algorithm):
    compression = Compression(algorithm, 3)
    backup_file = io.BytesIO()
    entry = write_stream(io.BytesIO(PAYLOAD), backup_file, "file", compression, None)

    archive = tmp_path / f"api.log.20261126T153000Z{compression.suffix}"
    stored = write_archive(io.BytesIO(PAYLOAD), archive, ArchiveFormat(compression), mode=0o640)

    assert archive.read_bytes() == backup_file.getvalue()
    assert (stored.size, stored.sha256, stored.raw_size) == (entry.size, entry.sha256, entry.raw_size)
    assert Path(f"{archive}.sha256").read_text() == f"{entry.sha256}  {archive.name}\n"
    assert archive_problem(archive) is None
    assert Compression.of_file(archive.name).algorithm == algorithm


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_encrypted_log_archives_and_backup_files_read_each_other(tmp_path, algorithm):
    key = EncryptionKey.from_secret(EncryptionKey.generate())
    compression = Compression(algorithm, 1)
    # A log archive, encrypted to the recipient only (what log rotation has), read back as a backup file is.
    archive = tmp_path / f"audit.log.20261126T153000Z{compression.suffix}.age"
    write_archive(io.BytesIO(PAYLOAD), archive, ArchiveFormat(compression, Recipients.from_secret(key.key_id)), 0o600)
    as_backup = io.BytesIO()
    with open(archive, "rb") as source:
        read_stream(source, as_backup, compression, [key])
    assert as_backup.getvalue() == PAYLOAD
    # A backup file, encrypted with the backup key, extracted as a log archive is.
    backup_file = tmp_path / f"trading_db.dump{compression.suffix}.age"
    with open(backup_file, "wb") as sink:
        write_stream(io.BytesIO(PAYLOAD), sink, backup_file.name, compression, key)
    as_archive = io.BytesIO()
    extract_archive(backup_file, as_archive, [key])
    assert as_archive.getvalue() == PAYLOAD


# --- one parser for every age key --------------------------------------------------------------------------------


def test_one_parser_reads_identities_recipients_and_identity_files(tmp_path):
    identity, other = x25519.Identity.generate(), x25519.Identity.generate()
    keys = parse_age_keys(f"# created: 2026-11-26\n# public key: {identity.to_public()}\n{identity}\n")
    assert [str(key) for key in keys] == [str(identity)]
    listed = parse_age_keys(f"{identity.to_public()}, {other.to_public()}\n  {other}")
    assert [str(key) for key in listed] == [str(identity.to_public()), str(other.to_public()), str(other)]
    with pytest.raises(ValueError) as excinfo:
        parse_age_keys(f"{identity.to_public()} hunter2")
    assert "hunter2" not in str(excinfo.value)

    # The backup key (an identity) and the log recipients read the same secret the same way.
    key = EncryptionKey.from_secret(str(identity), "backup_encryption_key")
    recipients = Recipients.from_secret(f"{identity} {other.to_public()}", "audit_log_encryption_key")
    assert [str(r) for r in recipients.public_keys] == [key.key_id, str(other.to_public())]
    assert [str(r) for r in key.recipients] == [key.key_id]
    with pytest.raises(EncryptionKeyError, match="not an age identity"):
        EncryptionKey.from_secret(str(identity.to_public()), "backup_encryption_key")
    with pytest.raises(EncryptionKeyError, match="holds no age recipient"):
        Recipients.from_secret("# only a comment\n", "audit_log_encryption_key")

    identity_file = tmp_path / "keys.txt"
    identity_file.write_text(f"# old key\n{other}\n# current key\n{identity}\n")
    assert [k.key_id for k in EncryptionKey.from_identity_file(identity_file)] == [
        str(other.to_public()),
        key.key_id,
    ]
    identity_file.write_text(f"{identity.to_public()}\n")
    with pytest.raises(EncryptionKeyError, match="holds no age identity"):
        EncryptionKey.from_identity_file(identity_file)


def test_a_missing_or_empty_key_connection_is_one_sentence(monkeypatch):
    with pytest.raises(EncryptionKeyError, match=r"^Connection no_such_key is missing: create it with the backup"):
        EncryptionKey.from_connection("no_such_key")
    monkeypatch.setenv("AIRFLOW_CONN_EMPTY_KEY", '{"conn_type": "generic"}')
    with pytest.raises(EncryptionKeyError, match=r"^Connection empty_key has no password: it must hold an age"):
        Recipients.from_connection("empty_key")


# --- archives written by the earlier log-rotation code still verify and extract -----------------------------------


def old_format_archive(directory: Path, name: str, content: bytes, identity=None) -> Path:
    """An archive exactly as logrotation.py wrote it before the streams were shared: zstd without a frame checksum
    from a single-threaded compressobj (or gzip from zlib with wbits 31), then age, then the sha256sum sidecar."""
    if name.removesuffix(".age").endswith(".zst"):
        compressor = zstandard.ZstdCompressor(level=1).compressobj()
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    data = compressor.compress(content) + compressor.flush()
    if identity is not None:
        data = pyrage.encrypt(data, [identity.to_public()])
    archive = directory / name
    archive.write_bytes(data)
    Path(f"{archive}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return archive


@pytest.mark.parametrize("suffix", [".zst", ".gz", ".zst.age", ".gz.age"])
def test_archives_in_the_old_format_still_verify_and_extract(tmp_path, suffix):
    identity = x25519.Identity.generate()
    content = b"".join(b"%d user=u%d action=login\n" % (n, n % 97) for n in range(20_000))
    encrypted_to = identity if suffix.endswith(".age") else None
    archive = old_format_archive(tmp_path, f"audit.log.20261126T153000Z{suffix}", content, encrypted_to)

    assert archive_problem(archive) is None
    out = io.BytesIO()
    extract_archive(archive, out, [EncryptionKey(identity)])
    assert out.getvalue() == content
    if suffix == ".gz":
        assert gzip.decompress(archive.read_bytes()) == content


def test_an_old_format_audit_archive_is_verified_and_extracted_by_the_cli(tmp_path):
    identity = x25519.Identity.generate()
    content = b"".join(b"%d login ok\n" % n for n in range(3000))
    archive = old_format_archive(tmp_path, "audit.log.20261126T153000Z.zst.age", content, identity)
    identity_file = tmp_path / "audit-key.txt"
    identity_file.write_text(f"# created by age-keygen\n{identity}\n")

    by_hand = logs_cli(archive, identity_file)

    assert by_hand.returncode == 0, by_hand.stderr
    assert by_hand.stdout == content and b"sha256 verified" in by_hand.stderr
