"""Writing and reading log archives through the shared streams (`trading_ops.streams`).

An archive is compressed (zstd by default, gzip as an option; levels in the policy, measured with bench/logs.py)
and, for encrypted classes, encrypted to the age recipient(s) of the connection `logs.encryption_key_conn_id`,
streamed: compressed bytes go straight into the encryption, so no plaintext intermediate is written. It is
written as `.<name>.part`, fsynced, its sidecar written, then renamed into place, so a crash leaves either nothing
visible or a `.part` file with its sidecar, which the next run removes together.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trading_ops.logs.naming import part_path, sidecar_path
from trading_ops.logs.verify import write_sidecar
from trading_ops.policy import LogClass, Logs
from trading_ops.streams import (
    CHUNK,
    Compression,
    EncryptionKey,
    EncryptionKeyError,
    Recipients,
    StoredFile,
    read_stream,
    write_stream,
)


@dataclass(frozen=True)
class ArchiveFormat:
    """How a class stores rotated content: its compression ("none": kept as is) and recipients (None: in clear)."""

    compression: Compression
    recipients: Recipients | None = None

    @property
    def suffix(self) -> str:
        return self.compression.suffix + (".age" if self.recipients else "")


def archive_format(log_class: LogClass, settings: Logs, recipients: Recipients | None) -> ArchiveFormat:
    compression = (
        Compression(settings.compressor, getattr(settings.compression_level, settings.compressor))
        if log_class.compression
        else Compression("none")
    )
    return ArchiveFormat(compression, recipients if log_class.encryption else None)


def stored_suffix(log_class: LogClass, settings: Logs) -> str:
    """The suffix of the class's archives, known without its recipients (whose key only the rotation reads)."""
    return archive_format(log_class, settings, None).suffix + (".age" if log_class.encryption else "")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_archive(source: BinaryIO, final: Path, archive: ArchiveFormat, mode: int) -> StoredFile:
    """Stream `source` into `final` per `archive`, with its sidecar; returns the stored size and sha256 and the
    number of bytes read from `source`. The sidecar is in place before the archive's rename."""
    part = part_path(final)
    try:
        with open(part, "xb") as raw:
            os.fchmod(raw.fileno(), mode)
            stored = write_stream(source, raw, final.name, archive.compression, archive.recipients)
            raw.flush()
            os.fsync(raw.fileno())
        write_sidecar(final, stored.sha256)
        os.rename(part, final)
        fsync_path(final.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return stored


def discard_archive(final: Path) -> None:
    final.unlink(missing_ok=True)
    sidecar_path(final).unlink(missing_ok=True)


def skip_padding(source: BinaryIO) -> int:
    """Position `source` at its first non-NUL byte (holes and NUL padding left by non-O_APPEND writers)."""
    fd = source.fileno()
    try:
        offset = os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        offset = os.fstat(fd).st_size  # nothing but a hole
    source.seek(offset)
    while chunk := source.read(CHUNK):
        data = chunk.lstrip(b"\0")
        if data:
            offset = source.tell() - len(data)
            break
        offset = source.tell()
    source.seek(offset)
    return offset


def extract_archive(path: Path, out: BinaryIO, keys: Sequence[EncryptionKey] = ()) -> None:
    """Write the original log of an archive to `out`: decrypt (with any of `keys`) and decompress, all streamed.
    The format comes from the name (`.zst`, `.gz`, `.age`)."""
    encrypted = path.name.endswith(".age")
    if encrypted and not keys:
        raise EncryptionKeyError(f"{path} is encrypted: give the age identity that decrypts it.")
    with open(path, "rb") as source:
        read_stream(source, out, Compression.of_file(path.name), keys if encrypted else ())
