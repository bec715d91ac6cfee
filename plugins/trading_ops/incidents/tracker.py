"""The incident tracker (incident_tracker, every minute): which open incidents need their incident_response run,
and which have missed their resolution deadline.

A missed resolution deadline is an alert one level up (a P2 past its 4 h pages as P1; a P1 past its 2 h pages as P1
again), sent once, under a dedup key of its own and on the incident's timeline; the incident is at that level from
then on. The tracker watches this, not the incident's run: a run parked on a question cannot notice a deadline.
"""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import dict_row

from trading_ops.alerting.routing import Alert, airflow_run_url, format_duration
from trading_ops.incidents import store
from trading_ops.incidents.response import DAG_ID, run_id_for
from trading_ops.policy import Policy
from trading_ops.sqlfiles import load_sql

ONE_UP = {"P1": "P1", "P2": "P1", "P3": "P2"}


def overdue_alert(policy: Policy, incident: dict, at: datetime) -> Alert:
    level = policy.incident_levels[incident["opened_level"]]
    up = ONE_UP[incident["level"]]
    late = at - incident["resolution_due_at"]
    run_url = airflow_run_url(policy, DAG_ID, incident["response_run_id"]) if incident["response_run_id"] else None
    return Alert(
        severity=up,
        source=f"incident/{incident['incident_id']}",
        summary=(
            f"Incident #{incident['incident_id']} ({incident['opened_level']}) missed its "
            f"{format_duration(level.resolve_within)} resolution deadline: {incident['summary']}"
        ),
        details={
            "opened": incident["opened_at"].isoformat(),
            "resolution due": incident["resolution_due_at"].isoformat(),
            "late by": format_duration(late),
            "owner": incident["owner"] or "nobody acknowledged",
        },
        dedup_key=f"trading-ops/incident/{incident['incident_id']}/resolution-overdue",
        run_url=run_url,
        raised_at=at,
        incident_id=incident["incident_id"],
    )


def check(policy: Policy, at: datetime) -> dict:
    """Alert every incident past its resolution deadline at `at` (once); the runs to start (run id and conf)."""
    from trading_ops.alerting import send_alert

    with store.connection(policy) as conn:
        overdue = (
            conn.cursor(row_factory=dict_row)
            .execute(load_sql("incidents/select_resolution_overdue.sql"), {"at": at})
            .fetchall()
        )
        needing = [row[0] for row in conn.execute(load_sql("incidents/select_needing_response.sql"))]
    raised = []
    for incident in overdue:
        alert = overdue_alert(policy, incident, at)
        if not send_alert(alert).complete:
            continue  # not marked: the next run sends it again
        with store.connection(policy) as conn:
            if conn.execute(
                load_sql("incidents/mark_resolution_overdue.sql"),
                {"incident_id": incident["incident_id"], "level": alert.level, "at": at},
            ).fetchone():
                store.add_event(
                    conn,
                    incident["incident_id"],
                    at,
                    "resolution_overdue",
                    f"Resolution deadline missed by {format_duration(at - incident['resolution_due_at'])}: alerted "
                    f"as {alert.level}",
                    event_key="resolution-overdue",
                )
            conn.commit()
        raised.append(incident["incident_id"])
    return {
        "overdue_alerted": raised,
        "start": [
            {"trigger_run_id": run_id_for(incident_id), "conf": {"incident_id": incident_id}} for incident_id in needing
        ],
    }
