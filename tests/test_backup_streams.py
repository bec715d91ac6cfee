"""Every compression of the policy, with and without encryption, round-trips and records what it stored."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from trading_ops.backup.streams import BackupKeyError, Compression, EncryptionKey, read_stream, write_stream

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
    read_stream(io.BytesIO(data), restored, compression, key)
    assert restored.getvalue() == PAYLOAD


def test_the_wrong_key_is_one_sentence():
    right, wrong = (EncryptionKey.from_secret(EncryptionKey.generate()) for _ in range(2))
    stored = io.BytesIO()
    write_stream(io.BytesIO(PAYLOAD), stored, "file", Compression(), right)
    with pytest.raises(BackupKeyError, match=f"cannot be decrypted with key {wrong.key_id}"):
        read_stream(io.BytesIO(stored.getvalue()), io.BytesIO(), Compression(), wrong)


def test_a_truncated_gzip_stream_is_an_error():
    stored = io.BytesIO()
    write_stream(io.BytesIO(PAYLOAD), stored, "file", Compression("gzip", 1), None)
    with pytest.raises(ValueError, match="truncated"):
        read_stream(io.BytesIO(stored.getvalue()[:-100]), io.BytesIO(), Compression("gzip", 1), None)
