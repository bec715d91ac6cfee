"""The backup DAGs' wiring, and the stale-backup alert they raise even when the backup itself did not fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.test_dag_integrity import DAGS_DIR
from trading_ops.backup import Repository, tasks
from trading_ops.backup.repository import full_backup_id, incremental_backup_id, isoformat, write_manifest


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR)).dags


def test_backup_dags_wire_the_tasks_and_publish_assets(dags):
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


def _recorded_backup(repository: Repository, kind: str, moment: datetime) -> None:
    backup_id = full_backup_id(moment) if kind == "full" else incremental_backup_id(moment.date())
    with repository.staging(kind, backup_id) as staging:
        write_manifest(
            staging,
            {"id": backup_id, "type": kind, "start_time": isoformat(moment), "stop_time": isoformat(moment)}
            | {"files": []},
        )
    repository.record_verification(repository.info(kind, backup_id), True, [], None)


def test_stale_backups_raise_alerts_at_the_dags_level(make_policy, tmp_path, monkeypatch):
    import trading_ops.alerting

    sent = []
    monkeypatch.setattr(trading_ops.alerting, "send_alert", sent.append)
    make_policy({"backup.repository": str(tmp_path / "repo")})
    now = datetime(2026, 11, 1, 16, tzinfo=UTC)

    findings = tasks.freshness(now, "db_backup_wal", "check_backup_freshness")
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
    findings = tasks.freshness(now, "db_backup_full", "check_backup_freshness")
    assert len(sent) == 1 and sent[0].dedup_key == "trading_db-backup-stale-full"
    assert "is 9.0 days old, older than the limit of 8.0 days." in sent[0].summary

    _recorded_backup(repository, "full", now - timedelta(days=1))
    sent.clear()
    tasks.freshness(now, "db_backup_full", "check_backup_freshness")
    assert sent == []
