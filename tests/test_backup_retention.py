"""Retention over six simulated weeks (backup times and file times set, no waiting), pins, dry runs, staleness."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.retention import DAY0, add_backup, archive_segment, backup_days, wal_days
from trading_ops.backup import Repository, list_backups
from trading_ops.backup.catalog import staleness
from trading_ops.backup.repository import full_backup_id
from trading_ops.backup.retention import RetentionRules, apply_retention, plan_retention
from trading_ops.policy import load_policy

DAYS = 42


def _simulate(tmp_path, failing_fulls: set[int], pinned_incremental: int | None = None):
    repository = Repository(tmp_path / "repo")
    archive = tmp_path / "archive"
    archive.mkdir()
    rules = RetentionRules.from_policy(load_policy().backup)
    for day in range(DAYS):
        archive_segment(archive, day)
        if day % 7 == 0:
            add_backup(repository, "full", day, verified=day not in failing_fulls)
        incremental = add_backup(repository, "incremental", day)
        if day == pinned_incremental:
            repository.pin(repository.info("incremental", incremental), "kept for the audit")
        now = DAY0 + timedelta(days=day, hours=1)
        apply_retention(plan_retention(repository, archive, rules, now), dry_run=False)
        # Every day of the six weeks, a verified full backup survives.
        assert any(backup.verified for backup in list_backups(repository, "full")), f"day {day}"
    return repository, archive


def test_six_weeks_keep_exactly_what_the_policy_says(tmp_path):
    policy = load_policy().backup
    assert (policy.full.retention, policy.incremental.retention, policy.transaction_logs.retention) == (
        timedelta(weeks=4),
        timedelta(days=7),
        timedelta(days=30),
    )
    repository, archive = _simulate(tmp_path, failing_fulls=set(), pinned_incremental=3)
    # Day 41, 02:00: fulls of days 14-35 are at most 4 weeks old; day 0 and 7 are gone.
    assert backup_days(repository, "full") == [14, 21, 28, 35]
    # Incrementals of the last 7 days (day 34's is 7 days and 55 minutes old), and the pinned one of day 3.
    assert backup_days(repository, "incremental") == [3, *range(35, 42)]
    # WAL of the last 30 days (day 11's segment is 30 days 1.5 hours old); older WAL is not needed by any kept
    # base backup: the oldest retained full starts at day 14.
    assert wal_days(archive) == list(range(12, 42))


def test_the_newest_verified_full_and_the_wal_it_needs_are_never_deleted(tmp_path):
    """Every full after the first fails verification: the first stays, and with it all WAL from its start."""
    repository, archive = _simulate(tmp_path, failing_fulls={7, 14, 21, 28, 35})
    fulls = list_backups(repository, "full")
    assert backup_days(repository, "full") == [0, 14, 21, 28, 35]
    assert [backup.id for backup in fulls if backup.verified] == [full_backup_id(DAY0)]
    assert wal_days(archive) == list(range(DAYS)), "WAL older than 30 days stays: the kept base backup needs it"


def test_dry_run_only_logs_the_plan(tmp_path, caplog):
    repository, archive = _simulate(tmp_path, failing_fulls=set())
    before = (backup_days(repository, "full"), backup_days(repository, "incremental"), wal_days(archive))
    later = DAY0 + timedelta(days=DAYS + 10)
    rules = RetentionRules.from_policy(load_policy().backup)
    with caplog.at_level(logging.INFO, logger="trading_ops.backup.retention"):
        plan = apply_retention(plan_retention(repository, archive, rules, later), dry_run=True)
    assert (backup_days(repository, "full"), backup_days(repository, "incremental"), wal_days(archive)) == before
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
    add_backup(repository, "full", 0)
    add_backup(repository, "full", 5, verified=False)
    now = DAY0 + timedelta(minutes=5) + age
    finding = staleness(repository, "full", now, timedelta(days=8))
    assert finding.newest.id == full_backup_id(DAY0) and finding.stale is stale
    assert ("older than the limit" in finding.sentence()) is stale
