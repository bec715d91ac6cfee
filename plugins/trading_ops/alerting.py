"""Alert routing: the one way any DAG or check raises an alert.

Contract (other modules rely on it): build an `Alert` and call `send_alert(alert)`. A task failure goes through
`notify_task_failure(context)`, the shared `on_failure_callback`. Until the routing layer lands (issue: Alerting),
alerts are logged loudly and not delivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trading_ops.policy import SEVERITY_TO_LEVEL, IncidentLevelName, load_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """severity: an incident level (P1/P2/P3) or a rule severity (critical/warning/info)."""

    severity: str
    source: str
    summary: str
    details: dict = field(default_factory=dict)
    dedup_key: str | None = None
    run_url: str | None = None

    @property
    def level(self) -> IncidentLevelName:
        return SEVERITY_TO_LEVEL.get(self.severity, self.severity)


def send_alert(alert: Alert) -> None:
    log.error("ALERT %s from %s: %s %s", alert.level, alert.source, alert.summary, alert.details or "")


def notify_task_failure(context) -> None:
    ti = context["ti"]
    send_alert(
        Alert(
            severity=load_policy().level_for_dag(ti.dag_id),
            source=f"{ti.dag_id}.{ti.task_id}",
            summary=f"task {ti.task_id} of {ti.dag_id} failed (run {ti.run_id}, try {ti.try_number})",
            details={"error": str(context.get("exception"))},
        )
    )
