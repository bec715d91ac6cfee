"""Restore drills (db_restore_drill through dag.test()): a real cluster archiving WAL, real full backups, a named
restore point on the live database, a real recovery instance replaying to it, transfer, verification, the record
in the ops state database, and the alerts (Slack and PagerDuty fakes).

One cluster with archiving for the module (its own archive and repository, readable by the postgres OS user, as
in test_restore_pitr), holding the drilled database and the ops state database. The tests run in file order: the
first drill passes, the failures come after it, the corruption and retention tests last.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.support.archiving import archive_now, archiving_cluster, verified_full_backup
from tests.support.dagbag import fresh_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

# Each test's run at its own second, so each drill has its own id.
_FIRST_RUN = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _moment(offset: int) -> datetime:
    return _FIRST_RUN + timedelta(seconds=offset)


def _use_rto_budget_of_one_second(drill_cluster, tmp_path: Path, monkeypatch) -> None:
    """The drill cluster's policy with `restore.drill.rto_budget: 1s`, which every drill exceeds."""
    _, shipped = drill_cluster
    data = yaml.safe_load(shipped.read_text())
    data["restore"]["drill"]["rto_budget"] = "1s"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("TRADING_OPS_POLICY", str(path))


@pytest.fixture(scope="module")
def drill_cluster():
    with archiving_cluster("drill", "drill_db", empty=["drill_ops_state"]) as cluster_and_policy:
        yield cluster_and_policy


@pytest.fixture(scope="module")
def first_backup(drill_cluster):
    """The verified full backup the drills recover (until a later test takes a newer one)."""
    cluster, policy = drill_cluster
    return verified_full_backup(cluster, policy, "drill_db")


