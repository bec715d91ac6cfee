"""The human steps of an incident (incident_response), as plain functions of the incident id, the policy and the
moment: who is asked at each escalation step, what an escalation, an acknowledgement, a status report and the
recovery confirmation record and tell.

Notifications go through `alerting.send_alert` with `incident_id` set, so they land on the incident's timeline
instead of opening incidents of their own. An escalation's message names the people now asked; at P1 it also pages
them (a PagerDuty event of its own, so it pages anew instead of being folded into the first, unacknowledged one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from trading_ops.alerting.routing import Alert, Route, airflow_run_url, format_duration
from trading_ops.errors import UserError
from trading_ops.incidents import store
from trading_ops.policy import Policy
from trading_ops.sqlfiles import load_sql

DAG_ID = "incident_response"


class IncidentNotFound(UserError):
    """The incident id of a run names no incident, or one without human steps."""


@dataclass(frozen=True)
class Step:
    """One acknowledge step: the roles asked, their Airflow users, for how long (None: until one answers)."""

    position: int
    role_users: dict[str, list[str]]
    timeout: timedelta | None

    @property
    def roles(self) -> list[str]:
        return list(self.role_users)

    @property
    def users(self) -> list[str]:
        return list(dict.fromkeys(user for users in self.role_users.values() for user in users))

    @property
    def who(self) -> str:
        return ", ".join(f"{role} ({', '.join(users)})" for role, users in self.role_users.items())


def run_id_for(incident_id: int) -> str:
    """The one incident_response run of an incident: a second trigger of the same id is refused by Airflow."""
    return f"incident_{incident_id}"


def chain(policy: Policy, incident: dict) -> list[str]:
    # The chain of the level it opened at: the people already asked stay the ones who escalate.
    return policy.incident_levels[incident["opened_level"]].escalation


def step(policy: Policy, incident: dict, position: int) -> Step | None:
    """Position p < len(chain) asks chain[p] for the level's response time; position len(chain) asks everybody of
    the chain until one answers; beyond that there is no step."""
    roles = chain(policy, incident)
    if position > len(roles):
        return None
    asked = roles[position : position + 1] if position < len(roles) else roles
    timeout = policy.incident_levels[incident["opened_level"]].respond_within if position < len(roles) else None
    return Step(position, {role: policy.incidents.roles[role] for role in asked}, timeout)


def load(policy: Policy, incident_id: int) -> dict:
    with store.connection(policy) as conn:
        incident = store.get_incident(conn, incident_id)
    if incident is None:
        raise IncidentNotFound(f"Incident {incident_id} does not exist in the ops state database.")
    if incident["opened_level"] == "P3":
        raise IncidentNotFound(f"Incident {incident_id} is P3: it is handled with its alert, without human steps.")
    return incident


def start(policy: Policy, incident_id: int, run_id: str, at: datetime) -> dict:
    """Bind the run to its incident (one run per incident) and put it on the timeline."""
    incident = load(policy, incident_id)
    with store.connection(policy) as conn:
        if (
            conn.execute(
                load_sql("incidents/set_response_run.sql"), {"incident_id": incident_id, "run_id": run_id}
            ).fetchone()
            is None
        ):
            raise IncidentNotFound(
                f"Incident {incident_id} is handled by run {incident['response_run_id']} already; this run stops."
            )
        level = policy.incident_levels[incident["opened_level"]]
        store.add_event(
            conn,
            incident_id,
            at,
            "response_started",
            f"incident_response run {run_id} started: {level.procedure}",
            event_key="response_started",
        )
        conn.commit()
    return incident


def required_actions_url(policy: Policy, run_id: str, task_id: str) -> str:
    return airflow_run_url(policy, DAG_ID, run_id, task_id) + "/required_actions"


def _slack_only(policy: Policy, incident: dict) -> Route:
    return Route(tuple(policy.incident_levels[incident["level"]].slack_channels))


def _notify(
    policy: Policy,
    incident: dict,
    summary: str,
    details: dict,
    at: datetime,
    *,
    page: bool,
    key: str,
    run_url: str | None = None,
) -> None:
    from trading_ops.alerting import send_alert

    send_alert(
        Alert(
            severity=incident["level"],
            source=f"incident/{incident['incident_id']}",
            summary=summary,
            details=details,
            dedup_key=f"trading-ops/incident/{incident['incident_id']}/{key}",
            run_url=run_url,
            route=None if page else _slack_only(policy, incident),
            raised_at=at,
            incident_id=incident["incident_id"],
        )
    )


def ask(policy: Policy, incident_id: int, position: int, run_id: str, task_id: str, at: datetime) -> Step | None:
    """The acknowledge step at `position`, or None when there is none to ask (acknowledged, resolved, or past the
    chain). A step after the first is an escalation: recorded once, with a Slack message naming the people asked
    (and, at P1, a PagerDuty page)."""
    incident = load(policy, incident_id)
    if incident["acknowledged_at"] is not None or incident["resolved_at"] is not None:
        return None
    current = step(policy, incident, position)
    if current is None:
        return None
    url = required_actions_url(policy, run_id, task_id)
    if position == 0:
        level = policy.incident_levels[incident["opened_level"]]
        _notify(
            policy,
            incident,
            f"Incident #{incident_id} opened: {current.who} to acknowledge within "
            f"{format_duration(level.respond_within)}",
            {"incident": incident["summary"], "procedure": level.procedure, "acknowledge": url},
            at,
            page=False,
            key="opened",
        )
        return current
    with store.connection(policy) as conn:
        moved = conn.execute(
            load_sql("incidents/escalate.sql"), {"incident_id": incident_id, "position": position}
        ).fetchone()
        if moved:
            previous = step(policy, incident, position - 1)
            message = (
                f"Escalated to {current.who}: {previous.who} did not acknowledge within "
                f"{format_duration(previous.timeout)}"
            )
            if current.timeout is None:
                message += "; the whole chain is asked until one acknowledges"
            store.add_event(
                conn,
                incident_id,
                at,
                "escalated",
                message,
                details={"position": position, "roles": list(current.roles), "users": list(current.users)},
                event_key=f"escalated-{position}",
            )
        conn.commit()
    if moved:
        _notify(
            policy,
            incident,
            f"Incident #{incident_id} escalated to {current.who}: not acknowledged in time",
            {
                "incident": incident["summary"],
                "escalation step": f"{position + 1} of {len(chain(policy, incident)) + 1}",
                "acknowledge": url,
            },
            at,
            page=policy.incident_levels[incident["opened_level"]].pagerduty,
            key=f"escalation/{position}",
        )
    return current


def _record(policy: Policy, incident_id: int, at: datetime, kind: str, message: str, event_key: str, **extra) -> bool:
    """One keyed event on the timeline, in its own transaction; False when it was recorded before."""
    with store.connection(policy) as conn:
        new = store.add_event(conn, incident_id, at, kind, message, event_key=event_key, **extra)
        conn.commit()
    return new


def not_acknowledged(policy: Policy, incident_id: int, position: int, at: datetime) -> None:
    current = step(policy, load(policy, incident_id), position)
    _record(
        policy,
        incident_id,
        at,
        "acknowledge_timeout",
        f"No acknowledgement from {current.who} within {format_duration(current.timeout)}",
        f"acknowledge-timeout-{position}",
    )


def acknowledge(policy: Policy, incident_id: int, user: str, at: datetime) -> dict:
    """Record who acknowledged and when (the first answer counts; it makes them the owner)."""
    incident = load(policy, incident_id)
    level = policy.incident_levels[incident["opened_level"]]
    taken = at - incident["opened_at"]
    verdict = "within" if at <= incident["response_due_at"] else "LATE against"
    with store.connection(policy) as conn:
        if conn.execute(
            load_sql("incidents/acknowledge.sql"), {"incident_id": incident_id, "user": user, "at": at}
        ).fetchone():
            store.add_event(
                conn,
                incident_id,
                at,
                "acknowledged",
                f"Acknowledged by {user} {format_duration(taken)} after opening, {verdict} the "
                f"{format_duration(level.respond_within)} response time; {user} owns the incident",
                actor=user,
                event_key="acknowledged",
            )
        conn.commit()
        incident = store.get_incident(conn, incident_id)
    _notify(
        policy,
        incident,
        f"Incident #{incident_id} acknowledged by {incident['acknowledged_by']} ({verdict} "
        f"{format_duration(level.respond_within)})",
        {"owner": incident["owner"]},
        at,
        page=False,
        key="acknowledged",
    )
    return incident


def responders(policy: Policy, incident: dict) -> list[str]:
    """Who answers the status reports and the recovery confirmation: the owner and the current step's people."""
    current = step(policy, incident, incident["escalation_position"])
    users = [incident["owner"]] if incident["owner"] else []
    return list(dict.fromkeys([*users, *(current.users if current else ())]))


