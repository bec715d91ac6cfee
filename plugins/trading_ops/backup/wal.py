"""The WAL side: force a segment switch, check the archiver and the archive's continuity, bundle a day's segments.

PostgreSQL's archive_command (`archive_wal.sh`) fills the WAL archive directory continuously; this module checks
that it works and copies each day's new segments, compressed and checksummed, into `incremental/<date>/`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from trading_ops.backup.catalog import list_backups
from trading_ops.backup.full import BackupError, stored_name
from trading_ops.backup.repository import BackupInfo, Repository, isoformat, open_upload, write_manifest
from trading_ops.backup.wal_names import (
    HISTORY_RE,
    SEGMENT_RE,
    expected_timelines,
    name_of,
    parse_history,
    segment_number,
    segment_order,
    segment_timeline,
    timeline_of_segment,
)
from trading_ops.streams import Compression, EncryptionKey, write_stream


class WalArchiveError(BackupError):
    pass


@dataclass(frozen=True)
class ArchiverStatus:
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    archive_mode: str
    archive_command: str

    @property
    def failing(self) -> bool:
        """Failed since its last success: a failure followed by successes is history, not a problem."""
        return self.last_failed_time is not None and (
            self.last_archived_time is None or self.last_failed_time > self.last_archived_time
        )

    def as_dict(self) -> dict:
        return {key: isoformat(value) if isinstance(value, datetime) else value for key, value in asdict(self).items()}


def archiver_status(conn) -> ArchiverStatus:
    from trading_ops.sqlfiles import load_sql

    cursor = conn.execute(load_sql("backup/archiver_status.sql"))
    return ArchiverStatus(**dict(zip([column.name for column in cursor.description], cursor.fetchone(), strict=True)))


def segment_size_of(conn) -> int:
    from trading_ops.sqlfiles import load_sql

    cursor = conn.execute(load_sql("backup/server_identity.sql"))
    row = dict(zip([column.name for column in cursor.description], cursor.fetchone(), strict=True))
    return row["wal_segment_size"]


def archived_names(archive_dir: Path) -> set[str]:
    """Segment and history files in the archive (temporary files of a copy in progress start with a dot)."""
    return {
        entry.name
        for entry in os.scandir(archive_dir)
        if entry.is_file() and (SEGMENT_RE.match(entry.name) or HISTORY_RE.match(entry.name))
    }


def switch_and_wait(conn, archive_dir: Path, timeout: timedelta) -> str:
    """Close the current segment and wait until it is in the archive; returns its name."""
    from trading_ops.sqlfiles import load_sql

    segment = conn.execute(load_sql("backup/switch_wal.sql")).fetchone()[0]
    deadline = time.monotonic() + timeout.total_seconds()
    while not (archive_dir / segment).exists():
        status = archiver_status(conn)
        if status.failing and status.last_failed_wal == segment:
            raise WalArchiveError(
                f"archive_command fails on segment {segment} (failed {status.failed_count} times so far); "
                "see the PostgreSQL log."
            )
        if time.monotonic() > deadline:
            raise WalArchiveError(f"Segment {segment} was not archived within {timeout}; check archive_command.")
        time.sleep(0.05)
    return segment


def history_of(archive_dir: Path, timeline: int) -> list[tuple[int, int]]:
    if timeline == 1:
        return []
    path = archive_dir / f"{timeline:08X}.history"
    if not path.exists():
        raise WalArchiveError(f"The archive has no history file for timeline {timeline} ({path.name}).")
    return parse_history(path.read_text())


def missing_segments(
    archive_dir: Path, first: str, last: str, segment_size: int, elsewhere: frozenset[str] = frozenset()
) -> list[str]:
    """Every segment recovery would need from `first` through `last` that neither the archive nor `elsewhere`
    (the WAL shipped into the repository, `wal_ship`) holds.

    Timeline-aware: the history of `last`'s timeline says which timeline each segment number is read from.
    """
    present = archived_names(archive_dir) | elsewhere
    timeline = segment_timeline(last)
    begins = expected_timelines(history_of(archive_dir, timeline), timeline, segment_size)
    missing = []
    for number in range(segment_number(first, segment_size), segment_number(last, segment_size) + 1):
        name = name_of(timeline_of_segment(begins, number), number, segment_size)
        if name not in present:
            missing.append(name)
    return missing


def check_continuity(
    archive_dir: Path, first: str, last: str, segment_size: int, elsewhere: frozenset[str] = frozenset()
) -> int:
    """Raise WalArchiveError naming the gap; returns the number of segments checked."""
    missing = missing_segments(archive_dir, first, last, segment_size, elsewhere)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise WalArchiveError(
            f"The WAL archive has a gap: {len(missing)} segment(s) between {first} and {last} are missing ({shown}); "
            "point-in-time recovery past the gap is impossible until a new full backup is taken."
        )
    return segment_number(last, segment_size) - segment_number(first, segment_size) + 1


def newest_full_with_base(repository: Repository) -> BackupInfo | None:
    fulls = [backup for backup in list_backups(repository, "full") if backup.verified is not False]
    return fulls[0] if fulls else None


def bundle_start(repository: Repository, archive_dir: Path, segment_size: int) -> str | None:
    """The first segment the next bundle needs: after the previous bundle, else from the newest full backup."""
    bundles = list_backups(repository, "incremental")
    for bundle in bundles:
        if bundle.manifest.get("last_segment"):
            number = segment_number(bundle.manifest["last_segment"], segment_size) + 1
            return name_of(segment_timeline(bundle.manifest["last_segment"]), number, segment_size)
    full = newest_full_with_base(repository)
    if full is not None:
        return full.manifest["wal_start_segment"]
    segments = archived_segments(archive_dir, segment_size)
    return segments[0] if segments else None


def archived_segments(archive_dir: Path, segment_size: int) -> list[str]:
    """The WAL segments in the archive (not history or backup-label files), in WAL order."""
    segments = [name for name in archived_names(archive_dir) if SEGMENT_RE.match(name)]
    return sorted(segments, key=partial(segment_order, segment_size=segment_size))


def files_to_bundle(archive_dir: Path, *, first: str | None, last: str, segment_size: int) -> tuple[list, list]:
    """(every history file, the archived segments from `first` through `last` in WAL order) a bundle copies."""
    order = partial(segment_order, segment_size=segment_size)
    names = archived_names(archive_dir)
    segments = sorted(
        (
            name
            for name in names
            if SEGMENT_RE.match(name) and (first is None or order(first) <= order(name)) and order(name) <= order(last)
        ),
        key=order,
    )
    return sorted(name for name in names if HISTORY_RE.match(name)), segments


def bundle_segments(
    repository: Repository,
    bundle_id: str,
    archive_dir: Path,
    *,
    first: str | None,
    last: str,
    segment_size: int,
    compression: Compression,
    key: EncryptionKey | None,
    extra: dict,
) -> BackupInfo:
    """Copy the archived segments from `first` through `last` (and every history file) into incremental/<id>/."""
    import trading_ops

    if bundle_id in repository.ids("incremental"):
        return repository.info("incremental", bundle_id)
    histories, segments = files_to_bundle(archive_dir, first=first, last=last, segment_size=segment_size)
    start_time = datetime.now(UTC)
    with repository.staging("incremental", bundle_id) as staging:
        (staging / "wal").mkdir()
        files = []
        for name in [*histories, *segments]:
            relative = f"wal/{stored_name(name, compression, key)}"
            with open(archive_dir / name, "rb") as source, open_upload(staging / relative) as sink:
                stored = write_stream(source, sink, relative, compression, key)
            files.append({"role": name, **stored.as_manifest()})
        write_manifest(
            staging,
            {
                "id": bundle_id,
                "type": "incremental",
                "start_time": isoformat(start_time),
                "stop_time": isoformat(datetime.now(UTC)),
                "timeline": segment_timeline(last),
                "first_segment": segments[0] if segments else None,
                "last_segment": segments[-1] if segments else None,
                "wal_segment_size": segment_size,
                **extra,
                "files": files,
                "tools": {"trading_ops": trading_ops.__version__},
                "compression": compression.as_manifest(),
                "encryption": key.as_manifest() if key else None,
            },
        )
    return repository.info("incremental", bundle_id)
