"""The backup repository: a directory tree a person can browse, on local disk or on object storage.

    <repository>/full/<backup-id>/manifest.json       20261101T010000Z: a full backup (dump + base backup)
    <repository>/incremental/<YYYY-MM-DD>/manifest.json   a day's WAL segments
    <repository>/<kind>/.partial-<id>/                a backup being written (never listed; removed by retention)

A backup directory is written under its `.partial-` name and renamed into place only after its manifest is
complete and synced, so whatever is listed is whole. On object storage (`s3://...` through Airflow's
`ObjectStoragePath`) a rename is a copy, so there the manifest, written last, is what makes a backup exist:
the catalog lists only directories that hold one.

Next to the manifest (not in it, since they change after the backup is taken): `verified.json`, the result of the
last verification, and `PINNED`, whose presence keeps the backup forever (its text says why).
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


def repository_path(location: str):
    """A local `Path` for a directory or file:// URL; an `ObjectStoragePath` for s3://, gs://, ... URLs."""
    if "://" not in location:
        return Path(location)
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(location)


def repository_from_policy(policy=None) -> Repository:
    """The repository the policy names (`backup.repository`)."""
    if policy is None:
        from trading_ops.policy import load_policy

        policy = load_policy()
    return Repository(policy.backup.repository)


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
    elif path.exists():
        path.fs.rm(path.path, recursive=True)


def write_json_atomic(path, data: dict) -> None:
    """Write a small JSON file under a temporary name and rename it, so a reader never sees half of it."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if not is_local(path):
        path.write_text(text)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        fsync_file(handle)
    os.replace(temporary, path)
    fsync_dir(path.parent)


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

    def __init__(self, root):
        self.root = repository_path(root) if isinstance(root, str) else root

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

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
        partial = self.type_dir(backup_type) / f"{PARTIAL_PREFIX}{backup_id}"
        # Only one run per DAG at a time, and ids come from the run: a leftover with this name is a dead attempt.
        remove_tree(partial)
        partial.mkdir(parents=True)
        yield partial
        if not (partial / MANIFEST).exists():
            raise RuntimeError(f"backup {backup_id} has no manifest; it stays invisible in {partial}")
        if is_local(partial):
            fsync_dir(partial)
            os.rename(partial, final)
            fsync_dir(final.parent)
        else:
            partial.rename(final)

    def info(self, backup_type: BackupType, backup_id: str) -> BackupInfo:
        directory = self.backup_dir(backup_type, backup_id)
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except FileNotFoundError:
            raise BackupNotFound(f"There is no {backup_type} backup {backup_id} in {self.root}.") from None
        except ValueError:
            manifest = {"id": backup_id, "type": backup_type, "damaged": True, "files": []}
        verified, verified_at = None, None
        if (directory / VERIFIED).exists():
            record = json.loads((directory / VERIFIED).read_text())
            # A verification counts only for the manifest it checked.
            if record.get("manifest_sha256") == manifest_digest(directory):
                verified, verified_at = record["ok"], parse_time(record["time"])
        return BackupInfo(
            id=backup_id,
            type=backup_type,
            path=directory,
            manifest=manifest,
            verified=verified,
            verified_at=verified_at,
            pinned=(directory / PINNED).exists(),
        )

    def ids(self, backup_type: BackupType) -> list[str]:
        directory = self.type_dir(backup_type)
        if not directory.exists():
            return []
        return sorted(
            child.name
            for child in directory.iterdir()
            if ID_RE_BY_TYPE[backup_type].match(child.name) and (child / MANIFEST).exists()
        )

    def partials(self, backup_type: BackupType) -> list:
        directory = self.type_dir(backup_type)
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

    def pin(self, backup: BackupInfo, reason: str) -> None:
        (backup.path / PINNED).write_text(reason.strip() + "\n")

    def unpin(self, backup: BackupInfo) -> None:
        pin = backup.path / PINNED
        if pin.exists():
            pin.unlink()


def manifest_digest(directory) -> str:
    import hashlib

    return hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()


def write_manifest(directory, manifest: dict) -> None:
    """manifest.json, then manifest.sha256 beside it, so damage to the manifest itself is caught too."""
    write_json_atomic(directory / MANIFEST, {"format": MANIFEST_FORMAT, **manifest})
    (directory / MANIFEST_DIGEST).write_text(manifest_digest(directory) + "\n")
