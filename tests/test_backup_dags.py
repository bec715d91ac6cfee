"""The backup DAGs' wiring, their one meaning of dry_run, user errors that stop at once, and the stale-backup alert
they raise even when the backup itself did not fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support.dagbag import fresh_dag, run_dag
from trading_ops.backup import BackupCorrupt, BackupKeyError, BackupNotFound, Repository, jobs, resolve_backup
from trading_ops.backup.preflight import BackupRefused
from trading_ops.backup.repository import full_backup_id, incremental_backup_id, isoformat, write_manifest
from trading_ops.backup.wal_names import SEGMENT_RE
from trading_ops.errors import UserError

# Sunday 01:00 in Seoul: the full backup's scheduled run.
MOMENT = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)


def test_backup_dags_wire_the_tasks_and_publish_assets(dagbag):
    dags = dagbag.dags
    full = dags["db_backup_full"]
    assert [task.task_id for task in full.topological_sort()] == [
        "take_full_backup",
        "verify_full_backup",
        "apply_retention",
        "check_backup_freshness",
    ]
    assert [asset.name for asset in full.get_task("verify_full_backup").outlets] == ["trading_db.full_backup"]
    assert full.get_task("check_backup_freshness").trigger_rule == "all_done"

    wal = dags["db_backup_wal"]
    assert set(wal.task_ids) == {
        "switch_wal_segment",
        "check_wal_continuity",
        "bundle_wal_segments",
        "verify_wal_bundle",
        "apply_retention",
        "check_backup_freshness",
    }
    assert [asset.name for asset in wal.get_task("verify_wal_bundle").outlets] == ["trading_db.wal_backup"]
    assert wal.get_task("check_backup_freshness").upstream_task_ids == {"check_wal_continuity", "apply_retention"}
    assert wal.get_task("check_backup_freshness").trigger_rule == "all_done"
    for dag in (full, wal):
        assert dag.params["dry_run"] is False
        # A dry run skips the verification (nothing was written); retention still prints its plan after it.
        assert dag.get_task("apply_retention").trigger_rule == "none_failed"


def _recorded_backup(repository: Repository, kind: str, moment: datetime) -> None:
    backup_id = full_backup_id(moment) if kind == "full" else incremental_backup_id(moment.date())
    with repository.staging(kind, backup_id) as staging:
        write_manifest(
            staging,
            {"id": backup_id, "type": kind, "start_time": isoformat(moment), "stop_time": isoformat(moment)}
            # Its base backup needs the whole archive, so retention keeps every archived segment.
            | {"files": [], "wal_start_segment": "000000010000000000000001", "wal_segment_size": 16 * 1024**2},
        )
    repository.record_verification(repository.info(kind, backup_id), True, [], None)


def test_stale_backups_raise_alerts_at_the_dags_level(make_policy, tmp_path, monkeypatch):
    import trading_ops.alerting

    sent = []
    monkeypatch.setattr(trading_ops.alerting, "send_alert", sent.append)
    make_policy({"backup.repository": str(tmp_path / "repo")})
    now = datetime(2026, 11, 1, 16, tzinfo=UTC)

    findings = jobs.freshness(now, "db_backup_wal", "check_backup_freshness")
    assert [alert.dedup_key for alert in sent] == [
        "trading_db-backup-stale-full",
        "trading_db-backup-stale-incremental",
    ]
    assert {alert.level for alert in sent} == {"P2"} and sent[0].source == "db_backup_wal.check_backup_freshness"
    assert findings[0] == "There is no verified full backup at all (limit 8.0 days)."

    repository = Repository(tmp_path / "repo")
    _recorded_backup(repository, "full", now - timedelta(days=9))
    _recorded_backup(repository, "incremental", now - timedelta(hours=2))
    sent.clear()
    findings = jobs.freshness(now, "db_backup_full", "check_backup_freshness")
    assert len(sent) == 1 and sent[0].dedup_key == "trading_db-backup-stale-full"
    assert "is 9.0 days old, older than the limit of 8.0 days." in sent[0].summary

    _recorded_backup(repository, "full", now - timedelta(days=1))
    sent.clear()
    jobs.freshness(now, "db_backup_full", "check_backup_freshness")
    assert sent == []


def _archived_count(pg_cluster) -> int:
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        return conn.execute("SELECT archived_count FROM pg_stat_archiver").fetchone()[0]


@pytest.fixture
def aged_repository(tmp_path, make_policy, fresh_db, airflow_db):
    """A repository whose retention would delete a 40-day-old full backup; no WAL bundle, so freshness alerts."""
    make_policy({"backup.repository": str(tmp_path / "repo")})
    repository = Repository(tmp_path / "repo")
    _recorded_backup(repository, "full", MOMENT - timedelta(days=40))
    _recorded_backup(repository, "full", MOMENT - timedelta(days=2))
    return repository


def test_a_dry_run_of_the_full_backup_prints_the_plan_checks_and_changes_nothing(
    pg_cluster, aged_repository, alert_fakes, caplog
):
    slack, pagerduty = alert_fakes
    before = (aged_repository.ids("full"), _archived_count(pg_cluster))
    old = full_backup_id(MOMENT - timedelta(days=40))

    states, values = run_dag("db_backup_full", {"dry_run": True}, MOMENT)

    assert states == {
        "take_full_backup": "success",
        "verify_full_backup": "skipped",
        "apply_retention": "success",
        "check_backup_freshness": "success",
    }
    backup_id = full_backup_id(MOMENT)
    assert values["take_full_backup"] == backup_id
    assert values["apply_retention"]["dry_run"] is True and f"full {old}" in values["apply_retention"]["delete"]
    assert (aged_repository.ids("full"), _archived_count(pg_cluster)) == before, "no backup, no WAL switch"
    assert aged_repository.partials("full") == [] and not (aged_repository.root / "incremental").exists()
    assert slack.messages() == [] and pagerduty.events() == [], "a dry run sends no alert"
    log = caplog.text
    assert f"DRY RUN, nothing is written: Full backup {backup_id} of " in log
    assert f"into {aged_repository.root}" in log
    for check in (
        "has the REPLICATION attribute",
        "WAL archiving is on",
        "backup repository",
        "pg_basebackup (PostgreSQL)",
    ):
        assert check in log, check
    assert f"writes {aged_repository.root}/full/.partial-{backup_id}/" in log and ".dump.zst" in log
    assert (
        f"then renames {aged_repository.root}/full/.partial-{backup_id} to {aged_repository.root}/full/{backup_id}"
        in log
    )
    assert f"DRY RUN, would delete full {old}: older than 28 days" in log
    assert "DRY RUN, no alert sent: a real run alerts that There is no WAL backup at all" in log


def test_a_real_run_of_the_full_backup_takes_verifies_prunes_and_alerts(pg_cluster, aged_repository, alert_fakes):
    slack, _ = alert_fakes
    archived = _archived_count(pg_cluster)

    states, values = run_dag("db_backup_full", {"dry_run": False}, MOMENT)

    assert set(states.values()) == {"success"}, states
    backup_id = full_backup_id(MOMENT)
    assert values["verify_full_backup"]["verified"] is True
    assert aged_repository.ids("full") == [full_backup_id(MOMENT - timedelta(days=2)), backup_id]
    assert values["apply_retention"]["dry_run"] is False and _archived_count(pg_cluster) > archived
    assert [message for message in slack.messages() if "There is no WAL backup at all" in message["text"]]


def test_a_dry_run_of_the_wal_backup_switches_nothing_and_bundles_nothing(
    pg_cluster, aged_repository, alert_fakes, caplog
):
    archived = _archived_count(pg_cluster)

    states, values = run_dag("db_backup_wal", {"dry_run": True}, MOMENT)

    assert states == {
        "switch_wal_segment": "success",
        "check_wal_continuity": "success",
        "bundle_wal_segments": "success",
        "verify_wal_bundle": "skipped",
        "apply_retention": "success",
        "check_backup_freshness": "success",
    }
    newest = max(path.name for path in pg_cluster.wal_archive_dir.iterdir() if SEGMENT_RE.match(path.name))
    assert values["switch_wal_segment"]["dry_run"] is True and values["switch_wal_segment"]["last_segment"] == newest
    assert values["check_wal_continuity"]["last"] == newest and values["check_wal_continuity"]["segments_checked"] > 0
    assert values["bundle_wal_segments"] == "2026-11-29", "the run's date in Asia/Seoul"
    assert _archived_count(pg_cluster) == archived and not (aged_repository.root / "incremental").exists()
    log = caplog.text
    assert "DRY RUN, nothing is written: Switch the WAL segment of trading_db" in log
    assert "may call pg_switch_wal()" in log
    assert "DRY RUN, nothing is written: WAL bundle 2026-11-29 into" in log and "archived segment(s) to bundle" in log


def test_a_check_a_person_must_fix_stops_a_real_run_before_it_writes(pg_cluster, fresh_db, make_policy, tmp_path):
    make_policy({"backup.repository": str(tmp_path / "repo"), "backup.encryption.enabled": True})
    with pytest.raises(BackupKeyError, match="^Connection backup_encryption_key is missing") as refused:
        jobs.full_backup(MOMENT)
    assert isinstance(refused.value, UserError)
    assert not (tmp_path / "repo" / "full").exists()


def test_a_user_without_replication_is_refused_by_the_dry_run_too(pg_cluster, fresh_db, make_policy, monkeypatch):
    make_policy({})
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE ROLE backup_reader LOGIN PASSWORD 'reader' IN ROLE pg_read_all_data")
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_TRADING_DB", f"postgresql://backup_reader:reader@127.0.0.1:{pg_cluster.port}/{fresh_db}"
        )
        with pytest.raises(BackupRefused) as refused:
            jobs.full_backup(MOMENT, dry_run=True)
        assert str(refused.value) == (
            "The user backup_reader of connection trading_db lacks the REPLICATION attribute pg_basebackup needs: "
            "ALTER ROLE backup_reader REPLICATION."
        )
        assert isinstance(refused.value, UserError)
    finally:
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute("DROP ROLE backup_reader")


def test_an_unknown_policy_key_fails_the_first_task_at_once_without_retry(
    airflow_db, fresh_db, make_policy, alert_fakes, capfd
):
    """Measured before: an unknown key made db_backup_full retry for 9 minutes before it failed."""
    make_policy({"restore.kubernetes_conn_id": "kubernetes_default"})

    run = fresh_dag("db_backup_full").test(logical_date=MOMENT, run_conf={"dry_run": False})

    first = next(ti for ti in run.get_task_instances() if ti.task_id == "take_full_backup")
    assert (first.state, first.try_number, first.max_tries) == ("failed", 1, 2), "retries configured, none used"
    # The task's traceback goes to the task log, which dag.test() prints.
    assert "is invalid: restore.kubernetes_conn_id is not a known setting." in capfd.readouterr().out


def test_damage_in_a_backup_just_taken_is_an_operational_failure_but_one_asked_for_is_the_users(
    pg_cluster, fresh_db, make_policy, tmp_path
):
    make_policy({"backup.repository": str(tmp_path / "repo")})
    backup_id = jobs.full_backup(MOMENT)
    backup = Repository(tmp_path / "repo").info("full", backup_id)
    stored = backup.file_path("dump")
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))

    with pytest.raises(jobs.BackupVerificationFailed, match=f"file {stored.name} does not match") as failed:
        jobs.verify("full", backup_id)
    assert not isinstance(failed.value, UserError), "retried, and alerted at the DAG's level"
    assert issubclass(BackupCorrupt, UserError) and issubclass(BackupNotFound, UserError)
    with pytest.raises(BackupNotFound, match="no verified full backup"):
        resolve_backup(Repository(tmp_path / "repo"), "latest")
