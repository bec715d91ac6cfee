"""System health: metrics from the host, PostgreSQL and the application; thresholds and alert rules with `for`.

Metrics are plain `{name: number}` dicts. Every check is a `Rule` (`metric operator threshold` held `for` a
duration, with a severity), whether it comes from the policy's `alert_rules` or from its warning/critical
thresholds, and is evaluated the way Prometheus does: a rule whose condition holds is pending, fires once the
condition has held for its `for` (one notification, one PagerDuty incident by its dedup key), stays quiet while it
keeps holding, and resolves when the condition clears. The state lives in `ops.alert_rule_state`, so it survives
between the 5-minute runs, and time is the run's time, so a rerun of the same run decides the same thing.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from trading_ops.alerting import Alert, Route, format_duration, resolve_alert, send_alert
from trading_ops.policy import Limits, Policy

log = logging.getLogger(__name__)

_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class MonitoringError(RuntimeError):
    """A metric source answered with an error."""


# --- collection ---------------------------------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def collect_host_metrics(disk_paths: dict[str, str]) -> dict[str, float]:
    """CPU and memory usage of this host and usage of each named volume, in percent."""
    import psutil

    metrics = {
        "cpu_usage_percent": psutil.cpu_percent(interval=1),
        "memory_usage_percent": psutil.virtual_memory().percent,
    }
    for name, path in disk_paths.items():
        # A directory not created yet (no backup so far) lives on the volume of its nearest existing parent.
        volume = _existing_ancestor(Path(path))
        if volume != Path(path):
            log.warning("Disk path %s (%s) does not exist; measuring its volume at %s", path, name, volume)
        metrics[f"disk_usage_percent.{name}"] = psutil.disk_usage(str(volume)).percent
    return metrics


def collect_postgres_metrics(conn_id: str) -> dict[str, float | str | None]:
    """Connections, replication lag, longest transaction, WAL archiving and size of the database."""
    from psycopg.rows import dict_row

    from trading_ops.db import connection
    from trading_ops.sqlfiles import load_sql

    with connection(conn_id, autocommit=True) as conn:
        conn.row_factory = dict_row
        row = conn.execute(load_sql("monitoring/select_postgres_health.sql")).fetchone()
    last_failed = row["wal_archive_last_failed_time"]
    return {
        "pg_connections": float(row["connections"]),
        "pg_max_connections": float(row["max_connections"]),
        "pg_connection_usage_percent": round(100.0 * row["connections"] / row["max_connections"], 2),
        "pg_replicas": float(row["replicas"]),
        "pg_replication_lag_seconds": None
        if row["replication_lag_seconds"] is None
        else float(row["replication_lag_seconds"]),
        "pg_longest_transaction_seconds": float(row["longest_transaction_seconds"]),
        "pg_wal_archive_failed_count": float(row["wal_archive_failed_count"]),
        "pg_wal_archive_failing": float(row["wal_archive_failing"]),
        "pg_wal_archive_last_failed_wal": row["wal_archive_last_failed_wal"],
        "pg_wal_archive_last_failed_time": last_failed.isoformat() if last_failed else None,
        "pg_database_size_bytes": float(row["database_size_bytes"]),
    }


def _sample_value(data: dict) -> float | None:
    """The value of an instant query's answer: a one-element vector or a scalar; None for no data or NaN."""
    if data["resultType"] == "scalar":
        raw = data["result"][1]
    elif data["result"]:
        raw = data["result"][0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def collect_application_metrics(
    prometheus_url: str, queries: dict[str, str], at: datetime, timeout: timedelta
) -> dict[str, float | None]:
    """Each named PromQL query evaluated at `at` through the Prometheus HTTP API (GET /api/v1/query)."""
    import requests

    endpoint = f"{prometheus_url.rstrip('/')}/api/v1/query"
    metrics: dict[str, float | None] = {}
    for name, query in queries.items():
        response = requests.get(
            endpoint, params={"query": query, "time": f"{at.timestamp():.3f}"}, timeout=timeout.total_seconds()
        )
        try:
            body = response.json()
        except ValueError:
            response.raise_for_status()
            raise MonitoringError(f"Prometheus at {endpoint} answered {name} with a body that is not JSON.") from None
        if body.get("status") != "success":
            raise MonitoringError(
                f"Prometheus at {endpoint} refused the {name} query: {body.get('errorType')}: {body.get('error')}."
            )
        metrics[name] = _sample_value(body["data"])
    return metrics


# --- rules --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    operator: str
    threshold: float
    for_: timedelta
    severity: str
    route: Route | None = None

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.operator](value, self.threshold)

    @property
    def summary(self) -> str:
        return f"{self.name}: {self.metric} {self.operator} {self.threshold:g} for {format_duration(self.for_)}"

    @property
    def dedup_key(self) -> str:
        return f"trading-ops/system_health/{self.name}"


def _limit_rules(metric: str, limits: Limits, for_: timedelta) -> list[Rule]:
    return [
        Rule(f"{metric}_{severity}", metric, ">=", getattr(limits, severity), for_, severity)
        for severity in ("warning", "critical")
    ]


