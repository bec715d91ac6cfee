"""Where every WAL file a point-in-time recovery needs is, whether the chain is whole, and the recoverable window.

Sources, in the order a fetch prefers them: the WAL archive (`backup.wal_archive_dir`, plain files, the fastest),
then the WAL shipped off the host into the repository's `wal/` (`wal_ship`), then the daily bundles under
`incremental/` (compressed, maybe encrypted, each file with the sha256 of its manifest). `collect` indexes them
all (`WalFiles`); of the repository's `wal/` it only lists the names: a shipped file's record is read and its bytes
downloaded into a local cache when its entry is first looked up, so once the database host is lost a recovery
downloads the segments it replays, not the whole 30-day archive. `localize` puts the entries a recovery replays
beside the instance (the downloads copied there) and `write_index` saves them for `python -m trading_ops wal fetch`
(`trading_ops.wal_fetch`), the recovery instance's restore_command.

The chain a base backup needs runs from its `wal_start_segment` on, timeline-aware: recovery follows the newest
timeline whose history file is available (as `recovery_target_timeline = latest` does), so each segment number is
read from the timeline the history says. A missing segment ends what can be replayed.

The recoverable window runs from the end of the oldest full backup's base backup (a recovery cannot stop before
its base backup is consistent) to the time the newest segment was archived. Recovery to a time stops at the first
commit after it; when the WAL holds none (the target is after the last commit), it recovers to the end of the WAL,
which is the same data: `last_commit_time` (pg_waldump) tells which case applies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trading_ops import pgtools
from trading_ops.backup.catalog import list_backups
from trading_ops.backup.repository import DIR_BY_TYPE, BackupInfo, Repository, is_local
from trading_ops.backup.wal import archived_names
from trading_ops.backup.wal_names import (
    HISTORY_RE,
    SEGMENT_RE,
    expected_timelines,
    name_of,
    parse_history,
    segment_number,
    segment_timeline,
    timeline_of_segment,
)
from trading_ops.backup.wal_ship import WAL_DIR, shipped_files, shipped_record
from trading_ops.wal_fetch import read_entry

# pg_waldump's description of a commit or abort record: "COMMIT 2026-11-01 10:00:00.123456 UTC; ..."
_XACT_TIME = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) UTC")
# How far back from the end of a chain to look for the last commit.
COMMIT_SEARCH_SEGMENTS = 16


_cache: tempfile.TemporaryDirectory | None = None


def _cache_dir() -> Path:
    """Where this process keeps the repository's WAL it downloaded (removed when the process ends)."""
    global _cache
    if _cache is None:
        _cache = tempfile.TemporaryDirectory(prefix="trading-ops-wal-")
    return Path(_cache.name)


class WalFiles(dict):
    """Every WAL file available, by name: the index entry `wal_fetch` reads (source, path, sizes, checksum,
    compression, encryption) plus `time`, when it was archived (ISO UTC).

    A file only the repository's `wal/` holds is listed as {"source": "repository", "pending": True, "encrypted"}
    (its stored name says whether it is encrypted) until its entry is looked up (`files[name]`): then its record is
    read, once; its stored bytes are downloaded only by `readable(name)`, for whoever reads them. Names (`in`,
    iteration) and `source(name)` read nothing; `values()`, `items()` and `get()` give the entries as they are."""

    def __init__(self, repository: Repository):
        super().__init__()
        self._repository = repository

    def __getitem__(self, name: str) -> dict:
        entry = super().__getitem__(name)
        if entry.get("pending"):
            entry = _shipped_entry(self._repository, name)
            self[name] = entry
        return entry

    def source(self, name: str) -> str:
        return super().__getitem__(name)["source"]

    def on_host(self, name: str) -> bool:
        """Whether the file's bytes are on this host's disk already (not in an object store, not downloaded)."""
        entry = super().__getitem__(name)
        return not entry.get("pending") and entry["path"] is not None and not entry.get("downloaded")

    def readable(self, name: str) -> dict:
        """The entry with its bytes on this host: a file in an object-store repository (shipped, or in a bundle) is
        downloaded into this process's cache, once."""
        entry = self[name]
        if entry["path"] is None:
            path = _download(self._repository, entry["stored"], entry["size"])
            entry = {**entry, "path": str(path), "downloaded": True}
            self[name] = entry
        return entry


