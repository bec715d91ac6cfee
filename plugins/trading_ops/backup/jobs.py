"""What the tasks of db_backup_full and db_backup_wal do, as plain functions of the policy, the run's time and
`dry_run`.

`moment` is the run's time (`runtime.run_time`): backup ids, the incremental's date, retention cutoffs and
staleness are all taken from it, never from the clock, so a retried task acts exactly like the first try.

Every run first runs the read-only checks of `preflight` and logs its plan. A dry run stops there: it prints the
full plan (backup id, repository, the files it would write, then the retention plan) and changes nothing: no
backup, no bundle, no pg_switch_wal(), no deletion, no alert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from trading_ops.backup import preflight
from trading_ops.backup.access import BackupCorrupt, verify_backup
from trading_ops.backup.catalog import Staleness, staleness
from trading_ops.backup.full import BackupError, stored_name, take_full_backup
from trading_ops.backup.repository import (
    MANIFEST,
    MANIFEST_DIGEST,
    PARTIAL_PREFIX,
    BackupType,
    Repository,
    full_backup_id,
    incremental_backup_id,
    repository_from_policy,
)
from trading_ops.backup.retention import RetentionRules, apply_retention, newest_drilled_backup, plan_retention
from trading_ops.backup.wal import (
    archived_names,
    archived_segments,
    archiver_status,
    bundle_segments,
    bundle_start,
    check_continuity,
    files_to_bundle,
    newest_full_with_base,
    segment_size_of,
    switch_and_wait,
)
from trading_ops.backup.wal_names import SEGMENT_RE
from trading_ops.backup.wal_ship import ship_wal, shipped_names
from trading_ops.policy import Policy, load_policy
from trading_ops.streams import Compression

log = logging.getLogger(__name__)
DRY_RUN = "DRY RUN, nothing is written: "


class BackupVerificationFailed(BackupError):
    """The backup this run just took does not read back: an operational failure that alerts at the DAG's level
    (nobody asked for this backup by name, so it is not a user error)."""


@dataclass(frozen=True)
class Settings:
    policy: Policy
    repository: Repository
    compression: Compression
    archive_dir: Path


def settings() -> Settings:
    policy = load_policy()
    backup = policy.backup
    return Settings(
        policy,
        repository_from_policy(policy),
        Compression(backup.compression, backup.compression_level),
        Path(backup.wal_archive_dir),
    )


def _log_plan(title: str, checks: list[str], writes: list[str], *, dry_run: bool) -> None:
    log.info("%s%s", DRY_RUN if dry_run else "", title)
    for line in [*(f"check passed: {check}" for check in checks), *writes]:
        log.info("  %s", line)


def _writes(repository: Repository, kind: BackupType, backup_id: str, names: list[str]) -> list[str]:
    """What writing backup `backup_id` with stored files `names` does, as plan lines."""
    if backup_id in repository.ids(kind):
        return [f"writes nothing: {backup_id} exists already and is returned unchanged"]
    if not repository.local:
        final = repository.backup_dir(kind, backup_id)
        return [
            *(f"uploads {final / name}" for name in [*names, MANIFEST]),
            f"then uploads {final / MANIFEST_DIGEST}, which publishes the backup (object storage has no rename)",
        ]
    partial = repository.type_dir(kind) / f"{PARTIAL_PREFIX}{backup_id}"
    return [
        *(f"writes {partial / name}" for name in [*names, MANIFEST, MANIFEST_DIGEST]),
        f"then renames {partial} to {repository.backup_dir(kind, backup_id)}",
    ]


def full_backup(moment: datetime, *, dry_run: bool = False) -> str:
    """Check, plan and (unless `dry_run`) take the full backup the run's time names; returns its id."""
    from trading_ops.db import libpq_env

    s = settings()
    conn_id = s.policy.backup.conn_id
    server = preflight.read_server(conn_id)
    encryption = s.policy.backup.encryption
    key, key_check = preflight.check_encryption_key(encryption.enabled, encryption.key_conn_id)
    checks = [
        preflight.check_connection(server, conn_id),
        preflight.check_base_backup_rights(server, conn_id),
        preflight.check_archiving(server.archiver),
        preflight.check_repository(s.repository),
        key_check,
        preflight.check_client("pg_dump", server.server_version_num),
        preflight.check_client("pg_basebackup", server.server_version_num),
    ]
    backup_id = full_backup_id(moment)
    database = libpq_env(conn_id)["PGDATABASE"]
    names = [stored_name(f"{database}.dump", s.compression, key), stored_name("base.tar", s.compression, key)]
    writes = _writes(s.repository, "full", backup_id, names)
    _log_plan(f"Full backup {backup_id} of {database} into {s.repository.root}", checks, writes, dry_run=dry_run)
    if dry_run:
        return backup_id
    backup = take_full_backup(s.repository, backup_id, conn_id=conn_id, compression=s.compression, key=key)
    log.info("Full backup %s in %s: %s", backup.id, backup.path, backup.summary())
    return backup.id


