"""The rules system_health evaluates: the policy's alert rules, and the warning/critical thresholds turned into rules
held `monitoring.threshold_for`, except where an alert rule covers them.

Every check is a `Rule` (`metric operator threshold` held `for` a duration, with a severity and a route). A threshold
that an alert rule already watches in the same direction from the same or an earlier point is left to that rule
(CPU 70/85% to `cpu > 70% for 15m`), and a lower one (error rate 0.1% under `error_rate > 1%`) stays quiet while the
rule's condition holds, as Alertmanager's inhibition keeps a warning quiet under its critical.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from datetime import timedelta

from trading_ops.alerting import Route, format_duration
from trading_ops.policy import SEVERITY_TO_LEVEL, Limits, Policy

_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_ABOVE = {">", ">="}


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    operator: str
    threshold: float
    for_: timedelta
    severity: str
    route: Route | None = None
    # Alert rules on the same metric whose condition, while it holds, keeps this one from notifying.
    inhibited_by: tuple[str, ...] = ()

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.operator](value, self.threshold)

    def watches_like(self, other: Rule) -> bool:
        """Whether both watch the same metric in the same direction (both for too high, or both for too low)."""
        return self.metric == other.metric and (self.operator in _ABOVE) == (other.operator in _ABOVE)

    def covers(self, other: Rule) -> bool:
        """Whether this rule watches like `other` from the same or an earlier point (CPU > 70 covers CPU >= 85)."""
        if not self.watches_like(other):
            return False
        return self.threshold <= other.threshold if self.operator in _ABOVE else self.threshold >= other.threshold

    @property
    def summary(self) -> str:
        return f"{self.name}: {self.metric} {self.operator} {self.threshold:g} for {format_duration(self.for_)}"

    @property
    def dedup_key(self) -> str:
        return f"trading-ops/system_health/{self.name}"


def _threshold_route(policy: Policy, severity: str) -> Route:
    channels = tuple(policy.incident_levels[SEVERITY_TO_LEVEL[severity]].slack_channels)
    pages = severity == "critical" and policy.monitoring.threshold_pagerduty_service
    return Route(channels, policy.monitoring.threshold_pagerduty_service if pages else None)


def threshold_rules(policy: Policy) -> list[Rule]:
    """The manual's warning/critical thresholds (and the DBA's PostgreSQL limits) as rules held `threshold_for`."""
    monitoring = policy.monitoring
    health, app, pg = monitoring.system_health, monitoring.application_metrics, monitoring.postgres

    def rule(name: str, metric: str, op: str, threshold: float, severity: str) -> Rule:
        return Rule(name, metric, op, threshold, monitoring.threshold_for, severity, _threshold_route(policy, severity))

    def limits(metric: str, values: Limits) -> list[Rule]:
        return [
            rule(f"{metric}_{severity}", metric, ">=", getattr(values, severity), severity)
            for severity in ("warning", "critical")
        ]

    rules = limits("cpu_usage_percent", health.cpu_usage)
    rules += limits("memory_usage_percent", health.memory_usage)
    for name in monitoring.sources.disk_paths:
        rules += limits(f"disk_usage_percent.{name}", health.disk_usage)
    rules += [
        rule("api_latency_p95_ms_warning", "api_latency_p95_ms", ">", app.api_latency.p95_ms, "warning"),
        rule("api_latency_p99_ms_warning", "api_latency_p99_ms", ">", app.api_latency.p99_ms, "warning"),
        rule("error_rate_percent_warning", "error_rate_percent", ">", app.error_rate_percent, "warning"),
        rule("request_rate_below_minimum", "request_rate_per_second", "<", app.request_rate.min_per_second, "warning"),
        rule("request_rate_above_maximum", "request_rate_per_second", ">", app.request_rate.max_per_second, "warning"),
    ]
    rules += limits("pg_connection_usage_percent", pg.connection_usage)
    rules += limits("pg_replication_lag_seconds", pg.replication_lag_seconds)
    rules += limits("pg_longest_transaction_seconds", pg.longest_transaction_seconds)
    rules.append(rule("pg_wal_archive_failing", "pg_wal_archive_failing", ">", 0, pg.wal_archive_failure_severity))
    return rules


def all_rules(policy: Policy) -> list[Rule]:
    """The policy's alert rules (with their own routes), then the thresholds they leave to system_health."""
    configured = [
        Rule(
            rule.name,
            rule.metric,
            rule.operator,
            rule.threshold,
            rule.for_,
            rule.severity,
            Route(tuple(rule.slack_channels), rule.pagerduty_service)
            if rule.slack_channels or rule.pagerduty_service
            else None,
        )
        for rule in policy.alert_rules
    ]
    thresholds = []
    for threshold in threshold_rules(policy):
        if any(rule.covers(threshold) for rule in configured):
            continue
        # What remains on a watched metric lies before the alert rule (0.1% under 1%): it speaks only without it.
        stricter = tuple(rule.name for rule in configured if rule.watches_like(threshold))
        thresholds.append(replace(threshold, inhibited_by=stricter))
    return configured + thresholds
