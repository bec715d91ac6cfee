"""Restoring trading_db from a backup: the manual's recovery procedure, made safe.

The default `swap` mode never touches the live database until the restored copy has passed verification:
pg_restore writes into a new staging database, `verify_integrity` checks it against the backup's manifest, and
`swap_databases` renames live -> `<target>_pre_restore_<stamp>` and staging -> `<target>` in one transaction,
terminating the live database's sessions only then. The retired database is kept (policy
`restore.keep_replaced_database`) so a swap can be rolled back by renaming back. `in_place` mode runs
`pg_restore --clean --if-exists --single-transaction` into the live database, so a failed restore rolls back.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import psycopg

from trading_ops.db import connect, connection, libpq_env
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RETIRED_STAMP = "%Y%m%dT%H%M%S"
# pg_restore needs room for the decompressed dump next to the data it writes; ask for this much headroom.
DISK_HEADROOM = 1.2


class RestoreRefused(ValueError):
    """A user-caused problem found before anything was changed; the message is one sentence."""


class IntegrityError(RuntimeError):
    """The restored database does not match its backup."""


@dataclass(frozen=True)
class RestoreRequest:
    backup_id: str
    target_database: str
    restore_mode: str
    jobs: int
    scale_workload: bool
    replicas: int | None
    dry_run: bool
    confirm: str

    @classmethod
    def from_params(cls, params: dict, backup_id_pattern: re.Pattern) -> RestoreRequest:
        """Check the trigger form's values; the first problem stops the run with one sentence."""
        backup_id = str(params.get("backup_id") or "")
        if backup_id != "latest" and not backup_id_pattern.fullmatch(backup_id):
            raise RestoreRefused(
                f"backup_id {backup_id!r} is neither 'latest' nor a backup id like those `backups list` shows."
            )
        target = str(params.get("target_database") or "")
        if not DATABASE_NAME.fullmatch(target):
            raise RestoreRefused(f"target_database {target!r} is not a plain lower-case PostgreSQL database name.")
        mode = params.get("restore_mode")
        if mode not in ("swap", "in_place"):
            raise RestoreRefused(f"restore_mode {mode!r} must be 'swap' or 'in_place'.")
        jobs = int(params.get("jobs") or 1)
        if not 1 <= jobs <= 16:
            raise RestoreRefused(f"jobs {jobs} must be between 1 and 16.")
        replicas = params.get("replicas")
        if replicas is not None and int(replicas) < 0:
            raise RestoreRefused(f"replicas {replicas} must not be negative.")
        request = cls(
            backup_id=backup_id,
            target_database=target,
            restore_mode=mode,
            jobs=jobs,
            scale_workload=bool(params.get("scale_workload", True)),
            replicas=None if replicas is None else int(replicas),
            dry_run=bool(params.get("dry_run", True)),
            confirm=str(params.get("confirm") or ""),
        )
        if not request.dry_run and request.confirm != target:
            raise RestoreRefused(
                f"confirm must equal the target database name {target!r} for a real restore "
                f"(got {request.confirm!r}); set dry_run to preview instead."
            )
        return request

    def to_dict(self) -> dict:
        return asdict(self)


def staging_name(target: str, stamp: datetime) -> str:
    return f"{target}_restore_{stamp:{RETIRED_STAMP}}".lower()


def retired_name(target: str, stamp: datetime) -> str:
    return f"{target}_pre_restore_{stamp:{RETIRED_STAMP}}".lower()


# --- checks before anything changes ---------------------------------------------------------------------------


def database_exists(conn_id: str, name: str) -> bool:
    with connection(conn_id, database="postgres") as conn:
        return conn.execute(load_sql("restore/database_exists.sql"), {"name": name}).fetchone()[0]


def check_disk_space(work_dir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(work_dir).free
    if free < needed_bytes * DISK_HEADROOM:
        raise RestoreRefused(
            f"{work_dir} has {free / 1024**3:.1f} GiB free but the restore needs about "
            f"{needed_bytes * DISK_HEADROOM / 1024**3:.1f} GiB."
        )


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


def list_dump(dump: Path) -> int:
    """The number of items in the dump's table of contents; refuses a file pg_restore cannot read."""
    toc = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True)
    if toc.returncode != 0:
        raise RestoreRefused(f"pg_restore cannot read the dump {dump.name}: {toc.stderr.strip()}.")
    return sum(1 for line in toc.stdout.splitlines() if line and not line.startswith(";"))


