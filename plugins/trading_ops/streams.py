"""Compression and client-side encryption of stored files, in one streaming pass with a sha256 of what is stored:
the one implementation behind backup files (`backup/`) and log archives (`logs/`).

Writing pulls: source -> compressing reader -> (age encryption) -> hashing writer -> file.
Reading pushes: file -> (age decryption) -> decompressing writer -> sink (a file, `tar -x`, `pg_restore`, stdout).
Compression is zstd (with frame checksums, so every decompression is a content check too), gzip, or none; the
files are plain zstd / gzip streams, wrapped in age when encrypted, so the `zstd`, `gunzip` and `age` CLIs read them.

Encryption is age (X25519). Keys come from Airflow connections' passwords, all read by one parser
(`parse_age_keys`): backups keep an identity (`AGE-SECRET-KEY-1...`, `EncryptionKey`), encrypt to its public key,
which is also the key id the manifest records; log archives need only recipients (`age1...`, `Recipients`), the
identity stays offline with whoever reads them. By hand: `age -d -i key.txt file.zst.age | zstd -d > file`.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from trading_ops.errors import UserError

CHUNK = 1024 * 1024

Algorithm = Literal["zstd", "gzip", "none"]


class EncryptionKeyError(UserError):
    """An age key is missing or malformed, or a file was not encrypted to the key given."""


@dataclass(frozen=True)
class Compression:
    algorithm: Algorithm = "zstd"
    level: int = 1

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.algorithm]

    @classmethod
    def of_file(cls, name: str) -> Compression:
        """The compression a stored file's name says (`.zst` or `.gz` before an optional `.age`); for reading,
        where the level does not matter."""
        stem = name.removesuffix(".age")
        return cls(
            next((algorithm for algorithm, suffix in SUFFIXES.items() if suffix and stem.endswith(suffix)), "none")
        )

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


SUFFIXES: dict[str, str] = {"zstd": ".zst", "gzip": ".gz", "none": ""}
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


def parse_age_keys(text: str) -> list:
    """Every age key in `text`: identities (`AGE-SECRET-KEY-1...`) and recipients (`age1...`), separated by spaces,
    commas or newlines; `#` lines (age-keygen's comments) are skipped. Anything else raises ValueError, whose
    message never holds the value: it may be a secret."""
    from pyrage import IdentityError, RecipientError, x25519

    keys = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for token in re.split(r"[\s,]+", line.strip()):
            if not token:
                continue
            try:
                is_identity = token.upper().startswith("AGE-SECRET-KEY-")
                keys.append(x25519.Identity.from_str(token) if is_identity else x25519.Recipient.from_str(token))
            except (IdentityError, RecipientError):
                raise ValueError(
                    "a value is not an age identity (AGE-SECRET-KEY-1...) or recipient (age1...)"
                ) from None
    return keys


def connection_password(conn_id: str, holds: str) -> str:
    """The password of Airflow connection `conn_id`, which should hold `holds` (for the sentence when it does not)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        password = BaseHook.get_connection(conn_id).password
    except AirflowNotFoundException:
        raise EncryptionKeyError(f"Connection {conn_id} is missing: create it with {holds} as its password.") from None
    if not (password or "").strip():
        raise EncryptionKeyError(f"Connection {conn_id} has no password: it must hold {holds}.")
    return password


def _is_identity(key) -> bool:
    from pyrage import x25519

    return isinstance(key, x25519.Identity)


@dataclass(frozen=True)
class EncryptionKey:
    """An age X25519 identity; `key_id` is its public key (age1...), safe to record anywhere."""

    identity: object
    conn_id: str | None = None

    @classmethod
    def from_secret(cls, secret: str, conn_id: str | None = None) -> EncryptionKey:
        try:
            keys = parse_age_keys(secret)
        except ValueError:
            keys = []
        if len(keys) != 1 or not _is_identity(keys[0]):
            where = f"the password of connection {conn_id}" if conn_id else "the key"
            raise EncryptionKeyError(
                f"The backup encryption key in {where} is not an age identity (AGE-SECRET-KEY-1...); "
                "create one with `python -m trading_ops backups keygen`."
            )
        return cls(keys[0], conn_id)

    @classmethod
    def from_connection(cls, conn_id: str) -> EncryptionKey:
        return cls.from_secret(connection_password(conn_id, "the backup encryption key"), conn_id)

    @classmethod
    def from_identity_file(cls, path: Path) -> list[EncryptionKey]:
        """The identities of an age identity file (age-keygen's output; several lines for several keys)."""
        try:
            keys = parse_age_keys(path.read_text())
        except ValueError as exc:
            raise EncryptionKeyError(f"{path} is not an age identity file: {exc}.") from None
        if not keys or not all(_is_identity(key) for key in keys):
            raise EncryptionKeyError(
                f"{path} holds no age identity (AGE-SECRET-KEY-1...), only public keys or nothing."
            )
        return [cls(key) for key in keys]

    @staticmethod
    def generate() -> str:
        from pyrage import x25519

        return str(x25519.Identity.generate())

    @property
    def key_id(self) -> str:
        return str(self.identity.to_public())

    @property
    def recipients(self) -> list:
        return [self.identity.to_public()]

    def as_manifest(self) -> dict:
        return {"algorithm": "age-x25519", "key_id": self.key_id, "key_conn_id": self.conn_id}


@dataclass(frozen=True)
class Recipients:
    """age public keys to encrypt to, without the identity that decrypts (it stays offline with the readers)."""

    public_keys: tuple
    conn_id: str | None = None

    @classmethod
    def from_secret(cls, secret: str, conn_id: str | None = None) -> Recipients:
        """Recipients (age1...) separated by spaces, commas or newlines; an identity stands for its public key."""
        where = f"Connection {conn_id}" if conn_id else "The value"
        try:
            keys = parse_age_keys(secret)
        except ValueError:
            raise EncryptionKeyError(
                f"{where} holds a value that is not an age recipient (age1...) or identity."
            ) from None
        if not keys:
            raise EncryptionKeyError(f"{where} holds no age recipient.")
        return cls(tuple(key.to_public() if _is_identity(key) else key for key in keys), conn_id)

    @classmethod
    def from_connection(cls, conn_id: str) -> Recipients:
        return cls.from_secret(connection_password(conn_id, "an age recipient (age1...)"), conn_id)

    @property
    def recipients(self) -> list:
        return list(self.public_keys)


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
    source: BinaryIO,
    sink: BinaryIO,
    relative_path: str,
    compression: Compression,
    key: EncryptionKey | Recipients | None,
) -> StoredFile:
    """Compress (and encrypt to `key`'s recipients) `source` into `sink` in one pass; returns the stored file's
    size and sha256 and the size read."""
    counted = _CountingReader(source)
    reader = compression.compressing_reader(counted)
    writer = _HashingWriter(sink)
    if key is not None:
        import pyrage

        pyrage.encrypt_io(reader, writer, key.recipients)
    else:
        shutil.copyfileobj(reader, writer, CHUNK)
    return StoredFile(relative_path, writer.size, writer.sha256.hexdigest(), counted.size)


def read_stream(source: BinaryIO, sink: BinaryIO, compression: Compression, keys: Sequence[EncryptionKey] = ()) -> None:
    """Decrypt (when `keys` are given, any one of which may fit) and decompress a stored file into `sink`."""
    writer = compression.decompressing_writer(sink)
    try:
        if keys:
            import pyrage

            try:
                pyrage.decrypt_io(source, writer, [key.identity for key in keys])
            except pyrage.DecryptError:
                raise EncryptionKeyError(
                    f"The file cannot be decrypted with key {', '.join(key.key_id for key in keys)}: "
                    "wrong key or damaged file."
                ) from None
        else:
            shutil.copyfileobj(source, writer, CHUNK)
    finally:
        writer.close()


def file_sha256(handle: BinaryIO) -> tuple[int, str]:
    """Size and sha256 (hex) of what is left to read in `handle`."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
