"""Freshness in one place: system_health reads the real backup repository and WAL archive every run; a stale backup
alerts once and resolves once a fresh one exists, whatever the backup DAGs do."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg

from tests.support.monitoring import healthy_metrics
from trading_ops.backup import Repository, list_backups, take_full_backup, verify_backup
from trading_ops.backup.repository import isoformat, write_manifest
from trading_ops.monitoring import collect, state
from trading_ops.policy import OFFHOST_LAG_METRIC, load_policy

RUN_URL = "http://127.0.0.1:8080/dags/system_health/runs/manual"


def evaluate(at) -> dict:
    policy = load_policy()
    metrics = {**healthy_metrics(policy), **collect.collect_freshness_metrics(policy, at)}
    return state.check_system_health(policy, metrics, at, RUN_URL)


def test_a_stale_full_backup_alerts_once_and_resolves_once_a_fresh_one_exists(
    pg_cluster, fresh_db, alert_fakes, make_policy, tmp_path
):
    """The first backup is made two hours old by its manifest, so no evaluation depends on how long a backup takes
    on a busy machine (a 2 s limit did: the 'resolved once' evaluation came 3 s after a backup and found it stale)."""
    slack, _ = alert_fakes
    repository = Repository(tmp_path / "repo")
    make_policy({"backup.repository": str(repository.root), "monitoring.freshness.full_backup.stale_after": "1h"})

    first = take_full_backup(repository, "20261120T030000Z")
    backdated = {key: value for key, value in first.manifest.items() if key != "format"}
    backdated["stop_time"] = isoformat(first.stop_time - timedelta(hours=2))
    write_manifest(first.path, backdated)
    verify_backup(repository, list_backups(repository, "full")[0], deep=False)

    stale_at = datetime.now(UTC)
    lag = collect.collect_freshness_metrics(load_policy(), stale_at)[OFFHOST_LAG_METRIC]
    assert lag is None, "nothing is off the host with a local repository: wal_offhost_stale has no data"
    assert "full_backup_stale" in evaluate(stale_at)["fired"]
    assert evaluate(stale_at + timedelta(seconds=1))["fired"] == [], "alerted once"

    second = verify_backup(repository, take_full_backup(repository, "20261120T040000Z"), deep=False)
    fresh_at = max(second.stop_time, stale_at + timedelta(seconds=1)) + timedelta(seconds=1)
    assert evaluate(fresh_at)["resolved"] == ["full_backup_stale"]
    assert evaluate(fresh_at + timedelta(seconds=1))["resolved"] == [], "resolved once"

    stale = [m["text"].split("\n")[0] for m in slack.messages() if "full_backup_stale" in m["text"]]
    assert stale == [
        ":warning: *P2 major* (major feature failure) · full_backup_stale: backup_full_age_seconds > 3600 for 0s",
        ":white_check_mark: *RESOLVED P2 major* · full_backup_stale: backup_full_age_seconds > 3600 for 0s",
    ]


def test_the_age_of_the_newest_archived_wal_segment_is_the_rpo(pg_cluster, fresh_db):
    policy = load_policy()
    with psycopg.connect(pg_cluster.conninfo(fresh_db), autocommit=True) as conn:
        conn.execute("CREATE TABLE rpo_probe AS SELECT 1 AS id")
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 10
    while True:
        newest = collect.newest_wal_segment_time(pg_cluster.wal_archive_dir)
        if newest and time.time() - newest.timestamp() < 5 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    metrics = collect.collect_freshness_metrics(policy, newest + timedelta(hours=2))
    assert metrics["wal_archive_age_seconds"] == 7200.0


def test_no_passed_drill_within_max_age_alerts_once_and_resolves_once_a_drill_passes(pg_cluster, alert_fakes):
    from trading_ops.restore.drill import DrillResult, record_drill

    slack, _ = alert_fakes
    first = datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    quiet = evaluate(first)
    assert "restore_drill_stale" in quiet["no_data"], "no drill recorded yet"
    assert "restore_drill_stale" not in quiet["fired"] + quiet["no_data_fired"], "and that is no alert"

    def drill(drill_id: str, finished: datetime, outcome: str) -> None:
        record = DrillResult(drill_id, "20261101T000000Z", "restore point p", finished.isoformat())
        record.finished_at, record.outcome = finished.isoformat(), outcome
        record.rto_seconds = 60.0 if outcome == "passed" else None
        record_drill("ops_state", record)

    drill("20261101T050000Z", first, "passed")
    assert "restore_drill_stale" not in evaluate(first + timedelta(days=7))["fired"]
    drill("20261108T050000Z", first + timedelta(days=7), "failed")
    assert evaluate(first + timedelta(days=8, minutes=5))["fired"] == ["restore_drill_stale"], "8d since it passed"
    assert evaluate(first + timedelta(days=8, minutes=10))["fired"] == [], "alerted once"
    drill("20261109T050000Z", first + timedelta(days=8, minutes=12), "passed")
    assert evaluate(first + timedelta(days=8, minutes=15))["resolved"] == ["restore_drill_stale"]
    assert evaluate(first + timedelta(days=8, minutes=20))["resolved"] == [], "resolved once"

    texts = [m["text"].split("\n")[0] for m in slack.messages() if "restore_drill_stale" in m["text"]]
    assert texts == [
        ":warning: *P2 major* (major feature failure) · restore_drill_stale: restore_drill_age_seconds > 691200 for 0s",
        ":white_check_mark: *RESOLVED P2 major* · restore_drill_stale: restore_drill_age_seconds > 691200 for 0s",
    ]
