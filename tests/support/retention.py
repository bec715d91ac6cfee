"""Backups and archived WAL with simulated times, for the retention tests (local and on S3): no waiting, and no
PostgreSQL files, since the catalog and retention read only manifests, names and timestamps."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from trading_ops.backup import Repository, list_backups
from trading_ops.backup.repository import full_backup_id, incremental_backup_id, isoformat, write_manifest
from trading_ops.backup.wal_names import name_of

SEGMENT = 16 * 1024 * 1024
DAY0 = datetime(2026, 9, 20, 1, 0, tzinfo=UTC)  # a Sunday


def add_backup(repository: Repository, kind: str, day: int, *, verified: bool | None = True) -> str:
    """A backup as the DAGs record it, taken at 01:00 on `day`, starting at WAL segment number day+1."""
    moment = DAY0 + timedelta(days=day)
    backup_id = full_backup_id(moment) if kind == "full" else incremental_backup_id(moment.date())
    with repository.staging(kind, backup_id) as staging:
        (staging / "payload").write_bytes(b"x" * 100)
        write_manifest(
            staging,
            {
                "id": backup_id,
                "type": kind,
                "start_time": isoformat(moment),
                "stop_time": isoformat(moment + timedelta(minutes=5)),
                "wal_start_segment": name_of(1, day + 1, SEGMENT),
                "wal_segment_size": SEGMENT,
                "files": [{"role": "payload", "path": "payload", "size": 100, "sha256": "0" * 64, "raw_size": 100}],
            },
        )
    if verified is not None:
        repository.record_verification(repository.info(kind, backup_id), verified, [], None)
    return backup_id


def archived_at(day: int) -> datetime:
    """Segment number day+1 was archived at 00:30 on that day, just before that day's backups."""
    return DAY0 + timedelta(days=day, minutes=-30)


def archive_segment(archive, day: int) -> str:
    name = name_of(1, day + 1, SEGMENT)
    path = archive / name
    path.write_bytes(b"")
    stamp = archived_at(day).timestamp()
    os.utime(path, (stamp, stamp))
    return name


def segment_day(name: str) -> int:
    return int(name[16:24], 16) - 1


def backup_days(repository, kind) -> list[int]:
    return sorted((backup.start_time - DAY0).days for backup in list_backups(repository, kind))


def wal_days(archive) -> list[int]:
    return sorted(segment_day(path.name) for path in archive.iterdir())
