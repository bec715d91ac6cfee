"""The catalog: what backups exist, newest first, and which one `latest` means."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from trading_ops.backup.repository import (
    BACKUP_ID_RE,
    FULL_ID_RE,
    BackupInfo,
    BackupNotFound,
    BackupType,
    Repository,
)


def list_backups(repository: Repository, backup_type: BackupType | None = None) -> list[BackupInfo]:
    """Every complete backup (type, time, size, verified, pinned), newest first."""
    types: tuple[BackupType, ...] = (backup_type,) if backup_type else ("full", "incremental")
    backups = [backup for kind in types for backup in repository.backups(kind)]
    return sorted(backups, key=lambda backup: (backup.start_time, backup.type == "full"), reverse=True)


def resolve_backup(repository: Repository, which: str = "latest", backup_type: BackupType = "full") -> BackupInfo:
    """`latest` (the newest verified backup of the type) or an id; raises BackupNotFound with one sentence."""
    which = which.strip()
    if which == "latest":
        verified = [backup for backup in list_backups(repository, backup_type) if backup.verified]
        if not verified:
            raise BackupNotFound(f"There is no verified {backup_type} backup in {repository.root}.")
        return verified[0]
    if not BACKUP_ID_RE.match(which):
        raise BackupNotFound(
            f"{which!r} is not a backup id: use 'latest', a full backup id like 20261101T010000Z, "
            "or an incremental date like 2026-11-01."
        )
    kind: BackupType = "full" if FULL_ID_RE.match(which) else "incremental"
    return repository.info(kind, which)


@dataclass(frozen=True)
class Staleness:
    backup_type: BackupType
    newest: BackupInfo | None
    age: timedelta | None
    limit: timedelta

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > self.limit

    def sentence(self) -> str:
        kind = "verified full backup" if self.backup_type == "full" else "WAL backup"
        if self.newest is None:
            return f"There is no {kind} at all (limit {_human(self.limit)})."
        state = "older than" if self.stale else "within"
        limit = _human(self.limit)
        return f"The newest {kind} {self.newest.id} is {_human(self.age)} old, {state} the limit of {limit}."


def _human(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def staleness(repository: Repository, backup_type: BackupType, now: datetime, limit: timedelta) -> Staleness:
    """How old the newest usable backup of a type is: fulls must be verified; incrementals must not have failed."""
    candidates = [
        backup
        for backup in list_backups(repository, backup_type)
        if (backup.verified if backup_type == "full" else backup.verified is not False)
    ]
    if not candidates:
        return Staleness(backup_type, None, None, limit)
    newest = candidates[0]
    # A late run (the one Airflow starts on unpausing) can be older than the backup it just took.
    return Staleness(backup_type, newest, max(now - newest.stop_time, timedelta(0)), limit)
