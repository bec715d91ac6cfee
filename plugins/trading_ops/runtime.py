"""The run's time: the one moment a run takes its cutoffs, ids and windows from, so a retry or a rerun of the same
run does exactly what the first try did (never the clock).

A cron schedule (CronTriggerTimetable) gives a zero-length data interval whose end is the scheduled time; a run
triggered from the UI or the REST API without a logical date has none, and its `run_after` (when it was asked for)
is used instead. Only the wings' `tasks.py` call this: domain code takes the moment as a plain value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


def run_time(context) -> datetime:
    """The run's moment as a plain `datetime` in UTC (Airflow hands out pendulum objects, whose calendar arithmetic
    differs from the standard library's)."""
    moment = context.get("data_interval_end") or context["dag_run"].run_after
    return datetime.fromtimestamp(moment.timestamp(), UTC)


@dataclass(frozen=True)
class RunInfo:
    """The Airflow run a check or review belongs to; `as_of` is its run time (`run_time`), `run_url` the page of its
    task in the Airflow UI, which every alert of the check links to."""

    dag_id: str
    run_id: str
    as_of: datetime
    run_url: str


def run_info(context, policy) -> RunInfo:
    """The running task's RunInfo, for the wings whose findings go to the findings store (security, capacity)."""
    from trading_ops.alerting import airflow_run_url

    ti = context["ti"]
    return RunInfo(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        as_of=run_time(context),
        run_url=airflow_run_url(policy, ti.dag_id, ti.run_id, ti.task_id),
    )