def status_report(policy: Policy, incident_id: int, report: dict, user: str | None, at: datetime) -> dict:
    """Record a status report (impact, current action, next update) and post it to the level's Slack channels."""
    incident = load(policy, incident_id)
    next_update = report.get("next_update_minutes")
    details = {
        "impact": report.get("impact") or "",
        "current action": report.get("current_action") or "",
        "next update": f"in {next_update} min"
        if next_update
        else f"in {format_duration(policy.incidents.status_report_every)}",
    }
    new = _record(
        policy,
        incident_id,
        at,
        "status_report",
        f"Status: impact {details['impact']}; doing {details['current action']}; next update {details['next update']}",
        f"status-{at.isoformat()}",
        actor=user,
        details={**details, "next_update_minutes": next_update},
    )
    if new:
        _notify(
            policy,
            incident,
            f"Incident #{incident_id} status report by {user}",
            details,
            at,
            page=False,
            key=f"status/{at.isoformat()}",
        )
    return incident


def status_overdue(policy: Policy, incident_id: int, at: datetime, waited: timedelta) -> None:
    incident = load(policy, incident_id)
    who = ", ".join(responders(policy, incident))
    new = _record(
        policy,
        incident_id,
        at,
        "status_overdue",
        f"No status report from {who} in {format_duration(waited)}",
        f"status-overdue-{at.isoformat()}",
    )
    if new:
        _notify(
            policy,
            incident,
            f"Incident #{incident_id}: status report overdue from {who}",
            {"waited": format_duration(waited)},
            at,
            page=False,
            key=f"status-overdue/{at.isoformat()}",
        )


