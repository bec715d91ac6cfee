"""The rules' state between runs, and what a run sends: Prometheus-style pending, firing and resolved.

A rule whose condition holds is pending, fires once the condition has held for its `for` (one notification, one
PagerDuty incident by its dedup key), stays quiet while it keeps holding, and resolves when the condition clears.
The state lives in `ops.alert_rule_state`, so it survives between the 5-minute runs, and time is the run's time, so
a rerun of the same run decides the same thing. Alerts go out before the state is saved, and a transition is saved
only once delivered, so an undelivered alert is sent again by the task's retry or the next run. When the state
database cannot be reached (PostgreSQL down), every rule that holds alerts at once, without its `for`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from trading_ops.alerting import Alert, Delivery, format_duration, resolve_alert, send_alert
from trading_ops.monitoring.collect import MonitoringError
from trading_ops.monitoring.rules import Rule, all_rules
from trading_ops.policy import Policy

log = logging.getLogger(__name__)


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
