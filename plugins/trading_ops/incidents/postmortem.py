"""The post-mortem draft of a resolved P1/P2 incident (markdown), written from its record and timeline only: the
timeline, the times against the level's deadlines, who acknowledged, what resolved it, and the open questions the
review must answer. It is a draft: the facts are filled in, the analysis is left to the people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trading_ops.alerting.routing import format_duration
from trading_ops.policy import Policy


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _against(done: datetime | None, start: datetime, due: datetime, allowed: timedelta) -> str:
    if done is None:
        return f"not yet (due {_time(due)})"
    taken = done - start
    if done <= due:
        return f"{format_duration(taken)} (within {format_duration(allowed)})"
    return f"{format_duration(taken)} (MISSED: {format_duration(allowed)} allowed, {format_duration(done - due)} late)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def draft(incident: dict, events: list[dict], policy: Policy) -> str:
    level = policy.incident_levels[incident["opened_level"]]
    opened = incident["opened_at"]
    raised = f" (raised to {incident['level']})" if incident["level"] != incident["opened_level"] else ""
    escalations = [event for event in events if event["kind"] == "escalated"]
    reports = [event for event in events if event["kind"] == "status_report"]
    resolved = next((event for event in events if event["kind"] == "resolved"), None)
    resolution_note = incident["resolution_note"] or "(not given)"
    lines = [
        f"# Post-mortem (draft): incident #{incident['incident_id']}: {incident['summary']}",
        "",
        f"- **Level:** {incident['opened_level']} {level.name} ({level.description}){raised}",
        f"- **Source:** {incident['source']} (dedup key `{incident['dedup_key']}`)",
        f"- **Opened:** {_time(opened)}; {incident['alert_count']} alert(s), the last at "
        f"{_time(incident['last_alert_at'])}",
        f"- **Acknowledged:** {_time(incident['acknowledged_at'])} by {incident['acknowledged_by'] or 'nobody'}: "
        + _against(incident["acknowledged_at"], opened, incident["response_due_at"], level.respond_within),
        f"- **Escalations:** {len(escalations)} (chain {' → '.join(level.escalation)})",
        f"- **Owner:** {incident['owner'] or 'none'}",
        f"- **Condition cleared:** {_time(incident['condition_resolved_at'])}",
        f"- **Resolved:** {_time(incident['resolved_at'])} by {incident['resolved_by'] or '-'}: "
        + _against(incident["resolved_at"], opened, incident["resolution_due_at"], level.resolve_within),
        f"- **Status reports:** {len(reports)}",
        "",
        "## Timeline",
        "",
        "| time (UTC) | event | who | what |",
        "|---|---|---|---|",
        *(
            f"| {event['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} | {event['kind']} | {event['actor'] or ''} | "
            f"{_cell(event['message'])} |"
            for event in events
        ),
        "",
        "## What resolved it",
        "",
        resolution_note,
        "",
        "## Open questions",
        "",
        "- What was the root cause, and why did it happen now?",
        f"- Detection: the first alert came at {_time(opened)}; when did the problem start?",
    ]
    if escalations or (incident["acknowledged_at"] and incident["acknowledged_at"] > incident["response_due_at"]):
        lines.append("- Response: why was the first person of the chain not reachable in time?")
    if incident["resolved_at"] and incident["resolved_at"] > incident["resolution_due_at"]:
        lines.append("- Resolution: what made it take longer than the level's resolution time?")
    if not reports:
        lines.append("- Communication: no status report was given; who needed one?")
    lines += [
        "- What change prevents a recurrence, and who owns it by when?",
        "- Would an earlier or a different alert have shortened it?",
    ]
    if resolved is None:
        lines.append("- The incident is not resolved yet: this draft is incomplete.")
    return "\n".join(lines) + "\n"