def threshold_rules(policy: Policy) -> list[Rule]:
    """The manual's warning/critical thresholds (and the DBA's PostgreSQL limits) as rules held `threshold_for`."""
    monitoring = policy.monitoring
    for_ = monitoring.threshold_for
    health, app, pg = monitoring.system_health, monitoring.application_metrics, monitoring.postgres
    rules = _limit_rules("cpu_usage_percent", health.cpu_usage, for_)
    rules += _limit_rules("memory_usage_percent", health.memory_usage, for_)
    for name in monitoring.sources.disk_paths:
        rules += _limit_rules(f"disk_usage_percent.{name}", health.disk_usage, for_)
    rules += [
        Rule("api_latency_p95_ms_warning", "api_latency_p95_ms", ">", app.api_latency.p95_ms, for_, "warning"),
        Rule("api_latency_p99_ms_warning", "api_latency_p99_ms", ">", app.api_latency.p99_ms, for_, "warning"),
        Rule("error_rate_percent_warning", "error_rate_percent", ">", app.error_rate_percent, for_, "warning"),
        Rule(
            "request_rate_below_minimum",
            "request_rate_per_second",
            "<",
            app.request_rate.min_per_second,
            for_,
            "warning",
        ),
        Rule(
            "request_rate_above_maximum",
            "request_rate_per_second",
            ">",
            app.request_rate.max_per_second,
            for_,
            "warning",
        ),
    ]
    rules += _limit_rules("pg_connection_usage_percent", pg.connection_usage, for_)
    rules += _limit_rules("pg_replication_lag_seconds", pg.replication_lag_seconds, for_)
    rules += _limit_rules("pg_longest_transaction_seconds", pg.longest_transaction_seconds, for_)
    rules.append(
        Rule("pg_wal_archive_failing", "pg_wal_archive_failing", ">", 0, for_, pg.wal_archive_failure_severity)
    )
    return rules


def all_rules(policy: Policy) -> list[Rule]:
    """The policy's alert rules (with their own routes) followed by the threshold rules (routed by level)."""
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
    return configured + threshold_rules(policy)


@dataclass(frozen=True)
class Transition:
    rule: Rule
    fired: bool  # True: started firing; False: resolved
    value: float
    active_since: datetime


def evaluate_rules(conn, rules: list[Rule], metrics: dict, at: datetime) -> list[Transition]:
    """Advance every rule's state to `at` with the metrics seen then; returns the rules that fired or resolved.

    A metric without a value (source not configured, no data) leaves its rules' state as it was. An evaluation
    older than a rule's last one (an old run cleared and rerun) leaves that rule alone.
    """
    from psycopg.rows import dict_row

    from trading_ops.sqlfiles import load_sql

    conn.execute(load_sql("monitoring/create_alert_rule_state.sql"))
    with conn.cursor(row_factory=dict_row) as cur:
        states = {row["rule"]: row for row in cur.execute(load_sql("monitoring/select_alert_rule_states.sql"))}
    transitions = []
    for rule in rules:
        value = metrics.get(rule.metric)
        previous = states.get(rule.name)
        if not isinstance(value, int | float):
            continue
        if previous and at < previous["evaluated_at"]:
            log.warning(
                "Rule %s was last evaluated at %s, after %s: left as it is", rule.name, previous["evaluated_at"], at
            )
            continue
        if rule.holds(value):
            active_since = previous["active_since"] if previous else at
            fired_at = previous["fired_at"] if previous else None
            if fired_at is None and at - active_since >= rule.for_:
                fired_at = at
                transitions.append(Transition(rule, True, value, active_since))
            conn.execute(
                load_sql("monitoring/upsert_alert_rule_state.sql"),
                {
                    "rule": rule.name,
                    "state": "firing" if fired_at else "pending",
                    "active_since": active_since,
                    "fired_at": fired_at,
                    "value": value,
                    "at": at,
                },
            )
        elif previous:
            conn.execute(load_sql("monitoring/delete_alert_rule_state.sql"), {"rule": rule.name})
            if previous["state"] == "firing":
                transitions.append(Transition(rule, False, value, previous["active_since"]))
    conn.commit()
    return transitions


def transition_alert(transition: Transition, at: datetime, run_url: str | None) -> Alert:
    rule = transition.rule
    return Alert(
        severity=rule.severity,
        source=f"system_health/{rule.name}",
        summary=rule.summary,
        details={
            "value": f"{transition.value:g}",
            "holding since": transition.active_since.isoformat(),
            "evaluated at": at.isoformat(),
        },
        dedup_key=rule.dedup_key,
        run_url=run_url,
        route=rule.route,
        raised_at=at,
    )


def check_system_health(policy: Policy, metrics: dict, at: datetime, run_url: str | None = None) -> dict:
    """Evaluate every rule at `at`, send what fired and resolve what cleared; returns a summary for the task log."""
    from trading_ops.db import connection

    rules = all_rules(policy)
    with connection(policy.alerting.state_conn_id) as conn:
        transitions = evaluate_rules(conn, rules, metrics, at)
    for transition in transitions:
        alert = transition_alert(transition, at, run_url)
        (send_alert if transition.fired else resolve_alert)(alert)
    breaching = sorted(
        rule.name
        for rule in rules
        if isinstance(metrics.get(rule.metric), int | float) and rule.holds(metrics[rule.metric])
    )
    unmeasured = sorted({rule.metric for rule in rules if not isinstance(metrics.get(rule.metric), int | float)})
    return {
        "evaluated_at": at.isoformat(),
        "fired": [t.rule.name for t in transitions if t.fired],
        "resolved": [t.rule.name for t in transitions if not t.fired],
        "breaching": breaching,
        "unmeasured": unmeasured,
    }
