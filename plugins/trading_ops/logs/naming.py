"""Names of rotated files and what a policy path holds now.

A class's pattern matches its *active* files. Rotated files live beside them, named

    <active name>.<UTC stamp>[-<n>][.zst | .gz][.age]        e.g. api.log.20261126T153000Z.zst.age

with a sha256 sidecar `<archive>.sha256`. The stamp is the run's time (`runtime.run_time`), so names sort by time
and a rerun of the same run picks the same names; `-<n>` only separates two rotations with the same stamp. A
rotated file without a compression or encryption suffix is still *pending*: its archive is not written yet
(except for a class stored as is, whose archive is the plain file once its sidecar exists).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from trading_ops.policy import LogPath

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
SIDECAR_SUFFIX = ".sha256"
PART_SUFFIX = ".part"
ROTATED_NAME = re.compile(
    r"^(?P<base>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<seq>\d+))?(?P<ext>(?:\.zst|\.gz)?(?:\.age)?)$"
)
ARCHIVE_EXTENSIONS = ("", ".zst", ".gz", ".age", ".zst.age", ".gz.age")


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
        return sidecar_path(self.path)

    @property
    def inode(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_dev, stat.st_ino


def stamp_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def sidecar_path(archive: Path) -> Path:
    return archive.with_name(archive.name + SIDECAR_SUFFIX)


def part_path(final: Path) -> Path:
    """Where `final` is written before it is complete: hidden, so no scan takes it for an archive."""
    return final.with_name(f".{final.name}{PART_SUFFIX}")


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

    def is_pending(self, rotated: RotatedFile, archive_suffix: str) -> bool:
        """Not archived yet: plaintext while the class's archives carry `archive_suffix`, or (for a class stored as
        is, suffix "") without its sidecar."""
        if rotated.ext:
            return False
        return bool(archive_suffix) or rotated.sidecar not in self.sidecars

    def pending(self, archive_suffix: str) -> list[RotatedFile]:
        return [rotated for rotated in self.rotated if self.is_pending(rotated, archive_suffix)]

    def archives(self, archive_suffix: str) -> list[RotatedFile]:
        return [rotated for rotated in self.rotated if not self.is_pending(rotated, archive_suffix)]


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
        if not any(path.exists() or sidecar_path(path).exists() for path in taken):
            return active.with_name(candidate)
    raise FileExistsError(f"No free rotated name for {active} at {stamp}.")
