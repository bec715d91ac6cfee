"""The full backup: a logical snapshot (pg_dump custom format) and a physical base backup, in one directory.

Logical: a REPEATABLE READ transaction exports its snapshot; `pg_dump -Fc -Z0 --snapshot=...` dumps exactly that
snapshot while the same transaction counts every table's rows, so the manifest's row counts are the dump's. The
uncompressed dump is streamed through multi-threaded zstd (pg_dump 15 only has single-threaded gzip).

Physical: `pg_basebackup -Ft -D - -X none -c fast` streams the tar (with PostgreSQL's own backup_manifest
injected) through the same compressor. WAL comes from the archive: with `-X none` pg_basebackup returns only
after the server archived the backup's last segment, and `pg_verifybackup -w <archive>` checks that range.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from trading_ops import pgtools
from trading_ops.backup.repository import BackupInfo, Repository, isoformat, open_upload, write_manifest
from trading_ops.backup.wal_names import segment_name
from trading_ops.streams import DEFAULT_COMPRESSION, Compression, EncryptionKey, StoredFile, write_stream


class BackupError(RuntimeError):
    """A backup step failed (a PostgreSQL tool, the server, the repository): an operational failure, retried and
    alerted at the DAG's incident level."""


def stored_name(base: str, compression: Compression, key: EncryptionKey | None) -> str:
    return base + compression.suffix + (".age" if key else "")


def _stderr_tail(handle) -> str:
    handle.seek(0)
    lines = handle.read().decode(errors="replace").strip().splitlines()
    return " | ".join(lines[-5:])


class _Observed(io.RawIOBase):
    """Hands every chunk read from `source` to `observe` as well."""

    def __init__(self, source: BinaryIO, observe: Callable[[bytes], None]):
        self._source = source
        self._observe = observe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        self._observe(data)
        buffer[: len(data)] = data
        return len(data)


class TarMemberCapture:
    """Fed a tar stream chunk by chunk, keeps the content of the members named in `wanted`.

    pg_basebackup writes plain ustar (it refuses names over 99 bytes), so headers need no extensions. Member data
    is skipped without copying: this sees every byte of the base backup.
    """

    def __init__(self, wanted: set[str]):
        self.wanted = wanted
        self.members: dict[str, bytes] = {}
        self._header = bytearray()
        self._current: str | None = None
        self._parts: list[bytes] = []
        self._remaining = 0
        self._padding = 0
        self._ended = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        position = 0
        while position < len(view) and not self._ended:
            if self._remaining:
                take = min(self._remaining, len(view) - position)
                if self._current in self.wanted:
                    self._parts.append(bytes(view[position : position + take]))
                position += take
                self._remaining -= take
                if not self._remaining and self._current in self.wanted:
                    self.members[self._current] = b"".join(self._parts)
                continue
            if self._padding:
                take = min(self._padding, len(view) - position)
                position += take
                self._padding -= take
                continue
            piece = view[position : position + 512 - len(self._header)]
            self._header += piece
            position += len(piece)
            if len(self._header) == 512:
                self._start_member(bytes(self._header))
                self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if header == bytes(512):
            self._ended = True
            return
        name = header[:100].rstrip(b"\0").decode()
        prefix = header[345:500].rstrip(b"\0").decode() if header[257:262] == b"ustar" else ""
        self._current = f"{prefix}/{name}" if prefix else name
        self._parts = []
        self._remaining = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        self._padding = -self._remaining % 512
        if not self._remaining and self._current in self.wanted:
            self.members[self._current] = b""


def stream_command(
    argv: list[str],
    env: dict[str, str],
    destination,
    relative_path: str,
    compression: Compression,
    key: EncryptionKey | None,
    observe: Callable[[bytes], None] | None = None,
) -> tuple[StoredFile, str]:
    """Run a client program that writes to stdout, storing its output; returns the file entry and its stderr."""
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **env})
        source = _Observed(process.stdout, observe) if observe else process.stdout
        try:
            with open_upload(destination / relative_path) as sink:
                stored = write_stream(source, sink, relative_path, compression, key)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        if process.wait() != 0:
            program = Path(argv[0]).name
            raise BackupError(f"{program} failed with exit code {process.returncode}: {_stderr_tail(stderr)}")
        stderr.seek(0)
        return stored, stderr.read().decode(errors="replace")


@dataclass(frozen=True)
class LogicalSnapshot:
    file: StoredFile
    snapshot: dict
    server: dict
    row_counts: dict[str, int]
    start_time: datetime
    stop_time: datetime
    # What `pg_dump --version` printed: a restore needs a pg_restore at least that new.
    pg_dump_version: str

    @property
    def server_major(self) -> int:
        return pgtools.major_of_version_num(self.server["server_version_num"])


