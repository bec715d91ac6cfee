"""Retention over six simulated weeks (backup times and file times set, no waiting), pins, dry runs, staleness."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from trading_ops.backup import Repository, list_backups
from trading_ops.backup.catalog import staleness
from trading_ops.backup.repository import full_backup_id, incremental_backup_id, isoformat, write_manifest
from trading_ops.backup.retention import RetentionRules, apply_retention, plan_retention
from trading_ops.backup.wal_names import name_of
from trading_ops.policy import load_policy

SEGMENT = 16 * 1024 * 1024
DAY0 = datetime(2026, 9, 20, 1, 0, tzinfo=UTC)  # a Sunday
DAYS = 42


def _add_backup(repository: Repository, kind: str, day: int, *, verified: bool | None = True) -> str:
    """A backup as the DAGs record it, minus the PostgreSQL files: the catalog and retention read manifests."""
    moment = DAY0 + timedelta(days=day)
    backup_id = full_backup_id(moment) if kind == "full" else incremental_backup_id(moment.date())
    with repository.staging(kind, backup_id) as staging:
        (staging / "payload").write_bytes(b"x" * 100)
        write_manifest(
            staging,
            {
                "id": backup_id,
                "type": kind,
                "start_time": isoformat(moment),
                "stop_time": isoformat(moment + timedelta(minutes=5)),
                "wal_start_segment": name_of(1, day + 1, SEGMENT),
                "wal_segment_size": SEGMENT,
                "files": [{"role": "payload", "path": "payload", "size": 100, "sha256": "0" * 64, "raw_size": 100}],
            },
        )
    if verified is not None:
        repository.record_verification(repository.info(kind, backup_id), verified, [], None)
    return backup_id


def _archive_segment(archive, day: int) -> str:
    """Segment number day+1 was archived at 00:30 on that day."""
    name = name_of(1, day + 1, SEGMENT)
    path = archive / name
    path.write_bytes(b"")
    stamp = (DAY0 + timedelta(days=day, minutes=-30)).timestamp()
    os.utime(path, (stamp, stamp))
    return name


def _simulate(tmp_path, failing_fulls: set[int], pinned_incremental: int | None = None):
    repository = Repository(tmp_path / "repo")
    archive = tmp_path / "archive"
    archive.mkdir()
    rules = RetentionRules.from_policy(load_policy().backup)
    for day in range(DAYS):
        _archive_segment(archive, day)
        if day % 7 == 0:
            _add_backup(repository, "full", day, verified=day not in failing_fulls)
        incremental = _add_backup(repository, "incremental", day)
        if day == pinned_incremental:
            repository.pin(repository.info("incremental", incremental), "kept for the audit")
        now = DAY0 + timedelta(days=day, hours=1)
        apply_retention(plan_retention(repository, archive, rules, now), dry_run=False)
        # Every day of the six weeks, a verified full backup survives.
        assert any(backup.verified for backup in list_backups(repository, "full")), f"day {day}"
    return repository, archive


def _days(repository, kind) -> list[int]:
    return sorted((backup.start_time - DAY0).days for backup in list_backups(repository, kind))


def _wal_days(archive) -> list[int]:
    return sorted(int(path.name[16:], 16) - 1 for path in archive.iterdir())


def test_six_weeks_keep_exactly_what_the_policy_says(tmp_path):
    policy = load_policy().backup
    assert (policy.full.retention, policy.incremental.retention, policy.transaction_logs.retention) == (
        timedelta(weeks=4),
        timedelta(days=7),
        timedelta(days=30),
    )
    repository, archive = _simulate(tmp_path, failing_fulls=set(), pinned_incremental=3)
    # Day 41, 02:00: fulls of days 14-35 are at most 4 weeks old; day 0 and 7 are gone.
    assert _days(repository, "full") == [14, 21, 28, 35]
    # Incrementals of the last 7 days (day 34's is 7 days and 55 minutes old), and the pinned one of day 3.
    assert _days(repository, "incremental") == [3, *range(35, 42)]
    # WAL of the last 30 days (day 11's segment is 30 days 1.5 hours old); older WAL is not needed by any kept
    # base backup: the oldest retained full starts at day 14.
    assert _wal_days(archive) == list(range(12, 42))


def test_the_newest_verified_full_and_the_wal_it_needs_are_never_deleted(tmp_path):
    """Every full after the first fails verification: the first stays, and with it all WAL from its start."""
    repository, archive = _simulate(tmp_path, failing_fulls={7, 14, 21, 28, 35})
    fulls = list_backups(repository, "full")
    assert _days(repository, "full") == [0, 14, 21, 28, 35]
    assert [backup.id for backup in fulls if backup.verified] == [full_backup_id(DAY0)]
    assert _wal_days(archive) == list(range(DAYS)), "WAL older than 30 days stays: the kept base backup needs it"


def test_dry_run_only_logs_the_plan(tmp_path, caplog):
    repository, archive = _simulate(tmp_path, failing_fulls=set())
    before = (_days(repository, "full"), _days(repository, "incremental"), _wal_days(archive))
    later = DAY0 + timedelta(days=DAYS + 10)
    rules = RetentionRules.from_policy(load_policy().backup)
    with caplog.at_level(logging.INFO, logger="trading_ops.backup.retention"):
        plan = apply_retention(plan_retention(repository, archive, rules, later), dry_run=True)
    assert (_days(repository, "full"), _days(repository, "incremental"), _wal_days(archive)) == before
    deleted = {decision.name for decision in plan.delete}
    assert full_backup_id(DAY0 + timedelta(days=14)) in deleted
    assert full_backup_id(DAY0 + timedelta(days=35)) not in deleted, "the newest verified full"
    assert f"DRY RUN, would delete full {full_backup_id(DAY0 + timedelta(days=14))}: older than 28 days" in caplog.text


def test_abandoned_partial_backups_are_removed_after_a_day(tmp_path):
    repository = Repository(tmp_path / "repo")
    now = datetime(2026, 11, 1, tzinfo=UTC)
    old = repository.type_dir("full") / ".partial-20261029T010000Z"
    recent = repository.type_dir("full") / ".partial-20261031T230000Z"
    for path, age in ((old, timedelta(days=2)), (recent, timedelta(hours=1))):
        path.mkdir(parents=True)
        stamp = (now - age).timestamp()
        os.utime(path, (stamp, stamp))
    plan = plan_retention(repository, None, RetentionRules.from_policy(load_policy().backup), now)
    assert [decision.name for decision in plan.delete] == ["full/.partial-20261029T010000Z"]
    apply_retention(plan, dry_run=False)
    assert repository.partials("full") == [recent]


@pytest.mark.parametrize(
    ("age", "stale"),
    [(timedelta(days=7, hours=23), False), (timedelta(days=8, hours=1), True)],
)
def test_staleness_of_the_newest_verified_full(tmp_path, age, stale):
    repository = Repository(tmp_path / "repo")
    _add_backup(repository, "full", 0)
    _add_backup(repository, "full", 5, verified=False)
    now = DAY0 + timedelta(minutes=5) + age
    finding = staleness(repository, "full", now, timedelta(days=8))
    assert finding.newest.id == full_backup_id(DAY0) and finding.stale is stale
    assert ("older than the limit" in finding.sentence()) is stale