@pytest.fixture
def drill(drill_cluster, first_backup, alert_fakes, monkeypatch):
    cluster, policy = drill_cluster
    monkeypatch.setenv("TRADING_OPS_POLICY", str(policy))
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_DB", cluster.uri("drill_db"))
    monkeypatch.setenv("AIRFLOW_CONN_OPS_STATE", cluster.uri("drill_ops_state"))
    # Each test's alerts on their own: the grouping window would hold back a repeat of the previous test's.
    with psycopg.connect(cluster.conninfo("drill_ops_state"), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ops.alert_groups')").fetchone()[0]:
            conn.execute("DELETE FROM ops.alert_groups")
    return cluster


@pytest.fixture
def drill_dag():
    dag = fresh_dag("db_restore_drill")
    for task in dag.tasks:
        task.retries = 0
    return dag


def _write_orders(cluster, rows: int) -> None:
    with psycopg.connect(cluster.conninfo("drill_db")) as conn:
        conn.execute(
            "INSERT INTO orders (symbol, side, quantity, price, created_at) "
            "SELECT 'AAPL', 'buy', g, 100, now() FROM generate_series(1, %s) g",
            (rows,),
        )


def _record(drill_id: str) -> dict:
    from trading_ops.restore.drill import get_drill

    return get_drill("ops_state", drill_id)


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _drill_id(moment: datetime) -> str:
    from trading_ops.backup.repository import full_backup_id

    return full_backup_id(moment)


def _no_instance_left() -> bool:
    import tempfile

    from trading_ops.restore.recovery import INSTANCE_PREFIX

    return not list(Path(tempfile.gettempdir()).glob(f"{INSTANCE_PREFIX}drill_*"))


def _slack_texts(slack) -> str:
    return "\n".join(str(message) for message in slack.messages())


def test_a_drill_passes_on_a_good_chain_and_records_its_rto(drill, drill_dag, alert_fakes, first_backup, capsys):
    from trading_ops.__main__ import main

    slack, pagerduty = alert_fakes
    # Rows after the full backup: the drill must replay WAL to have them.
    _write_orders(drill, 300)
    archive_now(drill)

    run = drill_dag.test(logical_date=_moment(0))

    assert run.state == "success", _states(run)
    record = _record(_drill_id(_moment(0)))
    assert record["outcome"] == "passed", record["problems"]
    assert record["backup_id"] == first_backup.id
    assert record["recovery_target"] == f"restore point trading-ops-drill-{_drill_id(_moment(0))}-1"
    assert set(record["phases"]) == {"fetch", "extract", "replay", "transfer", "verify"}
    assert all(seconds >= 0 for seconds in record["phases"].values())
    assert record["rto_seconds"] == pytest.approx(
        sum(record["phases"][name] for name in ("extract", "replay", "transfer", "verify")), abs=0.01
    )
    assert record["rto_seconds"] > 0
    assert record["sizes"]["wal_replay_bytes"] >= 16 * 1024**2
    assert record["sizes"]["database_bytes"] > 0 and record["sizes"]["base_bytes"] > 0
    assert slack.messages() == [] and pagerduty.events() == [], "a passed drill inside its budget alerts nobody"
    assert _no_instance_left()

    assert main(["drills", "list"]) == 0
    listing = capsys.readouterr().out
    assert _drill_id(_moment(0)) in listing and "passed" in listing and first_backup.id in listing
    assert main(["backups", "list", "--type", "full"]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if line.startswith(first_backup.id))
    assert "passed" in line, listing


def test_a_missing_wal_segment_fails_the_drill_and_alerts(drill, drill_dag, alert_fakes, tmp_path):
    slack, pagerduty = alert_fakes
    _write_orders(drill, 10)
    lost = archive_now(drill)
    aside = tmp_path / lost
    shutil.move(drill.wal_archive_dir / lost, aside)
    try:
        run = drill_dag.test(logical_date=_moment(1))
    finally:
        shutil.move(aside, drill.wal_archive_dir / lost)

    assert run.state == "failed"
    assert _states(run)["restore_drill"] == "failed"
    assert _states(run)["check_drill_health"] == "success", "the health check runs after a failed drill too"
    record = _record(_drill_id(_moment(1)))
    assert record["outcome"] == "failed" and record["failed_phase"] == "plan"
    assert lost in record["problems"][0]
    texts = _slack_texts(slack)
    assert "Restore drill" in texts and lost in texts, texts
    assert pagerduty.events() == [], "a failed drill is P2: Slack, no page"
    assert _no_instance_left()


def test_a_recovery_that_stops_early_fails_the_drill(drill, drill_dag, alert_fakes):
    """An older restore point of the drill's name: recovery stops at it (the first of a name), before the rows
    written after it. The stop record names the right point, so only the exact counts can catch it."""
    from trading_ops.restore.drill import restore_point_name

    slack, _ = alert_fakes
    name = restore_point_name(_drill_id(_moment(2)), 1)
    with psycopg.connect(drill.conninfo("drill_db"), autocommit=True) as conn:
        conn.execute("SELECT pg_create_restore_point(%s)", (name,))
    _write_orders(drill, 25)

    run = drill_dag.test(logical_date=_moment(2))

    assert run.state == "failed"
    record = _record(_drill_id(_moment(2)))
    assert record["outcome"] == "failed" and record["failed_phase"] == "replay"
    assert "public.orders has" in record["problems"][0] and "rows at the recovery point" in record["problems"][0]
    assert "public.orders" in _slack_texts(slack)
    assert _no_instance_left()


def test_a_corrupted_base_backup_fails_the_drill_and_alerts(drill, drill_dag, alert_fakes):
    from trading_ops import backup as backups

    slack, _ = alert_fakes
    repository = backups.repository_from_policy()
    damaged = backups.take_full_backup(repository, "20261102T000000Z", conn_id="trading_db")
    base = damaged.path / damaged.file_entry("base")["path"]
    data = bytearray(base.read_bytes())
    data[len(data) // 2] ^= 0xFF
    base.write_bytes(bytes(data))

    run = drill_dag.test(logical_date=_moment(3))

    assert run.state == "failed"
    record = _record(_drill_id(_moment(3)))
    assert record["outcome"] == "failed" and record["backup_id"] == damaged.id and record["failed_phase"] == "plan"
    assert damaged.id in _slack_texts(slack)
    shutil.rmtree(damaged.path)


def test_retention_keeps_the_newest_backup_whose_drill_passed(drill, first_backup):
    from trading_ops import backup as backups
    from trading_ops.backup.retention import RetentionRules, newest_drilled_backup, plan_retention
    from trading_ops.policy import load_policy

    policy = load_policy()
    repository = backups.repository_from_policy()
    newer = backups.take_full_backup(repository, "20261103T000000Z", conn_id="trading_db")
    backups.verify_backup(repository, newer, deep=False)
    rules = RetentionRules.from_policy(policy.backup)
    later = datetime.now(UTC) + timedelta(days=120)

    assert newest_drilled_backup(policy) == first_backup.id
    plan = plan_retention(repository, None, rules, later, last_drilled=newest_drilled_backup(policy))
    kept = {decision.name: decision.reason for decision in plan.keep}
    assert kept[first_backup.id] == "newest full backup whose restore drill passed"
    assert kept[newer.id] == "newest verified full backup"
    # Without the drill it would go: the drill is what keeps it.
    undrilled = plan_retention(repository, None, rules, later)
    assert first_backup.id in {decision.name for decision in undrilled.delete}


def test_drill_health_alerts_on_an_rto_over_budget_and_system_health_on_a_stale_drill(
    drill, drill_cluster, tmp_path, monkeypatch
):
    from trading_ops.monitoring import collect
    from trading_ops.policy import load_policy
    from trading_ops.restore.drill import newest_passed_drill, rto_finding

    _use_rto_budget_of_one_second(drill_cluster, tmp_path, monkeypatch)
    policy = load_policy()
    slow = {"drill_id": "x", "backup_id": "y", "outcome": "passed", "rto_seconds": 5.0, "phases": {"replay": 5.0}}

    assert rto_finding(policy, slow) == (
        f"Restore drill x of backup y took 5 s, over the RTO budget of 1s: phases {slow['phases']}."
    )
    assert rto_finding(policy, {**slow, "rto_seconds": 0.5}) is None
    assert rto_finding(policy, {**slow, "outcome": "failed"}) is None
    # The drill's age is system_health's freshness metric, read from the same records.
    newest = newest_passed_drill("ops_state")["finished_at"]
    metrics = collect.collect_freshness_metrics(policy, newest + timedelta(days=9))
    assert metrics["restore_drill_age_seconds"] == timedelta(days=9).total_seconds()


def test_the_drill_budget_must_fit_inside_the_p1_resolution_time(make_policy):
    from trading_ops.policy import PolicyError, load_policy

    with pytest.raises(PolicyError, match="rto_budget"):
        load_policy(make_policy({"restore.drill.rto_budget": "3h"}))


def test_a_passed_drill_over_its_rto_budget_alerts(drill, drill_cluster, drill_dag, alert_fakes, tmp_path, monkeypatch):
    """Last: it drills whatever full backup is newest by now (the retention test's)."""
    slack, pagerduty = alert_fakes
    _use_rto_budget_of_one_second(drill_cluster, tmp_path, monkeypatch)

    run = drill_dag.test(logical_date=_moment(4))

    assert run.state == "success", _states(run)
    record = _record(_drill_id(_moment(4)))
    assert record["outcome"] == "passed" and record["rto_seconds"] > 1
    texts = _slack_texts(slack)
    assert f"Restore drill {_drill_id(_moment(4))}" in texts and "over the RTO budget of 1s" in texts, texts
    assert pagerduty.events() == []


def test_the_drill_recovers_the_backup_picked_before_its_restore_point_not_a_newer_one(drill, drill_cluster):
    """make up's race: db_backup_full's first run finished between the drill's mark and its recovery; that newer
    backup cannot recover to the restore point (its WAL starts after it), so the drill keeps the one it picked."""
    from trading_ops import backup as backups
    from trading_ops.policy import load_policy
    from trading_ops.restore import drill as drills

    policy = load_policy()
    picked = drills.wait_for_backup(policy)
    target = drills.mark_recovery_target("trading_db", "drill_db", drills.restore_point_name("race", 1), policy)
    assert target["backup_id"] == picked.id
    _write_orders(drill, 10)
    repository = backups.repository_from_policy(policy)
    newer = backups.take_full_backup(repository, backups.full_backup_id(datetime.now(UTC)), conn_id="trading_db")
    assert backups.wal_sources.usable_fulls(repository)[0].id == newer.id, "the newest is the one taken after"

    result = drills.run_drill("race", target, policy)

    assert result.outcome == "passed", result.problems
    assert result.backup_id == picked.id


def test_the_drill_waits_for_a_first_full_backup_and_fails_in_one_sentence_without_one(
    drill, drill_cluster, tmp_path, monkeypatch
):
    import threading

    from trading_ops import backup as backups
    from trading_ops.policy import load_policy
    from trading_ops.restore import drill as drills

    _, shipped = drill_cluster
    data = yaml.safe_load(shipped.read_text())
    data["backup"]["repository"] = str(tmp_path / "new-repository")
    data["restore"]["drill"]["backup_wait"] = "1s"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("TRADING_OPS_POLICY", str(path))
    policy = load_policy()
    with pytest.raises(drills.DrillFailed, match=r"no usable full backup in .*new-repository to drill \(waited 1s"):
        drills.wait_for_backup(policy, poll_seconds=0.1)

    # A deployment's first full backup, finishing while the drill waits (as db_backup_full's first run does).
    data["restore"]["drill"]["backup_wait"] = "2m"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    policy = load_policy()
    repository = backups.repository_from_policy(policy)
    taken = {}
    first = threading.Timer(
        0.5, lambda: taken.update(backup=backups.take_full_backup(repository, "20261101T010000Z", conn_id="trading_db"))
    )
    first.start()
    try:
        assert drills.wait_for_backup(policy, poll_seconds=0.1).id == "20261101T010000Z"
    finally:
        first.join()
    assert taken["backup"].id == "20261101T010000Z"
