"""A point-in-time restore's plan and its restore step (`recovery_target` latest or time).

The plan chooses the newest full backup whose base backup ended before the target (for `latest`: the newest),
indexes every WAL file in the archive and the bundles, and refuses, before anything is scaled or changed, a target
outside the recoverable window and a hole in the WAL chain (timeline-aware) that recovery would have to cross,
naming the window or the missing segment. The restore step runs the recovery instance (`recovery`), transfers the
database into the staging database, counts the instance's rows for the verification, and removes the instance.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from trading_ops.restore import database, recovery
from trading_ops.restore.request import RestoreRefused, RestoreRequest

log = logging.getLogger(__name__)


# Segments of the chain past the estimated end of a time-target recovery that are still fetched for it.
REPLAY_MARGIN = 16


def bundle_identity(files: dict[str, dict], policy) -> str | None:
    """The age identity the encrypted bundles among `files` need (None when none is encrypted)."""
    from trading_ops.streams import EncryptionKey, EncryptionKeyError

    encrypted = [entry for entry in files.values() if entry.get("encrypted")]
    if not encrypted:
        return None
    key = EncryptionKey.from_connection(policy.backup.encryption.key_conn_id)
    # A shipped file whose record was not read yet names no key: wal fetch finds out when it decrypts it.
    key_ids = {entry["key_id"] for entry in encrypted if entry.get("key_id")}
    if key_ids - {key.key_id}:
        raise EncryptionKeyError(
            f"WAL bundles are encrypted with {', '.join(sorted(key_ids))} but the key of connection "
            f"{policy.backup.encryption.key_conn_id} is {key.key_id}."
        )
    return str(key.identity)


def recoverable_window(repository, archive_dir: Path, policy):
    """The recoverable window now (`backup.wal_sources.Window`): what `backups window` prints and the Ops page
    shows; the encrypted bundles are read with the policy's backup key."""
    from trading_ops.backup.wal_sources import collect, usable_fulls, window

    fulls = usable_fulls(repository)
    files = collect(archive_dir, repository, fulls[0].manifest["wal_segment_size"]) if fulls else {}
    return window(repository, archive_dir, bundle_identity(files, policy), files)


def _choose_base(fulls: list, backup_id: str, target: datetime | None):
    candidates = [backup for backup in fulls if target is None or backup.stop_time <= target]
    if backup_id != "latest":
        candidates = [backup for backup in candidates if backup.id == backup_id]
        if not candidates:
            raise RestoreRefused(
                f"backup {backup_id} cannot start this recovery: it is not a usable full backup"
                + (f" whose base backup ended before {target.isoformat()}." if target else ".")
            )
    return candidates[0]


def _segments_until(files: dict, segments: list[str], target: datetime) -> list[str]:
    """The segments a recovery to `target` reads: those archived before it and the one after, which holds the
    first commit past the target (or the next does; the estimate says at least)."""
    from trading_ops.backup.wal_sources import archived_at

    needed = []
    for name in segments:
        needed.append(name)
        if archived_at(files, name) > target:
            break
    return needed


def _segments_to_replay(files, wal, target: datetime | None) -> list[str]:
    """The chain's segments a recovery to `target` (None: the end of the WAL) may read. For a time target: those up
    to the estimate of `_segments_until` and REPLAY_MARGIN more, for a first commit past the target that lies
    beyond the first segment archived after it (a segment archived late); past them recovery would stop short and
    say so ("recovery ended before configured recovery target was reached")."""
    if target is None:
        return wal.segments
    estimate = len(_segments_until(files, wal.segments, target))
    return wal.segments[: estimate + REPLAY_MARGIN]


