"""The backup repository: a directory tree a person can browse, on local disk or on object storage.

    <repository>/full/<backup-id>/manifest.json       20261101T010000Z: a full backup (dump + base backup)
    <repository>/incremental/<YYYY-MM-DD>/manifest.json   a day's WAL segments
    <repository>/<kind>/.partial-<id>/                a backup being written (never listed; removed by retention)

A backup directory is written under its `.partial-` name and renamed into place only after its manifest is
complete and synced, so whatever is listed is whole. On object storage (`s3://...` through Airflow's
`ObjectStoragePath`, credentials from the `aws` connection `backup.repository_conn_id`: `object_store`) there is
no rename, so a backup is written under its final prefix: every file, then manifest.json, then manifest.sha256.
A directory without both is not a backup to any reader (catalog, verify, restore, retention); the leftovers of a
killed upload are `partials` that retention removes once their newest object is `backup.abandoned_partial_after`
old.

Next to the manifest (not in it, since they change after the backup is taken): `verified.json`, the result of the
last verification, and `PINNED`, whose presence keeps the backup forever (its text says why).

    <repository>/objects/<name>                       small named objects other jobs keep off their hosts
                                                      (`store_object` / `read_object`; e.g. log chain heads)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from trading_ops.errors import UserError
from trading_ops.pgtools import major_of_tool_version, major_of_version_num

BackupType = Literal["full", "incremental"]

# Written in the regular-expression dialect both Python and JSON Schema (the trigger forms) understand.
FULL_ID_PATTERN = "[0-9]{8}T[0-9]{6}Z"
INCREMENTAL_ID_PATTERN = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
FULL_ID_RE = re.compile(f"^{FULL_ID_PATTERN}$")
INCREMENTAL_ID_RE = re.compile(f"^{INCREMENTAL_ID_PATTERN}$")
BACKUP_ID_RE = re.compile(f"^(?:{FULL_ID_PATTERN}|{INCREMENTAL_ID_PATTERN})$")
# What a form asking for a full backup accepts: `latest` (the newest verified one) or a full backup id.
FULL_BACKUP_CHOICE_PATTERN = f"^(latest|{FULL_ID_PATTERN})$"
ID_RE_BY_TYPE = {"full": FULL_ID_RE, "incremental": INCREMENTAL_ID_RE}
DIR_BY_TYPE = {"full": "full", "incremental": "incremental"}

MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
VERIFIED = "verified.json"
PINNED = "PINNED"
PARTIAL_PREFIX = ".partial-"
OBJECTS = "objects"
# Slash-separated segments of letters, digits, `.`, `_` and `-`, none starting with a dot (no `..`, no hidden files).
OBJECT_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
MANIFEST_FORMAT = 1


class BackupNotFound(UserError):
    """The backup asked for does not exist (or is not a backup id): the request names the wrong one."""


def full_backup_id(moment: datetime) -> str:
    """The id of a full backup taken for `moment` (the run's logical date): UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def incremental_backup_id(day) -> str:
    return day.isoformat()


def id_time(backup_id: str) -> datetime:
    """The time a backup id names (a damaged manifest leaves only that to sort by)."""
    if FULL_ID_RE.match(backup_id):
        return datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return datetime.fromisoformat(backup_id).replace(tzinfo=UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def is_local(path) -> bool:
    return isinstance(path, Path)


# The part size of multipart uploads when no policy says otherwise (`backup.multipart_chunk`).
DEFAULT_CHUNK = 64 * 1024 * 1024
DEFAULT_CONN_ID = "aws_backup"


def repository_path(location: str, conn_id: str = DEFAULT_CONN_ID, chunk_size: int = DEFAULT_CHUNK):
    """A local `Path` for a directory or file:// URL; a universal_pathlib `UPath` (the path class Airflow's
    `ObjectStoragePath` wraps) on s3fs for s3:// URLs, authenticated by the `aws` connection `conn_id`.
    ObjectStoragePath itself resolves its filesystem through the Amazon provider's registration, which this
    deployment does not install; the connection's credentials go to s3fs directly instead."""
    if "://" not in location:
        return Path(location)
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    from upath import UPath

    from trading_ops.backup.object_store import storage_options

    if not location.startswith("s3://"):
        raise UserError(f"Backup repository {location} is neither a local directory nor an s3:// URL.")
    root = UPath(location.rstrip("/"), **storage_options(conn_id, chunk_size))
    # Paths derived from the root share its filesystem only once the root has made it: without this, each one
    # (skip_instance_cache) built its own S3 client, a few hundred milliseconds per file touched.
    root.fs  # noqa: B018
    return root


def repository_from_policy(policy=None) -> Repository:
    """The repository the policy names (`backup.repository`, `backup.repository_conn_id`)."""
    if policy is None:
        from trading_ops.policy import load_policy

        policy = load_policy()
    backup = policy.backup
    return Repository(backup.repository, conn_id=backup.repository_conn_id, chunk_size=backup.multipart_chunk)


def fsync_dir(path) -> None:
    if is_local(path):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_file(handle) -> None:
    handle.flush()
    if hasattr(handle, "fileno"):
        # Object-storage files have no descriptor: their upload completes on close instead.
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            os.fsync(handle.fileno())


def remove_tree(path) -> None:
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path.fs.find(path.path):
        path.fs.rm(path.path, recursive=True)


def modified_time(path) -> datetime | None:
    """When a directory (or prefix) last changed: its mtime locally, its newest object's own timestamp on object
    storage (None: nothing there)."""
    if is_local(path):
        return datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else None
    found = path.fs.find(path.path, detail=True)
    times = [info["LastModified"] for info in found.values() if info.get("LastModified")]
    return max(times).astimezone(UTC) if times else None


@contextmanager
def open_upload(path) -> Generator:
    """A new file at `path`, complete and durable when the block ends: fsynced locally; on object storage uploaded
    (in parts of the filesystem's block size, `backup.multipart_chunk`) and its size and ETag checked against the
    bytes sent."""
    if is_local(path):
        with open(path, "wb") as handle:
            yield handle
            fsync_file(handle)
        return
    from trading_ops.backup.object_store import CheckedUpload, UploadCheck

    fs = path.fs
    if "s3" not in ([fs.protocol] if isinstance(fs.protocol, str) else fs.protocol):
        # Another fsspec filesystem (file:// in tests): no ETag to check.
        with path.open("wb") as handle:
            yield handle
        return
    check = UploadCheck(fs.default_block_size)
    with path.open("wb") as handle:
        yield CheckedUpload(handle, check)
    check.check(path)


def write_bytes_atomic(path, data: bytes) -> None:
    """Write a small file under a temporary name and rename it, so a reader never sees half of it (on object
    storage, one PUT does that)."""
    if not is_local(path):
        with open_upload(path) as handle:
            handle.write(data)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        fsync_file(handle)
    os.replace(temporary, path)
    fsync_dir(path.parent)


def write_json_atomic(path, data: dict) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


@dataclass(frozen=True)
class BackupInfo:
    """One backup as the catalog shows it. `verified` is None until a verification has run."""

    id: str
    type: BackupType
    path: Any
    manifest: dict
    verified: bool | None
    verified_at: datetime | None
    pinned: bool

    @property
    def start_time(self) -> datetime:
        return parse_time(self.manifest["start_time"]) if "start_time" in self.manifest else id_time(self.id)

    @property
    def stop_time(self) -> datetime:
        return parse_time(self.manifest["stop_time"]) if "stop_time" in self.manifest else id_time(self.id)

    @property
    def size(self) -> int:
        return sum(entry["size"] for entry in self.manifest["files"])

    @property
    def server_major(self) -> int:
        """The major version of the server the backup was taken from."""
        return major_of_version_num(self.manifest["server_version_num"])

    @property
    def pg_dump_major(self) -> int:
        """The major version of the pg_dump that wrote the dump: pg_restore must be at least that new."""
        return major_of_tool_version(self.manifest["tools"]["pg_dump"])

    def file_path(self, role: str):
        """The stored file with this role ("dump", "base", or a WAL segment name)."""
        for entry in self.manifest["files"]:
            if entry["role"] == role:
                return self.path / entry["path"]
        raise BackupNotFound(f"Backup {self.id} has no {role} file.")

    def file_entry(self, role: str) -> dict:
        for entry in self.manifest["files"]:
            if entry["role"] == role:
                return entry
        raise BackupNotFound(f"Backup {self.id} has no {role} file.")

    def summary(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "time": isoformat(self.start_time),
            "size": self.size,
            "verified": self.verified,
            "pinned": self.pinned,
        }


class Repository:
    """The backup tree under `root` (a `Path` or an `ObjectStoragePath`)."""

    def __init__(self, root, *, conn_id: str = DEFAULT_CONN_ID, chunk_size: int = DEFAULT_CHUNK):
        self.conn_id = conn_id
        self.chunk_size = chunk_size
        self.root = repository_path(str(root), conn_id, chunk_size) if isinstance(root, str) else root

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    @property
    def local(self) -> bool:
        return is_local(self.root)

    def errors(self, action: str):
        """Failures of the object store during `action` as one sentence naming the connection (locally: as is)."""
        if self.local:
            return contextlib.nullcontext()
        from trading_ops.backup.object_store import store_errors

        return store_errors(self.root, self.conn_id, action)

    def type_dir(self, backup_type: BackupType):
        return self.root / DIR_BY_TYPE[backup_type]

    def backup_dir(self, backup_type: BackupType, backup_id: str):
        if not ID_RE_BY_TYPE[backup_type].match(backup_id):
            raise ValueError(f"{backup_id!r} is not a valid {backup_type} backup id")
        return self.type_dir(backup_type) / backup_id

    @contextmanager
    def staging(self, backup_type: BackupType, backup_id: str) -> Generator:
        """A `.partial-<id>` directory that becomes `<id>` when the block exits cleanly, after the caller wrote
        the manifest into it. Any exception (or a killed process) leaves only the `.partial-` directory."""
        final = self.backup_dir(backup_type, backup_id)
        if not self.local:
            yield from self._staging_in_place(final, backup_id)
            return
        partial = self.type_dir(backup_type) / f"{PARTIAL_PREFIX}{backup_id}"
        # Only one run per DAG at a time, and ids come from the run: a leftover with this name is a dead attempt.
        remove_tree(partial)
        partial.mkdir(parents=True)
        yield partial
        if not (partial / MANIFEST).exists():
            raise RuntimeError(f"backup {backup_id} has no manifest; it stays invisible in {partial}")
        fsync_dir(partial)
        os.rename(partial, final)
        fsync_dir(final.parent)

    def _staging_in_place(self, final, backup_id: str) -> Generator:
        """Object storage: the backup is written under its final prefix; manifest.sha256, written last by
        `write_manifest`, publishes it."""
        with self.errors(f"writing backup {backup_id}"):
            if is_complete(final):
                raise RuntimeError(f"backup {backup_id} exists already in {final}")
            # Only one run per DAG at a time, and ids come from the run: objects there are a dead attempt's.
            remove_tree(final)
            # A no-op on S3 (prefixes are not objects); other fsspec stores (file:// in tests) need the directory.
            final.mkdir(parents=True, exist_ok=True)
        with self.errors(f"writing backup {backup_id}"):
            yield final
        if not is_complete(final):
            raise RuntimeError(f"backup {backup_id} has no manifest; it stays invisible in {final}")

    def info(self, backup_type: BackupType, backup_id: str, *, present: set[str] | None = None) -> BackupInfo:
        """`present`: the names of the backup's files, when a listing already told (`backups`)."""
        directory = self.backup_dir(backup_type, backup_id)

        def exists(name: str) -> bool:
            return name in present if present is not None else (directory / name).exists()

        try:
            if not exists(MANIFEST_DIGEST):
                raise FileNotFoundError(directory / MANIFEST_DIGEST)
            stored = (directory / MANIFEST).read_bytes()
            manifest = json.loads(stored)
        except FileNotFoundError:
            raise BackupNotFound(f"There is no {backup_type} backup {backup_id} in {self.root}.") from None
        except ValueError:
            manifest = {"id": backup_id, "type": backup_type, "damaged": True, "files": []}
        verified, verified_at = None, None
        if exists(VERIFIED):
            record = json.loads((directory / VERIFIED).read_text())
            # A verification counts only for the manifest it checked.
            # The bytes just read: on object storage each read is a request, and the catalog reads every backup.
            if record.get("manifest_sha256") == _sha256(stored):
                verified, verified_at = record["ok"], parse_time(record["time"])
        return BackupInfo(
            id=backup_id,
            type=backup_type,
            path=directory,
            manifest=manifest,
            verified=verified,
            verified_at=verified_at,
            pinned=exists(PINNED),
        )

    def backups(self, backup_type: BackupType) -> list[BackupInfo]:
        """Every complete backup of the type, by id. On object storage, one listing of the type's prefix tells
        which backups are published and which have a verification record or a pin; only what is there is read."""
        if self.local:
            return [self.info(backup_type, backup_id) for backup_id in self.ids(backup_type)]
        pattern = ID_RE_BY_TYPE[backup_type]
        return [
            self.info(backup_type, child, present=names)
            for child, names in sorted(self._tree(backup_type).items())
            if pattern.match(child) and {MANIFEST, MANIFEST_DIGEST} <= names
        ]

    def _tree(self, backup_type: BackupType) -> dict[str, set[str]]:
        """Object storage: the names under each child prefix of the type's prefix, from one listing."""
        directory = self.type_dir(backup_type)
        prefix = directory.path.rstrip("/") + "/"
        tree: dict[str, set[str]] = {}
        for key in directory.fs.find(directory.path):
            child, _, rest = key.removeprefix(prefix).partition("/")
            tree.setdefault(child, set()).add(rest)
        return tree

    def ids(self, backup_type: BackupType) -> list[str]:
        directory = self.type_dir(backup_type)
        if not directory.exists():
            return []
        pattern = ID_RE_BY_TYPE[backup_type]
        return sorted(child.name for child in directory.iterdir() if pattern.match(child.name) and is_complete(child))

    def partials(self, backup_type: BackupType) -> list:
        """Backups being written or abandoned: `.partial-` directories, and on object storage backup prefixes
        without both manifest.json and manifest.sha256."""
        directory = self.type_dir(backup_type)
        if not self.local:
            pattern = ID_RE_BY_TYPE[backup_type]
            return [
                directory / child
                for child, names in self._tree(backup_type).items()
                if child.startswith(PARTIAL_PREFIX)
                or (pattern.match(child) and not {MANIFEST, MANIFEST_DIGEST} <= names)
            ]
        if not directory.exists():
            return []
        return [child for child in directory.iterdir() if child.name.startswith(PARTIAL_PREFIX)]

    def record_verification(self, backup: BackupInfo, ok: bool, checks: list[str], error: str | None) -> BackupInfo:
        write_json_atomic(
            backup.path / VERIFIED,
            {
                "ok": ok,
                "time": isoformat(datetime.now(UTC)),
                "manifest_sha256": manifest_digest(backup.path),
                "checks": checks,
                "error": error,
            },
        )
        return self.info(backup.type, backup.id)

    def object_path(self, name: str):
        if not OBJECT_NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid object name")
        return self.root / OBJECTS / name

    def store_object(self, name: str, data: bytes) -> None:
        """Store a small named object, replacing the one of that name whole: a reader sees the old content or the
        new, never half."""
        path = self.object_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)

    def read_object(self, name: str) -> bytes | None:
        """The object stored under `name`, or None when there is none."""
        path = self.object_path(name)
        if not path.exists():
            return None
        return path.read_bytes()

    def pin(self, backup: BackupInfo, reason: str) -> None:
        (backup.path / PINNED).write_text(reason.strip() + "\n")

    def unpin(self, backup: BackupInfo) -> None:
        pin = backup.path / PINNED
        if pin.exists():
            pin.unlink()


def is_complete(directory) -> bool:
    """Published: both the manifest and, written after it, its digest are there."""
    return (directory / MANIFEST_DIGEST).exists() and (directory / MANIFEST).exists()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def manifest_digest(directory) -> str:
    return _sha256((directory / MANIFEST).read_bytes())


def write_manifest(directory, manifest: dict) -> None:
    """manifest.json, then manifest.sha256 beside it, so damage to the manifest itself is caught too."""
    write_json_atomic(directory / MANIFEST, {"format": MANIFEST_FORMAT, **manifest})
    write_bytes_atomic(directory / MANIFEST_DIGEST, (manifest_digest(directory) + "\n").encode())
