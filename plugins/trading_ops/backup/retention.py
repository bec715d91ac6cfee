"""Retention: what to delete, planned first and logged, then applied (or only printed on a dry run).

Rules, from the policy: full backups are kept `backup.full.retention` (4w), incremental WAL bundles
`backup.incremental.retention` (7d), archived WAL `backup.transaction_logs.retention` (30d). Never deleted: a
pinned backup, the newest verified full backup (whatever its age), the newest full backup whose restore drill passed
(db_restore_drill: the last one proven to restore), any archived WAL from the start segment of the
oldest retained full backup on (its base backup needs it to be restored and rolled forward), timeline history
files. Abandoned `.partial-` directories of killed runs (on object storage: backup prefixes never published with
manifest.sha256) go after `backup.abandoned_partial_after`, judged by their newest file's own timestamp.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trading_ops.backup.catalog import list_backups
from trading_ops.backup.repository import Repository, isoformat, modified_time, remove_tree
from trading_ops.backup.wal_names import SEGMENT_RE, segment_number

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionRules:
    full: timedelta
    incremental: timedelta
    wal: timedelta
    abandoned_partial_after: timedelta

    @classmethod
    def from_policy(cls, backup_policy) -> RetentionRules:
        return cls(
            full=backup_policy.full.retention,
            incremental=backup_policy.incremental.retention,
            wal=backup_policy.transaction_logs.retention,
            abandoned_partial_after=backup_policy.abandoned_partial_after,
        )


@dataclass(frozen=True)
class Decision:
    kind: str
    name: str
    reason: str
    path: object = field(repr=False, compare=False)


@dataclass
class RetentionPlan:
    now: datetime
    delete: list[Decision]
    keep: list[Decision]

    def lines(self) -> list[str]:
        return [f"delete {d.kind} {d.name}: {d.reason}" for d in self.delete] + [
            f"keep {d.kind} {d.name}: {d.reason}" for d in self.keep if not d.kind.endswith("wal")
        ]

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for decision in self.delete:
            counts[decision.kind] = counts.get(decision.kind, 0) + 1
        return {
            "now": isoformat(self.now),
            "deleted": counts,
            "delete": [f"{d.kind} {d.name}" for d in self.delete],
            "kept_backups": [f"{d.kind} {d.name}" for d in self.keep if not d.kind.endswith("wal")],
        }


def plan_retention(
    repository: Repository,
    archive_dir: Path | None,
    rules: RetentionRules,
    now: datetime,
    *,
    last_drilled: str | None = None,
) -> RetentionPlan:
    """`last_drilled`: the id of the newest full backup whose restore drill passed (`newest_drilled_backup`)."""
    delete: list[Decision] = []
    keep: list[Decision] = []

    fulls = list_backups(repository, "full")
    newest_verified = next((backup for backup in fulls if backup.verified), None)
    retained_fulls = []
    for backup in fulls:
        age = now - backup.stop_time
        if backup.pinned:
            reason = "pinned"
        elif newest_verified is not None and backup.id == newest_verified.id:
            reason = "newest verified full backup"
        elif backup.id == last_drilled:
            reason = "newest full backup whose restore drill passed"
        elif age <= rules.full:
            reason = f"younger than {rules.full.days} days"
        else:
            delete.append(Decision("full", backup.id, f"older than {rules.full.days} days", backup.path))
            continue
        retained_fulls.append(backup)
        keep.append(Decision("full", backup.id, reason, backup.path))

    for backup in list_backups(repository, "incremental"):
        if backup.pinned:
            keep.append(Decision("incremental", backup.id, "pinned", backup.path))
        elif now - backup.stop_time <= rules.incremental:
            keep.append(Decision("incremental", backup.id, f"younger than {rules.incremental.days} days", backup.path))
        else:
            delete.append(Decision("incremental", backup.id, f"older than {rules.incremental.days} days", backup.path))

    for kind in ("full", "incremental"):
        for partial in repository.partials(kind):
            # On object storage: the newest object's own timestamp (an upload still running keeps it young).
            modified = modified_time(partial)
            if modified is not None and now - modified > rules.abandoned_partial_after:
                delete.append(Decision("partial", f"{kind}/{partial.name}", "abandoned by a killed run", partial))

    if archive_dir is not None and archive_dir.exists():
        delete += _plan_wal(archive_dir, retained_fulls, rules, now, keep)
    delete += _plan_shipped_wal(repository, retained_fulls, rules, now, keep)
    return RetentionPlan(now, delete, keep)


def newest_drilled_backup(policy) -> str | None:
    """The backup of the newest passed restore drill, from the ops state database. An unreachable store fails the
    retention (retried, alerted) rather than deleting without knowing which backup is proven to restore."""
    from trading_ops.restore.drill import newest_passed_drill

    newest = newest_passed_drill(policy.alerting.state_conn_id)
    return newest["backup_id"] if newest else None


def _needed_from(retained_fulls) -> tuple[int | None, int | None]:
    """(the first segment number a retained base backup needs, the segment size), or Nones without one."""
    needed_from: int | None = None
    for backup in retained_fulls:
        number = segment_number(backup.manifest["wal_start_segment"], backup.manifest["wal_segment_size"])
        needed_from = number if needed_from is None else min(needed_from, number)
    segment_size = retained_fulls[0].manifest["wal_segment_size"] if retained_fulls else None
    return needed_from, segment_size


def _plan_shipped_wal(repository: Repository, retained_fulls, rules: RetentionRules, now: datetime, keep: list):
    """The repository's shipped WAL (`wal_ship`): the archive's rule, by each object's own timestamp; a file goes
    with its record, the record first (so an interrupted deletion never leaves a record without its file)."""
    from trading_ops.backup.wal_ship import wal_listing

    needed_from, segment_size = _needed_from(retained_fulls)
    listing = wal_listing(repository)
    objects = {name: path for name, (path, _) in listing.items()}
    deletions = []
    for name in sorted(objects):
        if not name.endswith(".json") or not SEGMENT_RE.match(name[:24]):
            continue
        record, modified = listing[name]
        if now - modified <= rules.wal:
            continue
        segment = name.removesuffix(".json")
        if needed_from is not None and segment_number(segment, segment_size) >= needed_from:
            keep.append(Decision("shipped wal", segment, "needed by a retained base backup", record))
            continue
        reason = f"older than {rules.wal.days} days"
        deletions.append(Decision("shipped wal", segment, reason, record))
        deletions += [
            Decision("shipped wal", other, reason, objects[other])
            for other in sorted(objects)
            if other.startswith(segment) and other != name
        ]
    return deletions


def _plan_wal(archive_dir: Path, retained_fulls, rules: RetentionRules, now: datetime, keep: list) -> list[Decision]:
    """Archived WAL older than the retention, except what a retained base backup needs to be rolled forward."""
    needed_from, segment_size = _needed_from(retained_fulls)
    deletions = []
    for entry in os.scandir(archive_dir):
        if not entry.is_file():
            continue
        name = entry.name
        age = now - datetime.fromtimestamp(entry.stat().st_mtime, UTC)
        if name.startswith("."):
            # A copy that archive_wal.sh never finished (the server died mid-copy).
            if age > rules.abandoned_partial_after:
                deletions.append(Decision("wal", name, "unfinished archive copy", Path(entry.path)))
            continue
        segment = name[:24]
        if not SEGMENT_RE.match(segment) or age <= rules.wal:
            continue
        if needed_from is not None and segment_number(segment, segment_size) >= needed_from:
            keep.append(Decision("wal", name, "needed by a retained base backup", Path(entry.path)))
            continue
        deletions.append(Decision("wal", name, f"older than {rules.wal.days} days", Path(entry.path)))
    return sorted(deletions, key=lambda decision: decision.name)


def apply_retention(plan: RetentionPlan, *, dry_run: bool) -> RetentionPlan:
    """Log the plan; delete unless `dry_run`. Backups go before the WAL they might still need."""
    prefix = "DRY RUN, would " if dry_run else ""
    for line in plan.lines():
        log.info("%s%s", prefix, line)
    if not plan.delete:
        log.info("Retention: nothing to delete.")
    if dry_run:
        return plan
    for decision in plan.delete:
        if decision.kind == "wal":
            Path(decision.path).unlink(missing_ok=True)
        elif decision.kind == "shipped wal":
            decision.path.unlink(missing_ok=True)
        else:
            remove_tree(decision.path)
    log.info("Retention deleted %d item(s).", len(plan.delete))
    return plan