def verify(backup_type: BackupType, backup_id: str) -> dict:
    """Deep verification of the backup this run took; an encrypted backup is read with the key its manifest names."""
    s = settings()
    backup = s.repository.info(backup_type, backup_id)
    try:
        backup = verify_backup(s.repository, backup, wal_archive_dir=s.archive_dir if s.archive_dir.exists() else None)
    except BackupCorrupt as damage:
        raise BackupVerificationFailed(str(damage)) from damage
    log.info("Backup %s verified: %s", backup.id, backup.summary())
    return backup.summary()


def retention(moment: datetime, *, dry_run: bool) -> dict:
    s = settings()
    plan = plan_retention(
        s.repository,
        s.archive_dir,
        RetentionRules.from_policy(s.policy.backup),
        moment,
        last_drilled=newest_drilled_backup(s.policy),
    )
    return {**apply_retention(plan, dry_run=dry_run).summary(), "dry_run": dry_run}


def freshness(moment: datetime, dag_id: str, task_id: str, *, dry_run: bool = False) -> list[str]:
    """Alert for each backup type whose newest good backup is older than the policy allows (a dry run only says
    so); returns the findings."""
    from trading_ops.alerting import Alert, send_alert

    s = settings()
    findings: list[Staleness] = [
        staleness(s.repository, "full", moment, s.policy.backup.stale_after.full),
        staleness(s.repository, "incremental", moment, s.policy.backup.stale_after.incremental),
    ]
    for finding in findings:
        log.info("%s", finding.sentence())
        if not finding.stale:
            continue
        if dry_run:
            log.info("DRY RUN, no alert sent: a real run alerts that %s", finding.sentence())
            continue
        send_alert(
            Alert(
                severity=s.policy.level_for_dag(dag_id),
                source=f"{dag_id}.{task_id}",
                summary=finding.sentence(),
                details={
                    "repository": str(s.repository.root),
                    "newest": finding.newest.id if finding.newest else None,
                    "limit": str(finding.limit),
                },
                dedup_key=f"trading_db-backup-stale-{finding.backup_type}",
            )
        )
    return [finding.sentence() for finding in findings]


def switch_wal(*, dry_run: bool = False) -> dict:
    """Close the current segment and wait for it in the archive (a dry run only checks, and reports the newest
    archived segment instead); requires WAL archiving on and not failing."""
    from trading_ops.db import connection

    s = settings()
    conn_id = s.policy.backup.conn_id
    server = preflight.read_server(conn_id)
    checks = [
        preflight.check_connection(server, conn_id),
        preflight.check_switch_wal_right(server, conn_id),
        preflight.check_archiving(server.archiver),
        preflight.check_writable_directory(s.archive_dir, "WAL archive", must_exist=True),
    ]
    before = server.archiver
    # The recovery point objective: how long committed work has existed only on the server's disk.
    rpo_seconds = (
        round((datetime.now(UTC) - before.last_archived_time).total_seconds(), 3) if before.last_archived_time else None
    )
    newest_age = _newest_segment_age(s.archive_dir)
    rpo_target = s.policy.backup.rpo.target.total_seconds()
    if newest_age is None:
        log.warning("RPO: the WAL archive %s holds no segment at all", s.archive_dir)
    else:
        log.log(
            logging.INFO if newest_age <= rpo_target else logging.WARNING,
            "RPO: the newest archived segment is %.0f s old (target %.0f s, policy backup.rpo.target): %s",
            newest_age,
            rpo_target,
            "within the target" if newest_age <= rpo_target else "OVER the target (is archive_timeout set?)",
        )
    wait = s.policy.backup.archive_wait
    _log_plan(
        f"Switch the WAL segment of {conn_id}; wait up to {wait} for it in {s.archive_dir}", checks, [], dry_run=dry_run
    )
    with connection(conn_id, autocommit=True) as conn:
        segment_size = segment_size_of(conn)
        if dry_run:
            # pg_stat_archiver's last file may be a backup label or a history file: the archive says which
            # segment is newest.
            last, after = (archived_segments(s.archive_dir, segment_size) or [None])[-1], before
        else:
            last = switch_and_wait(conn, s.archive_dir, s.policy.backup.archive_wait)
            after = archiver_status(conn)
    # Failing since the switch: the segment got through, the next ones may not.
    preflight.check_archiving(after)
    log.info("Segment %s archived; RPO before the switch: %s s; archiver: %s", last, rpo_seconds, after.as_dict())
    return {
        "last_segment": last,
        "rpo_seconds": rpo_seconds,
        "newest_segment_age_seconds": newest_age,
        "rpo_target_seconds": rpo_target,
        "archiver": after.as_dict(),
        "segment_size": segment_size,
        "dry_run": dry_run,
    }


