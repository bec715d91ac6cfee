"""Point-in-time recovery for db_restore: a recovery instance of PostgreSQL on the worker, then a logical transfer.

The recovery instance is a throwaway server: the chosen full backup's base backup extracted into a private
directory (`instance_dir`), the server programs of the backup's major version (`pgtools.server_bindir`), a free
127.0.0.1 port, its own minimal configuration (the backup's postgresql.conf, auto.conf and pg_hba.conf are kept
aside as `*.from-backup`: the live server's tuning and libraries need not exist on the worker), `hot_standby = off`
(no session can see a half-recovered state) and only `local ... trust` in pg_hba.conf, on a socket directory only
its owner can enter. restore_command is `python -m trading_ops wal fetch %f %p` reading the segment index
(`backup.wal_sources`). It recovers to the target (or to the end of the WAL) and promotes.

Then the target database moves into the staging database on the live server, streamed: the pre-data and post-data
sections (DDL only, small) go through files and `pg_restore` (post-data with `--jobs`, where index builds run in
parallel), each table's data through its own `pg_dump | pg_restore` pipe, `jobs` at a time, so no copy of the data
lands on local disk. The instance is quiescent, so per-table dumps are as consistent as one snapshot.

What the restore then verifies (`recovery_point_problems`): the recovery stopped where asked (the last replayed
transaction committed at or before the target, the stop record after it; for `latest`, the newest segment of the
chain was replayed) and the staging copy has the instance's row count in every table.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import trading_ops
from trading_ops import pgtools
from trading_ops.pgserver import as_server_user, free_port, give_to_server_user, python_for_server_user
from trading_ops.sqlfiles import load_sql
from trading_ops.wal_fetch import INDEX_ENV, fetched

log = logging.getLogger(__name__)

INSTANCE_PREFIX = "trading-ops-recovery-"
PROGRESS_EVERY = 5.0


class RecoveryFailed(RuntimeError):
    """The recovery instance did not reach the target: an operational failure the log of the instance explains."""


def instance_dir(staging_database: str) -> Path:
    """Where the run's recovery instance lives: named after the run's staging database, so the teardown task
    (and a retry) find it."""
    return Path(tempfile.gettempdir()) / f"{INSTANCE_PREFIX}{staging_database}"


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass
class RecoveryInstance:
    base_dir: Path
    server_major: int
    port: int = field(default_factory=free_port)
    user: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def index_file(self) -> Path:
        return self.base_dir / "wal-index.json"

    @property
    def fetch_log(self) -> Path:
        return self.base_dir / "wal-fetched.jsonl"

    @property
    def identity_file(self) -> Path:
        return self.base_dir / "backup-identity"

    def _bin(self, program: str) -> str:
        return str(pgtools.server_bindir(self.server_major) / program)

    def restore_command(self) -> str:
        python, site_packages = python_for_server_user()
        path = ":".join([str(Path(trading_ops.__file__).resolve().parents[1]), *site_packages])
        return (
            f"{INDEX_ENV}={shlex.quote(str(self.index_file))} PYTHONPATH={shlex.quote(path)} "
            f"{shlex.quote(python)} -m trading_ops wal fetch %f %p"
        )

    def settings(self) -> dict[str, str]:
        return {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "archive_mode": "off",
            "hot_standby": "off",
            "max_connections": "50",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            "log_timezone": "'UTC'",
            "timezone": "'UTC'",
        }

    def prepare(
        self,
        backup,
        files,
        segments: list[str],
        target_time: datetime | None,
        identity: str | None,
        *,
        target_name: str | None = None,
    ) -> dict:
        """Extract `backup`'s base backup and configure recovery, replaying `segments` (of `files`, a
        `wal_sources.WalFiles`), to `target_time` or the restore point `target_name` (neither: the end of the WAL)."""
        from trading_ops.backup.access import configure_recovery, extract_base_backup
        from trading_ops.backup.wal_sources import localize, write_identity, write_index

        self.remove()
        self.base_dir.mkdir(parents=True, mode=0o700)
        self.socket_dir.mkdir()
        started = time.monotonic()
        extract_base_backup(backup, self.data_dir)
        extract_seconds = time.monotonic() - started
        for name in ("postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"):
            if (self.data_dir / name).exists():
                (self.data_dir / name).rename(self.data_dir / f"{name}.from-backup")
        for name in ("standby.signal", "postmaster.pid", "postmaster.opts"):
            (self.data_dir / name).unlink(missing_ok=True)
        (self.data_dir / "postgresql.conf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.settings().items())
        )
        (self.data_dir / "pg_hba.conf").write_text("local all all trust\n")
        configure_recovery(
            self.data_dir, target_time=target_time, target_name=target_name, restore_command=self.restore_command()
        )
        if identity:
            write_identity(self.identity_file, identity)
        files = localize(files, segments, self.base_dir / "repository-wal")
        write_index(self.index_file, files, log=self.fetch_log, identity_file=self.identity_file if identity else None)
        self.log_file.touch()
        self.fetch_log.touch()
        give_to_server_user(self.base_dir, recursive=True)
        self.data_dir.chmod(0o700)
        return {"extract_seconds": round(extract_seconds, 3)}

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            as_server_user([self._bin("pg_ctl"), "-D", str(self.data_dir), *args]), capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise RecoveryFailed(f"pg_ctl {args[-1]} failed: {result.stderr.strip()} {self.log_tail()}")
        return result

    def start(self) -> None:
        # No -w: with hot_standby off the server accepts no session until recovery is over; wait_until_promoted
        # watches it instead.
        self._pg_ctl("-l", str(self.log_file), "-W", "start")
        deadline = time.monotonic() + 30
        while not (self.data_dir / "postmaster.pid").exists():
            if time.monotonic() > deadline:
                raise RecoveryFailed(f"The recovery instance did not start: {self.log_tail()}")
            time.sleep(0.05)

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and self._pg_ctl("status", check=False).returncode == 0

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        fatal = [line for line in text if "FATAL" in line or "PANIC" in line]
        return " | ".join((fatal or text)[-lines:])

    def conninfo(self, dbname: str = "postgres") -> dict:
        return {"host": str(self.socket_dir), "port": self.port, "user": self.user, "dbname": dbname}

    def libpq_env(self, dbname: str) -> dict[str, str]:
        return {"PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": self.user, "PGDATABASE": dbname}

    def wait_until_promoted(self, timeout: timedelta, needed: int, describe_target: str) -> None:
        """Until recovery has ended and the instance accepts sessions; logs segments fetched and the newest one."""
        import psycopg

        deadline = time.monotonic() + timeout.total_seconds()
        next_report = 0.0
        while True:
            if not self.is_running():
                raise RecoveryFailed(
                    f"The recovery instance stopped before reaching {describe_target}: {self.log_tail()}"
                )
            try:
                with psycopg.connect(**self.conninfo(), connect_timeout=2, autocommit=True) as conn:
                    if not conn.execute(load_sql("restore/recovery/is_in_recovery.sql")).fetchone()[0]:
                        superuser = conn.execute(load_sql("restore/recovery/bootstrap_superuser.sql")).fetchone()[0]
                        self.user = superuser
                        log.info("Recovery finished: %d WAL file(s) fetched; the instance is promoted", self._fetched())
                        return
            except psycopg.OperationalError:
                pass  # still replaying: sessions are refused until the end of recovery
            now = time.monotonic()
            if now >= next_report:
                records = fetched(self.fetch_log)
                newest = records[-1]["name"] if records else "none yet"
                log.info(
                    "Replaying towards %s: %d of about %d WAL segment(s) fetched, newest %s",
                    describe_target,
                    self._fetched(),
                    needed,
                    newest,
                )
                next_report = now + PROGRESS_EVERY
            if now > deadline:
                raise RecoveryFailed(f"Recovery did not reach {describe_target} within {timeout}.")
            time.sleep(0.2)

    def _fetched(self) -> int:
        return len({record["name"] for record in fetched(self.fetch_log) if "error" not in record})

    def recovery_point(self) -> dict:
        """Where replay stopped: the last replayed transaction's commit time, the stop record's (when recovery
        stopped at a target), and the newest segment fetched."""
        import psycopg

        with psycopg.connect(**self.conninfo(), autocommit=True) as conn:
            last = conn.execute(load_sql("restore/recovery/last_replay_timestamp.sql")).fetchone()[0]
        stopped_before = restore_point = None
        for line in self.log_file.read_text(errors="replace").splitlines():
            if "recovery stopping before" in line and ", time " in line:
                stopped_before = line.rsplit(", time ", 1)[1].strip()
            elif 'recovery stopping at restore point "' in line:
                restore_point = line.split('restore point "', 1)[1].rsplit('", time ', 1)[0]
        records = [record for record in fetched(self.fetch_log) if "error" not in record]
        segments = sorted(record["name"] for record in records if not record["name"].endswith(".history"))
        fetch_seconds = sum(record["seconds"] for record in records)
        return {
            "last_replayed_at": last.isoformat() if last else None,
            "stopped_before_at": _pg_time(stopped_before),
            "stopped_at_restore_point": restore_point,
            "newest_segment_fetched": max(segments, key=lambda name: name[8:]) if segments else None,
            "segments_fetched": len(set(segments)),
            "fetch_seconds": round(fetch_seconds, 3),
            "sources": sorted({record["source"] for record in records}),
        }

    def stop(self) -> None:
        if self.is_running():
            self._pg_ctl("-m", "immediate", "-w", "stop", check=False)

    def remove(self) -> None:
        if self.data_dir.exists():
            self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _pg_time(text: str | None) -> str | None:
    """'2026-11-01 10:00:00.123456+00' (PostgreSQL's log, log_timezone UTC) as ISO 8601."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace(" ", "T", 1) + (":00" if text[-3] in "+-" else "")).isoformat()


def remove_instance(directory: Path, server_major: int) -> bool:
    """Stop and delete a recovery instance's directory if it is there; returns whether there was one."""
    if not directory.exists():
        return False
    RecoveryInstance(directory, server_major).remove()
    return True


# --- the transfer into the staging database ---------------------------------------------------------------


def _tables(instance: RecoveryInstance, database: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(**instance.conninfo(database), autocommit=True) as conn:
        return conn.execute(load_sql("backup/select_user_tables.sql")).fetchall()


def row_counts(instance: RecoveryInstance, database: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(**instance.conninfo(database), autocommit=True) as conn:
        tables = conn.execute(load_sql("backup/select_user_tables.sql")).fetchall()
        return {
            f"{schema}.{table}": conn.execute(load_sql("backup/count_rows.sql", table=(schema, table))).fetchone()[0]
            for schema, table in tables
        }


def _run(argv: list[str], env: dict, what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def _pipe(dump_argv: list[str], source_env: dict, restore_argv: list[str], target_env: dict, what: str) -> None:
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as restore_errors:
        dump = subprocess.Popen(dump_argv, stdout=subprocess.PIPE, stderr=dump_errors, env=source_env)
        restore = subprocess.Popen(restore_argv, stdin=dump.stdout, stderr=restore_errors, env=target_env)
        dump.stdout.close()
        restore.wait()
        dump.wait()
        if dump.returncode or restore.returncode:
            dump_errors.seek(0)
            restore_errors.seek(0)
            raise RuntimeError(
                f"{what}: pg_dump exited {dump.returncode}, pg_restore {restore.returncode}: "
                f"{(dump_errors.read() + restore_errors.read()).decode(errors='replace').strip()[-500:]}"
            )


def _pattern(schema: str, table: str) -> str:
    """A pg_dump -t pattern naming exactly this table (inside double quotes nothing is a wildcard)."""
    return '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))


def transfer(instance: RecoveryInstance, database: str, conn_id: str, staging: str, *, jobs: int) -> dict:
    """Move `database` of the instance into the (empty, existing) `staging` database of `conn_id`."""
    from trading_ops.db import libpq_env
    from trading_ops.restore.database import pg_restore_program

    pg_dump = pgtools.client("pg_dump", at_least=instance.server_major)
    pg_restore = pg_restore_program(conn_id, pgtools.program_major(pg_dump))
    source_env = {**os.environ, **instance.libpq_env(database)}
    target_env = {**os.environ, **libpq_env(conn_id, database=staging)}
    restore = [pg_restore, "--exit-on-error", "--no-password", "--dbname", staging]
    started = time.monotonic()
    tables = _tables(instance, database)
    with tempfile.TemporaryDirectory(prefix="pitr-ddl-") as directory:
        pre, post = Path(directory) / "pre-data.dump", Path(directory) / "post-data.dump"
        _run([pg_dump, "-Fc", "--section=pre-data", "-f", str(pre)], source_env, "pg_dump of the schema")
        _run([pg_dump, "-Fc", "--section=post-data", "-f", str(post)], source_env, "pg_dump of indexes and constraints")
        _run([*restore, str(pre)], target_env, "pg_restore of the schema")
        log.info("Schema of %s restored into %s; copying %d tables, %d at a time", database, staging, len(tables), jobs)

        def copy(table: tuple[str, str]) -> None:
            pattern = _pattern(*table)
            _pipe(
                [pg_dump, "-Fc", "-Z0", "--data-only", "-t", pattern],
                source_env,
                [*restore, "--data-only"],
                target_env,
                f"copy of {'.'.join(table)}",
            )
            log.info("Copied %s", ".".join(table))

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(copy, tables))
        # Sequence values, large objects and anything else of the data section that is not a table's rows.
        excluded = [f"--exclude-table-data={_pattern(*table)}" for table in tables]
        _pipe(
            [pg_dump, "-Fc", "--section=data", *excluded],
            source_env,
            [*restore, "--data-only"],
            target_env,
            "copy of sequence values and large objects",
        )
        _run([*restore, "--jobs", str(max(1, jobs)), str(post)], target_env, "pg_restore of indexes and constraints")
    seconds = time.monotonic() - started
    log.info("Transfer of %s into %s done in %.1f s", database, staging, seconds)
    return {"tables": len(tables), "transfer_seconds": round(seconds, 3)}


# --- verification -----------------------------------------------------------------------------------------


def recovery_point_problems(recovery: dict, point: dict) -> list[str]:
    """Did the recovery stop where asked? Empty when it did."""
    problems = []
    last = parse_time(point.get("last_replayed_at"))
    if recovery["target"] == "time":
        target = parse_time(recovery["target_time"])
        if last is not None and last > target:
            problems.append(f"the last replayed transaction committed at {last.isoformat()}, after the target")
        stop = parse_time(point.get("stopped_before_at"))
        if recovery["stop_at_target"] and (stop is None or stop <= target):
            problems.append(
                f"recovery did not stop at the first transaction after the target (stop record: {stop or 'none'})"
            )
    if recovery["target"] == "name" and point.get("stopped_at_restore_point") != recovery["target_name"]:
        problems.append(
            f"recovery did not stop at restore point {recovery['target_name']!r} "
            f"(stopped at: {point.get('stopped_at_restore_point') or 'no restore point'})"
        )
    if not recovery["stop_at_target"]:
        newest, replayed = point.get("chain_last"), point.get("newest_segment_fetched")
        if newest and replayed != newest:
            problems.append(f"recovery replayed WAL up to {replayed}, but the newest archived segment is {newest}")
    return problems


def describe_point(point: dict) -> str:
    return json.dumps({key: point[key] for key in sorted(point)})
