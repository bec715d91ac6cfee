"""A task failing in a real DAG run (dag.test()) reaches Slack and PagerDuty once, at the DAG's incident level.

The test DAG lives in its own DAG bundle in a temporary folder, since dags/ holds only the project's DAGs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from tests.fakes.pagerduty import ROUTING_KEY

DAG_ID = "alerting_selftest"
DAG_SOURCE = """
import os
from datetime import UTC, datetime

from airflow.sdk import dag, task

from trading_ops.dag_defaults import default_args
from trading_ops.errors import UserError


@dag(schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False, default_args=default_args(retries=0))
def alerting_selftest():
    @task
    def transfer_positions():
        if os.environ.get("SELFTEST_FEED_IS_BACK"):
            return
        if os.environ.get("SELFTEST_ACCOUNT"):
            raise UserError(f"positions account {os.environ['SELFTEST_ACCOUNT']!r} is not in the policy.")
        raise ValueError("positions feed returned 503\\nafter 3 attempts\\nline 3\\nline 4")

    transfer_positions()


alerting_selftest()
"""


@pytest.fixture
def selftest_dag(tmp_path, monkeypatch, airflow_db):
    bundle = tmp_path / "selftest-bundle"
    bundle.mkdir()
    (bundle / f"{DAG_ID}.py").write_text(DAG_SOURCE)
    local_bundle = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps(
            [
                {"name": "dags-folder", "classpath": local_bundle, "kwargs": {}},
                {"name": "alerting-selftest", "classpath": local_bundle, "kwargs": {"path": str(bundle)}},
            ]
        ),
    )
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(bundle)).dags[DAG_ID]


def _run(dag, hour: int = 3) -> tuple[str, str, str]:
    run = dag.test(logical_date=datetime(2026, 11, 20, hour, 0, tzinfo=UTC))
    ti_state = {ti.task_id: ti.state for ti in run.get_task_instances()}
    return run.state, ti_state["transfer_positions"], run.run_id


def test_a_failed_task_of_a_p1_dag_pages_once_with_task_error_and_run_link(
    selftest_dag, alert_fakes, fresh_db, make_policy
):
    slack, pagerduty = alert_fakes
    make_policy({f"alerting.dag_levels.{DAG_ID}": "P1", "alerting.error_lines": 2})

    run_state, task_state, run_id = _run(selftest_dag)

    assert (run_state, task_state) == ("failed", "failed"), "the alert does not change the task's own outcome"
    link = f"http://127.0.0.1:8080/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/transfer_positions"
    assert slack.messages() == [
        {
            "channel": "#alerts-critical",
            "text": (
                f":rotating_light: *P1 critical* (complete service outage) · {DAG_ID}: task transfer_positions failed\n"
                f"*Source:* {DAG_ID}.transfer_positions\n"
                "*Respond within* 15m, *resolve within* 2h · *escalation:* devops_lead → system_architect → cto · "
                "*procedure:* convene emergency team\n"
                "*failed task:* transfer_positions\n"
                f"*run id:* {run_id}\n"
                "*try:* 1\n"
                "*error:*\n```\nValueError: positions feed returned 503\nafter 3 attempts\n```\n"
                f"*Airflow run:* <{link}>\n"
                f"_dedup key: trading-ops/{DAG_ID}/transfer_positions_"
            ),
        }
    ]
    [event] = pagerduty.events()
    assert event["event_action"] == "trigger" and event["routing_key"] == ROUTING_KEY
    assert event["dedup_key"] == f"trading-ops/{DAG_ID}/transfer_positions"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"] == f"[P1] {DAG_ID}: task transfer_positions failed"
    assert event["payload"]["custom_details"]["error"] == "ValueError: positions feed returned 503\nafter 3 attempts"
    assert event["links"] == [{"href": link, "text": "Airflow run"}]
    print("\nSlack body of the failed task:\n" + json.dumps(slack.messages()[0], indent=2, ensure_ascii=False))
    print("PagerDuty event of the failed task:\n" + json.dumps(event, indent=2, ensure_ascii=False))


def test_a_dag_without_a_level_alerts_at_the_default_level_and_repeats_are_grouped(selftest_dag, alert_fakes, fresh_db):
    slack, pagerduty = alert_fakes

    _run(selftest_dag)
    _run(selftest_dag)

    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"], "second failure grouped"
    assert slack.messages()[0]["text"].startswith(
        f":information_source: *P3 minor* (partial feature failure) · {DAG_ID}: task transfer_positions failed\n"
    )
    assert pagerduty.requests == []


def test_the_next_success_of_the_task_resolves_its_failure_alert_once(
    selftest_dag, alert_fakes, fresh_db, make_policy, monkeypatch
):
    slack, pagerduty = alert_fakes
    make_policy({f"alerting.dag_levels.{DAG_ID}": "P1"})
    _run(selftest_dag, hour=3)
    monkeypatch.setenv("SELFTEST_FEED_IS_BACK", "1")

    assert _run(selftest_dag, hour=4)[:2] == ("success", "success")
    assert _run(selftest_dag, hour=5)[:2] == ("success", "success")

    assert [message["text"].split("\n")[0] for message in slack.messages()] == [
        f":rotating_light: *P1 critical* (complete service outage) · {DAG_ID}: task transfer_positions failed",
        f":white_check_mark: *RESOLVED P1 critical* · {DAG_ID}: task transfer_positions failed",
    ]
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", f"trading-ops/{DAG_ID}/transfer_positions"),
        ("resolve", f"trading-ops/{DAG_ID}/transfer_positions"),
    ]
    assert pagerduty.incidents == {f"trading-ops/{DAG_ID}/transfer_positions": "resolved"}


def test_a_success_without_an_open_failure_sends_nothing(selftest_dag, alert_fakes, fresh_db, monkeypatch):
    slack, pagerduty = alert_fakes
    monkeypatch.setenv("SELFTEST_FEED_IS_BACK", "1")
    assert _run(selftest_dag)[:2] == ("success", "success")
    assert slack.requests == [] and pagerduty.requests == []


def test_a_user_error_is_a_notice_to_the_info_channel_that_never_pages(
    selftest_dag, alert_fakes, fresh_db, make_policy, monkeypatch
):
    """Even in a P1 DAG: a request or policy problem is no incident, and the next success has nothing to resolve."""
    slack, pagerduty = alert_fakes
    make_policy({f"alerting.dag_levels.{DAG_ID}": "P1"})
    monkeypatch.setenv("SELFTEST_ACCOUNT", "acct-7")

    run_state, task_state, run_id = _run(selftest_dag)

    assert (run_state, task_state) == ("failed", "failed")
    link = f"http://127.0.0.1:8080/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/transfer_positions"
    assert slack.messages() == [
        {
            "channel": "#alerts-info",
            "text": (
                f":memo: *Not an incident* · {DAG_ID}: task transfer_positions stopped: positions account 'acct-7' "
                "is not in the policy.\n"
                f"*Source:* {DAG_ID}.transfer_positions\n"
                "*kind:* a request or policy problem to fix (a form value, the policy, a backup asked for), not an "
                "incident: the task failed at once without a retry, and nobody was paged\n"
                "*failed task:* transfer_positions\n"
                f"*run id:* {run_id}\n"
                "*try:* 1\n"
                "*error:* trading_ops.errors.UserError: positions account 'acct-7' is not in the policy.\n"
                f"*Airflow run:* <{link}>\n"
                f"_dedup key: trading-ops/{DAG_ID}/transfer_positions/user-error_"
            ),
        }
    ]
    assert pagerduty.requests == []

    monkeypatch.setenv("SELFTEST_ACCOUNT", "acct-8")
    _run(selftest_dag, hour=4)
    monkeypatch.delenv("SELFTEST_ACCOUNT")
    monkeypatch.setenv("SELFTEST_FEED_IS_BACK", "1")
    assert _run(selftest_dag, hour=5)[:2] == ("success", "success")

    assert [message["channel"] for message in slack.messages()] == ["#alerts-info"] * 2, "another problem, no resolve"
    assert "positions account 'acct-8'" in slack.messages()[1]["text"]
    assert pagerduty.requests == []
