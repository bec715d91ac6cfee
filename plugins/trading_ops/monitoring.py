"""System health: metrics from the host, PostgreSQL and the application; thresholds and alert rules with `for`.

Metrics are plain `{name: number}` dicts. Every check is a `Rule` (`metric operator threshold` held `for` a
duration, with a severity and a route). The policy's `alert_rules` (the manual's three, and `postgres_down`) route
as they say and govern the metrics they watch. The warning/critical thresholds become rules held
`monitoring.threshold_for` and routed by level to Slack (PagerDuty only when `monitoring.threshold_pagerduty_service`
names a service), except where an alert rule covers them: a threshold that an alert rule already watches in the
same direction from the same or an earlier point is left to that rule (CPU 70/85% to `cpu > 70% for 15m`), and a
lower one (error rate 0.1% under `error_rate > 1%`) stays quiet while the rule's condition holds, as Alertmanager's
inhibition keeps a warning quiet under its critical.

Rules are evaluated the way Prometheus does: a rule whose condition holds is pending, fires once the condition has
held for its `for` (one notification, one PagerDuty incident by its dedup key), stays quiet while it keeps holding,
and resolves when the condition clears. The state lives in `ops.alert_rule_state`, so it survives between the
5-minute runs, and time is the run's time, so a rerun of the same run decides the same thing. Alerts go out before
the state is saved, and a transition is saved only once delivered, so an undelivered alert is sent again by the
task's retry or the next run. When the state database cannot be reached (PostgreSQL down), every rule that holds
alerts at once, without its `for`.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from trading_ops.alerting import Alert, Delivery, Route, format_duration, resolve_alert, send_alert
from trading_ops.policy import SEVERITY_TO_LEVEL, Limits, Policy

log = logging.getLogger(__name__)

_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_ABOVE = {">", ">="}


class MonitoringError(RuntimeError):
    """A metric source answered with an error, or alerts could not be delivered."""


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
    """Connections, replication lag, longest transaction, WAL archiving and size of the database.

    A server that does not answer is a measurement too, `pg_up` 0, which the `postgres_down` rule alerts on.
    """
    import psycopg
    from psycopg.rows import dict_row

    from trading_ops.db import connect
    from trading_ops.sqlfiles import load_sql

    try:
        conn = connect(conn_id, autocommit=True)
    except psycopg.OperationalError as exc:
        log.error("PostgreSQL (%s) is unreachable: %s", conn_id, str(exc).strip())
        return {"pg_up": 0.0}
    try:
        conn.row_factory = dict_row
        row = conn.execute(load_sql("monitoring/select_postgres_health.sql")).fetchone()
    finally:
        conn.close()
    last_failed = row["wal_archive_last_failed_time"]
    return {
        "pg_up": 1.0,
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


def _sample_value(name: str, data: dict) -> float | None:
    """The value of an instant query's answer: a scalar or a one-series vector; None for no data or NaN.

    Several series fail: which one to take (the worst instance? their sum?) depends on the metric, so the query in
    the policy must aggregate, not this code guess.
    """
    if data["resultType"] == "scalar":
        raw = data["result"][1]
    elif len(data["result"]) > 1:
        labels = ", ".join(
            "{" + ", ".join(f'{key}="{value}"' for key, value in series["metric"].items()) + "}"
            for series in data["result"][:5]
        )
        raise MonitoringError(
            f"The {name} query answered {len(data['result'])} series ({labels}) where one is needed: aggregate it in "
            "prometheus_queries (max, sum, avg)."
        )
    elif data["result"]:
        raw = data["result"][0]["value"][1]
    else:
        return None
    value = float(raw)
    return None if math.isnan(value) else value


def collect_application_metrics(
    conn_id: str, queries: dict[str, str], at: datetime, timeout: timedelta
) -> dict[str, float | None]:
    """Each named PromQL query evaluated at `at` through the Prometheus HTTP API (GET /api/v1/query) of the
    Airflow HTTP connection `conn_id` (its host, port, scheme, credentials and TLS options)."""
    from trading_ops.http_connections import http_session

    session, base_url = http_session(conn_id)
    endpoint = f"{base_url}/api/v1/query"
    metrics: dict[str, float | None] = {}
    with session:
        for name, query in queries.items():
            response = session.get(
                endpoint, params={"query": query, "time": f"{at.timestamp():.3f}"}, timeout=timeout.total_seconds()
            )
            try:
                body = response.json()
            except ValueError:
                response.raise_for_status()
                raise MonitoringError(
                    f"Prometheus at {endpoint} answered {name} with a body that is not JSON."
                ) from None
            if body.get("status") != "success":
                raise MonitoringError(
                    f"Prometheus at {endpoint} refused the {name} query: {body.get('errorType')}: {body.get('error')}."
                )
            metrics[name] = _sample_value(name, body["data"])
    return metrics


def missing_sources(policy: Policy, host: dict | None, postgres: dict | None, application: dict | None) -> list[str]:
    """One sentence for each metric source whose metrics the evaluation lacks: its collector failed (None), or
    PostgreSQL did not answer."""
    missing = []
    if host is None:
        missing.append("collect_host_metrics failed: no host metric was evaluated.")
    if postgres is None:
        missing.append("collect_postgres_metrics failed: no PostgreSQL metric was evaluated.")
    elif not postgres.get("pg_up"):
        missing.append(
            f"PostgreSQL ({policy.monitoring.sources.database_conn_id}) is unreachable: only pg_up was measured there."
        )
    if application is None and policy.monitoring.sources.prometheus_conn_id:
        missing.append("collect_application_metrics failed: no application metric was evaluated.")
    return missing


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


@dataclass(frozen=True)
class RuleState:
    """A row of ops.alert_rule_state."""

    state: str  # ok, pending or firing
    active_since: datetime | None
    fired_at: datetime | None
    value: float
    evaluated_at: datetime


@dataclass(frozen=True)
class Transition:
    rule: Rule
    fired: bool  # True: started firing; False: resolved
    value: float
    active_since: datetime | None  # None: unknown, the rule state could not be read
    # What the rule's state becomes when the notification is not delivered: as if it had not happened yet.
    undelivered_state: RuleState | None = None


def advance(
    rule: Rule, previous: RuleState | None, value: float, at: datetime, inhibited: bool
) -> tuple[RuleState, Transition | None]:
    """The rule's state at `at` and the transition to notify, if any. An inhibited rule stays pending: it fires
    once the alert rule above it clears, if its own condition still holds."""
    if not rule.holds(value):
        state = RuleState("ok", None, None, value, at)
        if previous and previous.state == "firing":
            undelivered = replace(previous, value=value, evaluated_at=at)
            return state, Transition(rule, False, value, previous.active_since, undelivered)
        return state, None
    holding = previous is not None and previous.state != "ok"
    active_since = previous.active_since if holding else at
    fired_at = previous.fired_at if holding else None
    if fired_at is None and at - active_since >= rule.for_ and not inhibited:
        undelivered = RuleState("pending", active_since, None, value, at)
        return RuleState("firing", active_since, at, value, at), Transition(
            rule, True, value, active_since, undelivered
        )
    return RuleState("firing" if fired_at else "pending", active_since, fired_at, value, at), None


def transition_alert(transition: Transition, at: datetime, run_url: str | None) -> Alert:
    rule = transition.rule
    details = {"value": f"{transition.value:g}"}
    if transition.active_since is None:
        details["rule state"] = f"unavailable: alerted without waiting {format_duration(rule.for_)}"
    else:
        details["holding since"] = transition.active_since.isoformat()
    details["evaluated at"] = at.isoformat()
    return Alert(
        severity=rule.severity,
        source=f"system_health/{rule.name}",
        summary=rule.summary,
        details=details,
        dedup_key=rule.dedup_key,
        run_url=run_url,
        route=rule.route,
        raised_at=at,
    )


def _notify(transition: Transition, at: datetime, run_url: str | None) -> Delivery:
    alert = transition_alert(transition, at, run_url)
    return (send_alert if transition.fired else resolve_alert)(alert)


@dataclass
class Evaluation:
    transitions: list[tuple[Transition, Delivery]]
    inhibited: list[str]
    stateless: bool = False


def _measured(rules: list[Rule], metrics: dict) -> list[tuple[Rule, float, bool]]:
    """(rule, value, inhibited: holds but an alert rule above it holds too) for every rule measured now."""
    by_name = {rule.name: rule for rule in rules}
    measured = []
    for rule in rules:
        value = metrics.get(rule.metric)
        if isinstance(value, int | float):
            inhibited = rule.holds(value) and any(by_name[name].holds(value) for name in rule.inhibited_by)
            measured.append((rule, value, inhibited))
    return measured


def _evaluate_with_state(conn, rules: list[Rule], metrics: dict, at: datetime, run_url: str | None) -> Evaluation:
    """Advance every measured rule to `at`, notify its transitions, then save what was delivered.

    A metric without a value (source not configured, no data) leaves its rules' state as it was. An evaluation
    older than a rule's last one (an old run cleared and rerun) leaves that rule alone.
    """
    from psycopg.rows import dict_row

    from trading_ops.sqlfiles import load_sql

    conn.execute(load_sql("monitoring/create_alert_rule_state.sql"))
    # Its advisory lock must be gone before alerts are sent: their grouping state takes the same lock.
    conn.commit()
    with conn.cursor(row_factory=dict_row) as cur:
        states = {
            row.pop("rule"): RuleState(**row)
            for row in cur.execute(load_sql("monitoring/select_alert_rule_states.sql"))
        }
    evaluation = Evaluation([], [])
    new_states = {}
    for rule, value, inhibited in _measured(rules, metrics):
        previous = states.get(rule.name)
        if previous and at < previous.evaluated_at:
            log.warning(
                "Rule %s was last evaluated at %s, after %s: left as it is", rule.name, previous.evaluated_at, at
            )
            continue
        new_states[rule.name], transition = advance(rule, previous, value, at, inhibited)
        if inhibited:
            evaluation.inhibited.append(rule.name)
        if transition:
            delivery = _notify(transition, at, run_url)
            evaluation.transitions.append((transition, delivery))
            if not delivery.complete:
                new_states[rule.name] = transition.undelivered_state
    for rule_name, state in new_states.items():
        conn.execute(
            load_sql("monitoring/upsert_alert_rule_state.sql"),
            {"rule": rule_name, **{key: getattr(state, key) for key in RuleState.__dataclass_fields__}},
        )
    conn.commit()
    return evaluation


def _alert_without_state(rules: list[Rule], metrics: dict, at: datetime, run_url: str | None) -> Evaluation:
    """Without the rule state, every rule that holds now alerts at once; nothing can resolve."""
    evaluation = Evaluation([], [], stateless=True)
    for rule, value, inhibited in _measured(rules, metrics):
        if not rule.holds(value):
            continue
        if inhibited:
            evaluation.inhibited.append(rule.name)
            continue
        transition = Transition(rule, True, value, None)
        evaluation.transitions.append((transition, _notify(transition, at, run_url)))
    return evaluation


def check_system_health(
    policy: Policy, metrics: dict, at: datetime, run_url: str | None = None, missing: Sequence[str] = ()
) -> dict:
    """Evaluate every rule at `at`, send what fired and resolve what cleared; returns a summary for the task log.

    Then fails when the run must not look green: an alert not delivered (MonitoringError, so the task's retry sends
    it), or, with everything delivered, a metric source missing (`missing`) or the rule state unreachable
    (AirflowFailException: a retry would not measure anything new).
    """
    import psycopg
    from airflow.sdk.exceptions import AirflowFailException

    from trading_ops.db import connect

    rules = all_rules(policy)
    try:
        conn = connect(policy.alerting.state_conn_id)
    except psycopg.OperationalError as exc:
        log.error(
            "The alert rule state in %r is unreachable (%s): alerting on every rule that holds now",
            policy.alerting.state_conn_id,
            str(exc).strip(),
        )
        evaluation = _alert_without_state(rules, metrics, at, run_url)
    else:
        try:
            evaluation = _evaluate_with_state(conn, rules, metrics, at, run_url)
        finally:
            conn.close()

    delivered = [(t, d) for t, d in evaluation.transitions if d.complete]
    undelivered = [(t, d) for t, d in evaluation.transitions if not d.complete]
    summary = {
        "evaluated_at": at.isoformat(),
        "fired": [t.rule.name for t, _ in delivered if t.fired],
        "resolved": [t.rule.name for t, _ in delivered if not t.fired],
        "undelivered": [t.rule.name for t, _ in undelivered],
        "breaching": sorted(rule.name for rule, value, _ in _measured(rules, metrics) if rule.holds(value)),
        "inhibited": evaluation.inhibited,
        "unmeasured": sorted({rule.metric for rule in rules if not isinstance(metrics.get(rule.metric), int | float)}),
    }
    log.info("system_health at %s: %s", at.isoformat(), summary)

    problems = list(missing)
    if evaluation.stateless:
        problems.append(
            f"The rule state in {policy.alerting.state_conn_id!r} is unreachable: the {len(evaluation.transitions)} "
            "rule(s) that hold now alerted without waiting for their `for`, and no rule could resolve."
        )
    if undelivered:
        names = "; ".join(f"{t.rule.name} ({', '.join(d.failed)})" for t, d in undelivered)
        problems.append(
            f"{len(undelivered)} alert(s) not delivered: {names}; the retry or the next run sends them again."
        )
        raise MonitoringError(" ".join(problems))
    if problems:
        raise AirflowFailException(" ".join(problems))
    return summary
