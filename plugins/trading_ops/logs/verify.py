"""Integrity of log archives: the sha256 sidecars, written once and checked on every run and by hand. They catch
damage, not tampering (whoever can write an archive can recompute its sidecar): the signed chain (`chain`) does.

A sidecar `<archive>.sha256` is in `sha256sum` format (`<hex>  <archive name>`), so `sha256sum -c` checks one
without this code. Every run verifies every archive of a class before it changes anything: a mismatch, a missing
sidecar or a sidecar whose archive is gone is reported as tampering (a critical alert for encrypted classes).
"""

from __future__ import annotations

import os
from pathlib import Path

from trading_ops.logs.naming import SIDECAR_SUFFIX, PathScan, part_path, sidecar_path
from trading_ops.streams import file_sha256


def archive_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return file_sha256(handle)[1]


def write_sidecar(archive: Path, digest: str) -> None:
    """The sidecar of `archive`, written whole (fsynced, then renamed into place)."""
    sidecar = sidecar_path(archive)
    temporary = part_path(sidecar)
    with open(temporary, "w") as handle:
        handle.write(f"{digest}  {archive.name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, sidecar)


def recorded_sha256(archive: Path) -> str | None:
    """The digest the sidecar of `archive` records ("" for an empty sidecar), or None when it has none."""
    sidecar = sidecar_path(archive)
    if not sidecar.exists():
        return None
    return sidecar.read_text().split(maxsplit=1)[0] if sidecar.stat().st_size else ""


class Digests:
    """The sha256 of archives, each read once per run (a class can hold 100 GB); never kept across runs, where a
    file changed with its mtime put back would go unnoticed."""

    def __init__(self):
        self._known: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self._known:
            self._known[path] = archive_sha256(path)
        return self._known[path]


def archive_problem(archive: Path, digests=archive_sha256) -> str | None:
    """Why `archive` cannot be trusted, or None when it matches its sidecar."""
    recorded = recorded_sha256(archive)
    if recorded is None:
        return f"{archive} has no sha256 sidecar"
    if digests(archive) != recorded:
        return f"{archive} does not match its sha256 sidecar"
    return None


def tampering(scan: PathScan, archive_suffix: str, digests=archive_sha256) -> list[str]:
    """Every archive of one path that fails its check, and every sidecar whose archive is gone."""
    problems = [
        problem
        for archive in sorted(rotated.path for rotated in scan.archives(archive_suffix))
        if (problem := archive_problem(archive, digests))
    ]
    for sidecar in scan.sidecars:
        archive = sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))
        if not archive.exists() and not part_path(archive).exists():  # a .part: an interrupted run, not tampering
            problems.append(f"{archive} is listed by {sidecar.name} but missing")
    return problems