def _newest_segment_age(archive_dir: Path) -> float | None:
    """Seconds since the newest segment reached the archive (None: there is none), before this run switches."""
    import os

    times = [
        entry.stat().st_mtime for entry in os.scandir(archive_dir) if entry.is_file() and SEGMENT_RE.match(entry.name)
    ]
    return round(datetime.now(UTC).timestamp() - max(times), 3) if times else None


def wal_continuity(switched: dict) -> dict:
    """No segment missing from the newest base backup's start to the last segment switched (timeline-aware)."""
    s = settings()
    segment_size, last = switched["segment_size"], switched["last_segment"]
    full = newest_full_with_base(s.repository)
    first = full.manifest["wal_start_segment"] if full else bundle_start(s.repository, s.archive_dir, segment_size)
    # A segment the local archive lost (or never had) counts when it was shipped into the repository.
    shipped = frozenset(shipped_names(s.repository))
    checked = check_continuity(s.archive_dir, first, last, segment_size, shipped) if first and last else 0
    log.info("The WAL archive is continuous from %s to %s (%d segments).", first, last, checked)
    return {"first": first, "last": last, "segments_checked": checked, "since_full": full.id if full else None}


def wal_bundle(moment: datetime, switched: dict, *, dry_run: bool = False) -> str:
    """Copy the segments archived since the previous bundle into incremental/<date in the policy's timezone>/."""
    s = settings()
    encryption = s.policy.backup.encryption
    key, key_check = preflight.check_encryption_key(encryption.enabled, encryption.key_conn_id)
    bundle_id = incremental_backup_id(moment.astimezone(ZoneInfo(s.policy.timezone)).date())
    segment_size, last = switched["segment_size"], switched["last_segment"]
    first = bundle_start(s.repository, s.archive_dir, segment_size)
    histories, segments = (
        files_to_bundle(s.archive_dir, first=first, last=last, segment_size=segment_size) if last else ([], [])
    )
    span = f"{segments[0]} .. {segments[-1]}" if segments else "no segment"
    checks = [
        preflight.check_repository(s.repository),
        key_check,
        f"{len(segments)} archived segment(s) to bundle ({span}) and {len(histories)} history file(s)",
    ]
    names = [f"wal/{stored_name(name, s.compression, key)}" for name in [*histories, *segments]]
    writes = _writes(s.repository, "incremental", bundle_id, names)
    _log_plan(f"WAL bundle {bundle_id} into {s.repository.root}", checks, writes, dry_run=dry_run)
    if dry_run:
        return bundle_id
    bundle = bundle_segments(
        s.repository,
        bundle_id,
        s.archive_dir,
        first=first,
        last=last,
        segment_size=segment_size,
        compression=s.compression,
        key=key,
        extra={"rpo_seconds": switched["rpo_seconds"], "archiver": switched["archiver"]},
    )
    manifest = bundle.manifest
    log.info(
        "WAL bundle %s holds %s .. %s: %s",
        bundle.id,
        manifest["first_segment"],
        manifest["last_segment"],
        bundle.summary(),
    )
    return bundle.id


def wal_ship(*, dry_run: bool = False) -> dict:
    """Copy the archive's WAL files the object-storage repository lacks into its `wal/` (`wal_ship`); reports the
    off-host delay (archived to shipped) of each, against `backup.wal_ship_within`."""
    s = settings()
    within = s.policy.backup.wal_ship_within
    if s.repository.local:
        log.info("The repository %s is a local directory: nothing leaves the host, nothing to ship.", s.repository.root)
        return {"shipped": [], "skipped": "local repository", "dry_run": dry_run}
    encryption = s.policy.backup.encryption
    key, key_check = preflight.check_encryption_key(encryption.enabled, encryption.key_conn_id)
    checks = [preflight.check_repository(s.repository), key_check]
    _log_plan(f"Ship the WAL of {s.archive_dir} into {s.repository.root}/wal", checks, [], dry_run=dry_run)
    if dry_run:
        pending = sorted(archived_names(s.archive_dir) - shipped_names(s.repository))
        log.info("DRY RUN, would ship %d WAL file(s): %s", len(pending), ", ".join(pending[:5]))
        return {"shipped": [], "pending": pending, "dry_run": True}
    shipped = ship_wal(s.repository, s.archive_dir, compression=s.compression, key=key)
    now = datetime.now(UTC)
    delays = {name: (now - _archived_at(s.archive_dir / name)).total_seconds() for name in shipped}
    worst = max(delays.values(), default=0.0)
    log.log(
        logging.INFO if worst <= within.total_seconds() else logging.WARNING,
        "Shipped %d WAL file(s); the longest off-host delay was %.1f s (backup.wal_ship_within %s)%s",
        len(shipped),
        worst,
        within,
        "" if worst <= within.total_seconds() else ": OVER the limit (a first run ships the backlog)",
    )
    return {"shipped": shipped, "worst_delay_seconds": round(worst, 3), "dry_run": False}


def _archived_at(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)
