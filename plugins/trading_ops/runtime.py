"""The run's time: the one moment a run takes its cutoffs, ids and windows from, so a retry or a rerun of the same
run does exactly what the first try did (never the clock).

A cron schedule (CronTriggerTimetable) gives a zero-length data interval whose end is the scheduled time; a run
triggered from the UI or the REST API without a logical date has none, and its `run_after` (when it was asked for)
is used instead. Only the wings' `tasks.py` call this: domain code takes the moment as a plain value.
"""

from __future__ import annotations

from datetime import UTC, datetime


def run_time(context) -> datetime:
    """The run's moment as a plain `datetime` in UTC (Airflow hands out pendulum objects, whose calendar arithmetic
    differs from the standard library's)."""
    moment = context.get("data_interval_end") or context["dag_run"].run_after
    return datetime.fromtimestamp(moment.timestamp(), UTC)
