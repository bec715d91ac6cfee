"""The rules' state between runs, and what a run sends: Prometheus-style pending, firing and resolved.

A rule is checked once per series of its metric (one for most metrics, one per host for host metrics, under the key
`rule{instance="..."}`). A check whose condition holds is pending, fires once the condition has held for its `for`
(one notification, one PagerDuty incident by its dedup key), stays quiet while it keeps holding, and resolves when
the condition clears.

No data is a signal. A check without a value (the query answered an empty vector or NaN, the collector failed, a
host's series vanished) follows its rule's `no_data`: `alert` (the default) is pending from the first run without
data and, once that lasted the rule's `for`, fires "no data for <metric>" under the same dedup key (a rule already
firing on its value sends that news too, and stays firing until data shows the condition clear); `ok` counts no data
as clear (a firing check resolves); `keep_state` keeps the state for `monitoring.keep_state_for`, then alerts. While
the source of a metric is down (`pg_up`/`prometheus_up` 0), its checks keep their state: the source's own rule is
the alert.

The state lives in `ops.alert_rule_state` of the ops state database (`trading_ops.opsstate`), so it survives
between the 5-minute runs, and time is the run's time, so a rerun of the same run decides the same thing. Alerts go
out before the state is saved, and a transition is saved only once delivered, so an undelivered alert is sent again
by the task's retry or the next run. When the state database cannot be reached, every check that holds (or lacks
data) alerts at once, without its `for`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from trading_ops.alerting import Alert, Delivery, format_duration, resolve_alert, send_alert
from trading_ops.monitoring.collect import MonitoringError
from trading_ops.monitoring.rules import Rule, all_rules, source_up_metric
from trading_ops.policy import Policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleState:
    """A row of ops.alert_rule_state."""

    state: str  # ok, pending or firing
    active_since: datetime | None
    fired_at: datetime | None
    value: float | None  # the last value seen; None: never one
    evaluated_at: datetime
    no_data_since: datetime | None = None  # None: the last evaluation had data
    fired_on_no_data: bool = False


@dataclass(frozen=True)
class Check:
    """One rule on one series of its metric. `has_data` False: no value now; a rule's unlabelled check on a
    per-host metric has data but no value while hosts report (it stands for "no host reports at all")."""

    rule: Rule
    series: str | None
    value: float | None
    has_data: bool
    source_down: bool = False

    @property
    def key(self) -> str:
        return self.rule.name if self.series is None else f"{self.rule.name}{{{self.series}}}"

    def holds(self) -> bool:
        return self.value is not None and self.rule.holds(self.value)


@dataclass(frozen=True)
class Transition:
    check: Check
    kind: Literal["fired", "no_data", "resolved"]
    active_since: datetime | None  # None: unknown, the rule state could not be read
    # What the check's state becomes when the notification is not delivered: as if it had not happened yet.
    undelivered_state: RuleState | None = None
    no_data_since: datetime | None = None


def _clear(check: Check, previous: RuleState | None, at: datetime, no_data_since: datetime | None):
    last = check.value if check.value is not None else (previous.value if previous else None)
    state = RuleState("ok", None, None, last, at, no_data_since)
    if previous and previous.state == "firing":
        undelivered = replace(previous, evaluated_at=at, no_data_since=no_data_since)
        return state, Transition(check, "resolved", previous.active_since, undelivered, no_data_since)
    return state, None


def _without_data(check: Check, previous: RuleState | None, at: datetime, keep_state_for: timedelta):
    rule = check.rule
    since = previous.no_data_since if previous and previous.no_data_since else at
    mode = rule.no_data
    if check.source_down:
        mode = "keep_state"  # the source's own rule alerts; nothing is known of its metrics
    elif mode == "keep_state" and at - since >= keep_state_for:
        mode = "alert"
    if mode == "keep_state":
        return replace(previous or RuleState("ok", None, None, None, at), evaluated_at=at, no_data_since=since), None
    if mode == "ok":
        return _clear(check, previous, at, since)
    last = previous.value if previous else None
    due = at - since >= rule.for_
    if previous and previous.state == "firing":
        kept = replace(previous, evaluated_at=at, no_data_since=since)
        if previous.fired_on_no_data or not due:
            return kept, None
        return replace(kept, fired_on_no_data=True), Transition(check, "no_data", previous.active_since, kept, since)
    active_since = previous.active_since if previous and previous.state == "pending" else since
    pending = RuleState("pending", active_since, None, last, at, since)
    if due:
        return replace(pending, state="firing", fired_at=at, fired_on_no_data=True), Transition(
            check, "no_data", active_since, pending, since
        )
    return pending, None


def advance(
    check: Check, previous: RuleState | None, at: datetime, keep_state_for: timedelta
) -> tuple[RuleState, Transition | None]:
    """The check's state at `at` and the transition to notify, if any."""
    if not check.has_data:
        return _without_data(check, previous, at, keep_state_for)
    if not check.holds():
        return _clear(check, previous, at, None)
    holding = previous is not None and previous.state != "ok"
    active_since = previous.active_since if holding else at
    if previous and previous.state == "firing":
        return RuleState("firing", active_since, previous.fired_at, check.value, at), None
    if at - active_since >= check.rule.for_:
        undelivered = RuleState("pending", active_since, None, check.value, at)
        return RuleState("firing", active_since, at, check.value, at), Transition(
            check, "fired", active_since, undelivered
        )
    return RuleState("pending", active_since, None, check.value, at), None


