"""PostgreSQL's own programs and numbers: which installed version runs each program, and LSNs.

Every caller that runs pg_dump, pg_restore, pg_basebackup, pg_verifybackup, psql, initdb, pg_ctl or postgres gets the
path from here, so one host never verifies a dump with one version and restores it with another.

- Client programs talk to servers of their own major version and older, and pg_restore reads archives written by
  pg_dump of its own version and older. `client(name, at_least=N)` therefore picks the installed version closest
  above N (N = the server's major version, or the dump's): the same version as the server when it is installed.
- Server programs must match the data directory's major version exactly: `server_bindir(major)`.

Installed versions are Debian's `/usr/lib/postgresql/<major>/bin` (kept off PATH), or `PG_BINDIR` when set (one
directory, any layout), or the programs on PATH as a last resort.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from trading_ops.errors import UserError

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


class PostgresToolMissing(UserError):
    """No installed PostgreSQL can run what is asked."""


def _bindir_major(bindir: Path) -> int | None:
    program = bindir / "pg_config"
    if not program.exists():
        program = next((bindir / name for name in ("postgres", "pg_dump", "psql") if (bindir / name).exists()), None)
    if program is None:
        return None
    return program_major(program)


@cache
def program_major(program: str | os.PathLike) -> int | None:
    """The major version a PostgreSQL program reports with --version (None when it does not run)."""
    try:
        output = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return major_of_tool_version(output)


def major_of_tool_version(version: str) -> int | None:
    """The major version in what `tool_version` prints and backup manifests record under `tools`:
    'pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)' -> 15; None when the text names no PostgreSQL version."""
    match = _VERSION.search(version)
    return int(match[1]) if match else None


def installed() -> dict[int, Path]:
    """Major version -> the directory of its programs."""
    if os.environ.get("PG_BINDIR"):
        bindir = Path(os.environ["PG_BINDIR"])
        major = _bindir_major(bindir)
        return {major: bindir} if major else {}
    found = {int(Path(path).parent.name): Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin")}
    if not found:
        on_path = shutil.which("pg_dump") or shutil.which("pg_ctl")
        if on_path:
            major = program_major(on_path)
            if major:
                found[major] = Path(on_path).parent
    return dict(sorted(found.items()))


def client(name: str, *, at_least: int | None = None) -> str:
    """The path of client program `name` able to serve major version `at_least` (None: the newest installed)."""
    versions = {major: bindir for major, bindir in installed().items() if (bindir / name).exists()}
    if at_least is not None:
        versions = {major: bindir for major, bindir in versions.items() if major >= at_least}
    if not versions:
        need = f" {at_least} or newer" if at_least is not None else ""
        raise PostgresToolMissing(
            f"{name} of PostgreSQL{need} is not installed on this worker: install postgresql-client-{at_least or 15}."
        )
    chosen = min(versions) if at_least is not None else max(versions)
    return str(versions[chosen] / name)


def server_bindir(major: int | None = None) -> Path:
    """The directory of initdb, pg_ctl and postgres of `major` (None: the newest installed)."""
    versions = {m: bindir for m, bindir in installed().items() if (bindir / "pg_ctl").exists()}
    if major is not None:
        versions = {m: bindir for m, bindir in versions.items() if m == major}
    if not versions:
        which = f"PostgreSQL {major}" if major else "PostgreSQL"
        raise PostgresToolMissing(
            f"The {which} server programs are not installed on this worker: install postgresql-{major or 15} "
            "(or set PG_BINDIR)."
        )
    return versions[max(versions)]


def tool_version(program: str) -> str:
    """What `program --version` prints, e.g. "pg_dump (PostgreSQL) 15.18"."""
    return subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def major_of_version_num(server_version_num: int) -> int:
    """170002 -> 17, 150018 -> 15 (server_version_num, as pg_settings and manifests record it)."""
    return server_version_num // 10000


def parse_lsn(lsn: str) -> int:
    """'16/B374D848' -> its byte position in the WAL stream."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