def make_recovery_plan(request: RestoreRequest, policy, moment: datetime) -> dict:
    from trading_ops import backup as backups
    from trading_ops import pgtools
    from trading_ops.backup import wal_sources
    from trading_ops.backup.wal_names import segment_number

    conn_id = policy.restore.conn_id
    repository = backups.repository_from_policy(policy)
    archive_dir = Path(policy.backup.wal_archive_dir)
    fulls = wal_sources.usable_fulls(repository)
    if not fulls:
        raise RestoreRefused(f"There is no full backup with a base backup in {repository.root} to recover from.")
    segment_size = fulls[0].manifest["wal_segment_size"]
    files = wal_sources.collect(archive_dir, repository, segment_size)
    identity = bundle_identity(files, policy)
    window = wal_sources.window(repository, archive_dir, identity, files)
    target = request.target_moment
    if target is not None and not window.start <= target <= window.end:
        raise RestoreRefused(f"target_time {target.isoformat()} is outside the recoverable window. {window.sentence()}")
    base = _choose_base(fulls, request.backup_id, target)
    wal = wal_sources.chain(files, base.manifest["wal_start_segment"], segment_size, identity)
    consistent_at = base.manifest["wal_stop_segment"]
    if wal.last is None or segment_number(wal.last, segment_size) < segment_number(consistent_at, segment_size):
        missing = wal.missing[0] if wal.missing else consistent_at
        raise RestoreRefused(
            f"WAL segment {missing}, which base backup {base.id} needs to become consistent, is in neither the WAL "
            "archive nor a WAL bundle."
        )
    last_commit = wal_sources.last_commit_time(files, wal, identity, base.server_major)
    # No commit after the target in the WAL: recovering to its end gives the same data (and a time target with no
    # later commit would make PostgreSQL stop with "recovery ended before configured recovery target was reached").
    stop_at_target = target is not None and last_commit is not None and target < last_commit
    if wal.missing and not stop_at_target:
        towards = f"the target {target.isoformat()}" if target else f"the newest archived segment {wal.newest}"
        raise RestoreRefused(
            f"WAL segment {wal.missing[0]} is missing between base backup {base.id} and {towards}: recovery cannot "
            f"replay past it (the chain ends at {wal.last}); put the segment back into the WAL archive or choose a "
            "target_time before the gap."
        )
    needed = _segments_until(files, wal.segments, target) if stop_at_target else wal.segments
    checks = [f"sha256 of {backups.check_checksums(base)} files of base backup {base.id}"]
    target_db = request.target_database
    if not database.database_exists(conn_id, target_db):
        raise RestoreRefused(f"target database {target_db!r} does not exist on {conn_id}.")
    database.check_may_swap(conn_id, target_db)
    checks.append(f"the role of {conn_id} may create and swap {target_db}")
    database.check_amcheck_available(conn_id)
    checks.append(f"the role of {conn_id} can install amcheck in the restored copy for the verification")
    # The recovered database is at least as large as it was at the base backup.
    free_space = database.check_server_free_space(policy, base.manifest["database_size"], moment)
    scratch = recovery.instance_dir("x").parent
    base_size = base.file_entry("base")["raw_size"]
    database.check_disk_space(scratch, base_size + len(needed) * segment_size)
    checks.append(f"{scratch} has room for the base backup ({base_size} bytes) and its WAL")
    bindir = pgtools.server_bindir(base.server_major)
    checks.append(f"PostgreSQL {base.server_major} server programs in {bindir}")
    pg_dump = pgtools.client("pg_dump", at_least=base.server_major)
    pg_restore = database.pg_restore_program(conn_id, pgtools.program_major(pg_dump))
    staging = database.staging_name(target_db, moment)
    where: dict[str, int] = {}
    for name in needed:
        where[files.source(name)] = where.get(files.source(name), 0) + 1
    plan = {
        "request": request.to_dict(),
        "conn_id": conn_id,
        "backup": {
            "id": base.id,
            "taken_at": base.manifest["start_time"],
            "size": base.size,
            "files_checked": len(base.manifest["files"]),
            "encrypted": bool(base.manifest.get("encryption")),
            "row_counts": base.manifest["row_counts"],
            "pg_dump_major": pgtools.program_major(pg_dump),
        },
        "pg_restore": pg_restore,
        "server_free_space": free_space,
        "staging_database": staging,
        "retired_database": database.retired_name(target_db, moment),
        "recovery": {
            "target": request.recovery_target,
            "target_time": target.isoformat() if target else None,
            "stop_at_target": stop_at_target,
            "window": window.sentence(),
            "base_backup": {
                "id": base.id,
                "ended_at": base.stop_time.isoformat(),
                "wal_start_segment": base.manifest["wal_start_segment"],
                "server_major": base.server_major,
            },
            "timeline": wal.timeline,
            "segments": [{"name": name, "source": files.source(name)} for name in needed],
            "segments_by_source": where,
            "replay_bytes": len(needed) * segment_size,
            "last_commit_in_wal": last_commit.isoformat() if last_commit else None,
            "server_bindir": str(bindir),
            "pg_dump": pg_dump,
            "instance_dir": str(recovery.instance_dir(staging)),
            "checks": checks,
        },
    }
    log.info("Restore plan:\n%s", describe_recovery_plan(plan))
    return plan


