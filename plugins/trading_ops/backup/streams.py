"""Compression and client-side encryption of backup files, in one streaming pass with a sha256 of what is stored.

Writing pulls: source -> compressing reader -> (age encryption) -> hashing writer -> file.
Reading pushes: file -> (age decryption) -> decompressing writer -> sink (a file, `tar -x`, `pg_restore`).
Encryption is age (X25519): the key is an age identity (`AGE-SECRET-KEY-1...`) kept in an Airflow connection's
password; files are encrypted to its public key, which is also the key id the manifest records. A stored file can
be decrypted by hand with the `age` CLI: `age -d -i key.txt file.zst.age | zstd -d > file`.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Literal

CHUNK = 1024 * 1024

Algorithm = Literal["zstd", "gzip", "none"]


class BackupKeyError(ValueError):
    """The encryption key is missing, malformed, or not the one a backup was encrypted with."""


@dataclass(frozen=True)
class Compression:
    algorithm: Algorithm = "zstd"
    level: int = 1

    @property
    def suffix(self) -> str:
        return {"zstd": ".zst", "gzip": ".gz", "none": ""}[self.algorithm]

    def as_manifest(self) -> dict:
        return {"algorithm": self.algorithm, "level": self.level}

    @classmethod
    def from_manifest(cls, data: dict) -> Compression:
        return cls(data["algorithm"], data["level"])

    def compressing_reader(self, source: BinaryIO) -> BinaryIO:
        if self.algorithm == "zstd":
            import zstandard

            # threads=-1: one worker per core, so compression keeps up with pg_dump instead of throttling it.
            # The frame checksum makes every decompression (restore, deep verify) a content check too.
            compressor = zstandard.ZstdCompressor(level=self.level, threads=-1, write_checksum=True)
            return compressor.stream_reader(source, read_size=CHUNK, closefd=False)
        if self.algorithm == "gzip":
            return _ZlibReader(source, self.level)
        return source

    def decompressing_writer(self, sink: BinaryIO) -> BinaryIO:
        if self.algorithm == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().stream_writer(sink, write_size=CHUNK, closefd=False)
        if self.algorithm == "gzip":
            return _ZlibWriter(sink)
        return _Unclosing(sink)


DEFAULT_COMPRESSION = Compression()


class _ZlibReader(io.RawIOBase):
    """A readable gzip stream of `source` (the stdlib only compresses on write)."""

    def __init__(self, source: BinaryIO, level: int):
        self._source = source
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            chunk = self._source.read(CHUNK)
            if chunk:
                self._pending = self._compressor.compress(chunk)
            else:
                self._pending = self._compressor.flush()
                self._done = True
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class _ZlibWriter(io.RawIOBase):
    def __init__(self, sink: BinaryIO):
        self._sink = sink
        self._decompressor = zlib.decompressobj(31)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink.write(self._decompressor.decompress(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._sink.write(self._decompressor.flush())
            if not self._decompressor.eof:
                raise ValueError("the gzip stream ends early: the file is truncated")
        super().close()


class _Unclosing(io.RawIOBase):
    """Passes writes through; closing it leaves the sink open, like the decompressing writers."""

    def __init__(self, sink: BinaryIO):
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._sink.write(data)


@dataclass(frozen=True)
class EncryptionKey:
    """An age X25519 identity; `key_id` is its public key (age1...), safe to record anywhere."""

    identity: object
    conn_id: str | None = None

    @classmethod
    def from_secret(cls, secret: str, conn_id: str | None = None) -> EncryptionKey:
        from pyrage import IdentityError, x25519

        try:
            identity = x25519.Identity.from_str(secret.strip())
        except (IdentityError, ValueError):
            where = f"the password of connection {conn_id}" if conn_id else "the key"
            raise BackupKeyError(
                f"The backup encryption key in {where} is not an age identity (AGE-SECRET-KEY-1...); "
                "create one with `python -m trading_ops backups keygen`."
            ) from None
        return cls(identity, conn_id)

    @classmethod
    def from_connection(cls, conn_id: str) -> EncryptionKey:
        from airflow.sdk import BaseHook

        password = BaseHook.get_connection(conn_id).password
        if not password:
            raise BackupKeyError(f"Connection {conn_id} has no password, so there is no backup encryption key.")
        return cls.from_secret(password, conn_id)

    @staticmethod
    def generate() -> str:
        from pyrage import x25519

        return str(x25519.Identity.generate())

    @property
    def key_id(self) -> str:
        return str(self.identity.to_public())

    def as_manifest(self) -> dict:
        return {"algorithm": "age-x25519", "key_id": self.key_id, "key_conn_id": self.conn_id}


class _HashingWriter(io.RawIOBase):
    def __init__(self, sink: BinaryIO):
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._sink.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


class _CountingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO):
        self._source = source
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        self.size += len(data)
        return len(data)


@dataclass(frozen=True)
class StoredFile:
    """One file of a backup as the manifest lists it: `size`/`sha256` of the stored bytes, `raw_size` before."""

    path: str
    size: int
    sha256: str
    raw_size: int

    def as_manifest(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "raw_size": self.raw_size}


def write_stream(
    source: BinaryIO, sink: BinaryIO, relative_path: str, compression: Compression, key: EncryptionKey | None
) -> StoredFile:
    """Compress (and encrypt) `source` into `sink` in one pass; returns what the manifest records for it."""
    counted = _CountingReader(source)
    reader = compression.compressing_reader(counted)
    writer = _HashingWriter(sink)
    if key is not None:
        import pyrage

        pyrage.encrypt_io(reader, writer, [key.identity.to_public()])
    else:
        shutil.copyfileobj(reader, writer, CHUNK)
    return StoredFile(relative_path, writer.size, writer.sha256.hexdigest(), counted.size)


def read_stream(source: BinaryIO, sink: BinaryIO, compression: Compression, key: EncryptionKey | None) -> None:
    """Decrypt and decompress a stored file from `source` into `sink`."""
    writer = compression.decompressing_writer(sink)
    try:
        if key is not None:
            import pyrage

            try:
                pyrage.decrypt_io(source, writer, [key.identity])
            except pyrage.DecryptError:
                raise BackupKeyError(
                    f"The backup cannot be decrypted with key {key.key_id}: wrong key or damaged file."
                ) from None
        else:
            shutil.copyfileobj(source, writer, CHUNK)
    finally:
        writer.close()


def file_sha256(handle: BinaryIO) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