def _download(repository: Repository, stored: str, size: int) -> Path:
    """The bytes of `stored` (a path under the repository's root) in this process's cache; a copy of the right
    size is reused. Their checksum is checked by whoever reads them (`wal_fetch.read_entry`)."""
    target = _cache_dir() / stored.replace("/", "_")
    if target.exists() and target.stat().st_size == size:
        return target
    temporary = target.with_name(f".{target.name}.partial")
    with repository.errors(f"reading {stored}"):
        data = (repository.root / stored).read_bytes()
    temporary.write_bytes(data)
    os.replace(temporary, target)
    return target


def _shipped_entry(repository: Repository, name: str) -> dict:
    record = shipped_record(repository, name)
    encryption = record.get("encryption")
    return {
        "source": "repository",
        "path": None,
        "stored": f"{WAL_DIR}/{record['path']}",
        "size": record["size"],
        "sha256": record["sha256"],
        "raw_size": record["raw_size"],
        "compression": record["compression"],
        "encrypted": bool(encryption),
        "key_id": encryption["key_id"] if encryption else None,
        "time": record["archived_at"],
    }


def collect(archive_dir: Path | None, repository: Repository, segment_size: int) -> WalFiles:
    """Index the WAL archive, the repository's shipped WAL and the daily bundles (see `WalFiles`)."""
    files = WalFiles(repository)
    local: dict[str, os.stat_result] = {}
    if archive_dir is not None and archive_dir.is_dir():
        for name in archived_names(archive_dir):
            stat = (archive_dir / name).stat()
            # Cut short: not a segment recovery can use; another source's copy may be whole.
            if not (SEGMENT_RE.match(name) and stat.st_size != segment_size):
                local[name] = stat
    # Oldest bundle first, so a newer bundle's copy of a file wins; the archive's plain copy wins over all.
    for bundle in reversed(list_backups(repository, "incremental")):
        if bundle.verified is False:
            continue
        encryption = bundle.manifest.get("encryption")
        on_host = is_local(bundle.path)
        for entry in bundle.manifest["files"]:
            files[entry["role"]] = {
                "source": f"bundle {bundle.id}",
                # On object storage: downloaded by `WalFiles.readable` when a recovery reads it.
                "path": str(bundle.path / entry["path"]) if on_host else None,
                "stored": f"{DIR_BY_TYPE['incremental']}/{bundle.id}/{entry['path']}",
                "size": entry["size"],
                "sha256": entry["sha256"],
                "raw_size": entry["raw_size"],
                "compression": bundle.manifest["compression"]["algorithm"],
                "encrypted": bool(encryption),
                "key_id": encryption["key_id"] if encryption else None,
                "time": bundle.manifest["stop_time"],
            }
    for name, encrypted in shipped_files(repository).items():
        if name not in local:
            files[name] = {"source": "repository", "pending": True, "encrypted": encrypted}
    for name, stat in local.items():
        files[name] = {
            "source": "archive",
            "path": str(archive_dir / name),
            "size": stat.st_size,
            "raw_size": stat.st_size,
            "time": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
        }
    return files


def localize(files: WalFiles, segments: list[str], directory: Path) -> dict[str, dict]:
    """The index a recovery replaying `segments` reads: every file already on this host (the archive, a local
    repository's bundles), every timeline history file (the server probes them to pick its timeline), and of the
    object store's files the `segments`, downloaded and copied into `directory` (the recovery instance's, which its
    server user can read; the download cache is this process's). A segment left out is "no such file" to wal fetch,
    as past the chain's end."""
    wanted = set(segments)
    moved = {}
    for name in files:
        on_host = files.on_host(name)
        if not on_host and name not in wanted and not HISTORY_RE.match(name):
            continue
        entry = files.readable(name)
        if not on_host:
            directory.mkdir(exist_ok=True)
            target = directory / Path(entry["path"]).name
            shutil.copyfile(entry["path"], target)
            entry = {**entry, "path": str(target)}
        moved[name] = entry
    return moved


def write_index(path: Path, files: dict[str, dict], *, log: Path, identity_file: Path | None) -> None:
    path.write_text(
        json.dumps({"files": files, "log": str(log), "identity_file": str(identity_file) if identity_file else None})
    )


