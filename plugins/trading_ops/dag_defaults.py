"""What every DAG of the project shares: owner, retries, timeouts, failure alerts, and the tag vocabulary.

DAG files import from here and nothing they import reads a file, a connection or the network, so parsing a DAG
stays free of side effects; the failure callback reads the policy only when a task has failed.
"""

from __future__ import annotations

from datetime import timedelta

OWNER = "sre-dba"

# The one vocabulary of DAG tags; the DAG-integrity tests reject any other tag.
TAGS = frozenset(
    {
        "database",
        "maintenance",
        "backup",
        "restore",
        "logs",
        "security",
        "monitoring",
        "alerting",
        "kubernetes",
        "daily",
        "weekly",
        "monthly",
        "frequent",
        "manual",
        "incidents",
    }
)


def task_failure_callback(context) -> None:
    """Route a failed task to the alerting layer with the DAG's incident level from the policy."""
    from trading_ops.alerting import notify_task_failure

    notify_task_failure(context)


def task_success_callback(context) -> None:
    """Resolve the task's failure alert when an earlier run's failure of it is still open."""
    from trading_ops.alerting import notify_task_recovery

    notify_task_recovery(context)


DRY_RUN_MEANING = "Print the full plan and run every check, but change nothing."


def dry_run_param(*, default: bool, section: str | None = None):
    """The one `dry_run` of every DAG that changes something: the full plan, every check, no change. Scheduled DAGs
    default to false (the schedule does the work), manual-only ones to true (the first run of a trigger previews)."""
    from airflow.sdk import Param

    when = "Off by default: the schedule does the real work." if not default else "On by default: untick it to act."
    return Param(
        default,
        type="boolean",
        title="Dry run",
        description_md=f"{DRY_RUN_MEANING} {when}",
        **({"section": section} if section else {}),
    )


def default_args(**overrides) -> dict:
    """The shared default_args; a DAG passes overrides only where it has a reason to differ."""
    args = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=20),
        "execution_timeout": timedelta(hours=1),
        "on_failure_callback": task_failure_callback,
        "on_success_callback": task_success_callback,
    }
    args.update(overrides)
    return args


# Airflow needs a schedule's timezone while parsing, when the policy file may not be read; a test keeps this equal
# to the policy's `timezone`.
SCHEDULE_TIMEZONE = "Asia/Seoul"


def cron(expression: str):
    """A cron schedule in the team's timezone; runs carry the exact scheduled time as their logical date."""
    from airflow.timetables.trigger import CronTriggerTimetable

    return CronTriggerTimetable(expression, timezone=SCHEDULE_TIMEZONE)
