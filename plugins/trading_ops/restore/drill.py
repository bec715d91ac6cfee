"""The restore drill: the newest full backup and its WAL recovered to a point marked on the live database, on a
recovery instance on the worker, transferred and verified as a real restore is, and recorded.

1. `mark_recovery_target` first picks the backup: the newest usable full backup, waiting up to
   `restore.drill.backup_wait` for one when there is none yet (a new deployment, where db_backup_full's first run
   and the drill's start together). Picking it before marking is what makes the drill correct: a full backup that
   finished after the restore point cannot recover to it (its WAL starts later), so the drill recovers exactly the
   backup picked here, never "the newest" at recovery time. Then (live database, read-only but for a restore
   point): in one REPEATABLE READ transaction,
   SHARE locks on every table (writers wait, at most `restore.drill.lock_timeout` to get them; readers do not),
   then the per-table row counts, then `pg_create_restore_point(name)`, then commit; then `pg_switch_wal()` and a
   wait until that segment is archived, so the recovery can reach the point.
2. `run_drill`: that full backup's checksums, its WAL chain up to that segment, then a recovery
   instance (`recovery.RecoveryInstance`, the machinery of db_restore's point-in-time restores) recovering to
   `recovery_target_name`, the restore point; the recovery point checked (the instance's log says it stopped at
   that restore point; its row counts equal the marked ones); the database transferred (`recovery.transfer`) into a
   scratch database on the instance itself, so the live server is never written; `verification.verify_integrity`
   on that copy. The instance is removed on every outcome.

Why the count check is exact: the SHARE locks are taken before the transaction's snapshot (LOCK TABLE is not a
query, so the snapshot is the one of the first count, after every lock is held). Holding them, no other transaction
can have uncommitted changes in those tables or commit new ones until this one ends, so the counts are the tables'
state at the moment the restore point's WAL record is written, and a recovery that stops at that record has exactly
those rows. A recovery that stopped earlier (an older restore point of the same name, a WAL gap) or later (the
target missed) has other counts, or another stop record, and fails the drill.

Phases and RTO: `extract` (base backup to disk), `replay` (server start to promotion; `fetch`, the time the
restore_command spent getting WAL, is inside it), `transfer`, `verify`. The RTO is extract + replay + transfer +
verify: what a real restore of this backup would take before the swap.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)

SOURCE = "db_restore_drill"
PHASES = ("fetch", "extract", "replay", "transfer", "verify")
# The recovery instance as an Airflow connection, for the wing's tools that take a conn_id (transfer, verify).
INSTANCE_CONN_ID = "trading_ops_drill_instance"
SCRATCH_DATABASE = "trading_ops_drill_copy"


class DrillFailed(AirflowFailException):
    """The backup did not restore as it must: a finding about the backups (an incident), not a flaky run."""


def restore_point_name(drill_id: str, attempt: int) -> str:
    return f"trading-ops-drill-{drill_id}-{attempt}"


def wait_for_backup(policy, *, poll_seconds: float = 5.0):
    """The newest usable full backup (with a base backup, not failed verification); waits up to
    `restore.drill.backup_wait` for a first one. DrillFailed when none comes."""
    from trading_ops import backup as backups
    from trading_ops.alerting.routing import format_duration
    from trading_ops.backup import wal_sources

    repository = backups.repository_from_policy(policy)
    wait = policy.restore.drill.backup_wait
    deadline = time.monotonic() + wait.total_seconds()
    while not (fulls := wal_sources.usable_fulls(repository)):
        if time.monotonic() >= deadline:
            raise DrillFailed(
                f"There is no usable full backup in {repository.root} to drill (waited {format_duration(wait)} "
                "for one): check db_backup_full."
            )
        log.info("No usable full backup in %s yet; waiting for one (db_backup_full running?)", repository.root)
        time.sleep(poll_seconds)
    return fulls[0]


def mark_recovery_target(conn_id: str, database: str, name: str, policy) -> dict:
    """The backup to drill, then the target it recovers to: counts and a restore point in one snapshot (see the
    module docstring); returns {backup_id, name, database, lsn, segment, row_counts, marked_at}."""
    import psycopg

    from trading_ops.backup.wal import switch_and_wait
    from trading_ops.db import connection

    backup_id = wait_for_backup(policy).id

    with connection(conn_id, database=database, autocommit=True) as conn:
        timeout_ms = int(policy.restore.drill.lock_timeout.total_seconds() * 1000)
        conn.execute(load_sql("restore/drill/set_lock_timeout.sql"), {"timeout": f"{timeout_ms}ms"})
        tables = conn.execute(load_sql("backup/select_user_tables.sql")).fetchall()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            for table in tables:
                conn.execute(load_sql("restore/drill/lock_table.sql", table=tuple(table)))
            counts = {
                f"{schema}.{table}": conn.execute(load_sql("backup/count_rows.sql", table=(schema, table))).fetchone()[
                    0
                ]
                for schema, table in tables
            }
            lsn, marked_at = conn.execute(load_sql("restore/drill/create_restore_point.sql"), {"name": name}).fetchone()
        segment = switch_and_wait(conn, Path(policy.backup.wal_archive_dir), policy.backup.archive_wait)
    log.info(
        "Restore point %r at %s in %s (archived in %s); %d tables counted", name, lsn, database, segment, len(counts)
    )
    return {
        "backup_id": backup_id,
        "name": name,
        "database": database,
        "lsn": lsn,
        "segment": segment,
        "row_counts": counts,
        "marked_at": marked_at.isoformat(),
    }


@dataclass
class DrillResult:
    drill_id: str
    backup_id: str | None
    recovery_target: str
    started_at: str
    finished_at: str | None = None
    outcome: str = "failed"
    failed_phase: str | None = None
    problems: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _instance_connection(instance) -> Generator[str]:
    """The recovery instance as connection INSTANCE_CONN_ID of this process, for as long as it runs."""
    variable = f"AIRFLOW_CONN_{INSTANCE_CONN_ID.upper()}"
    os.environ[variable] = json.dumps(
        {
            "conn_type": "postgres",
            "host": str(instance.socket_dir),
            "port": instance.port,
            "login": instance.user,
            "schema": "postgres",
        }
    )
    try:
        yield INSTANCE_CONN_ID
    finally:
        os.environ.pop(variable, None)


def needed_segments(wal, target_segment: str) -> tuple[list[str], str | None]:
    """The segments from the base backup's start up to the one holding the restore point, and the first missing
    one among them (None: the chain reaches it)."""
    from trading_ops.backup.wal_names import segment_number

    limit = segment_number(target_segment, wal.segment_size)
    needed = [name for name in wal.segments if segment_number(name, wal.segment_size) <= limit]
    missing = [name for name in wal.missing if segment_number(name, wal.segment_size) <= limit]
    if missing:
        return needed, missing[0]
    if not needed or segment_number(needed[-1], wal.segment_size) < limit:
        return needed, target_segment
    return needed, None


def count_problems(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    problems = [
        f"{table} has {actual.get(table)} rows at the recovery point but {count} when the restore point was made"
        for table, count in sorted(expected.items())
        if actual.get(table) != count
    ]
    problems += [
        f"{table} exists at the recovery point but not when the restore point was made"
        for table in sorted(actual.keys() - expected.keys())
    ]
    return problems


def run_drill(drill_id: str, target: dict, policy, *, jobs: int = 2) -> DrillResult:
    """Recover the full backup of `target` (from `mark_recovery_target`) to it, transfer, verify; never raises
    for a failed drill (the result says where and why), so the caller can record it first."""
    from trading_ops import backup as backups
    from trading_ops.backup import wal_sources
    from trading_ops.db import libpq_env
    from trading_ops.restore import recovery
    from trading_ops.restore.pitr import bundle_identity
    from trading_ops.restore.verification import archive_invariant, verify_integrity

    result = DrillResult(drill_id, None, f"restore point {target['name']}", datetime.now().astimezone().isoformat())
    phase = "plan"
    started = time.monotonic()
    instance = None
    try:
        repository = backups.repository_from_policy(policy)
        picked = [full for full in wal_sources.usable_fulls(repository) if full.id == target["backup_id"]]
        if not picked:
            raise DrillFailed(
                f"Full backup {target['backup_id']}, picked before the restore point was made, is no longer a usable "
                f"full backup in {repository.root}."
            )
        base = picked[0]
        result.backup_id = base.id
        base_entry = base.file_entry("base")
        result.sizes = {
            "backup_bytes": base.size,
            "base_stored_bytes": base_entry["size"],
            "base_bytes": base_entry["raw_size"],
        }
        backups.check_checksums(base)
        segment_size = base.manifest["wal_segment_size"]
        files = wal_sources.collect(Path(policy.backup.wal_archive_dir), repository, segment_size)
        identity = bundle_identity(files, policy)
        wal = wal_sources.chain(files, base.manifest["wal_start_segment"], segment_size, identity)
        needed, missing = needed_segments(wal, target["segment"])
        if missing:
            raise DrillFailed(
                f"WAL segment {missing}, between base backup {base.id} and the restore point (in {target['segment']}), "
                "is in neither the WAL archive nor a WAL bundle: a restore to any later point would fail."
            )
        result.sizes["wal_replay_bytes"] = len(needed) * segment_size
        # The live connection's role: it exists in the backup, where a role named postgres need not.
        instance = recovery.RecoveryInstance(
            recovery.instance_dir(f"drill_{drill_id}"),
            base.server_major,
            user=libpq_env(policy.restore.conn_id)["PGUSER"],
        )
        phase = "extract"
        result.phases["extract"] = instance.prepare(base, files, needed, None, identity, target_name=target["name"])[
            "extract_seconds"
        ]
        phase = "replay"
        replay_started = time.monotonic()
        instance.start()
        instance.wait_until_promoted(policy.restore.recovery_timeout, len(needed), f"restore point {target['name']}")
        result.phases["replay"] = round(time.monotonic() - replay_started, 3)
        point = instance.recovery_point()
        result.phases["fetch"] = point["fetch_seconds"]
        database = target["database"]
        counts = recovery.row_counts(instance, database)
        problems = recovery.recovery_point_problems(
            {"target": "name", "target_name": target["name"], "stop_at_target": True}, point
        )
        problems += count_problems(target["row_counts"], counts)
        if problems:
            raise DrillFailed(f"The recovery did not stop at restore point {target['name']!r}: " + "; ".join(problems))
        with _instance_connection(instance) as conn_id:
            with instance_session(instance, database) as conn:
                result.sizes["database_bytes"] = conn.execute(load_sql("restore/drill/database_size.sql")).fetchone()[0]
            phase = "transfer"
            from trading_ops.restore import database as databases

            databases.create_database(conn_id, SCRATCH_DATABASE)
            result.phases["transfer"] = recovery.transfer(instance, database, conn_id, SCRATCH_DATABASE, jobs=jobs)[
                "transfer_seconds"
            ]
            phase = "verify"
            verify_started = time.monotonic()
            report = verify_integrity(
                conn_id, SCRATCH_DATABASE, counts, disjoint=archive_invariant(policy, counts), jobs=jobs
            )
            result.phases["verify"] = round(time.monotonic() - verify_started, 3)
            if report.problems:
                raise DrillFailed(
                    f"The restored copy of backup {base.id} failed verification: " + "; ".join(report.problems)
                )
        result.outcome = "passed"
        result.rto_seconds = round(sum(result.phases[name] for name in ("extract", "replay", "transfer", "verify")), 3)
    except Exception as exc:  # every failure of the drill is its finding: recorded, then raised by the task
        result.failed_phase = phase
        result.problems = [str(exc).strip() or type(exc).__name__]
        log.error("Restore drill failed in phase %s: %s", phase, result.problems[0])
    finally:
        if instance is not None:
            instance.remove()
        result.finished_at = datetime.now().astimezone().isoformat()
    log.info(
        "Restore drill %s of backup %s: %s in %.1f s; phases %s; sizes %s",
        drill_id,
        result.backup_id,
        result.outcome,
        time.monotonic() - started,
        result.phases,
        result.sizes,
    )
    return result


@contextmanager
def instance_session(instance, database: str):
    import psycopg

    with psycopg.connect(**instance.conninfo(database), autocommit=True) as conn:
        yield conn


# --- the records ----------------------------------------------------------------------------------------------


def record_drill(conn_id: str, result: DrillResult) -> None:
    from psycopg.types.json import Jsonb

    from trading_ops import opsstate

    values = result.to_dict()
    for key in ("problems", "phases", "sizes"):
        values[key] = Jsonb(values[key])
    with opsstate.connection(conn_id) as conn:
        conn.execute(load_sql("restore/drill/record_drill.sql"), values)
        conn.commit()


def list_drills(conn_id: str, limit: int = 50) -> list[dict]:
    from psycopg.rows import dict_row

    from trading_ops import opsstate

    with opsstate.connection(conn_id) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(load_sql("restore/drill/list_drills.sql"), {"limit": limit}).fetchall()


def get_drill(conn_id: str, drill_id: str) -> dict | None:
    from psycopg.rows import dict_row

    from trading_ops import opsstate

    with opsstate.connection(conn_id) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(load_sql("restore/drill/select_drill.sql"), {"drill_id": drill_id}).fetchone()


def drills_by_backup(conn_id: str) -> dict[str, dict]:
    """backup id -> {finished_at, outcome, recovery_target, last_passed_at} of its newest drill."""
    from psycopg.rows import dict_row

    from trading_ops import opsstate

    with opsstate.connection(conn_id) as conn, conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(load_sql("restore/drill/last_drill_per_backup.sql")).fetchall()
    return {row.pop("backup_id"): row for row in rows}


def newest_passed_drill(conn_id: str) -> dict | None:
    from psycopg.rows import dict_row

    from trading_ops import opsstate

    with opsstate.connection(conn_id) as conn, conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(load_sql("restore/drill/newest_passed_drill.sql")).fetchone()


def passed_drill_age(conn_id: str, at: datetime) -> float | None:
    """Seconds at `at` since the newest passed drill finished (none passed: since the first drill); None when no
    drill was ever recorded. system_health alerts on it past `restore.drill.max_age`."""
    from trading_ops import opsstate

    with opsstate.connection(conn_id) as conn:
        newest_passed, first = conn.execute(load_sql("restore/drill/drill_freshness.sql")).fetchone()
    since = newest_passed or first
    return None if since is None else max((at - since).total_seconds(), 0.0)


def rto_finding(policy, result: dict | None) -> str | None:
    """The sentence to alert with when this run's drill passed but over `restore.drill.rto_budget`; None if not.
    (A drill too old is system_health's `restore_drill_stale`, whatever state this DAG is in.)"""
    from trading_ops.alerting.routing import format_duration

    budget = policy.restore.drill.rto_budget
    if not result or result["outcome"] != "passed" or result["rto_seconds"] <= budget.total_seconds():
        return None
    return (
        f"Restore drill {result['drill_id']} of backup {result['backup_id']} took {result['rto_seconds']:.0f} s, "
        f"over the RTO budget of {format_duration(budget)}: phases {result['phases']}."
    )