def take_logical_snapshot(
    destination, *, conn_id: str, compression: Compression, key: EncryptionKey | None
) -> LogicalSnapshot:
    """pg_dump of the connection's database into `destination`, with row counts from the same snapshot."""
    import psycopg

    from trading_ops.db import connection, libpq_env
    from trading_ops.sqlfiles import load_sql

    env = libpq_env(conn_id)
    database = env["PGDATABASE"]
    start_time = datetime.now(UTC)
    with connection(conn_id) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = conn.execute(load_sql("backup/export_snapshot.sql")).fetchone()
        columns = ("snapshot", "lsn", "snapshot_time")
        snapshot = dict(zip(columns, snapshot, strict=True))
        server_row = conn.execute(load_sql("backup/server_identity.sql"))
        server = dict(zip([c.name for c in server_row.description], server_row.fetchone(), strict=True))
        tables = conn.execute(load_sql("backup/select_user_tables.sql")).fetchall()
        # pg_dump refuses a server newer than itself; the server's own version is the one that fits best.
        pg_dump = pgtools.client("pg_dump", at_least=pgtools.major_of_version_num(server["server_version_num"]))

        result: dict = {}

        def dump() -> None:
            try:
                result["file"], _ = stream_command(
                    [pg_dump, "-Fc", "-Z0", f"--snapshot={snapshot['snapshot']}", "--no-password"],
                    env,
                    destination,
                    stored_name(f"{database}.dump", compression, key),
                    compression,
                    key,
                )
            except BaseException as exc:
                result["error"] = exc

        # The counts run on the server while pg_dump streams; both read the exported snapshot.
        dumper = threading.Thread(target=dump, name="pg_dump")
        dumper.start()
        try:
            row_counts = {
                f"{schema}.{table}": conn.execute(load_sql("backup/count_rows.sql", table=(schema, table))).fetchone()[
                    0
                ]
                for schema, table in tables
            }
        finally:
            dumper.join()
        conn.rollback()
    if "error" in result:
        raise result["error"]
    return LogicalSnapshot(
        file=result["file"],
        snapshot={
            "id": snapshot["snapshot"],
            "lsn": snapshot["lsn"],
            "time": isoformat(snapshot["snapshot_time"]),
        },
        server=server,
        row_counts=row_counts,
        start_time=start_time,
        stop_time=datetime.now(UTC),
        pg_dump_version=pgtools.tool_version(pg_dump),
    )


@dataclass(frozen=True)
class BaseBackup:
    file: StoredFile
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_time: datetime
    stop_time: datetime
    pg_basebackup_version: str


def take_base_backup(
    destination, *, conn_id: str, server_major: int, label: str, compression: Compression, key: EncryptionKey | None
) -> BaseBackup:
    """pg_basebackup (of `server_major` or newer) as one compressed tar stream; WAL is left to the archive."""
    from trading_ops.db import libpq_env

    pg_basebackup = pgtools.client("pg_basebackup", at_least=server_major)
    start_time = datetime.now(UTC)
    # With -X none pg_basebackup does not print its WAL range; the backup_manifest it injects in the tar has it.
    capture = TarMemberCapture({"backup_manifest"})
    stored, _ = stream_command(
        [
            pg_basebackup,
            "-D",
            "-",
            "-Ft",
            "-X",
            "none",
            "-c",
            "fast",
            "-l",
            label,
            "--no-password",
        ],
        libpq_env(conn_id),
        destination,
        stored_name("base.tar", compression, key),
        compression,
        key,
        observe=capture.feed,
    )
    if "backup_manifest" not in capture.members:
        raise BackupError("pg_basebackup wrote no backup_manifest into its tar stream.")
    wal_range = json.loads(capture.members["backup_manifest"])["WAL-Ranges"][-1]
    return BaseBackup(
        file=stored,
        start_lsn=wal_range["Start-LSN"],
        stop_lsn=wal_range["End-LSN"],
        timeline=wal_range["Timeline"],
        start_time=start_time,
        stop_time=datetime.now(UTC),
        pg_basebackup_version=pgtools.tool_version(pg_basebackup),
    )


def take_full_backup(
    repository: Repository,
    backup_id: str,
    *,
    conn_id: str = "trading_db",
    compression: Compression = DEFAULT_COMPRESSION,
    key: EncryptionKey | None = None,
) -> BackupInfo:
    """Take the full backup `backup_id` (logical snapshot + base backup) and make it visible atomically.

    Idempotent: if `backup_id` already exists, it is returned unchanged.
    """
    import trading_ops

    if backup_id in repository.ids("full"):
        return repository.info("full", backup_id)
    with repository.staging("full", backup_id) as staging:
        logical = take_logical_snapshot(staging, conn_id=conn_id, compression=compression, key=key)
        physical = take_base_backup(
            staging,
            conn_id=conn_id,
            server_major=logical.server_major,
            label=f"trading-ops {backup_id}",
            compression=compression,
            key=key,
        )
        server = logical.server
        segment_size = server["wal_segment_size"]
        write_manifest(
            staging,
            {
                "id": backup_id,
                "type": "full",
                "database": server["database"],
                "start_time": isoformat(logical.start_time),
                "stop_time": isoformat(physical.stop_time),
                "start_lsn": physical.start_lsn,
                "stop_lsn": physical.stop_lsn,
                "timeline": physical.timeline,
                "wal_segment_size": segment_size,
                "wal_start_segment": segment_name(physical.timeline, physical.start_lsn, segment_size),
                "wal_stop_segment": segment_name(physical.timeline, physical.stop_lsn, segment_size),
                "snapshot": logical.snapshot,
                "server_version": server["server_version"],
                "server_version_num": server["server_version_num"],
                "system_identifier": server["system_identifier"],
                "database_size": server["database_size"],
                "row_counts": logical.row_counts,
                "files": [
                    {"role": "dump", **logical.file.as_manifest()},
                    {"role": "base", **physical.file.as_manifest()},
                ],
                "tools": {
                    "pg_dump": logical.pg_dump_version,
                    "pg_basebackup": physical.pg_basebackup_version,
                    "trading_ops": trading_ops.__version__,
                },
                "compression": compression.as_manifest(),
                "encryption": key.as_manifest() if key else None,
                "timings": {
                    "logical_seconds": round((logical.stop_time - logical.start_time).total_seconds(), 3),
                    "physical_seconds": round((physical.stop_time - physical.start_time).total_seconds(), 3),
                },
            },
        )
    return repository.info("full", backup_id)
