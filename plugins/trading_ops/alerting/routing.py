"""What an alert is and where it goes: its level, the route the policy (or the rule raising it) gives it, and what
happened to its delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

from trading_ops.policy import SEVERITY_TO_LEVEL, IncidentLevelName, Policy

LEVEL_TO_SEVERITY = {level: severity for severity, level in SEVERITY_TO_LEVEL.items()}


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
    seen (default: now); the grouping window is measured with it. incident: False for a notice of something a
    person must fix that is no incident (a user error): it goes to its level's Slack channels and never pages.
    incident_id: the alert is about that incident (an escalation, a status report): it goes on the incident's
    timeline instead of opening or joining one by its dedup key.
    """

    severity: str
    source: str
    summary: str
    details: dict = field(default_factory=dict)
    dedup_key: str | None = None
    run_url: str | None = None
    route: Route | None = None
    raised_at: datetime | None = None
    incident: bool = True
    incident_id: int | None = None

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


def route_for(alert: Alert, policy: Policy) -> Route:
    if alert.route is not None:
        return alert.route
    level = policy.incident_levels[alert.level]
    pages = level.pagerduty and alert.incident
    return Route(tuple(level.slack_channels), policy.alerting.pagerduty_service if pages else None)


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
