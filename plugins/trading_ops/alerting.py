"""Alert routing: the one way any DAG or check raises an alert, modelled on Prometheus Alertmanager.

Contract (other modules rely on it): build an `Alert` and call `send_alert(alert)`; call `resolve_alert(alert)`
with the same dedup key when the condition has cleared. A task failure goes through `notify_task_failure(context)`,
the shared `on_failure_callback`; `notify_task_recovery(context)`, the shared `on_success_callback`, resolves that
alert when the task later succeeds.

Routing comes from the policy. An alert's severity is an incident level (P1/P2/P3) or a rule severity
(critical/warning/info = P1/P2/P3); the level's Slack channels receive it through the `slack_alerts` webhook
connection, and a level with `pagerduty: true` (P1) also triggers PagerDuty through `pagerduty_events`. An alert
raised by a rule may carry its own route. Every message carries the level's respond/resolve times, escalation list
and procedure, and a link to the Airflow run.

PagerDuty deduplicates on the dedup key, so repeats update one incident. Slack has no such thing, so identical
alerts (same dedup key, level, source and summary) inside `alerting.group_window` are counted, not re-sent; that
window lives in the `ops` schema of `alerting.state_conn_id`. When that database is unreachable (which may be the
very reason of the alert) the alert is delivered ungrouped. A notification that did not reach every destination
does not open the window, so the next identical alert goes out again. Delivery never raises: a failed delivery is
logged at ERROR with the whole message, so a failing callback never hides the task's own error; callers that must
act on it look at the returned `Delivery`.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from trading_ops.policy import SEVERITY_TO_LEVEL, IncidentLevelName, Policy, load_policy

log = logging.getLogger(__name__)

LEVEL_TO_SEVERITY = {level: severity for severity, level in SEVERITY_TO_LEVEL.items()}
_LEVEL_ICONS = {"P1": ":rotating_light:", "P2": ":warning:", "P3": ":information_source:"}


@dataclass(frozen=True)
class Route:
    """Where an alert goes: Slack channels and, optionally, a PagerDuty service."""

    slack_channels: tuple[str, ...]
    pagerduty_service: str | None = None


@dataclass(frozen=True)
class Alert:
    """severity: an incident level (P1/P2/P3) or a rule severity (critical/warning/info).

    dedup_key: names the broken thing, so repeats update one PagerDuty incident (default: from the source).
    route: overrides the level's route (an alert rule names its own channels). raised_at: when the condition was
    seen (default: now); the grouping window is measured with it.
    """

    severity: str
    source: str
    summary: str
    details: dict = field(default_factory=dict)
    dedup_key: str | None = None
    run_url: str | None = None
    route: Route | None = None
    raised_at: datetime | None = None

    def __post_init__(self) -> None:
        # A mistyped severity must stop the caller where it is written, not vanish in routing later.
        if self.level not in LEVEL_TO_SEVERITY:
            raise ValueError(f"Alert severity {self.severity!r} is not one of P1, P2, P3, critical, warning, info.")

    @property
    def level(self) -> IncidentLevelName:
        return SEVERITY_TO_LEVEL.get(self.severity, self.severity)

    @property
    def key(self) -> str:
        return self.dedup_key or f"trading-ops/{self.source}"


@dataclass
class Delivery:
    """What happened to one alert: destinations reached and failed, or grouped into an earlier notification."""

    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    grouped: bool = False

    @property
    def complete(self) -> bool:
        """Every destination got it, now or (grouped) with the notification it was grouped into."""
        return self.grouped or (bool(self.sent) and not self.failed)


def format_duration(value: timedelta) -> str:
    """timedelta(minutes=90) -> '1h30m', the policy's own notation."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def airflow_run_url(policy: Policy, dag_id: str, run_id: str, task_id: str | None = None) -> str:
    """The run's page in the Airflow UI (or its task's page)."""
    url = f"{policy.alerting.airflow_base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}"
    return f"{url}/tasks/{task_id}" if task_id else url


def route_for(alert: Alert, policy: Policy) -> Route:
    if alert.route is not None:
        return alert.route
    level = policy.incident_levels[alert.level]
    return Route(tuple(level.slack_channels), policy.alerting.pagerduty_service if level.pagerduty else None)


def _level_line(alert: Alert, policy: Policy) -> str:
    level = policy.incident_levels[alert.level]
    return (
        f"*Respond within* {format_duration(level.respond_within)}, "
        f"*resolve within* {format_duration(level.resolve_within)} · "
        f"*escalation:* {' → '.join(level.escalation)} · *procedure:* {level.procedure}"
    )


def _detail_lines(details: dict) -> list[str]:
    lines = []
    for name, value in details.items():
        text = str(value)
        lines.append(f"*{name}:*\n```\n{text}\n```" if "\n" in text else f"*{name}:* {text}")
    return lines


