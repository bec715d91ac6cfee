"""Incidents and their timelines in the ops state database (`ops.incidents`, `ops.incident_events`).

Every function takes the moment it records (`at`): the alert's time, the answer's time, the tracker run's time.
"""

from __future__ import annotations

import logging
from datetime import datetime

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from trading_ops.alerting.routing import Alert
from trading_ops.policy import Policy
from trading_ops.sqlfiles import load_sql

log = logging.getLogger(__name__)


def connection(policy: Policy):
    """The ops state database, where the alerting state lives too (`alerting.state_conn_id`)."""
    from trading_ops import opsstate

    return opsstate.connection(policy.alerting.state_conn_id)


def add_event(
    conn,
    incident_id: int,
    at: datetime,
    kind: str,
    message: str,
    *,
    actor: str | None = None,
    details: dict | None = None,
    event_key: str | None = None,
) -> bool:
    """Append to the timeline; False when `event_key` was recorded before."""
    row = conn.execute(
        load_sql("incidents/insert_event.sql"),
        {
            "incident_id": incident_id,
            "at": at,
            "kind": kind,
            "actor": actor,
            "message": message,
            "details": Jsonb(details or {}),
            "event_key": event_key,
        },
    ).fetchone()
    return row is not None


def open_or_join(conn, alert: Alert, policy: Policy, at: datetime) -> dict:
    """The incident this alert opens or joins (by dedup key), with `opened` telling which."""
    level = policy.incident_levels[alert.level]
    row = (
        conn.cursor(row_factory=dict_row)
        .execute(
            load_sql("incidents/open_or_join.sql"),
            {
                "dedup_key": alert.key,
                "level": alert.level,
                "source": alert.source,
                "summary": alert.summary,
                "at": at,
                "response_due_at": at + level.respond_within,
                "resolution_due_at": at + level.resolve_within,
            },
        )
        .fetchone()
    )
    details = {"source": alert.source, "severity": alert.severity, **{k: str(v) for k, v in alert.details.items()}}
    if row["opened"]:
        add_event(conn, row["incident_id"], at, "opened", f"{alert.level} alert: {alert.summary}", details=details)
    elif row["cleared_before"] is not None:
        add_event(conn, row["incident_id"], at, "condition_returned", f"Fired again: {alert.summary}", details=details)
    else:
        add_event(conn, row["incident_id"], at, "alert_repeated", f"{alert.level} alert: {alert.summary}")
    return row


def record_alert(alert: Alert, policy: Policy, at: datetime) -> int | None:
    """The alerting hook (`alerting.send_alert`): the incident id the alert opened or joined, None for a notice.

    An alert about an incident (escalation, status, overdue resolution: `alert.incident_id`) goes on its timeline.
    Never raises: an incident that cannot be recorded must not stop the alert (it is logged at ERROR).
    """
    if not alert.incident:
        return None
    try:
        with connection(policy) as conn:
            if alert.incident_id is not None:
                add_event(conn, alert.incident_id, at, "notified", f"{alert.level} alert sent: {alert.summary}")
                incident_id = alert.incident_id
            else:
                incident_id = open_or_join(conn, alert, policy, at)["incident_id"]
            conn.commit()
            return incident_id
    except Exception:
        log.exception(
            "The incident of %s alert %r (dedup key %s) was not recorded", alert.level, alert.summary, alert.key
        )
        return None


def record_resolution(alert: Alert, policy: Policy, at: datetime) -> int | None:
    """The alerting hook (`alerting.resolve_alert`): the open incident of this dedup key learns that its condition
    cleared (a P3 incident is resolved with it); returns its id. Never raises."""
    if not alert.incident or alert.incident_id is not None:
        return None
    try:
        with connection(policy) as conn:
            row = conn.execute(
                load_sql("incidents/condition_resolved.sql"), {"dedup_key": alert.key, "at": at}
            ).fetchone()
            if row is None:
                conn.commit()
                return None
            incident_id, level = row
            message = f"Condition cleared: {alert.summary}"
            if level == "P3":
                message += "; a P3 incident is resolved with its alert"
            add_event(conn, incident_id, at, "resolved" if level == "P3" else "condition_resolved", message)
            conn.commit()
            return incident_id
    except Exception:
        log.exception("The incident of the resolved alert %r (dedup key %s) was not updated", alert.summary, alert.key)
        return None


def get_incident(conn, incident_id: int) -> dict | None:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(load_sql("incidents/select_incident.sql"), {"incident_id": incident_id})
        .fetchone()
    )


def timeline(conn, incident_id: int) -> list[dict]:
    return (
        conn.cursor(row_factory=dict_row)
        .execute(load_sql("incidents/select_events.sql"), {"incident_id": incident_id})
        .fetchall()
    )


def list_incidents(policy: Policy, *, open_only: bool = False, limit: int = 50) -> list[dict]:
    with connection(policy) as conn:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(load_sql("incidents/select_incidents.sql"), {"open_only": open_only, "limit": limit})
            .fetchall()
        )


def show_incident(policy: Policy, incident_id: int) -> tuple[dict, list[dict]] | None:
    with connection(policy) as conn:
        incident = get_incident(conn, incident_id)
        return None if incident is None else (incident, timeline(conn, incident_id))


def open_incidents(policy: Policy) -> list[dict]:
    """The open incidents, newest first, as plain JSON-ready dicts (times in ISO 8601): for pages and reports."""
    return [
        {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in row.items()
            if key != "post_mortem"
        }
        for row in list_incidents(policy, open_only=True, limit=1000)
    ]
