"""WAL off the database host: every archived segment copied into the repository within `backup.wal_ship_within`.

    <repository>/wal/<name>.zst[.age]     an archived WAL file (segment or timeline history), compressed (and
                                          encrypted) like the bundles
    <repository>/wal/<name>.json          written after it, which publishes it: size, sha256 of the stored bytes,
                                          raw_size, raw_sha256 of the plain file, compression, encryption,
                                          archived_at (the archive's mtime) and shipped_at

Why a shipping step on a short schedule (db_wal_ship, every minute) and not an archive-push in archive_command:
the credentials of the store are an Airflow connection, and archive_command runs on the database host as the
postgres user, without Airflow and once per segment; a store outage there would stall archiving and fill pg_wal.
The local archive (archive_wal.sh) stays the fast, durable first copy; shipping reads it and never blocks the
server. The worst case off-host delay is the schedule's minute plus one run, well inside the 5 minutes.

Idempotent: a file already shipped is skipped; if the archive's copy changed since it was shipped (its mtime is
newer than the recorded archived_at) its checksum is compared: the same content is success, a different one an
error (two clusters share a repository, or a re-initialised cluster reuses segment names).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trading_ops.backup.full import BackupError, stored_name
from trading_ops.backup.repository import Repository, isoformat, open_upload, parse_time, write_json_atomic
from trading_ops.backup.wal import archived_names
from trading_ops.streams import Compression, EncryptionKey, write_stream

WAL_DIR = "wal"


class WalShipConflict(BackupError):
    """A WAL file in the repository has other content than the archive's file of that name."""


def wal_dir(repository: Repository):
    return repository.root / WAL_DIR


def shipped_record(repository: Repository, name: str) -> dict:
    with repository.errors(f"reading the record of WAL file {name}"):
        return json.loads((wal_dir(repository) / f"{name}.json").read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ship_wal(
    repository: Repository,
    archive_dir: Path,
    *,
    compression: Compression,
    key: EncryptionKey | None,
) -> list[str]:
    """Copy every archived WAL file the repository lacks; returns the names shipped, in name order."""
    # One listing: a record is read only for a file the archive changed after it was shipped.
    published = {name.removesuffix(".json"): modified for name, (_, modified) in wal_listing(repository).items()}
    directory = wal_dir(repository)
    shipped = []
    for name in sorted(archived_names(archive_dir)):
        local = archive_dir / name
        stat = local.stat()
        archived_at = datetime.fromtimestamp(stat.st_mtime, UTC)
        if name in published:
            if archived_at <= published[name]:
                continue
            record = shipped_record(repository, name)
            if archived_at > parse_time(record["archived_at"]) and _sha256(local) != record["raw_sha256"]:
                raise WalShipConflict(
                    f"WAL file {name} in {directory} has other content than {local}: two clusters ship to one "
                    "repository, or this cluster was re-initialised; give it its own repository prefix."
                )
            continue
        relative = stored_name(name, compression, key)
        # Read the archive outside the store's error translation: a local failure (say, a file the worker may not
        # read) is not the store refusing the connection's credentials.
        raw_sha256 = _sha256(local)
        with open(local, "rb") as source, repository.errors(f"shipping WAL file {name}"):
            with open_upload(directory / relative) as sink:
                stored = write_stream(source, sink, relative, compression, key)
            entry = stored.as_manifest()
            write_json_atomic(
                directory / f"{name}.json",
                {
                    "name": name,
                    **entry,
                    "raw_sha256": raw_sha256,
                    "compression": compression.algorithm,
                    "encryption": key.as_manifest() if key else None,
                    "archived_at": isoformat(archived_at),
                    "shipped_at": isoformat(datetime.now(UTC)),
                },
            )
        shipped.append(name)
    return shipped


def shipped_names(repository: Repository) -> set[str]:
    """Names of the WAL files published in the repository (a listing only: no record is read)."""
    return set(shipped_files(repository))


def shipped_files(repository: Repository) -> dict[str, bool]:
    """Each WAL file published in the repository, by name: whether it is stored encrypted (from one listing)."""
    listing = wal_listing(repository)
    # A stored name is `stored_name(name, ...)`: the file's name, the compression's suffix, then .age if encrypted.
    encrypted = {
        stored.removesuffix(".age").removesuffix(Compression.of_file(stored).suffix)
        for stored in listing
        if stored.endswith(".age")
    }
    published = [name.removesuffix(".json") for name in listing if name.endswith(".json")]
    return {name: name in encrypted for name in published}


def offhost_lag(repository: Repository, archive_dir: Path, at: datetime, kept: timedelta) -> timedelta | None:
    """How long the oldest archived WAL file not yet in the repository has waited (zero when every one is there):
    the trades a lost host would cost beyond the repository. None for a repository on this host's disk, where
    nothing is off the host. Files older than `kept` (the WAL retention) are not counted: retention may have
    removed their shipped copies while the local archive still holds them."""
    if repository.local:
        return None
    shipped = shipped_names(repository)
    waiting = [
        datetime.fromtimestamp((archive_dir / name).stat().st_mtime, UTC)
        for name in archived_names(archive_dir) - shipped
    ]
    waiting = [archived_at for archived_at in waiting if archived_at > at - kept]
    return max(at - min(waiting), timedelta(0)) if waiting else timedelta(0)


def wal_listing(repository: Repository) -> dict[str, tuple]:
    """Every object under `wal/` by name: (its path, its own modification time), from one listing."""
    directory = wal_dir(repository)
    with repository.errors("listing its WAL"):
        if not directory.exists():
            return {}
        if repository.local:
            return {
                child.name: (child, datetime.fromtimestamp(child.stat().st_mtime, UTC)) for child in directory.iterdir()
            }
        listing = directory.fs.ls(directory.path, detail=True)
    return {
        info["name"].rsplit("/", 1)[-1]: (directory / info["name"].rsplit("/", 1)[-1], info["LastModified"])
        for info in listing
        if info.get("type") == "file"
    }