def next_report_timeout(policy: Policy, report: dict | None) -> timedelta:
    minutes = (report or {}).get("next_update_minutes")
    return timedelta(minutes=int(minutes)) if minutes else policy.incidents.status_report_every


def close(policy: Policy, incident_id: int, user: str | None, note: str, at: datetime) -> dict:
    """Recovery confirmed: the incident is resolved at `at`, measured against its resolution deadline."""
    incident = load(policy, incident_id)
    level = policy.incident_levels[incident["opened_level"]]
    verdict = "within" if at <= incident["resolution_due_at"] else "LATE against"
    taken = at - incident["opened_at"]
    with store.connection(policy) as conn:
        if conn.execute(
            load_sql("incidents/close_incident.sql"), {"incident_id": incident_id, "user": user, "note": note, "at": at}
        ).fetchone():
            store.add_event(
                conn,
                incident_id,
                at,
                "resolved",
                f"Recovery confirmed by {user}: resolved {format_duration(taken)} after opening, {verdict} the "
                f"{format_duration(level.resolve_within)} resolution time",
                actor=user,
                details={"what resolved it": note},
                event_key="resolved",
            )
        conn.commit()
        incident = store.get_incident(conn, incident_id)
    if level.pagerduty:
        # The escalation pages were incidents of their own at PagerDuty: they end with the incident.
        from trading_ops.alerting import resolve_alert

        for position in range(1, incident["escalation_position"] + 1):
            resolve_alert(
                Alert(
                    severity=incident["level"],
                    source=f"incident/{incident_id}",
                    summary=f"Incident #{incident_id} escalation {position}",
                    dedup_key=f"trading-ops/incident/{incident_id}/escalation/{position}",
                    raised_at=at,
                    incident_id=incident_id,
                )
            )
    return incident


