"""DAG-run freshness in system_health, from Airflow's own record of runs (the Task SDK's run counts, dag.test()):
a scheduled DAG that stops succeeding (paused) fires `dag_run_stale` once it is overdue and resolves when a run
succeeds again; a DAG whose file stops parsing goes "no data", which alerts.

The deployment here is a DAG folder holding one hourly DAG (`hourly_probe`); its runs are real dag.test() runs at
its fire times, so Airflow's record is what a scheduler would have written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.dagbag import DAGS_DIR, fresh_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

# A fire time of the hourly probe (a whole hour; Asia/Seoul is a whole number of hours from UTC), far from the
# other tests' runs.
T0 = datetime(2026, 10, 5, 10, 0, tzinfo=UTC)

PROBE = '''"""hourly_probe: a scheduled DAG of the test deployment."""

from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron


@dag(schedule=cron("0 * * * *"), start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False, description="probe")
def hourly_probe():
    @task
    def work() -> int:
        if Path(__file__).with_name("fail").exists():
            raise RuntimeError("told to fail")
        return 1

    work()


hourly_probe()
'''


@pytest.fixture
def deployment(tmp_path, monkeypatch, make_policy, alert_fakes, prometheus_fake, heartbeat, fresh_db):
    """The deployment's DAG bundle: system_health and hourly_probe; runs may be 30 minutes late."""
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "hourly_probe.py").write_text(PROBE)
    (folder / "system_health.py").symlink_to(DAGS_DIR / "system_health.py")
    bundle = {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([{**bundle, "kwargs": {"path": str(folder)}}])
    )
    make_policy({"monitoring.freshness.dag_runs.slack": "30m"})
    prometheus_fake.reset()
    monkeypatch.setenv("AIRFLOW_CONN_PROMETHEUS", prometheus_fake.connection_json())
    return folder


def _probe_succeeds_at(folder, moment: datetime) -> None:
    run = fresh_dag_from(folder).test(logical_date=moment)
    assert run.state == "success"


def _health_at(moment: datetime) -> dict:
    """system_health's run at `moment`: the probe's overdue seconds its freshness collector measured ({}: not
    measured). (system_health watches itself too; these runs are far apart, so it is stale here: not the story.)"""
    from tests.support.dagbag import run_dag

    states, values = run_dag("system_health", {}, logical_date=moment)
    assert states["collect_freshness_metrics"] == "success"
    overdue = values["collect_freshness_metrics"]["dag_run_overdue_seconds"]
    return {series: value for series, value in overdue.items() if "hourly_probe" in series}


def _stale_messages(slack) -> list[str]:
    return [m["text"].split("\n")[0] for m in slack.messages() if 'dag_run_stale{dag_id="hourly_probe"}' in m["text"]]


def test_a_paused_dag_goes_stale_and_resolves_when_it_succeeds_again_and_a_broken_one_alerts(deployment, alert_fakes):
    slack, _ = alert_fakes
    key = 'dag_id="hourly_probe"'
    _probe_succeeds_at(deployment, T0)

    # Its next run is due at T0+1h and may take 30 minutes: 80 minutes before that.
    assert _health_at(T0 + timedelta(minutes=10)) == {key: -80 * 60.0}
    assert _stale_messages(slack) == []

    # Paused: no run at T0+1h. At T0+1h40m the run due at T0+1h is 10 minutes past its slack.
    assert _health_at(T0 + timedelta(minutes=100)) == {key: 10 * 60.0}
    assert _health_at(T0 + timedelta(minutes=105)) == {key: 15 * 60.0}
    assert _stale_messages(slack) == [
        ':warning: *P2 major* (major feature failure) · dag_run_stale{dag_id="hourly_probe"}: '
        "dag_run_overdue_seconds > 0 for 0s"
    ], "alerted once"

    # Unpaused: the run of T0+1h succeeds (late); the next is due at T0+2h.
    _probe_succeeds_at(deployment, T0 + timedelta(hours=1))
    assert _health_at(T0 + timedelta(minutes=110)) == {key: -40 * 60.0}
    assert _stale_messages(slack)[1:] == [
        ':white_check_mark: *RESOLVED P2 major* · dag_run_stale{dag_id="hourly_probe"}: '
        "dag_run_overdue_seconds > 0 for 0s"
    ]

    # Broken: the file no longer parses, so the DAG is not measured any more: no data, which alerts.
    (deployment / "hourly_probe.py").write_text(PROBE.replace("def work()", "def work("))
    assert _health_at(T0 + timedelta(minutes=115)) == {}
    assert _stale_messages(slack)[2:] == [
        ':warning: *P2 major* (major feature failure) · dag_run_stale{dag_id="hourly_probe"}: '
        "no data for dag_run_overdue_seconds for 0s"
    ]


def test_a_dag_that_never_ran_is_not_measured_and_one_that_only_fails_is_due_from_its_first_run(
    deployment, alert_fakes
):
    slack, _ = alert_fakes
    start = T0 + timedelta(days=10)  # beyond the 100 fire times looked back: the first test's runs are not seen
    assert _health_at(start) == {}, "never ran: nothing to be late with"
    assert _stale_messages(slack) == []

    (deployment / "fail").touch()
    failed = fresh_dag_from(deployment).test(logical_date=start)
    assert failed.state == "failed"
    assert _health_at(start + timedelta(minutes=20)) == {'dag_id="hourly_probe"': -10 * 60.0}
    assert _health_at(start + timedelta(minutes=40)) == {'dag_id="hourly_probe"': 10 * 60.0}
    # Failing again an hour later: still due from the first run.
    assert fresh_dag_from(deployment).test(logical_date=start + timedelta(hours=1)).state == "failed"
    assert _health_at(start + timedelta(minutes=80)) == {'dag_id="hourly_probe"': 50 * 60.0}
    assert len(_stale_messages(slack)) == 1


def fresh_dag_from(folder):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(folder / "hourly_probe.py")).dags["hourly_probe"]


def test_only_dags_with_a_cron_schedule_are_watched():
    from trading_ops.monitoring import dag_runs

    watched = dag_runs.scheduled_dags([fresh_dag("db_restore"), fresh_dag("db_restore_drill")])
    assert watched == [
        dag_runs.ScheduledDag("db_restore_drill", "0 5 * * 0", "Asia/Seoul", datetime(2026, 1, 1, tzinfo=UTC))
    ]