def describe_recovery_plan(plan: dict) -> str:
    request, rec = plan["request"], plan["recovery"]
    target = request["target_database"]
    if rec["target"] == "latest":
        goal = "the newest archived WAL (latest)"
    elif rec["stop_at_target"]:
        goal = f"{rec['target_time']} (stops before the first commit after it)"
    else:
        goal = f"{rec['target_time']}: no commit after it in the WAL, so the end of the WAL (same data)"
    segments = rec["segments"]
    span = f"{segments[0]['name']} .. {segments[-1]['name']}" if segments else "none"
    sources = ", ".join(f"{count} from {source}" for source, count in rec["segments_by_source"].items())
    lines = [
        f"{'DRY RUN: nothing will change' if request['dry_run'] else 'REAL RUN'}",
        f"recover to        {goal}",
        f"window            {rec['window']}",
        f"base backup       {rec['base_backup']['id']} (ended {rec['base_backup']['ended_at']}, PostgreSQL "
        f"{rec['base_backup']['server_major']})",
        f"WAL               timeline {rec['timeline']}, {len(segments)} segment(s) {span} ({sources or 'none'}), "
        f"about {rec['replay_bytes'] / 1024**2:.0f} MB to replay; last commit in the WAL {rec['last_commit_in_wal']}",
        *(f"  {segment['name']}  {segment['source']}" for segment in segments),
        *(f"check passed      {check}" for check in rec["checks"]),
        f"server disk       {database.describe_free_space(plan['server_free_space'])}",
        "1. scale the workload to 0 and wait until no pod is left"
        if request["scale_workload"]
        else "1. (workload not scaled)",
        f"2. extract the base backup into {rec['instance_dir']}, start a recovery instance "
        f"({rec['server_bindir']}) with restore_command `python -m trading_ops wal fetch %f %p`, recover, promote",
        f"3. pg_dump from the instance into new database {plan['staging_database']} (schema, {request['jobs']} "
        "table streams at a time, then indexes and constraints with pg_restore --jobs)",
        "4. verify: row counts equal to the instance's, the recovery point, amcheck, constraints, sequences",
        f"5. swap: {target} -> {plan['retired_database']} (kept), {plan['staging_database']} -> {target}",
        "6. remove the recovery instance (also on failure); scale the workload back",
    ]
    return "\n".join(lines)


def _switch_live_wal(conn_id: str, archive_dir: Path, timeout) -> None:
    """For `latest`: close the live server's current segment so its last commits are archived too, when the server
    is reachable (in a disaster it may not be: then the archive as it is is the latest)."""
    import psycopg

    from trading_ops.backup.wal import archiver_status, switch_and_wait
    from trading_ops.db import connection

    try:
        with connection(conn_id, database="postgres", autocommit=True) as conn:
            status = archiver_status(conn)
            if status.failing:
                # Waiting for a segment that cannot be archived would only add archive_wait to the outage.
                log.warning(
                    "The live server's archiver fails since %s (%s): recovering what the archive holds",
                    status.last_failed_time,
                    status.last_failed_wal,
                )
                return
            log.info("Switched and archived %s on the live server", switch_and_wait(conn, archive_dir, timeout))
    except (psycopg.Error, RuntimeError) as exc:
        log.warning("Could not switch the live server's WAL (%s); recovering what the archive holds", exc)


