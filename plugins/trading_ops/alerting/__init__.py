"""Alerting decides where a problem is told and how loudly: which Slack channels, whether PagerDuty is paged, what
the message says, and when a repeat is held back. Modelled on Prometheus Alertmanager.

Entry points (importable from `trading_ops.alerting`; other wings rely on them):
    send_alert(Alert(severity, source, summary, details, dedup_key, run_url, route, raised_at)) -> Delivery
    resolve_alert(alert)   the same dedup key, once the condition has cleared
    notify_task_failure(context) / notify_task_recovery(context)   the shared on_failure / on_success callbacks
    airflow_run_url(policy, dag_id, run_id, task_id=None), format_duration(timedelta), Route, Delivery

Routing (`routing`) comes from the policy. An alert's severity is an incident level (P1/P2/P3) or a rule severity
(critical/warning/info = P1/P2/P3); the level's Slack channels receive it through the `slack_alerts` webhook
connection (`slack_messages`), and a level with `pagerduty: true` (P1) also triggers PagerDuty through
`pagerduty_events`. An alert raised by a rule may carry its own route. Every message carries the level's
respond/resolve times, escalation list and procedure, and a link to the Airflow run.

A failed task (`callbacks`) alerts at its DAG's level, except a failure on an `errors.UserError` (a request or policy
problem, failed at once without retries): that is a notice to the info channel (P3's Slack channels), not an
incident, and never pages.

PagerDuty deduplicates on the dedup key, so repeats update one incident. Slack has no such thing, so identical
alerts inside `alerting.group_window` are counted, not re-sent (`grouping`, in the `ops` schema of
`alerting.state_conn_id`; when that database is unreachable the alert goes out ungrouped). A notification that did
not reach every destination does not open the window. Delivery never raises: a failed delivery is logged at ERROR
with the whole message, so a failing callback never hides the task's own error; callers that must act on it look at
the returned `Delivery`.
"""

from trading_ops.alerting.callbacks import notify_task_failure, notify_task_recovery
from trading_ops.alerting.delivery import resolve_alert, send_alert
from trading_ops.alerting.routing import Alert, Delivery, Route, airflow_run_url, format_duration

__all__ = [
    "Alert",
    "Delivery",
    "Route",
    "airflow_run_url",
    "format_duration",
    "notify_task_failure",
    "notify_task_recovery",
    "resolve_alert",
    "send_alert",
]
