"""The restore's database steps on the server: checks before anything changes, pg_restore, the swap, and the names
of the staging and retired databases.

pg_restore is the installed one able to read the dump (the manifest's pg_dump version) and talk to the server
(`pg_restore_program`), never whatever is first on PATH. Credentials travel in the environment, never in argv.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from trading_ops import pgtools
from trading_ops.db import connection, libpq_env
from trading_ops.restore.request import RestoreRefused
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

RETIRED_STAMP = "%Y%m%dT%H%M%S"
# pg_restore needs room for the decompressed dump next to the data it writes; ask for this much headroom.
DISK_HEADROOM = 1.2


def staging_name(target: str, stamp: datetime) -> str:
    return f"{target}_restore_{stamp:{RETIRED_STAMP}}".lower()


def retired_name(target: str, stamp: datetime) -> str:
    return f"{target}_pre_restore_{stamp:{RETIRED_STAMP}}".lower()


# --- checks before anything changes ---------------------------------------------------------------------------


def database_exists(conn_id: str, name: str) -> bool:
    with connection(conn_id, database="postgres") as conn:
        return conn.execute(load_sql("restore/database_exists.sql"), {"name": name}).fetchone()[0]


def check_may_swap(conn_id: str, target: str) -> None:
    """A swap creates a database and renames the target: refuse a role that could do neither before anything is
    scaled down."""
    with connection(conn_id, database="postgres") as conn:
        allowed = conn.execute(load_sql("restore/may_swap.sql"), {"name": target}).fetchone()[0]
    if not allowed:
        raise RestoreRefused(
            f"the role of connection {conn_id} may not swap {target}: it needs CREATEDB and ownership of {target} "
            "(or superuser); use restore_mode in_place or another connection."
        )


def check_disk_space(work_dir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(work_dir).free
    if free < needed_bytes * DISK_HEADROOM:
        raise RestoreRefused(
            f"{work_dir} has {free / 1024**3:.1f} GiB free but the restore needs about "
            f"{needed_bytes * DISK_HEADROOM / 1024**3:.1f} GiB."
        )


def server_major(conn_id: str) -> int:
    with connection(conn_id, database="postgres") as conn:
        return pgtools.major_of_version_num(conn.execute(load_sql("restore/server_version_num.sql")).fetchone()[0])


def pg_restore_program(conn_id: str, dump_major: int | None) -> str:
    """The pg_restore that reads dumps of pg_dump `dump_major` (None: unknown) and talks to the server of `conn_id`:
    the installed version closest above both."""
    server = server_major(conn_id)
    return pgtools.client("pg_restore", at_least=max(dump_major or server, server))


def list_dump(dump: Path, program: str) -> int:
    """The number of items in the dump's table of contents; refuses a file pg_restore cannot read."""
    toc = subprocess.run([program, "--list", str(dump)], capture_output=True, text=True)
    if toc.returncode != 0:
        raise RestoreRefused(f"pg_restore cannot read the dump {dump.name}: {toc.stderr.strip()}.")
    return sum(1 for line in toc.stdout.splitlines() if line and not line.startswith(";"))


# --- pg_restore ---------------------------------------------------------------------------------------------


def create_database(conn_id: str, name: str) -> None:
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        conn.execute(load_sql("restore/create_database.sql", database=name))


def drop_database(conn_id: str, name: str) -> None:
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        conn.execute(load_sql("restore/drop_database.sql", database=name))


def terminate_sessions(conn_id: str, database: str, timeout: timedelta) -> None:
    """Ask every other session on `database` to end and wait, bounded, until none is left."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            asked = conn.execute(load_sql("restore/terminate_connections.sql"), {"name": database}).fetchone()[0]
            left = conn.execute(load_sql("restore/count_connections.sql"), {"name": database}).fetchone()[0]
            if left == 0:
                log.info("No session left on %s (%d terminated in the last pass)", database, asked)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} session(s) on {database} did not end within {timeout}.")
            time.sleep(0.2)


def run_pg_restore(conn_id: str, dump: Path, database: str, *, program: str, jobs: int, clean: bool) -> int:
    """pg_restore `dump` into `database` with `program`, logging each object; returns the number of TOC items.

    `clean` (in-place mode) runs as one transaction so a failure leaves the database as it was; that rules out
    parallel jobs.
    """
    env = {**os.environ, **libpq_env(conn_id, database=database)}
    total = list_dump(dump, program)
    argv = [program, "--verbose", "--exit-on-error", "--no-password", "--dbname", database]
    if clean:
        if jobs > 1:
            log.info("In-place restore runs as a single transaction, so jobs=%d is reduced to 1", jobs)
        argv += ["--clean", "--if-exists", "--single-transaction"]
    elif jobs > 1:
        argv += ["--jobs", str(jobs)]
    argv.append(str(dump))
    log.info("Running %s (%d TOC items)", " ".join(argv), total)
    started = time.monotonic()
    done = 0
    with subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True) as process:
        tail: list[str] = []
        for line in process.stderr:
            line = line.rstrip()
            tail = (tail + [line])[-20:]
            if line.startswith(("pg_restore: creating", "pg_restore: processing data", "pg_restore: executing")):
                done += 1
                elapsed = time.monotonic() - started
                log.info("[%d/%d %.0fs] %s", min(done, total), total, elapsed, line.removeprefix("pg_restore: "))
            elif "error" in line.lower() or "warning" in line.lower():
                log.warning("%s", line)
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"pg_restore exited with {process.returncode}: " + " | ".join(tail[-5:]))
    log.info("pg_restore finished in %.1f s", time.monotonic() - started)
    return total


# --- swap ---------------------------------------------------------------------------------------------------


def swap_databases(conn_id: str, target: str, staging: str, retired: str, drain_timeout: timedelta) -> None:
    """Put `staging` in service as `target`, keeping the old one as `retired`; both renames or neither."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        conn.execute(load_sql("restore/refuse_connections.sql", database=target))
        try:
            terminate_sessions(conn_id, target, drain_timeout)
            with conn.transaction():
                conn.execute(load_sql("restore/rename_database.sql", old=target, new=retired))
                conn.execute(load_sql("restore/rename_database.sql", old=staging, new=target))
        except Exception:
            conn.execute(load_sql("restore/allow_connections.sql", database=target))
            raise
    log.info("Swapped: %s is now the restored database; the previous one is kept as %s", target, retired)


def rollback_instructions(target: str, retired: str) -> str:
    return (
        f"To roll back, as a superuser on the `postgres` database (scale trading-api to 0 first):\n"
        f"  ALTER DATABASE {target} RENAME TO {target}_rolled_back;\n"
        f"  ALTER DATABASE {retired} RENAME TO {target};\n"
        f"  ALTER DATABASE {target} WITH ALLOW_CONNECTIONS true;"
    )


def drop_expired_retired_databases(conn_id: str, target: str, keep: timedelta, now: datetime) -> list[str]:
    """Drop `<target>_pre_restore_<stamp>` databases older than `keep`; returns the names dropped."""
    with connection(conn_id, database="postgres", autocommit=True) as conn:
        names = [row[0] for row in conn.execute(load_sql("restore/retired_databases.sql"), {"prefix": target})]
    dropped = []
    for name in names:
        try:
            stamp = datetime.strptime(name.rsplit("_", 1)[-1].upper(), RETIRED_STAMP).replace(tzinfo=now.tzinfo)
        except ValueError:
            continue
        if now - stamp > keep:
            log.info("Dropping %s, retired %s ago (policy keeps %s)", name, now - stamp, keep)
            drop_database(conn_id, name)
            dropped.append(name)
    return dropped
