"""The rules system_health evaluates: the policy's alert rules, and every warning/critical threshold of the manual as
a rule of its own, held `monitoring.threshold_for` and routed by its level.

Every check is a `Rule` (`metric operator threshold` held `for` a duration, with a severity, a route and what it
does without data). No threshold is left out because an alert rule watches the same metric: the manual's CPU
thresholds (70/85%) alert at warning and critical after 5 minutes, and `cpu > 70% for 15m` adds its own info alert
on top, as Prometheus evaluates every rule of a group on its own.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from datetime import timedelta

from trading_ops.alerting import Route, format_duration
from trading_ops.policy import (
    DAG_RUN_OVERDUE_METRIC,
    DRILL_AGE_METRIC,
    FRESHNESS_METRICS,
    HOST_METRICS,
    OFFHOST_LAG_METRIC,
    POSTGRES_METRICS,
    SEVERITY_TO_LEVEL,
    SOURCE_UP_METRICS,
    Limits,
    NoData,
    Policy,
)

_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    operator: str
    threshold: float
    for_: timedelta
    severity: str
    route: Route | None = None
    no_data: NoData = "alert"
    # Where the rule comes from, for the runbook's table: "alert rule", "threshold" or "freshness".
    kind: str = "alert rule"

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.operator](value, self.threshold)

    @property
    def condition(self) -> str:
        return f"{self.metric} {self.operator} {self.threshold:g}"

    @property
    def summary(self) -> str:
        return f"{self.name}: {self.condition} for {format_duration(self.for_)}"


def source_up_metric(metric: str, policy: Policy) -> str | None:
    """The `*_up` metric of the source that measures `metric`: while that source is down, the rules on its metrics
    keep their state and the source's own rule (postgres_down, prometheus_down) is the alert."""
    if metric in SOURCE_UP_METRICS.values():
        return None
    if metric in POSTGRES_METRICS:
        return SOURCE_UP_METRICS["postgres"]
    sources = policy.monitoring.sources
    host = metric in HOST_METRICS or metric.startswith("disk_usage_percent.")
    if metric in sources.prometheus_queries or (host and sources.host_metrics == "prometheus"):
        return SOURCE_UP_METRICS["prometheus"]
    return None  # host metrics measured by psutil on the worker itself, freshness read from the repository


def _threshold_route(policy: Policy, severity: str) -> Route:
    channels = tuple(policy.incident_levels[SEVERITY_TO_LEVEL[severity]].slack_channels)
    pages = severity == "critical" and policy.monitoring.threshold_pagerduty_service
    return Route(channels, policy.monitoring.threshold_pagerduty_service if pages else None)


def threshold_rules(policy: Policy) -> list[Rule]:
    """The manual's warning/critical thresholds (and the DBA's PostgreSQL limits) as rules held `threshold_for`."""
    monitoring = policy.monitoring
    health, app, pg = monitoring.system_health, monitoring.application_metrics, monitoring.postgres

    def rule(name: str, metric: str, op: str, threshold: float, severity: str, no_data: NoData | None = None) -> Rule:
        return Rule(
            name,
            metric,
            op,
            threshold,
            monitoring.threshold_for,
            severity,
            _threshold_route(policy, severity),
            no_data or monitoring.threshold_no_data,
            "threshold",
        )

    def limits(metric: str, values: Limits, no_data: NoData | None = None) -> list[Rule]:
        return [
            rule(f"{metric}_{severity}", metric, ">=", getattr(values, severity), severity, no_data)
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
    # A server without replication has no lag to measure: no data there is no problem.
    rules += limits("pg_replication_lag_seconds", pg.replication_lag_seconds, no_data="ok")
    rules += limits("pg_longest_transaction_seconds", pg.longest_transaction_seconds)
    rules.append(rule("pg_wal_archive_failing", "pg_wal_archive_failing", ">", 0, pg.wal_archive_failure_severity))
    # The ages already include the time: these alert at once. No data: there is no backup (or segment) at all.
    for name, metric in FRESHNESS_METRICS.items():
        limit = getattr(monitoring.freshness, name)
        rules.append(
            replace(
                rule(f"{name}_stale", metric, ">", limit.stale_after.total_seconds(), limit.severity, "alert"),
                for_=timedelta(0),
                kind="freshness",
            )
        )
    # No drill recorded yet (a new deployment): nothing to be stale; once one is, its age is always measured.
    max_age = policy.restore.drill.max_age.total_seconds()
    drill = replace(
        rule("restore_drill_stale", DRILL_AGE_METRIC, ">", max_age, monitoring.freshness.restore_drill.severity, "ok"),
        for_=timedelta(0),
        kind="freshness",
    )
    # No data: the repository is on the database host's disk, where nothing is shipped.
    offhost = replace(
        rule(
            "wal_offhost_stale",
            OFFHOST_LAG_METRIC,
            ">",
            policy.backup.wal_ship_within.total_seconds(),
            monitoring.freshness.wal_offhost.severity,
            "ok",
        ),
        for_=timedelta(0),
        kind="freshness",
    )
    # No data: a DAG measured before is gone from the parsed DAGs (its file broke, or it was deleted).
    runs = monitoring.freshness.dag_runs
    stale_runs = replace(
        rule("dag_run_stale", DAG_RUN_OVERDUE_METRIC, ">", 0, runs.severity, "alert"),
        for_=timedelta(0),
        kind="freshness",
    )
    return [*rules, drill, offhost, stale_runs]


def all_rules(policy: Policy) -> list[Rule]:
    """The policy's alert rules (with their own routes), then every threshold."""
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
            rule.no_data,
        )
        for rule in policy.alert_rules
    ]
    return configured + threshold_rules(policy)


def _route_text(rule: Rule, policy: Policy) -> str:
    level = SEVERITY_TO_LEVEL[rule.severity]
    route = rule.route or Route(
        tuple(policy.incident_levels[level].slack_channels),
        policy.alerting.pagerduty_service if policy.incident_levels[level].pagerduty else None,
    )
    pages = f" + PagerDuty {route.pagerduty_service}" if route.pagerduty_service else ""
    return f"{level} {', '.join(route.slack_channels)}{pages}"


def rule_table(policy: Policy) -> str:
    """The runbook's table of every rule system_health evaluates (markdown), as the policy defines them. A rule
    named after its metric shows only the comparison."""
    lines = ["| rule | condition | for | route | no data |", "|---|---|---|---|---|"]
    for rule in all_rules(policy):
        condition = (
            rule.condition.removeprefix(rule.metric + " ") if rule.name.startswith(rule.metric) else rule.condition
        )
        if rule.metric in HOST_METRICS or rule.metric.startswith("disk_usage_percent."):
            condition += ", per host"
        elif rule.metric == DAG_RUN_OVERDUE_METRIC:
            condition += ", per DAG"
        route = _route_text(rule, policy)
        lines.append(f"| {rule.name} | {condition} | {format_duration(rule.for_)} | {route} | {rule.no_data} |")
    return "\n".join(lines)