def transition_alert(transition: Transition, at: datetime, run_url: str | None) -> Alert:
    check = transition.check
    rule = check.rule
    name = check.key
    if transition.kind == "no_data":
        summary = f"{name}: no data for {rule.metric} for {format_duration(rule.for_)}"
        details = {"no data since": transition.no_data_since.isoformat() if transition.no_data_since else "now"}
    else:
        summary = f"{name}: {rule.condition} for {format_duration(rule.for_)}"
        details = {"value": "no data" if check.value is None else f"{check.value:g}"}
    if transition.active_since is None:
        details["rule state"] = f"unavailable: alerted without waiting {format_duration(rule.for_)}"
    elif transition.kind != "resolved":
        details["holding since"] = transition.active_since.isoformat()
    details["evaluated at"] = at.isoformat()
    return Alert(
        severity=rule.severity,
        source=f"system_health/{name}",
        summary=summary,
        details=details,
        dedup_key=f"trading-ops/system_health/{name}",
        run_url=run_url,
        route=rule.route,
        raised_at=at,
    )


def _notify(transition: Transition, at: datetime, run_url: str | None) -> Delivery:
    alert = transition_alert(transition, at, run_url)
    return (resolve_alert if transition.kind == "resolved" else send_alert)(alert)


def checks(policy: Policy, rules: list[Rule], metrics: dict, known_keys: Sequence[str] = ()) -> list[Check]:
    """Every rule on every series of its metric; `known_keys` (the saved states) bring back series that vanished."""
    result = []
    for rule in rules:
        value = metrics.get(rule.metric)
        up = source_up_metric(rule.metric, policy)
        source_down = up is not None and metrics.get(up) == 0
        if not isinstance(value, dict):
            number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
            result.append(Check(rule, None, number, number is not None, source_down))
            continue
        prefix = f"{rule.name}{{"
        known = [key[len(prefix) : -1] for key in known_keys if key.startswith(prefix)]
        result += [Check(rule, series, number, True, source_down) for series, number in sorted(value.items())]
        result += [Check(rule, series, None, False, source_down) for series in known if series not in value]
        if not value and not known:
            result.append(Check(rule, None, None, False, source_down))
        elif rule.name in known_keys:
            # Hosts report again: the unlabelled "no host at all" check clears.
            result.append(Check(rule, None, None, True, source_down))
    return result


@dataclass
class Evaluation:
    checks: list[Check]
    transitions: list[tuple[Transition, Delivery]]
    stateless: bool = False


def rule_states(conn_id: str) -> dict[str, RuleState]:
    """Every check's saved state by its key (`rule` or `rule{series}`), as the last evaluation left it."""
    from psycopg.rows import dict_row

    from trading_ops.opsstate import connection
    from trading_ops.sqlfiles import load_sql

    with connection(conn_id) as conn, conn.cursor(row_factory=dict_row) as cur:
        return {
            row.pop("rule"): RuleState(**row) for row in cur.execute(load_sql("monitoring/list_alert_rule_states.sql"))
        }


