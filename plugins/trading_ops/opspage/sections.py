"""The page's sections: one function each, `(policy, now) -> dict` of plain values, in page order in `SECTIONS`.

A section whose source cannot be read (the ops state database down, a repository unreachable) says so in one
sentence (`unavailable`) and the other sections still show: the page is looked at exactly when things are broken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from trading_ops.policy import Policy

log = logging.getLogger(__name__)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _seconds(delta: timedelta | None) -> float | None:
    return round(delta.total_seconds(), 3) if delta is not None else None


def _runs_url(policy: Policy, dag_id: str) -> str:
    return f"{policy.alerting.airflow_base_url.rstrip('/')}/dags/{dag_id}/runs"


def recoverability(policy: Policy, now: datetime) -> dict:
    """The recoverable window, the RPO now against its target, the backup catalog and the last drills."""
    from trading_ops.backup import list_backups, repository_from_policy
    from trading_ops.backup.wal_ship import offhost_lag
    from trading_ops.monitoring.collect import newest_wal_segment_time
    from trading_ops.restore.drill import PHASES, SOURCE, drills_by_backup, list_drills
    from trading_ops.restore.pitr import recoverable_window

    repository = repository_from_policy(policy)
    archive_dir = Path(policy.backup.wal_archive_dir)
    window = recoverable_window(repository, archive_dir, policy)
    newest_segment = newest_wal_segment_time(archive_dir) if archive_dir.is_dir() else None
    rpo = max(now - newest_segment, timedelta(0)) if newest_segment else None
    lag = (
        offhost_lag(repository, archive_dir, now, policy.backup.transaction_logs.retention)
        if archive_dir.is_dir()
        else None
    )
    target = policy.backup.rpo.target
    conn_id = policy.alerting.state_conn_id
    try:
        drills = list_drills(conn_id, policy.ops_page.drills_shown)
        last_drills = drills_by_backup(conn_id)
        drills_problem = None
    except Exception as exc:  # the catalog and the window stand without the ops state database
        log.warning("Restore drills unreadable from %s: %s", conn_id, exc)
        drills, last_drills, drills_problem = [], {}, f"The restore drills cannot be read: {_sentence(exc)}"
    catalog = [{**backup.summary(), "last_drill": last_drills.get(backup.id)} for backup in list_backups(repository)]
    return {
        "window": {
            "start": _iso(window.start),
            "end": _iso(window.end),
            "oldest_backup": window.oldest_backup,
            "newest_backup": window.newest_backup,
            "newest_segment": window.newest_segment,
            "missing": window.missing,
            "sentence": window.sentence(),
        },
        "rpo": {
            "newest_segment_archived_at": _iso(newest_segment),
            "age_seconds": _seconds(rpo),
            "target_seconds": _seconds(target),
            "within_target": rpo is not None and rpo <= target,
        },
        "offhost": {
            "repository_on_this_host": repository.local,
            "lag_seconds": _seconds(lag),
            "target_seconds": _seconds(policy.backup.wal_ship_within),
            "within_target": lag is not None and lag <= policy.backup.wal_ship_within,
        },
        "catalog": catalog,
        "drills": drills,
        "drills_problem": drills_problem,
        "phases": list(PHASES),
        "rto_budget_seconds": _seconds(policy.restore.drill.rto_budget),
        "drills_url": _runs_url(policy, SOURCE),
    }


def alerts(policy: Policy, now: datetime) -> dict:
    """The checks of system_health that are firing or pending, with since when, most urgent first."""
    from trading_ops.monitoring.rules import all_rules
    from trading_ops.monitoring.state import rule_states

    rules = {rule.name: rule for rule in all_rules(policy)}
    active = []
    for key, state in rule_states(policy.alerting.state_conn_id).items():
        if state.state == "ok":
            continue
        rule = rules.get(key.split("{", 1)[0])
        active.append(
            {
                "check": key,
                "state": state.state,
                "severity": rule.severity if rule else None,
                "condition": rule.condition if rule else None,
                "value": state.value,
                "since": _iso(state.active_since),
                "for_seconds": _seconds(now - state.active_since) if state.active_since else None,
                "fired_at": _iso(state.fired_at),
                "no_data_since": _iso(state.no_data_since),
                "evaluated_at": _iso(state.evaluated_at),
            }
        )
    active.sort(key=lambda item: (item["state"] != "firing", item["since"] or ""))
    return {"active": active, "runs_url": _runs_url(policy, "system_health")}


def incidents(policy: Policy, now: datetime) -> dict:
    """The open incidents (`incidents.open_incidents`), newest first, with their deadlines, the escalation step that
    is asking now and the incident_response run that carries the human steps."""
    from trading_ops.alerting import airflow_run_url
    from trading_ops.incidents import open_incidents
    from trading_ops.incidents.response import chain, step

    rows = []
    for incident in open_incidents(policy):
        asking = step(policy, incident, incident["escalation_position"]) if incident["opened_level"] != "P3" else None
        due = {
            kind: datetime.fromisoformat(incident[f"{kind}_due_at"])
            for kind in ("response", "resolution")
            if incident[f"{kind}_due_at"]
        }
        rows.append(
            {
                **{key: incident[key] for key in ("incident_id", "level", "opened_level", "source", "summary")},
                **{key: incident[key] for key in ("opened_at", "response_due_at", "resolution_due_at")},
                **{key: incident[key] for key in ("alert_count", "acknowledged_at", "acknowledged_by", "owner")},
                "condition_resolved_at": incident["condition_resolved_at"],
                "response_overdue": incident["acknowledged_at"] is None and now > due["response"],
                "resolution_overdue": now > due["resolution"],
                "escalation_step": f"{incident['escalation_position'] + 1} of {len(chain(policy, incident)) + 1}"
                if asking
                else None,
                "asking": asking.roles if asking else [],
                "response_run_url": airflow_run_url(policy, "incident_response", incident["response_run_id"])
                if incident["response_run_id"]
                else None,
            }
        )
    return {"open": rows, "tracker_runs_url": _runs_url(policy, "incident_tracker")}


def _checks_history(policy: Policy, names: list[str] | None, prefix: str | None) -> tuple[dict, dict]:
    from trading_ops.opsstate import connection
    from trading_ops.security.findings import latest_findings, recent_check_runs

    security = policy.security
    # The ops state's own connection: a database no check has written to yet gets its tables, so it reads empty.
    with connection(security.findings_conn_id) as conn:
        history = recent_check_runs(conn, security.findings_schema, policy.ops_page.check_runs_shown)
        findings = latest_findings(conn, security.findings_schema)

    def wanted(check: str) -> bool:
        return check in names if names is not None else check.startswith(prefix)

    return (
        {check: runs for check, runs in history.items() if wanted(check)},
        {check: rows for check, rows in findings.items() if wanted(check)},
    )


def _with_links(policy: Policy, history: dict) -> dict:
    from trading_ops.alerting import airflow_run_url

    return {
        check: [{**run, "url": airflow_run_url(policy, run["dag_id"], run["run_id"])} for run in runs]
        for check, runs in history.items()
    }


def expiring_waivers(policy: Policy, today: date) -> list[dict]:
    """Security and capacity waivers that end within `ops_page.waiver_expiry_warning` of `today` (or ended)."""
    horizon = today + policy.ops_page.waiver_expiry_warning
    waivers = [("security", w) for w in policy.security.waivers] + [("capacity", w) for w in policy.capacity.waivers]
    return sorted(
        (
            {
                "area": area,
                "check": waiver.check,
                "subject": waiver.subject,
                "reason": waiver.reason,
                "expires": waiver.expires.isoformat(),
                "days_left": (waiver.expires - today).days,
            }
            for area, waiver in waivers
            if waiver.expires <= horizon
        ),
        key=lambda item: item["expires"],
    )


def security(policy: Policy, now: datetime) -> dict:
    """Per security check: its last runs' new / persisting / resolved / waived counts; waivers expiring soon."""
    from trading_ops.security.catalog import CHECKS

    history, findings = _checks_history(policy, list(CHECKS), None)
    today = now.astimezone(ZoneInfo(policy.timezone)).date()
    return {
        "checks": [
            {
                "check": name,
                "frequency": check.frequency,
                "runs": _with_links(policy, history).get(name, []),
                "active": [row for row in findings.get(name, []) if not row["waived"]],
            }
            for name, check in CHECKS.items()
        ],
        "expiring_waivers": expiring_waivers(policy, today),
        "waiver_expiry_warning_days": policy.ops_page.waiver_expiry_warning.days,
    }