def slack_text(alert: Alert, policy: Policy, *, resolved: bool = False, grouped: int = 0) -> str:
    """The Slack message (mrkdwn) of an alert, or of its resolution."""
    level = policy.incident_levels[alert.level]
    if resolved:
        lines = [f":white_check_mark: *RESOLVED {alert.level} {level.name}* · {alert.summary}"]
    else:
        lines = [f"{_LEVEL_ICONS[alert.level]} *{alert.level} {level.name}* ({level.description}) · {alert.summary}"]
    lines.append(f"*Source:* {alert.source}")
    if not resolved:
        lines.append(_level_line(alert, policy))
        lines.extend(_detail_lines(alert.details))
    if alert.run_url:
        lines.append(f"*Airflow run:* <{alert.run_url}>")
    if grouped:
        lines.append(
            f"_{grouped} identical alert(s) grouped since the last notification "
            f"(window {format_duration(policy.alerting.group_window)})_"
        )
    lines.append(f"_dedup key: {alert.key}_")
    return "\n".join(lines)


def pagerduty_event(alert: Alert, policy: Policy, service: str, action: str = "trigger") -> dict:
    """Keyword arguments of the provider's `send_event` for this alert."""
    level = policy.incident_levels[alert.level]
    custom_details = {
        "incident_level": f"{alert.level} {level.name} ({level.description})",
        "respond_within": format_duration(level.respond_within),
        "resolve_within": format_duration(level.resolve_within),
        "escalation": level.escalation,
        "procedure": level.procedure,
        **{name: str(value) for name, value in alert.details.items()},
    }
    return {
        "summary": f"[{alert.level}] {alert.summary}"[:1024],
        "severity": LEVEL_TO_SEVERITY[alert.level],
        "source": alert.source,
        "action": action,
        "dedup_key": alert.key,
        "custom_details": custom_details,
        "group": service,
        "component": "trading-ops",
        "class_type": level.name,
        "links": [{"href": alert.run_url, "text": "Airflow run"}] if alert.run_url else None,
    }


# --- grouping window (ops schema) ---------------------------------------------------------------------------------


def _group_key(alert: Alert) -> str:
    return hashlib.sha256("\x1f".join((alert.key, alert.level, alert.source, alert.summary)).encode()).hexdigest()


def _record_occurrence(alert: Alert, policy: Policy, at: datetime) -> tuple[bool, int, bool]:
    """(send?, occurrences grouped into the previous notification, recorded?). Unreachable state: send, ungrouped."""
    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            conn.execute(load_sql("alerting/create_alert_groups.sql"))
            sent, grouped = conn.execute(
                load_sql("alerting/record_alert_occurrence.sql"),
                {
                    "group_key": _group_key(alert),
                    "dedup_key": alert.key,
                    "level": alert.level,
                    "source": alert.source,
                    "summary": alert.summary,
                    "at": at,
                    "window": policy.alerting.group_window,
                },
            ).fetchone()
            conn.commit()
            return sent, grouped, True
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; delivering %s alert %r ungrouped",
            policy.alerting.state_conn_id,
            alert.level,
            alert.summary,
        )
        return True, 0, False


def _undo_occurrence(alert: Alert, policy: Policy) -> None:
    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            conn.execute(load_sql("alerting/undo_alert_occurrence.sql"), {"group_key": _group_key(alert)})
            conn.commit()
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; an identical alert within %s may be grouped into the "
            "undelivered %r",
            policy.alerting.state_conn_id,
            format_duration(policy.alerting.group_window),
            alert.summary,
        )


def _forget_occurrences(alert: Alert, policy: Policy) -> None:
    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            conn.execute(load_sql("alerting/create_alert_groups.sql"))
            conn.execute(load_sql("alerting/delete_alert_groups.sql"), {"dedup_key": alert.key})
            conn.commit()
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; resolving %r anyway", policy.alerting.state_conn_id, alert.key
        )


# --- delivery -----------------------------------------------------------------------------------------------------


def _post_to_slack(policy: Policy, channel: str, text: str) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    own_conn_id = policy.alerting.slack_channel_conn_ids.get(channel)
    hook = SlackWebhookHook(
        slack_webhook_conn_id=own_conn_id or policy.alerting.slack_conn_id,
        timeout=int(policy.alerting.delivery_timeout.total_seconds()),
    )
    if own_conn_id:
        hook.send(text=text)
        return
    # A legacy or Slack-compatible webhook posts to the `channel` named in the message; the hook warns on every
    # send that a Slack app's webhook ignores it, which is why such channels get their own connection above.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hook.send(text=text, channel=channel)


def _post_to_pagerduty(policy: Policy, event: dict) -> None:
    from trading_ops.pagerduty_events import RegionalPagerdutyEventsHook

    hook = RegionalPagerdutyEventsHook(
        policy.alerting.pagerduty_conn_id, timeout=policy.alerting.delivery_timeout.total_seconds()
    )
    hook.send_event(**event)


