"""Rotating active files and archiving rotated ones, without losing a line.

A file is due when it is not empty and over `rotate_over_size`, or last rotated `rotate_after` ago (or never).
Empty files are never rotated.

Rename (the safe default): the active file is renamed (atomic; the writer keeps writing to the same inode), an
empty file with the same mode and owner takes its place, then the writer is told to reopen (`writers`). The
rotated file is archived only once no process on this host has it open for writing, waiting up to
`reopen_timeout`; a file still held after that stays as it is and a later run archives it, so no line written late
is cut off. The archive keeps the mtime of the log it came from (the time of its newest line), which is what
retention measures; only once it is in place is the plaintext rotated file removed.

Copytruncate (only for writers that cannot reopen): logrotate copies the file and then truncates it, losing what
was written in between (logrotate#34). Here no line is lost:
    a. copy the file from its start to its end N0 into the archive stream, without stopping anything;
    b. find the processes that have the file open for writing and pause them (SIGSTOP; a detached watchdog sends
       SIGCONT after a few seconds even if this task dies), then copy from N0 to the new end N;
    c. finish the archive (fsync, sidecar, rename into place), then, if the file is still exactly N bytes, truncate
       it to 0 and resume the writers. If it grew (a writer that could not be paused, or one that opened the file
       meanwhile), the archive is discarded, the writers resumed, and the copy retried; after a few attempts the
       file is left for the next run and reported. A writer that cannot be paused (another user's process without
       privilege) is reported too: for it, only the instant between the final size check and the truncate is
       unprotected.
    A writer that did not open the file with O_APPEND keeps writing at its old offset after the truncate, leaving
    a hole of NUL bytes before its next lines (logrotate#363). Rotated content is read from its first non-NUL
    byte (SEEK_DATA, then skipping NULs), so archives never contain the padding, and the writer is named in a
    warning: switch it to append mode or to the rename method.
    A crash after the archive is in place but before the truncate leaves the same lines in the archive and the
    active file: the next run archives them again (a duplicate, never a loss).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, suppress
from datetime import datetime
from pathlib import Path

from trading_ops.logs.archives import ArchiveFormat, discard_archive, fsync_path, skip_padding, write_archive
from trading_ops.logs.naming import (
    PART_SUFFIX,
    SIDECAR_SUFFIX,
    PathScan,
    RotatedFile,
    free_rotated_name,
    part_path,
    sidecar_path,
    stamp_of,
)
from trading_ops.logs.report import ClassReport, human_size
from trading_ops.logs.verify import archive_sha256, write_sidecar
from trading_ops.logs.writers import open_for_writing, reopen_writers, writers_paused
from trading_ops.policy import LogPath, Logs

COPYTRUNCATE_ATTEMPTS = 3


def clean_leftovers(directory: Path, report: ClassReport) -> None:
    """Remove what an interrupted run left: hidden `.<archive>.part` files and the sidecars of those archives."""
    for part in sorted(directory.glob(f".*{PART_SUFFIX}")):
        final = part.with_name(part.name[1 : -len(PART_SUFFIX)])
        if report.act(f"remove {part}, left incomplete by an interrupted run"):
            part.unlink(missing_ok=True)
        orphan = sidecar_path(final)
        if orphan.exists() and not final.exists() and report.act(f"remove its sidecar {orphan}"):
            orphan.unlink()


def due_reason(active: Path, size: int, scan: PathScan, now: datetime, settings: Logs) -> str | None:
    """Why `active` is to be rotated now, or None when it is not due."""
    if size == 0:
        return None
    if size >= settings.rotate_over_size:
        return f"over {human_size(settings.rotate_over_size)}"
    stamps = [rotated.stamp for rotated in scan.rotated if rotated.base == active.name]
    if not stamps:
        return "never rotated"
    if max(stamps) <= now - settings.rotate_after:
        return f"last rotated {stamp_of(max(stamps))}"
    return None


def rotate_path(
    path: LogPath, scan: PathScan, *, now: datetime, archive: ArchiveFormat, settings: Logs, report: ClassReport
) -> None:
    """Rotate every due active file of `path`, then tell its writers to reopen if a file was renamed."""
    renamed = False
    for active in scan.active:
        with report.step(f"rotate {active}"):
            size = active.stat().st_size
            reason = due_reason(active, size, scan, now, settings)
            if reason is None:
                continue
            target = free_rotated_name(active, now)
            what = f"rotate {active} ({human_size(size)}, {reason})"
            if path.method == "rename":
                then = f", archived as {target.name}{archive.suffix} once its writer lets go" if archive.suffix else ""
                if report.act(f"{what} by renaming it to {target.name}{then}"):
                    rename_in_place(active, target)
                report.files_rotated += 1
                renamed = True
                continue
            final = target.with_name(target.name + archive.suffix)
            if report.act(f"{what} by copytruncate to {final.name}"):
                copytruncate(active, final, archive, report)
            else:
                report.files_rotated += 1
    if renamed:
        with report.step(f"reopen the writers of {path.directory}"):
            reopen_writers(path, report, settings.reopen_timeout)


def rename_in_place(active: Path, target: Path) -> None:
    """Rename `active` to `target` and put an empty file with the same mode and owner where it was."""
    stat = active.stat()
    os.rename(active, target)
    # Like logrotate's `create`: the writer may lack the right to create files in the directory.
    try:
        fd = os.open(active, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # the writer was quicker
    try:
        os.fchmod(fd, stat.st_mode & 0o7777)
        with suppress(PermissionError):
            os.fchown(fd, stat.st_uid, stat.st_gid)
    finally:
        os.close(fd)


class _ReadPastFirstEnd:
    """Reads `source` to its end, calls `at_end()` once (pausing the writers), then reads on to the new end."""

    def __init__(self, source, at_end):
        self._source, self._at_end = source, at_end

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if not data and self._at_end is not None:
            at_end, self._at_end = self._at_end, None
            at_end()
            data = self._source.read(size)
        return data


def copytruncate(active: Path, final: Path, archive: ArchiveFormat, report: ClassReport) -> None:
    """Archive `active` into `final` and truncate it, pausing its writers for the tail (see the module's doc)."""
    with open(os.open(active, os.O_RDWR | os.O_NOFOLLOW), "r+b") as source:
        fd = source.fileno()
        stat = os.fstat(fd)
        unpaused: list[int] = []
        for _attempt in range(COPYTRUNCATE_ATTEMPTS):
            start = skip_padding(source)
            with ExitStack() as paused:

                def pause_writers(paused=paused):
                    # Flush the bulk first, so the writers stay paused only for the rest.
                    fsync_path(part_path(final))
                    unpaused.extend(paused.enter_context(writers_paused((stat.st_dev, stat.st_ino))))

                stored = write_archive(_ReadPastFirstEnd(source, pause_writers), final, archive, stat.st_mode & 0o777)
                after_copy = os.fstat(fd)
                if after_copy.st_size == source.tell():
                    os.ftruncate(fd, 0)
                    break
            discard_archive(final)
            unpaused.clear()
            source.seek(0)
        else:
            report.warn(
                f"{active} kept growing while it was copied and its writers could not be paused; left for the next run"
            )
            return
    # The archive carries the time of its newest line, which retention measures.
    os.utime(final, (after_copy.st_mtime, after_copy.st_mtime))
    report.record_archive(final, stored.size, stored.sha256, after_copy.st_mtime)
    report.files_rotated += 1
    report.archived(active.name, final.name, stored.raw_size, stored.size)
    if start:
        report.warn(
            f"{active} began with {human_size(start)} of NUL padding (dropped): its writer does not open it in "
            f"append mode (O_APPEND); switch the writer to append mode or this path to the rename method"
        )
    if unpaused:
        report.warn(
            f"writer pid(s) {unpaused} of {active} could not be paused (permission): a line written in the "
            f"instant between the final size check and the truncate would be lost; run as the writer's user"
        )


def archive_pending(pending: list[RotatedFile], archive: ArchiveFormat, settings: Logs, report: ClassReport) -> None:
    """Archive each rotated file once no process has it open for writing, waiting up to `reopen_timeout`."""
    if report.dry_run:
        for rotated in pending:
            report.act(f"archive {rotated.path} to {rotated.path.name}{archive.suffix or SIDECAR_SUFFIX}")
        return
    deadline = time.monotonic() + settings.reopen_timeout.total_seconds()
    waiting = list(pending)
    while waiting:
        held = open_for_writing({rotated.inode for rotated in waiting})
        still_held = []
        for rotated in waiting:
            if rotated.inode in held:
                still_held.append(rotated)
                continue
            with report.step(f"archive {rotated.path}"):
                archive_rotated(rotated, archive, report)
        waiting = still_held
        if waiting and time.monotonic() >= deadline:
            for rotated in waiting:
                report.warn(
                    f"{rotated.path} is still open for writing by pid {sorted(held[rotated.inode])} after "
                    f"{settings.reopen_timeout}: left as is for a later run (check the reopen setting)"
                )
            return
        if waiting:
            time.sleep(0.05)


def archive_rotated(rotated: RotatedFile, archive: ArchiveFormat, report: ClassReport) -> None:
    """Write the archive of one rotated file and remove the plaintext (a class stored as is gets a sidecar only)."""
    if not archive.suffix:
        if report.act(f"seal {rotated.path} with a sha256 sidecar"):
            digest = archive_sha256(rotated.path)
            write_sidecar(rotated.path, digest)
            report.record_archive(rotated.path, rotated.size, digest, rotated.mtime)
        return
    final = rotated.path.with_name(rotated.path.name + archive.suffix)
    if not report.act(f"archive {rotated.path} to {final.name}"):
        return
    with open(rotated.path, "rb") as source:
        skip_padding(source)
        stored = write_archive(source, final, archive, mode=os.fstat(source.fileno()).st_mode & 0o777)
    os.utime(final, (rotated.mtime, rotated.mtime))
    report.record_archive(final, stored.size, stored.sha256, rotated.mtime)
    rotated.path.unlink()
    report.archived(rotated.path.name, final.name, stored.raw_size, stored.size)