def write_post_mortem(policy: Policy, incident_id: int, run_id: str, task_id: str, at: datetime) -> str:
    """Draft the post-mortem from the timeline, store it with the incident, and link it from Slack."""
    from trading_ops.incidents.postmortem import draft

    with store.connection(policy) as conn:
        incident = store.get_incident(conn, incident_id)
        text = draft(incident, store.timeline(conn, incident_id), policy)
        conn.execute(load_sql("incidents/set_post_mortem.sql"), {"incident_id": incident_id, "post_mortem": text})
        store.add_event(conn, incident_id, at, "post_mortem", "Post-mortem draft written", event_key="post_mortem")
        conn.commit()
    url = airflow_run_url(policy, DAG_ID, run_id, task_id)
    _notify(
        policy,
        incident,
        f"Incident #{incident_id} resolved: post-mortem draft ready for review",
        {
            "post-mortem": f"<{url}|draft in Airflow> · "
            f"`python -m trading_ops incidents show {incident_id} --post-mortem`",
            "resolved by": incident["resolved_by"],
        },
        at,
        page=False,
        key="post-mortem",
        run_url=url,
    )
    return text


def last_report(policy: Policy, incident_id: int) -> dict | None:
    """The latest status report's fields, None before the first."""
    with store.connection(policy) as conn:
        reports = [event for event in store.timeline(conn, incident_id) if event["kind"] == "status_report"]
    return reports[-1]["details"] if reports else None


def _facts(policy: Policy, incident: dict) -> list[str]:
    level = policy.incident_levels[incident["opened_level"]]
    return [
        f"- **Level:** {incident['level']} {level.name} ({level.description}); procedure: {level.procedure}",
        f"- **Source:** {incident['source']} (dedup key `{incident['dedup_key']}`), {incident['alert_count']} alert(s)",
        f"- **Opened:** {incident['opened_at']:%Y-%m-%d %H:%M:%S %Z}; respond by "
        f"{incident['response_due_at']:%H:%M:%S %Z}, resolve by {incident['resolution_due_at']:%Y-%m-%d %H:%M:%S %Z}",
        f"- **Escalation:** {' → '.join(level.escalation)}",
        f"- **Timeline:** `python -m trading_ops incidents show {incident['incident_id']}`",
    ]


def acknowledge_body(policy: Policy, incident: dict, current: Step) -> str:
    wait = (
        f"Without an acknowledgement in {format_duration(current.timeout)} the next role of the chain is asked."
        if current.timeout
        else "Everybody of the chain is asked now; this waits until one of you acknowledges."
    )
    return "\n".join(
        [
            f"**{incident['summary']}**",
            "",
            f"Asked now: {current.who}. {wait} Acknowledging makes you the owner: you give the status reports "
            "and confirm the recovery.",
            "",
            *_facts(policy, incident),
        ]
    )


def status_body(policy: Policy, incident: dict) -> str:
    return "\n".join(
        [
            f"**{incident['summary']}**",
            "",
            "Report the impact, what is being done and when the next update comes (empty: "
            f"{format_duration(policy.incidents.status_report_every)}). Each report goes to Slack and the timeline; "
            "this form asks again until the triggering condition has cleared, then the recovery confirmation "
            "is offered. A missed update is a Slack reminder.",
            "",
            *_facts(policy, incident),
        ]
    )


def confirm_body(policy: Policy, incident: dict) -> str:
    cleared = incident["condition_resolved_at"]
    if cleared:
        state = f"The triggering condition cleared at {cleared:%Y-%m-%d %H:%M:%S %Z}."
    else:
        state = (
            f"**The triggering condition is active again** (last alert {incident['last_alert_at']:%H:%M:%S %Z}): "
            "confirm only once the service has really recovered."
        )
    return "\n".join(
        [
            f"**{incident['summary']}**",
            "",
            f"{state} Confirm that the service has recovered: the incident is "
            "closed now, its resolution time measured against the deadline, and the post-mortem draft is written "
            "from its timeline. Say what resolved it.",
            "",
            *_facts(policy, incident),
        ]
    )
