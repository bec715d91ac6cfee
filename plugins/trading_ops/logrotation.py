"""Log rotation for the manual's log classes: rotate, compress, encrypt audit logs, enforce retention and size caps.

A class (`logs.classes.<name>` in the policy) has paths: a directory, a glob pattern and a rotation method. The
pattern's matches are the *active* files. Rotated files live beside them, named

    <active name>.<UTC stamp>[-<n>][.zst | .gz][.age]        e.g. api.log.20261126T153000Z.zst.age

with a sha256 sidecar `<archive>.sha256` in `sha256sum` format (`sha256sum -c` checks one by hand). The stamp is
the run's logical time (`data_interval_end`, or `run_after` for a manual run), so names sort by time and a rerun
of the same run picks the same names; `-<n>` only separates two rotations with the same stamp.

Each run, per class:
1. Clean up what an interrupted run left: hidden `.<archive>.part` files (incomplete archives) and their sidecars.
2. Verify every archive against its sidecar. A mismatch, a missing sidecar or a sidecar whose archive is gone is
   reported as tampering (critical alert for encrypted classes).
3. Rotate each active file that is due: not empty, and over `rotate_over_size` or last rotated `rotate_after` ago
   (or never). Empty files are never rotated.
4. Archive rotated files: compress (zstd by default, gzip as an option; levels in the policy, measured with
   bench/logs.py) and, for encrypted classes, encrypt to the age recipient(s) of the connection
   `logs.encryption_key_conn_id` (age via pyrage, streamed: compressed bytes go straight into the encryption, so no
   plaintext intermediate is written). An archive is written as `.<name>.part`, fsynced, its sidecar written, then
   renamed into place; only then is the plaintext rotated file removed. The archive keeps the mtime of the log it
   came from (the time of its newest line), which is what retention measures.
5. Retention: delete archives whose mtime is older than the class's retention, counted from the run's logical
   time (never `now()`). Then, while the class (active + rotated + archives) is over `max_size`, delete the oldest
   archives first. Active files and rotated files still open by a writer are never deleted. For a class with
   `retention_wins_over_cap`, archives younger than the retention are never deleted for size: a critical alert
   says the cap is exceeded instead.
6. Alerts: a class over `alert_at_cap_fraction` of its cap, tampering, a file that cannot be finished this run,
   and failed steps. A failed step does not stop the other files; the task fails at the end so Airflow retries.

Dry run: every action is listed ("DRY RUN, would: ...") and nothing is changed, not even a leftover removed; alerts
are listed, not sent. Size-cap deletions are computed from the sizes before this run's compression, so a dry run
may list more than the real run deletes.

Rename (the safe default): the active file is renamed (atomic; the writer keeps writing to the same inode), an
empty file with the same mode and owner takes its place, then the writer is told to reopen: `SIG<reopen_signal>`
to the pid in `pidfile`, or `reopen_command` (run without a shell), or nothing for writers that notice the rename
themselves. The rotated file is compressed only once no process on this host has it open for writing (a scan of
`/proc/*/fd`), waiting up to `reopen_timeout`; a file still held after that stays as it is and a later run
archives it, so no line written late is cut off.

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

import errno
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import time
import zlib
from collections.abc import Generator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from trading_ops.alerting import Alert, send_alert
from trading_ops.policy import LogClass, LogPath, Logs, Policy, load_policy
from trading_ops.runtime import run_time

log = logging.getLogger(__name__)

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SIDECAR_SUFFIX = ".sha256"
PART_SUFFIX = ".part"
ROTATED_NAME = re.compile(
    r"^(?P<base>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?(?P<ext>(?:\.zst|\.gz)?(?:\.age)?)$"
)
ARCHIVE_EXTENSIONS = ("", ".zst", ".gz", ".age", ".zst.age", ".gz.age")
CHUNK = 1 << 20
# How long writers may stay paused during a copytruncate before the watchdog resumes them regardless.
PAUSE_LIMIT_SECONDS = 10
COPYTRUNCATE_ATTEMPTS = 3
ACTIONS_IN_XCOM = 100


class LogRotationError(RuntimeError):
    """A problem the run cannot work around: one sentence saying what and where."""


# --- naming and scanning --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotatedFile:
    path: Path
    base: str
    stamp: datetime
    seq: int
    ext: str
    size: int
    mtime: float

    @property
    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)

    @property
    def inode(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_dev, stat.st_ino


def stamp_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def parse_rotated(path: Path) -> RotatedFile | None:
    match = ROTATED_NAME.match(path.name)
    if not match:
        return None
    stat = path.stat()
    return RotatedFile(
        path=path,
        base=match["base"],
        stamp=datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC),
        seq=int(match["seq"] or 0),
        ext=match["ext"],
        size=stat.st_size,
        mtime=stat.st_mtime,
    )


@dataclass
class PathScan:
    """What one policy path holds now: active files, rotated files (pending or archived) and sidecars."""

    active: list[Path] = field(default_factory=list)
    rotated: list[RotatedFile] = field(default_factory=list)
    sidecars: list[Path] = field(default_factory=list)


def scan_path(path: LogPath) -> PathScan:
    scan = PathScan()
    directory = Path(path.directory)
    if not directory.is_dir():
        return scan
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file():
            continue
        if entry.name.endswith(SIDECAR_SUFFIX):
            rotated = ROTATED_NAME.match(entry.name.removesuffix(SIDECAR_SUFFIX))
            if rotated and fnmatch(rotated["base"], path.pattern):
                scan.sidecars.append(entry)
            continue
        rotated = parse_rotated(entry)
        if rotated is not None:
            if fnmatch(rotated.base, path.pattern):
                scan.rotated.append(rotated)
        elif fnmatch(entry.name, path.pattern):
            scan.active.append(entry)
    return scan


def free_rotated_name(active: Path, moment: datetime) -> Path:
    """`<name>.<stamp>`, or `<name>.<stamp>-<n>` when that stamp is taken (a second rotation in the same run)."""
    stamp = stamp_of(moment)
    for seq in range(10_000):
        candidate = f"{active.name}.{stamp}" + (f"-{seq}" if seq else "")
        taken = (active.with_name(candidate + ext) for ext in ARCHIVE_EXTENSIONS)
        if not any(path.exists() or path.with_name(path.name + SIDECAR_SUFFIX).exists() for path in taken):
            return active.with_name(candidate)
    raise LogRotationError(f"No free rotated name for {active} at {stamp}.")


# --- writers: who has a file open, pausing them -----------------------------------------------------------------


def open_for_writing(inodes: set[tuple[int, int]]) -> dict[tuple[int, int], set[int]]:
    """Pids (other than this one) holding each inode open for writing, from /proc/*/fd and fdinfo flags."""
    found: dict[tuple[int, int], set[int]] = {}
    if not inodes:
        return found
    me = os.getpid()
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{proc.name}/fd")
        except OSError:
            continue  # gone, or another user's process we may not inspect
        for fd in fds:
            try:
                stat = os.stat(f"/proc/{proc.name}/fd/{fd}")
                if (stat.st_dev, stat.st_ino) not in inodes:
                    continue
                with open(f"/proc/{proc.name}/fdinfo/{fd}") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith("flags:"))
            except (OSError, StopIteration):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.setdefault((stat.st_dev, stat.st_ino), set()).add(int(proc.name))
    return found


def _is_stopped(pid: int) -> bool:
    """Every thread of `pid` is stopped (or the process is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task_id in tasks:
            with open(f"/proc/{pid}/task/{task_id}/stat") as stat:
                states.append(stat.read().rpartition(")")[2].split()[0])
    except OSError:
        return True
    return all(state in ("T", "t", "Z", "X") for state in states)


@contextmanager
def writers_paused(inode: tuple[int, int]) -> Generator[list[int]]:
    """SIGSTOP every process writing to `inode`; yields the pids that could NOT be paused. Resumes them on exit."""
    pids = sorted(open_for_writing({inode}).get(inode, set()))
    stopped: list[int] = []
    unpaused: list[int] = []
    watchdog = None
    try:
        if pids:
            # Resumes the writers even if this task is killed while they are paused.
            watchdog = subprocess.Popen(
                ["/bin/sh", "-c", f"sleep {PAUSE_LIMIT_SECONDS}; kill -CONT {' '.join(map(str, pids))}"],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for pid in pids:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            except PermissionError:
                unpaused.append(pid)
                continue
            stopped.append(pid)
        deadline = time.monotonic() + 2
        while not all(_is_stopped(pid) for pid in stopped) and time.monotonic() < deadline:
            time.sleep(0.001)
        unpaused += [pid for pid in stopped if not _is_stopped(pid)]
        yield unpaused
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()


# --- archive streams -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveSpec:
    """How rotated content is stored: compressor (None: kept as is), level, age recipients (empty: not encrypted)."""

    compressor: str | None
    level: int
    recipients: tuple = ()

    @property
    def suffix(self) -> str:
        return {"zstd": ".zst", "gzip": ".gz", None: ""}[self.compressor] + (".age" if self.recipients else "")

    def compressobj(self):
        if self.compressor == "zstd":
            import zstandard

            return zstandard.ZstdCompressor(level=self.level).compressobj()
        return zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: gzip container, readable by gunzip


def spec_for(log_class: LogClass, settings: Logs, recipients: Sequence = ()) -> ArchiveSpec:
    compressor = settings.compressor if log_class.compression else None
    level = getattr(settings.compression_level, settings.compressor)
    return ArchiveSpec(compressor, level, tuple(recipients) if log_class.encryption else ())


class _CompressingReader:
    """A readable stream of the compressed bytes of `source` (what pyrage.encrypt_io pulls from)."""

    def __init__(self, source, compressor):
        self._source, self._compressor = source, compressor
        self._buffer, self._offset, self._done = b"", 0, False

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._buffer) and not self._done:
            chunk = self._source.read(CHUNK)
            if chunk:
                self._buffer = self._compressor.compress(chunk)
            else:
                self._buffer, self._done = self._compressor.flush(), True
            self._offset = 0
        end = len(self._buffer) if size is None or size < 0 else self._offset + size
        data = self._buffer[self._offset : end]
        self._offset += len(data)
        return data


class _HashingWriter:
    def __init__(self, raw):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


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


def part_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{PART_SUFFIX}")


def sidecar_path(final: Path) -> Path:
    return final.with_name(final.name + SIDECAR_SUFFIX)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_sidecar(final: Path, digest: str) -> None:
    sidecar = sidecar_path(final)
    temporary = part_path(sidecar)
    with open(temporary, "w") as handle:
        handle.write(f"{digest}  {final.name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, sidecar)


def write_archive(source, final: Path, spec: ArchiveSpec, mode: int) -> tuple[str, int]:
    """Stream `source` into `final` (compressed, encrypted per `spec`) with its sidecar; returns (sha256, size).

    The sidecar is in place before the archive's rename: a crash leaves either nothing visible or a `.part`
    file with its sidecar, which the next run removes together.
    """
    part = part_path(final)
    try:
        with open(part, "xb") as raw:
            os.fchmod(raw.fileno(), mode)
            out = _HashingWriter(raw)
            stream = _CompressingReader(source, spec.compressobj()) if spec.compressor else source
            if spec.recipients:
                import pyrage

                pyrage.encrypt_io(stream, out, list(spec.recipients))
            else:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
        digest = out.sha256.hexdigest()
        _write_sidecar(final, digest)
        os.rename(part, final)
        _fsync_path(final.parent)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return digest, out.size


def discard_archive(final: Path) -> None:
    final.unlink(missing_ok=True)
    sidecar_path(final).unlink(missing_ok=True)


def skip_padding(source) -> int:
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


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _DecompressingWriter:
    def __init__(self, out, decompressor):
        self._out, self._decompressor = out, decompressor

    def write(self, data) -> int:
        self._out.write(self._decompressor.decompress(data) if self._decompressor else data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def extract_archive(path: Path, out, identities: Sequence = ()) -> None:
    """Write the original log of an archive to `out`: decrypt (age identities) and decompress, all streamed."""
    name = path.name.removesuffix(".age")
    if name.endswith(".zst"):
        import zstandard

        decompressor = zstandard.ZstdDecompressor().decompressobj()
    elif name.endswith(".gz"):
        decompressor = zlib.decompressobj(31)
    else:
        decompressor = None
    sink = _DecompressingWriter(out, decompressor)
    with open(path, "rb") as source:
        if path.name.endswith(".age"):
            import pyrage

            pyrage.decrypt_io(source, sink, list(identities))
        else:
            while chunk := source.read(CHUNK):
                sink.write(chunk)


# --- the report of one class -----------------------------------------------------------------------------------


@dataclass
class ClassReport:
    log_class: str
    dry_run: bool
    max_size: int
    files_rotated: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    archives_deleted: int = 0
    bytes_deleted: int = 0
    total_bytes: int = 0
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tampered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)

    def act(self, action: str) -> bool:
        """Record and log an action; True when it should be carried out (not a dry run)."""
        self.actions.append(action)
        log.info("%s%s", "DRY RUN, would: " if self.dry_run else "", action)
        return not self.dry_run

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    @contextmanager
    def step(self, what: str) -> Generator[None]:
        """Run one file's step; a failure is recorded and the run goes on with the next file."""
        try:
            yield
        except Exception as exc:  # each file is independent: one failure must not stop the others
            self.failures.append(f"{what}: {exc}")
            log.exception("Step failed: %s", what)

    @property
    def space_freed(self) -> int:
        return self.bytes_before - self.bytes_after + self.bytes_deleted

    def summary(self) -> dict:
        return {
            "log_class": self.log_class,
            "dry_run": self.dry_run,
            "files_rotated": self.files_rotated,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "archives_deleted": self.archives_deleted,
            "bytes_deleted": self.bytes_deleted,
            "space_freed": self.space_freed,
            "total_bytes": self.total_bytes,
            "max_size": self.max_size,
            "cap_fraction": round(self.total_bytes / self.max_size, 4),
            "warnings": self.warnings,
            "tampered": self.tampered,
            "failures": self.failures,
            "alerts": self.alerts,
            "actions_total": len(self.actions),
            "actions": self.actions[:ACTIONS_IN_XCOM],
        }


def _size(number: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(number) < 1024 or unit == "GB":
            return f"{number:.1f} {unit}" if unit != "B" else f"{number} B"
        number /= 1024
    raise AssertionError("unreachable")


# --- the steps -------------------------------------------------------------------------------------------------


class _ClassRun:
    def __init__(self, name: str, settings: Logs, spec: ArchiveSpec, now: datetime, report: ClassReport):
        self.name, self.settings, self.spec, self.now, self.report = name, settings, spec, now, report
        self.log_class = settings.classes[name]

    def alert(self, severity: str, summary: str, kind: str, details: dict | None = None) -> None:
        alert = Alert(
            severity=severity,
            source=f"log_rotation.{self.name}",
            summary=summary,
            details=details or {},
            dedup_key=f"log_rotation:{self.name}:{kind}",
        )
        self.report.alerts.append({"severity": severity, "summary": summary, **(details or {})})
        if self.report.act(f"alert {severity}: {summary}"):
            send_alert(alert)

    def clean_leftovers(self, directory: Path) -> None:
        for part in sorted(directory.glob(f".*{PART_SUFFIX}")):
            final = part.with_name(part.name[1 : -len(PART_SUFFIX)])
            if self.report.act(f"remove {part}, left incomplete by an interrupted run"):
                part.unlink(missing_ok=True)
            orphan = sidecar_path(final)
            if orphan.exists() and not final.exists() and self.report.act(f"remove its sidecar {orphan}"):
                orphan.unlink()

    def verify(self, scan: PathScan) -> None:
        archived = {rotated.path for rotated in scan.rotated if not self.is_pending(rotated, scan)}
        for path in sorted(archived):
            sidecar = sidecar_path(path)
            if not sidecar.exists():
                self.report.tampered.append(f"{path} has no sha256 sidecar")
                continue
            expected = sidecar.read_text().split(maxsplit=1)[0] if sidecar.stat().st_size else ""
            if file_sha256(path) != expected:
                self.report.tampered.append(f"{path} does not match its sha256 sidecar")
        for sidecar in scan.sidecars:
            archive = sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))
            if not archive.exists() and not part_path(archive).exists():  # a .part: an interrupted run, not tampering
                self.report.tampered.append(f"{archive} is listed by {sidecar.name} but missing")

    def is_pending(self, rotated: RotatedFile, scan: PathScan) -> bool:
        """A rotated file not yet archived: plaintext, or (for a class stored uncompressed) without its sidecar."""
        if rotated.ext:
            return False
        return bool(self.spec.suffix) or rotated.sidecar not in scan.sidecars

    def is_due(self, active: Path, size: int, scan: PathScan) -> str | None:
        if size == 0:
            return None
        if size >= self.settings.rotate_over_size:
            return f"over {_size(self.settings.rotate_over_size)}"
        stamps = [rotated.stamp for rotated in scan.rotated if rotated.base == active.name]
        if not stamps:
            return "never rotated"
        if max(stamps) <= self.now - self.settings.rotate_after:
            return f"last rotated {stamp_of(max(stamps))}"
        return None

    def rotate(self, path: LogPath, scan: PathScan) -> None:
        renamed = False
        for active in scan.active:
            with self.report.step(f"rotate {active}"):
                renamed |= self.rotate_file(path, active, scan)
        if renamed:
            with self.report.step(f"reopen the writers of {path.directory}"):
                self.reopen(path)

    def rotate_file(self, path: LogPath, active: Path, scan: PathScan) -> bool:
        """Rotate `active` if it is due; True when it was renamed (its writer must then reopen)."""
        size = active.stat().st_size
        reason = self.is_due(active, size, scan)
        if reason is None:
            return False
        target = free_rotated_name(active, self.now)
        if path.method == "rename":
            then = f", archived as {target.name}{self.spec.suffix} once its writer lets go" if self.spec.suffix else ""
            if self.report.act(f"rotate {active} ({_size(size)}, {reason}) by renaming it to {target.name}{then}"):
                self.rename(active, target)
            self.report.files_rotated += 1
            return True
        final = target.with_name(target.name + self.spec.suffix)
        if self.report.act(f"rotate {active} ({_size(size)}, {reason}) by copytruncate to {final.name}"):
            self.copytruncate(active, final)
        else:
            self.report.files_rotated += 1
        return False

    def rename(self, active: Path, target: Path) -> None:
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

    def reopen(self, path: LogPath) -> None:
        if path.pidfile:
            try:
                pid = int(Path(path.pidfile).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                raise LogRotationError(f"Pidfile {path.pidfile} holds no readable pid.") from None
            if self.report.act(f"send SIG{path.reopen_signal} to pid {pid} (from {path.pidfile}) to reopen its logs"):
                os.kill(pid, getattr(signal, f"SIG{path.reopen_signal}"))
        elif path.reopen_command and self.report.act(
            f"run `{path.reopen_command}` to reopen the logs of {path.directory}"
        ):
            subprocess.run(
                shlex.split(path.reopen_command),
                check=True,
                capture_output=True,
                timeout=self.settings.reopen_timeout.total_seconds(),
            )

    def copytruncate(self, active: Path, final: Path) -> None:
        with open(os.open(active, os.O_RDWR | os.O_NOFOLLOW), "r+b") as source:
            fd = source.fileno()
            stat = os.fstat(fd)
            unpaused: list[int] = []
            for _attempt in range(COPYTRUNCATE_ATTEMPTS):
                start = skip_padding(source)
                with ExitStack() as paused:

                    def pause_writers(paused=paused):
                        # Flush the bulk first, so the writers stay paused only for the rest.
                        _fsync_path(part_path(final))
                        unpaused.extend(paused.enter_context(writers_paused((stat.st_dev, stat.st_ino))))

                    reader = _ReadPastFirstEnd(source, pause_writers)
                    _digest, size = write_archive(reader, final, self.spec, mode=stat.st_mode & 0o777)
                    copied_to = source.tell()
                    after_copy = os.fstat(fd)
                    if after_copy.st_size == copied_to:
                        os.ftruncate(fd, 0)
                        break
                discard_archive(final)
                unpaused.clear()
                source.seek(0)
            else:
                self.report.warn(
                    f"{active} kept growing while it was copied and its writers could not be paused; "
                    f"left for the next run"
                )
                return
        # The archive carries the time of its newest line, which retention measures.
        os.utime(final, (after_copy.st_mtime, after_copy.st_mtime))
        self.report.files_rotated += 1
        self.archived(active, final, copied_to - start, size)
        if start:
            self.report.warn(
                f"{active} began with {_size(start)} of NUL padding (dropped): its writer does not open it in "
                f"append mode (O_APPEND); switch the writer to append mode or this path to the rename method"
            )
        if unpaused:
            self.report.warn(
                f"writer pid(s) {unpaused} of {active} could not be paused (permission): a line written in the "
                f"instant between the final size check and the truncate would be lost; run as the writer's user"
            )

    def archived(self, source: Path, final: Path, before: int, after: int) -> None:
        self.report.bytes_before += before
        self.report.bytes_after += after
        log.info(
            "archived %s -> %s: %s -> %s (%.1fx)",
            source.name,
            final.name,
            _size(before),
            _size(after),
            before / after if after else 0,
        )

    def archive_pending(self, pending: list[RotatedFile]) -> None:
        if self.report.dry_run:
            for rotated in pending:
                self.report.act(f"archive {rotated.path} to {rotated.path.name}{self.spec.suffix or SIDECAR_SUFFIX}")
            return
        deadline = time.monotonic() + self.settings.reopen_timeout.total_seconds()
        waiting = list(pending)
        while waiting:
            held = open_for_writing({rotated.inode for rotated in waiting})
            still_held = []
            for rotated in waiting:
                if rotated.inode in held:
                    still_held.append(rotated)
                    continue
                with self.report.step(f"archive {rotated.path}"):
                    self.archive_rotated(rotated)
            waiting = still_held
            if waiting and time.monotonic() >= deadline:
                for rotated in waiting:
                    pids = sorted(held[rotated.inode])
                    self.report.warn(
                        f"{rotated.path} is still open for writing by pid {pids} after "
                        f"{self.settings.reopen_timeout}: left as is for a later run (check the reopen setting)"
                    )
                return
            time.sleep(0.05)

    def archive_rotated(self, rotated: RotatedFile) -> None:
        if not self.spec.suffix:
            if self.report.act(f"seal {rotated.path} with a sha256 sidecar"):
                _write_sidecar(rotated.path, file_sha256(rotated.path))
            return
        final = rotated.path.with_name(rotated.path.name + self.spec.suffix)
        if not self.report.act(f"archive {rotated.path} to {final.name}"):
            return
        with open(rotated.path, "rb") as source:
            start = skip_padding(source)
            mode = os.fstat(source.fileno()).st_mode & 0o777
            _digest, size = write_archive(source, final, self.spec, mode=mode)
        os.utime(final, (rotated.mtime, rotated.mtime))
        rotated.path.unlink()
        self.archived(rotated.path, final, rotated.size - start, size)

    def enforce_retention(self, scans: list[PathScan]) -> None:
        archives, kept_bytes = [], 0
        for scan in scans:
            kept_bytes += sum(path.stat().st_size for path in scan.active)
            for rotated in scan.rotated:
                if self.is_pending(rotated, scan):
                    kept_bytes += rotated.size
                else:
                    archives.append(rotated)
        archives.sort(key=lambda rotated: (rotated.mtime, rotated.path.name))
        cutoff = (self.now - self.log_class.retention).timestamp()
        remaining = []
        for rotated in archives:
            if rotated.mtime < cutoff:
                self.delete(rotated, f"older than the retention of {self.log_class.retention.days} days")
            else:
                remaining.append(rotated)
        total = kept_bytes + sum(self.footprint(rotated) for rotated in remaining)
        cap = self.log_class.max_size
        if total > cap and self.log_class.retention_wins_over_cap:
            self.alert(
                "critical",
                f"{self.name} holds {_size(total)}, over its cap of {_size(cap)}, and every archive is younger than "
                f"its retention of {self.log_class.retention.days} days, which wins over the cap: add space or "
                f"raise logs.classes.{self.name}.max_size",
                "over_cap",
            )
        elif total > cap:
            for rotated in remaining:
                if total <= cap:
                    break
                total -= self.footprint(rotated)
                self.delete(rotated, f"the class is over its cap of {_size(cap)}")
            if total > cap:
                self.alert(
                    "critical",
                    f"{self.name} holds {_size(total)} in files that may not be deleted, over its cap of {_size(cap)}",
                    "over_cap",
                )
        if cap >= total > self.settings.alert_at_cap_fraction * cap:
            self.alert(
                "warning",
                f"{self.name} is at {total / cap:.0%} of its cap of {_size(cap)}",
                "near_cap",
            )
        self.report.total_bytes = total

    @staticmethod
    def footprint(rotated: RotatedFile) -> int:
        sidecar = rotated.sidecar
        return rotated.size + (sidecar.stat().st_size if sidecar.exists() else 0)

    def delete(self, rotated: RotatedFile, reason: str) -> None:
        freed = self.footprint(rotated)
        with self.report.step(f"delete {rotated.path}"):
            if self.report.act(f"delete {rotated.path} ({_size(freed)}): {reason}"):
                rotated.path.unlink()
                rotated.sidecar.unlink(missing_ok=True)
            self.report.archives_deleted += 1
            self.report.bytes_deleted += freed


def rotate_log_class(
    name: str, *, now: datetime, dry_run: bool, recipients: Sequence = (), policy: Policy | None = None
) -> ClassReport:
    """Rotate, archive and prune one log class; `now` is the run's logical time. Returns the class's report."""
    settings = (policy or load_policy()).logs
    if name not in settings.classes:
        raise LogRotationError(f"Log class {name!r} is not in the policy (known: {', '.join(settings.classes)}).")
    log_class = settings.classes[name]
    if log_class.encryption and not recipients:
        raise LogRotationError(
            f"Log class {name} is encrypted but no age recipient was given "
            f"(connection {settings.encryption_key_conn_id})."
        )
    report = ClassReport(log_class=name, dry_run=dry_run, max_size=log_class.max_size)
    run = _ClassRun(name, settings, spec_for(log_class, settings, recipients), now, report)
    log.info(
        "%s%s: %d path(s), logical time %s, retention %d days, cap %s",
        "DRY RUN " if dry_run else "",
        name,
        len(log_class.paths),
        now.isoformat(),
        log_class.retention.days,
        _size(log_class.max_size),
    )

    for path in log_class.paths:
        directory = Path(path.directory)
        if not directory.is_dir():
            log.info("%s does not exist: nothing to rotate there", directory)
            continue
        run.clean_leftovers(directory)
        scan = scan_path(path)
        run.verify(scan)
        run.rotate(path, scan)

    pending = []
    for path in log_class.paths:
        scan = scan_path(path)
        pending += [rotated for rotated in scan.rotated if run.is_pending(rotated, scan)]
    run.archive_pending(pending)

    run.enforce_retention([scan_path(path) for path in log_class.paths])

    if report.tampered:
        run.alert(
            "critical" if log_class.encryption else "warning",
            f"{name}: {len(report.tampered)} archive(s) fail their integrity check",
            "tampered",
            {"archives": "; ".join(report.tampered[:20])},
        )
    if report.warnings:
        run.alert(
            "warning",
            f"{name}: {len(report.warnings)} file(s) need attention",
            "warnings",
            {"problems": "; ".join(report.warnings[:20])},
        )
    if report.failures:
        run.alert(
            "warning",
            f"{name}: {len(report.failures)} step(s) failed",
            "failed",
            {"failures": "; ".join(report.failures[:20])},
        )
    log.info(
        "%s%s summary: %d file(s) rotated, %s -> %s, %d archive(s) deleted (%s), space freed %s, class now %s "
        "of %s (%.0f%%)",
        "DRY RUN (nothing changed) " if dry_run else "",
        name,
        report.files_rotated,
        _size(report.bytes_before),
        _size(report.bytes_after),
        report.archives_deleted,
        _size(report.bytes_deleted),
        _size(report.space_freed),
        _size(report.total_bytes),
        _size(report.max_size),
        100 * report.total_bytes / report.max_size,
    )
    return report


# --- Airflow glue --------------------------------------------------------------------------------------------


def log_class_names() -> list[str]:
    return list(load_policy().logs.classes)


def encryption_recipients(conn_id: str) -> list:
    """age recipients from the connection's password: `age1...` public keys (or identities, whose public key is
    used), separated by spaces, commas or newlines. The value is never logged."""
    from airflow.sdk import BaseHook
    from pyrage import x25519

    try:
        secret = BaseHook.get_connection(conn_id).password or ""
    except Exception:  # the SDK raises its own not-found type; the sentence below is what the user needs
        raise LogRotationError(
            f"Connection {conn_id} is missing: create it with the age recipient of the audit-log key as its password."
        ) from None
    recipients = []
    for token in re.split(r"[\s,]+", secret.strip()):
        if not token:
            continue
        try:
            if token.upper().startswith("AGE-SECRET-KEY-"):
                recipients.append(x25519.Identity.from_str(token).to_public())
            else:
                recipients.append(x25519.Recipient.from_str(token))
        except Exception:
            raise LogRotationError(
                f"Connection {conn_id} holds a value that is not an age recipient (age1...) or identity."
            ) from None
    if not recipients:
        raise LogRotationError(f"Connection {conn_id} has no age recipient in its password.")
    return recipients


def dry_run_requested(param: bool | None, run_type: str) -> bool:
    """The `dry_run` param; unset means on for a manual trigger and off for the schedule."""
    return run_type == "manual" if param is None else bool(param)


def rotate_log_class_task(name: str, context) -> dict:
    policy = load_policy()
    dag_run = context["dag_run"]
    dry_run = dry_run_requested(context["params"].get("dry_run"), dag_run.run_type)
    log_class = policy.logs.classes.get(name)
    recipients = encryption_recipients(policy.logs.encryption_key_conn_id) if log_class and log_class.encryption else ()
    report = rotate_log_class(name, now=run_time(context), dry_run=dry_run, recipients=recipients, policy=policy)
    if report.failures:
        raise LogRotationError(
            f"{len(report.failures)} step(s) of {name} failed (first: {report.failures[0]}); the others completed."
        )
    return report.summary()


# --- by hand: verify and extract an archive ------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    from pyrage import x25519

    parser = argparse.ArgumentParser(
        prog="python -m trading_ops.logrotation",
        description="Verify a log archive against its sha256 sidecar, then write the original log to stdout.",
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("-i", "--identity-file", type=Path, help="age identity file (age-keygen output) for .age")
    args = parser.parse_args(argv)
    sidecar = sidecar_path(args.archive)
    if not sidecar.exists():
        print(f"{sidecar} is missing: the archive cannot be verified.", file=sys.stderr)
        return 2
    if file_sha256(args.archive) != sidecar.read_text().split(maxsplit=1)[0]:
        print(f"{args.archive} does NOT match its sha256 sidecar: it was changed after archiving.", file=sys.stderr)
        return 1
    identities = []
    if args.identity_file:
        keys = [line.strip() for line in args.identity_file.read_text().splitlines()]
        identities = [x25519.Identity.from_str(key) for key in keys if key.startswith("AGE-SECRET-KEY-")]
    if args.archive.name.endswith(".age") and not identities:
        print(f"{args.archive} is encrypted: pass the age identity file with -i.", file=sys.stderr)
        return 2
    extract_archive(args.archive, sys.stdout.buffer, identities)
    sys.stdout.buffer.flush()
    print(f"{args.archive}: sha256 verified, extracted.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