def restore_to_staging(plan: dict) -> dict:
    """The restore step of a PITR: recover, transfer into the staging database, count; returns what verification
    and the report need. The recovery instance is removed on every outcome."""
    from trading_ops import backup as backups
    from trading_ops.backup import wal_sources
    from trading_ops.db import libpq_env
    from trading_ops.policy import load_policy

    policy = load_policy()
    request, rec, conn_id = plan["request"], plan["recovery"], plan["conn_id"]
    repository = backups.repository_from_policy(policy)
    archive_dir = Path(policy.backup.wal_archive_dir)
    base = repository.info("full", rec["base_backup"]["id"])
    started_at = datetime.now(UTC).isoformat()
    switch_started = time.monotonic()
    if rec["target"] == "latest":
        _switch_live_wal(conn_id, archive_dir, policy.backup.archive_wait)
    switch_seconds = time.monotonic() - switch_started
    segment_size = base.manifest["wal_segment_size"]
    # Indexed again now: for `latest`, segments archived since the plan count too.
    files = wal_sources.collect(archive_dir, repository, segment_size)
    identity = bundle_identity(files, policy)
    wal = wal_sources.chain(files, base.manifest["wal_start_segment"], segment_size, identity)
    if wal.missing and not rec["stop_at_target"]:
        raise recovery.RecoveryFailed(f"WAL segment {wal.missing[0]} went missing since the plan was made.")
    instance = recovery.RecoveryInstance(
        Path(rec["instance_dir"]), base.server_major, user=libpq_env(conn_id)["PGUSER"]
    )
    staging = plan["staging_database"]
    target = recovery.parse_time(rec["target_time"]) if rec["stop_at_target"] else None
    goal = rec["target_time"] if rec["stop_at_target"] else f"the end of the WAL ({wal.last})"
    try:
        extracted = instance.prepare(base, files, _segments_to_replay(files, wal, target), target, identity)
        timings = {"switch_seconds": round(switch_seconds, 3), **extracted}
        replay_started = datetime.now(UTC)
        instance.start()
        instance.wait_until_promoted(policy.restore.recovery_timeout, len(rec["segments"]), goal)
        timings["replay_seconds"] = round((datetime.now(UTC) - replay_started).total_seconds(), 3)
        point = {**instance.recovery_point(), "chain_last": wal.last}
        timings["fetch_seconds"] = point["fetch_seconds"]
        log.info("Recovery point: %s", recovery.describe_point(point))
        database.drop_database(conn_id, staging)
        # The live database's encoding, locale and tablespace: the transfer (pg_dump without --create) carries none.
        database.create_database(conn_id, staging, like=request["target_database"])
        try:
            moved = recovery.transfer(instance, request["target_database"], conn_id, staging, jobs=request["jobs"])
            count_started = time.monotonic()
            counts = recovery.row_counts(instance, request["target_database"])
            timings["count_seconds"] = round(time.monotonic() - count_started, 3)
        except Exception:
            database.drop_database(conn_id, staging)
            raise
        timings["transfer_seconds"] = moved["transfer_seconds"]
    finally:
        teardown_started = time.monotonic()
        instance.remove()
    timings["teardown_seconds"] = round(time.monotonic() - teardown_started, 3)
    return {
        "database": staging,
        "restore_started_at": started_at,
        "restore_finished_at": datetime.now(UTC).isoformat(),
        "row_counts": counts,
        "recovery_point": point,
        "timings": timings,
    }