def run_pg_restore(conn_id: str, dump: Path, database: str, *, jobs: int, clean: bool) -> int:
    """pg_restore `dump` into `database`, logging each object; returns the number of TOC items restored.

    Credentials travel in the environment (PGPASSWORD), never in argv. `clean` (in-place mode) runs as one
    transaction so a failure leaves the database as it was; that rules out parallel jobs.
    """
    env = {**os.environ, **libpq_env(conn_id, database=database)}
    total = list_dump(dump)
    argv = ["pg_restore", "--verbose", "--exit-on-error", "--no-password", "--dbname", database]
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


# --- verification -----------------------------------------------------------------------------------------


@dataclass
class IntegrityReport:
    tables_checked: int
    indexes_checked: int
    sequences_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def verify_integrity(
    conn_id: str,
    database: str,
    expected_row_counts: dict[str, int],
    *,
    disjoint: tuple[str, str, str] | None = None,
    jobs: int = 1,
) -> IntegrityReport:
    """The manual's verify_data_integrity.py: row counts, amcheck, constraints, sequences, archive overlap.

    `disjoint` is (table, archive table, key column): no key may be in both. The checks run on `jobs` connections
    at once, the amcheck of the biggest indexes first, since they dominate the time.
    """
    with connection(conn_id, database=database, autocommit=True) as conn:
        indexes = conn.execute(load_sql("restore/btree_indexes.sql")).fetchall()
        sequences = conn.execute(load_sql("restore/owned_sequences.sql")).fetchall()
    checks = [partial(_check_index, oid, f"{schema}.{name}") for oid, schema, name, _size in indexes]
    checks += [partial(_check_row_count, table, expected) for table, expected in sorted(expected_row_counts.items())]
    checks += [_check_invalid_objects, partial(_check_sequences, sequences)]
    if disjoint:
        checks.append(partial(_check_disjoint, *disjoint))
    problems = [problem for found in _run_checks(conn_id, database, checks, jobs) for problem in found]
    report = IntegrityReport(len(expected_row_counts), len(indexes), len(sequences), problems)
    log.info(
        "Integrity of %s: %d tables, %d btree indexes, %d sequences checked, %d problem(s)",
        database,
        report.tables_checked,
        report.indexes_checked,
        report.sequences_checked,
        len(problems),
    )
    for problem in problems:
        log.error("Integrity problem: %s", problem)
    return report


def _run_checks(conn_id: str, database: str, checks: list, jobs: int) -> list[list[str]]:
    local = threading.local()
    opened = []

    def run(check):
        if not hasattr(local, "conn"):
            local.conn = connect(conn_id, database=database, autocommit=True)
            opened.append(local.conn)
        return check(local.conn)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(run, checks))
    finally:
        for conn in opened:
            conn.close()


def _check_index(index_oid: int, name: str, conn) -> list[str]:
    try:
        conn.execute(load_sql("restore/check_btree_index.sql"), {"index_oid": index_oid})
    except psycopg.Error as exc:  # amcheck reports corruption as an error naming the index
        return [f"index {name} failed amcheck: {str(exc).strip()}"]
    return []


def _check_row_count(table: str, expected: int, conn) -> list[str]:
    actual = conn.execute(load_sql("restore/count_rows.sql", table=_qualified(table))).fetchone()[0]
    return [] if actual == expected else [f"{table} has {actual} rows but the backup manifest says {expected}"]


def _check_invalid_objects(conn) -> list[str]:
    rows = conn.execute(load_sql("restore/invalid_objects.sql")).fetchall()
    return [f"{kind} {name} on {relation} is not valid" for kind, relation, name in rows]


def _check_sequences(sequences: list, conn) -> list[str]:
    problems = []
    for seq_schema, seq_name, tab_schema, tab_name, column, last_used in sequences:
        highest = conn.execute(
            load_sql("restore/max_column_value.sql", table=(tab_schema, tab_name), column=column)
        ).fetchone()[0]
        if highest is not None and last_used < highest:
            problems.append(
                f"sequence {seq_schema}.{seq_name} is at {last_used}, behind {tab_schema}.{tab_name}.{column} "
                f"max {highest}"
            )
    return problems


def _check_disjoint(source: str, archive: str, key: str, conn) -> list[str]:
    shared = conn.execute(
        load_sql("restore/shared_keys.sql", source=_qualified(source), archive=_qualified(archive), key=key)
    ).fetchone()[0]
    return [f"{shared} {key} value(s) are in both {source} and {archive}"] if shared else []


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
