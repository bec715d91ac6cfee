"""A request problem under the real scheduler and executor: db_restore's dry run naming a database that does not
exist fails at once, without a retry, and is a notice to the info channel, not a page."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e

SOURCE = "db_restore.validate_request"


def test_a_user_error_fails_at_once_and_goes_to_the_info_channel(airflow_standalone, slack_fake, pagerduty_fake):
    run_id = airflow_standalone.trigger("db_restore", {"target_database": "no_such_db_e2e"})
    run = airflow_standalone.wait_for_run("db_restore", run_id, timeout=600)

    assert run["state"] == "failed"
    ti = airflow_standalone.request("GET", f"/api/v2/dags/db_restore/dagRuns/{run_id}/taskInstances/validate_request")
    assert (ti["state"], ti["try_number"]) == ("failed", 1), "the task declares retries=2: none was used"
    # The callback runs in the task's process once the failure is reported: give its notice a moment.
    deadline = time.monotonic() + 30
    while not (notices := [m for m in slack_fake.messages() if f"*Source:* {SOURCE}\n" in m["text"]]):
        assert time.monotonic() < deadline, "no Slack notice of the refused restore"
        time.sleep(0.5)
    assert [notice["channel"] for notice in notices] == ["#alerts-info"]
    assert notices[0]["text"].startswith(
        ":memo: *Not an incident* · db_restore: task validate_request stopped: "
        "target database 'no_such_db_e2e' does not exist on trading_db.\n"
    )
    assert [event for event in pagerduty_fake.events() if event["payload"]["source"] == SOURCE] == []
