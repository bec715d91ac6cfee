"""What the tasks of db_backup_full and db_backup_wal do, as plain functions of the policy and the run's time.

`moment` is the run's logical time (`data_interval_end`, or `run_after` for a manual run without a logical
date): backup ids, the incremental's date, retention cutoffs and staleness are all taken from it, never from the
clock, so a retried task acts exactly like the first try.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from trading_ops.backup.access import verify_backup
from trading_ops.backup.catalog import Staleness, staleness
from trading_ops.backup.full import take_full_backup
from trading_ops.backup.repository import (
    BackupType,
    full_backup_id,
    incremental_backup_id,
    isoformat,
    repository_from_policy,
)
from trading_ops.backup.retention import RetentionRules, apply_retention, plan_retention
from trading_ops.backup.wal import (
    WalArchiveError,
    archiver_status,
    bundle_segments,
    bundle_start,
    check_continuity,
    newest_full_with_base,
    segment_size_of,
    switch_and_wait,
)
from trading_ops.policy import load_policy
from trading_ops.runtime import run_time
from trading_ops.streams import Compression, EncryptionKey

log = logging.getLogger(__name__)


def run_moment(context) -> datetime:
    """The run's time in UTC, which names the backup."""
    return run_time(context).astimezone(UTC)


def _settings():
    policy = load_policy()
    backup = policy.backup
    return (
        policy,
        repository_from_policy(policy),
        Compression(backup.compression, backup.compression_level),
        Path(backup.wal_archive_dir),
    )


def _new_backup_key(policy) -> EncryptionKey | None:
    """The key new backups are encrypted with, when the policy asks for encryption."""
    encryption = policy.backup.encryption
    return EncryptionKey.from_connection(encryption.key_conn_id) if encryption.enabled else None


def full_backup(moment: datetime) -> str:
    policy, repository, compression, _ = _settings()
    key = _new_backup_key(policy)
    backup_id = full_backup_id(moment)
    backup = take_full_backup(repository, backup_id, conn_id=policy.backup.conn_id, compression=compression, key=key)
    log.info("Full backup %s in %s: %s", backup.id, backup.path, backup.summary())
    return backup.id


def verify(backup_type: BackupType, backup_id: str) -> dict:
    """Deep verification; an encrypted backup is read with the key its manifest names."""
    _, repository, _, archive_dir = _settings()
    backup = repository.info(backup_type, backup_id)
    backup = verify_backup(repository, backup, wal_archive_dir=archive_dir if archive_dir.exists() else None)
    log.info("Backup %s verified: %s", backup.id, backup.summary())
    return backup.summary()


def retention(moment: datetime, *, dry_run: bool) -> dict:
    policy, repository, _, archive_dir = _settings()
    plan = plan_retention(repository, archive_dir, RetentionRules.from_policy(policy.backup), moment)
    return apply_retention(plan, dry_run=dry_run).summary()


def freshness(moment: datetime, dag_id: str, task_id: str) -> list[str]:
    """Alert for each backup type whose newest good backup is older than the policy allows; returns the findings."""
    from trading_ops.alerting import Alert, send_alert

    policy, repository, *_ = _settings()
    findings: list[Staleness] = [
        staleness(repository, "full", moment, policy.backup.stale_after.full),
        staleness(repository, "incremental", moment, policy.backup.stale_after.incremental),
    ]
    for finding in findings:
        log.info("%s", finding.sentence())
        if finding.stale:
            send_alert(
                Alert(
                    severity=policy.level_for_dag(dag_id),
                    source=f"{dag_id}.{task_id}",
                    summary=finding.sentence(),
                    details={
                        "repository": str(repository.root),
                        "newest": finding.newest.id if finding.newest else None,
                        "limit": str(finding.limit),
                    },
                    dedup_key=f"trading_db-backup-stale-{finding.backup_type}",
                )
            )
    return [finding.sentence() for finding in findings]


def switch_wal() -> dict:
    """Close the current segment, wait for it in the archive, and require an archiver that is not failing."""
    from trading_ops.db import connection

    policy, _, _, archive_dir = _settings()
    with connection(policy.backup.conn_id, autocommit=True) as conn:
        before = archiver_status(conn)
        if before.archive_mode == "off":
            raise WalArchiveError("WAL archiving is off on the server: set archive_mode=on and archive_command.")
        # The recovery point objective: how long committed work has existed only on the server's disk.
        rpo_seconds = (
            round((datetime.now(UTC) - before.last_archived_time).total_seconds(), 3)
            if before.last_archived_time
            else None
        )
        last = switch_and_wait(conn, archive_dir, policy.backup.archive_wait)
        after = archiver_status(conn)
        segment_size = segment_size_of(conn)
    if after.failing:
        raise WalArchiveError(
            f"archive_command has been failing since {isoformat(after.last_failed_time)} on {after.last_failed_wal}."
        )
    log.info("Segment %s archived; RPO before the switch: %s s; archiver: %s", last, rpo_seconds, after.as_dict())
    return {"last_segment": last, "rpo_seconds": rpo_seconds, "archiver": after.as_dict(), "segment_size": segment_size}


def wal_continuity(switched: dict) -> dict:
    """No segment missing from the newest base backup's start to the segment just switched (timeline-aware)."""
    _, repository, _, archive_dir = _settings()
    segment_size, last = switched["segment_size"], switched["last_segment"]
    full = newest_full_with_base(repository)
    first = full.manifest["wal_start_segment"] if full else bundle_start(repository, archive_dir, segment_size)
    checked = check_continuity(archive_dir, first, last, segment_size) if first else 0
    log.info("The WAL archive is continuous from %s to %s (%d segments).", first, last, checked)
    return {"first": first, "last": last, "segments_checked": checked, "since_full": full.id if full else None}


def wal_bundle(moment: datetime, switched: dict) -> str:
    """Copy the segments archived since the previous bundle into incremental/<date in the policy's timezone>/."""
    policy, repository, compression, archive_dir = _settings()
    key = _new_backup_key(policy)
    bundle_id = incremental_backup_id(moment.astimezone(ZoneInfo(policy.timezone)).date())
    segment_size = switched["segment_size"]
    bundle = bundle_segments(
        repository,
        bundle_id,
        archive_dir,
        first=bundle_start(repository, archive_dir, segment_size),
        last=switched["last_segment"],
        segment_size=segment_size,
        compression=compression,
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
