"""Whether every scheduled DAG still succeeds on schedule, from Airflow's own record of its runs.

Task code cannot read Airflow's metadata database in Airflow 3; the Task SDK asks the API server for it. The
question asked is the one the Task SDK answers publicly (`RuntimeTaskInstance.get_dr_count`, as ExternalTaskSensor
asks it): how many runs of DAG X with logical date T are in state S. With a cron schedule (a
`CronTriggerTimetable`), a scheduled run's logical date is exactly its fire time, so walking the fire times back from
the evaluation finds the newest successful scheduled run.

The measure, per DAG, is how overdue it is: `at - due - slack`, where `due` is the fire time after its newest
successful scheduled run (the run that should have succeeded by now) or, if none succeeded, its first run's fire
time; `slack` (`monitoring.freshness.dag_runs.slack`) is how long a run may take and wait for a worker. Over 0 is
stale: the DAG is paused, broken, failing, or the scheduler does not run it. A DAG without a run at any of the
MAX_FIRES fire times looked back is not measured (a new deployment's weekly DAGs have nothing to be late with
yet); a DAG that was measured and is not any more (its file does not parse, or it has been stopped for MAX_FIRES
intervals) goes "no data", which alerts until its row in ops.alert_rule_state is deleted. Manual runs (logical
date null in Airflow 3) do not count: they are not the schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

# How many fire times back the newest success is looked for: 100 runs of a 5-minute DAG (8h20m) is far past any
# slack.
MAX_FIRES = 100

# (dag_id, logical dates, states or None for any) -> how many runs match.
RunCounter = Callable[[str, list[datetime], list[str] | None], int]


@dataclass(frozen=True)
class ScheduledDag:
    dag_id: str
    expression: str  # cron
    timezone: str
    start_date: datetime | None


def series(dag_id: str) -> str:
    return f'dag_id="{dag_id}"'


def scheduled_dags(dags: Iterable) -> list[ScheduledDag]:
    """The DAGs with a cron schedule (CronTriggerTimetable), as Airflow parsed them."""
    from airflow.timetables.trigger import CronTriggerTimetable

    result = []
    for dag in dags:
        if isinstance(dag.timetable, CronTriggerTimetable):
            schedule = dag.timetable.serialize()
            result.append(ScheduledDag(dag.dag_id, schedule["expression"], schedule["timezone"], dag.start_date))
    return sorted(result, key=lambda dag: dag.dag_id)


def _fires_before(dag: ScheduledDag, at: datetime) -> tuple[datetime, list[datetime]]:
    """(the next fire time after `at`, fire times at or before `at`, newest first, at most MAX_FIRES, none before
    the DAG's start date), in UTC as logical dates are."""
    from datetime import UTC

    import pendulum
    from croniter import croniter

    local = at.astimezone(pendulum.timezone(dag.timezone))
    upcoming = croniter(dag.expression, local).get_next(datetime).astimezone(UTC)
    # croniter's get_prev from exactly a fire time skips it: start a microsecond later.
    walker = croniter(dag.expression, local + timedelta(microseconds=1))
    fires = []
    while len(fires) < MAX_FIRES:
        fire = walker.get_prev(datetime).astimezone(UTC)
        if dag.start_date is not None and fire < dag.start_date:
            break
        fires.append(fire)
    return upcoming, fires


def _first(count: int, holds: Callable[[int], bool]) -> int:
    """The smallest i in [0, count) for which `holds(i)` is true, `holds` being monotone (false..., true...) and
    true at count - 1: a binary search, so a stale DAG costs a few questions, not one per fire time."""
    low, high = 0, count - 1
    while low < high:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle + 1
    return low


def overdue_seconds(dag: ScheduledDag, at: datetime, slack: timedelta, count: RunCounter) -> float | None:
    """How overdue `dag`'s next successful scheduled run is at `at`, in seconds (<= 0: on time); None: no run at
    the fire times looked at."""
    upcoming, fires = _fires_before(dag, at)
    if not fires or not count(dag.dag_id, fires, None):
        return None
    if count(dag.dag_id, fires, ["success"]):
        newest = _first(len(fires), lambda i: bool(count(dag.dag_id, fires[: i + 1], ["success"])))
        due = fires[newest - 1] if newest else upcoming
    else:
        # None succeeded: the first run (the oldest fire time with a run) was due to.
        last = len(fires) - 1
        due = fires[_first(len(fires), lambda i: i == last or not count(dag.dag_id, fires[i + 1 :], None))]
    return (at - due - slack).total_seconds()


def measure(dags: list[ScheduledDag], at: datetime, slack: timedelta, count: RunCounter) -> dict[str, float]:
    """{series: overdue seconds} of every scheduled DAG that has ever run."""
    values = {}
    for dag in dags:
        value = overdue_seconds(dag, at, slack, count)
        if value is not None:
            values[series(dag.dag_id)] = value
    return values