def _evaluate_with_state(conn, policy: Policy, rules: list[Rule], metrics: dict, at: datetime, run_url: str | None):
    """Advance every check to `at`, notify its transitions, then save what was delivered.

    An evaluation older than a check's last one (an old run cleared and rerun) leaves that check alone.
    """
    from psycopg.rows import dict_row

    from trading_ops.sqlfiles import load_sql

    with conn.cursor(row_factory=dict_row) as cur:
        states = {
            row.pop("rule"): RuleState(**row)
            for row in cur.execute(load_sql("monitoring/select_alert_rule_states.sql"))
        }
    evaluation = Evaluation(checks(policy, rules, metrics, list(states)), [])
    new_states = {}
    for check in evaluation.checks:
        previous = states.get(check.key)
        if previous and at < previous.evaluated_at:
            log.warning(
                "Rule %s was last evaluated at %s, after %s: left as it is", check.key, previous.evaluated_at, at
            )
            continue
        new_states[check.key], transition = advance(check, previous, at, policy.monitoring.keep_state_for)
        if transition:
            delivery = _notify(transition, at, run_url)
            evaluation.transitions.append((transition, delivery))
            if not delivery.complete:
                new_states[check.key] = transition.undelivered_state
    for key, state in new_states.items():
        conn.execute(
            load_sql("monitoring/upsert_alert_rule_state.sql"),
            {"rule": key, **{name: getattr(state, name) for name in RuleState.__dataclass_fields__}},
        )
    conn.commit()
    return evaluation


def _alert_without_state(policy: Policy, rules: list[Rule], metrics: dict, at: datetime, run_url: str | None):
    """Without the rule state, every check that holds, or lacks data it should alert on, alerts at once; nothing
    can resolve."""
    evaluation = Evaluation(checks(policy, rules, metrics), [], stateless=True)
    for check in evaluation.checks:
        if check.holds():
            transition = Transition(check, "fired", None)
        elif not check.has_data and check.rule.no_data != "ok" and not check.source_down:
            transition = Transition(check, "no_data", None)
        else:
            continue
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

    from trading_ops.opsstate import connect

    rules = all_rules(policy)
    try:
        conn = connect(policy.alerting.state_conn_id)
    except psycopg.OperationalError as exc:
        log.error(
            "The alert rule state in %r is unreachable (%s): alerting on every rule that holds now",
            policy.alerting.state_conn_id,
            str(exc).strip(),
        )
        evaluation = _alert_without_state(policy, rules, metrics, at, run_url)
    else:
        try:
            evaluation = _evaluate_with_state(conn, policy, rules, metrics, at, run_url)
        finally:
            conn.close()

    delivered = [(t, d) for t, d in evaluation.transitions if d.complete]
    undelivered = [(t, d) for t, d in evaluation.transitions if not d.complete]
    summary = {
        "evaluated_at": at.isoformat(),
        "fired": [t.check.key for t, _ in delivered if t.kind == "fired"],
        "no_data_fired": [t.check.key for t, _ in delivered if t.kind == "no_data"],
        "resolved": [t.check.key for t, _ in delivered if t.kind == "resolved"],
        "undelivered": [t.check.key for t, _ in undelivered],
        "breaching": sorted(check.key for check in evaluation.checks if check.holds()),
        "no_data": sorted(check.key for check in evaluation.checks if not check.has_data),
        "unmeasured": sorted({check.rule.metric for check in evaluation.checks if not check.has_data}),
    }
    log.info("system_health at %s: %s", at.isoformat(), summary)

    problems = list(missing)
    if evaluation.stateless:
        problems.append(
            f"The rule state in {policy.alerting.state_conn_id!r} is unreachable: the {len(evaluation.transitions)} "
            "rule(s) that hold now alerted without waiting for their `for`, and no rule could resolve."
        )
    if undelivered:
        names = "; ".join(f"{t.check.key} ({', '.join(d.failed)})" for t, d in undelivered)
        problems.append(
            f"{len(undelivered)} alert(s) not delivered: {names}; the retry or the next run sends them again."
        )
        raise MonitoringError(" ".join(problems))
    if problems:
        raise AirflowFailException(" ".join(problems))
    return summary