def _deliver(alert: Alert, policy: Policy, *, resolved: bool, grouped: int = 0) -> Delivery:
    from airflow.sdk._shared.secrets_masker import redact

    delivery = Delivery()
    route = route_for(alert, policy)
    text = redact(slack_text(alert, policy, resolved=resolved, grouped=grouped))
    attempts = [(f"slack:{channel}", _post_to_slack, (policy, channel, text)) for channel in route.slack_channels]
    if route.pagerduty_service:
        event = redact(pagerduty_event(alert, policy, route.pagerduty_service, "resolve" if resolved else "trigger"))
        attempts.append((f"pagerduty:{route.pagerduty_service}", _post_to_pagerduty, (policy, event)))
    for destination, post, args in attempts:
        try:
            post(*args)
            delivery.sent.append(destination)
        except Exception:
            delivery.failed.append(destination)
            log.exception(
                "ALERT DELIVERY FAILED to %s; the undelivered %s alert follows:\n%s", destination, alert.level, text
            )
    log.info(
        "%s %s alert %r (dedup key %s): sent to %s%s",
        "Resolved" if resolved else "Raised",
        alert.level,
        alert.summary,
        alert.key,
        ", ".join(delivery.sent) or "nowhere",
        f"; FAILED for {', '.join(delivery.failed)}" if delivery.failed else "",
    )
    return delivery


def send_alert(alert: Alert) -> Delivery:
    """Route an alert to its Slack channels (and PagerDuty for a paging level), unless grouped; never raises."""
    policy = load_policy()
    sent, grouped, recorded = _record_occurrence(alert, policy, alert.raised_at or datetime.now(UTC))
    if not sent:
        log.warning(
            "%s alert %r from %s grouped: an identical one was sent less than %s ago",
            alert.level,
            alert.summary,
            alert.source,
            format_duration(policy.alerting.group_window),
        )
        return Delivery(grouped=True)
    delivery = _deliver(alert, policy, resolved=False, grouped=grouped)
    if recorded and not delivery.complete:
        _undo_occurrence(alert, policy)
    return delivery


def resolve_alert(alert: Alert) -> Delivery:
    """Tell the alert's route that the condition cleared: a Slack note and a PagerDuty `resolve`; never raises."""
    policy = load_policy()
    _forget_occurrences(alert, policy)
    return _deliver(alert, policy, resolved=True)


def first_lines(error: BaseException | str | None, count: int) -> str:
    if error is None:
        return "(no exception was recorded)"
    text = error if isinstance(error, str) else "".join(traceback.format_exception_only(type(error), error))
    return "\n".join(text.strip().splitlines()[:count])


def _task_failure_alert(ti, policy: Policy, details: dict | None = None) -> Alert:
    return Alert(
        severity=policy.level_for_dag(ti.dag_id),
        source=f"{ti.dag_id}.{ti.task_id}",
        summary=f"{ti.dag_id}: task {ti.task_id} failed",
        details=details or {},
        dedup_key=f"trading-ops/{ti.dag_id}/{ti.task_id}",
        run_url=airflow_run_url(policy, ti.dag_id, ti.run_id, ti.task_id),
    )


def notify_task_failure(context) -> Delivery:
    """The shared on_failure_callback: one alert at the DAG's incident level, naming the task and its error."""
    ti = context["ti"]
    policy = load_policy()
    details = {"failed task": ti.task_id, "run id": ti.run_id, "try": ti.try_number}
    if getattr(ti, "map_index", -1) >= 0:
        details["map index"] = ti.map_index
    details["error"] = first_lines(context.get("exception"), policy.alerting.error_lines)
    return send_alert(_task_failure_alert(ti, policy, details))


def _failure_is_open(alert: Alert, policy: Policy) -> bool:
    """Whether a failure alert with this dedup key was raised and not resolved: one indexed lookup."""
    import psycopg

    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id, autocommit=True) as conn:
            return conn.execute(load_sql("alerting/select_open_alert.sql"), {"dedup_key": alert.key}).fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return False  # no alert was ever raised here
    except Exception:
        log.warning(
            "Alert grouping state in %r is unavailable; %r is not resolved even if it was open",
            policy.alerting.state_conn_id,
            alert.summary,
            exc_info=True,
        )
        return False


def notify_task_recovery(context) -> Delivery | None:
    """The shared on_success_callback: resolves the task's failure alert (Slack note, PagerDuty `resolve`) when one
    is open; otherwise does nothing but look."""
    ti = context["ti"]
    if getattr(ti, "map_index", -1) >= 0:
        # One dedup key stands for every mapped instance: one instance's success says nothing of another's failure.
        return None
    policy = load_policy()
    alert = _task_failure_alert(ti, policy)
    return resolve_alert(alert) if _failure_is_open(alert, policy) else None