def logs_capacity(policy: Policy, now: datetime) -> dict:
    """Each log class's size against its cap (its paths on this host; the rotation's own retention plan), and the
    capacity review's drift findings (its newest runs)."""
    from trading_ops.logs.hosts import DEFAULT_HOST
    from trading_ops.logs.retention import class_usage

    classes = []
    for name, log_class in policy.logs.classes.items():
        plan = class_usage(name, policy, DEFAULT_HOST, now)
        elsewhere = sorted({path.host for path in log_class.paths if path.host != DEFAULT_HOST})
        classes.append(
            {
                "log_class": name,
                "total_bytes": plan.total_bytes,
                "due_for_deletion_bytes": sum(deletion.freed for deletion in plan.deletions),
                "max_size": log_class.max_size,
                "cap_fraction": round(plan.total_bytes / log_class.max_size, 4),
                "alert_at_cap_fraction": policy.logs.alert_at_cap_fraction,
                "alerts": [alert.summary for alert in plan.alerts],
                "other_hosts": elsewhere,
            }
        )
    history, findings = _checks_history(policy, None, "capacity_")
    return {
        "log_classes": classes,
        "capacity": [
            {"check": check, "runs": runs, "findings": findings.get(check, [])}
            for check, runs in sorted(_with_links(policy, history).items())
        ],
        "capacity_runs_url": _runs_url(policy, "capacity_review"),
    }


def _sentence(exc: Exception) -> str:
    """The first line of an error, as the page shows it (the project's errors are one sentence; psycopg's name the
    server, never a password)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass(frozen=True)
class Section:
    name: str
    title: str
    build: Callable[[Policy, datetime], dict]


SECTIONS: tuple[Section, ...] = (
    Section("recoverability", "Recoverability", recoverability),
    Section("alerts", "Alerts", alerts),
    Section("incidents", "Incidents", incidents),
    Section("security", "Security", security),
    Section("logs_capacity", "Logs and capacity", logs_capacity),
)


def build_section(section: Section, policy: Policy, now: datetime) -> dict:
    """The section's data, or `{"unavailable": sentence}` when its source cannot be read. The page only reads: the
    ops state's one-time move out of trading_db (which drops tables there) is left to the tasks."""
    from trading_ops.opsstate import reading_only

    try:
        with reading_only():
            return section.build(policy, now)
    except Exception as exc:  # one unreadable source must not take the whole page down
        log.exception("Ops page section %s failed", section.name)
        return {"unavailable": f"{section.title} cannot be shown: {_sentence(exc)}"}
