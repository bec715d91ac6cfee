"""The task callbacks every DAG installs (`dag_defaults.default_args`): a failed task alerts, its next success
resolves the alert.

A failure is an incident at the DAG's level (`alerting.dag_levels`), unless its exception is an `errors.UserError`:
a request or policy problem a person must fix, which failed the task at once without a retry. That one is a notice to
the info channel (the P3 level's Slack channels), never pages, opens nothing for a later success to resolve, and says
so in its message.
"""

from __future__ import annotations

import traceback

from trading_ops.alerting import grouping
from trading_ops.alerting.delivery import resolve_alert, send_alert
from trading_ops.alerting.routing import Alert, Delivery, airflow_run_url
from trading_ops.errors import UserError
from trading_ops.policy import Policy, load_policy

USER_ERROR_NOTE = (
    "a request or policy problem to fix (a form value, the policy, a backup asked for), not an incident: the task "
    "failed at once without a retry, and nobody was paged"
)


def first_lines(error: BaseException | str | None, count: int) -> str:
    if error is None:
        return "(no exception was recorded)"
    text = error if isinstance(error, str) else "".join(traceback.format_exception_only(type(error), error))
    return "\n".join(text.strip().splitlines()[:count])


def _failure_key(ti) -> str:
    return f"trading-ops/{ti.dag_id}/{ti.task_id}"


def _task_failure_alert(ti, policy: Policy, details: dict | None = None) -> Alert:
    return Alert(
        severity=policy.level_for_dag(ti.dag_id),
        source=f"{ti.dag_id}.{ti.task_id}",
        summary=f"{ti.dag_id}: task {ti.task_id} failed",
        details=details or {},
        dedup_key=_failure_key(ti),
        run_url=airflow_run_url(policy, ti.dag_id, ti.run_id, ti.task_id),
    )


def _user_error_notice(ti, policy: Policy, error: UserError, details: dict) -> Alert:
    # The sentence is in the summary: two different problems inside the grouping window are two notices.
    sentence = " ".join(str(error).split()) or type(error).__name__
    return Alert(
        severity="info",
        source=f"{ti.dag_id}.{ti.task_id}",
        summary=f"{ti.dag_id}: task {ti.task_id} stopped: {sentence}",
        details={"kind": USER_ERROR_NOTE, **details},
        # Its own key: a later success of the task has no incident of this notice to resolve.
        dedup_key=f"{_failure_key(ti)}/user-error",
        run_url=airflow_run_url(policy, ti.dag_id, ti.run_id, ti.task_id),
        incident=False,
    )


def notify_task_failure(context) -> Delivery:
    """The shared on_failure_callback: one alert at the DAG's incident level naming the task and its error, or, for
    a user error, one notice to the info channel."""
    ti = context["ti"]
    policy = load_policy()
    error = context.get("exception")
    details = {"failed task": ti.task_id, "run id": ti.run_id, "try": ti.try_number}
    if getattr(ti, "map_index", -1) >= 0:
        details["map index"] = ti.map_index
    details["error"] = first_lines(error, policy.alerting.error_lines)
    if isinstance(error, UserError):
        return send_alert(_user_error_notice(ti, policy, error, details))
    return send_alert(_task_failure_alert(ti, policy, details))


def notify_task_recovery(context) -> Delivery | None:
    """The shared on_success_callback: resolves the task's failure alert (Slack note, PagerDuty `resolve`) when one
    is open; otherwise does nothing but look."""
    ti = context["ti"]
    if getattr(ti, "map_index", -1) >= 0:
        # One dedup key stands for every mapped instance: one instance's success says nothing of another's failure.
        return None
    policy = load_policy()
    alert = _task_failure_alert(ti, policy)
    return resolve_alert(alert) if grouping.is_open(alert, policy) else None
