"""The tasks of incident_tracker and incident_response that are not questions; the only module of the wing (with
`operators`, the questions) that reads Airflow's context, handing plain values to `tracker` and `response`."""

from __future__ import annotations

from trading_ops.policy import load_policy


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def track_incidents() -> list[dict]:
    """Alert the incidents past their resolution deadline at the run's time; the incident_response runs to start
    (run id and conf of each, for the trigger task)."""
    from trading_ops.incidents import tracker
    from trading_ops.runtime import run_time

    outcome = tracker.check(load_policy(), run_time(_context()))
    return outcome["start"]


def start_response() -> dict:
    """Bind the run to its incident and put the start on the timeline."""
    from trading_ops.incidents import response
    from trading_ops.runtime import run_time

    context = _context()
    incident = response.start(
        load_policy(), int(context["dag_run"].conf["incident_id"]), context["ti"].run_id, run_time(context)
    )
    return {"incident_id": incident["incident_id"], "level": incident["opened_level"], "summary": incident["summary"]}


def write_post_mortem() -> str:
    """The post-mortem draft (markdown) of the resolved incident, stored with it and linked from Slack."""
    from datetime import UTC, datetime

    from trading_ops.incidents import response

    context = _context()
    ti = context["ti"]
    return response.write_post_mortem(
        load_policy(), int(context["dag_run"].conf["incident_id"]), ti.run_id, ti.task_id, datetime.now(UTC)
    )