def write_identity(path: Path, identity: str) -> None:
    """The age identity (AGE-SECRET-KEY-1...), readable by its owner only, for a fetch of encrypted files."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(identity + "\n")


@dataclass(frozen=True)
class Chain:
    """The WAL a base backup's recovery reads: `segments` present from its start on, up to the first missing one;
    `missing` lists every hole between the start and the newest segment available."""

    first: str
    timeline: int
    segments: list[str]
    missing: list[str]
    newest: str | None
    segment_size: int

    @property
    def last(self) -> str | None:
        return self.segments[-1] if self.segments else None


def _history(files: WalFiles, timeline: int, identity: str | None) -> list[tuple[int, int]]:
    if timeline == 1:
        return []
    return parse_history(read_entry(files.readable(f"{timeline:08X}.history"), identity).decode())


def chain(files: WalFiles, first: str, segment_size: int, identity: str | None = None) -> Chain:
    base_timeline = segment_timeline(first)
    timelines = [int(name[:8], 16) for name in files if HISTORY_RE.match(name)]
    timeline = base_timeline
    for candidate in sorted(timelines, reverse=True):
        history = _history(files, candidate, identity)
        if candidate > base_timeline and base_timeline in {parent for parent, _ in history}:
            timeline = candidate
            break
    begins = expected_timelines(_history(files, timeline, identity), timeline, segment_size)
    start = segment_number(first, segment_size)
    numbers = [
        segment_number(name, segment_size)
        for name in files
        if SEGMENT_RE.match(name)
        and segment_number(name, segment_size) >= start
        and segment_timeline(name) == timeline_of_segment(begins, segment_number(name, segment_size))
    ]
    newest_number = max(numbers, default=start - 1)
    segments, missing = [], []
    for number in range(start, newest_number + 1):
        name = name_of(timeline_of_segment(begins, number), number, segment_size)
        if name not in files:
            missing.append(name)
        elif not missing:
            segments.append(name)
    newest = name_of(timeline_of_segment(begins, newest_number), newest_number, segment_size) if numbers else None
    return Chain(first, timeline, segments, missing, newest, segment_size)


def segment_commit_times(entry: dict, name: str, identity: str | None, server_major: int) -> list[datetime]:
    """The commit and abort times recorded in one WAL segment, in order (pg_waldump reads it)."""
    pg_waldump = pgtools.client("pg_waldump", at_least=server_major)
    with tempfile.TemporaryDirectory(prefix="waldump-") as directory:
        path = Path(directory) / name
        path.write_bytes(read_entry(entry, identity))
        # A segment ends in a switch record or zeroes: pg_waldump then reports an invalid record and exits 1.
        result = subprocess.run(
            [pg_waldump, "--rmgr=Transaction", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC"},
        )
    return [datetime.fromisoformat(match + "+00:00") for match in _XACT_TIME.findall(result.stdout)]


def last_commit_time(files: WalFiles, wal: Chain, identity: str | None, server_major: int) -> datetime | None:
    """The time of the last transaction the chain's segments hold (None when the last few hold none)."""
    for name in reversed(wal.segments[-COMMIT_SEARCH_SEGMENTS:]):
        times = segment_commit_times(files.readable(name), name, identity, server_major)
        if times:
            return times[-1]
    return None


def archived_at(files: dict[str, dict], name: str | None) -> datetime | None:
    return datetime.fromisoformat(files[name]["time"].replace("Z", "+00:00")) if name else None


def usable_fulls(repository: Repository) -> list[BackupInfo]:
    """Full backups a recovery may start from, newest first: not failed verification, with a base backup."""
    return [
        backup
        for backup in list_backups(repository, "full")
        if backup.verified is not False and any(entry["role"] == "base" for entry in backup.manifest["files"])
    ]


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None
    oldest_backup: str | None
    newest_backup: str | None
    newest_segment: str | None
    missing: list[str]

    def sentence(self) -> str:
        if self.start is None:
            return "There is no recoverable window: the repository holds no usable full backup with a base backup."
        text = (
            f"Recoverable window: {_show(self.start)} (end of base backup {self.oldest_backup}) to "
            f"{_show(self.end)} (newest archived WAL {self.newest_segment or 'none: only the base backup'})"
        )
        if self.missing:
            text += f"; WAL segment {self.missing[0]} is missing, so the window ends before it"
        return text + "."


def _show(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def window(
    repository: Repository, archive_dir: Path | None, identity: str | None = None, files: dict | None = None
) -> Window:
    """From the end of the oldest usable base backup to the newest WAL the newest one can replay."""
    fulls = usable_fulls(repository)
    if not fulls:
        return Window(None, None, None, None, None, [])
    newest, oldest = fulls[0], fulls[-1]
    segment_size = newest.manifest["wal_segment_size"]
    if files is None:
        files = collect(archive_dir, repository, segment_size)
    wal = chain(files, newest.manifest["wal_start_segment"], segment_size, identity)
    end = archived_at(files, wal.last) or newest.stop_time
    return Window(oldest.stop_time, max(end, newest.stop_time), oldest.id, newest.id, wal.last, wal.missing)
