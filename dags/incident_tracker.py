"""
# incident_tracker

Every minute: start one `incident_response` run for each open P1/P2 incident that has none yet, and alert every open
incident that has missed its resolution deadline one level up (a P2 past its 4 h pages as P1; a P1 past its 2 h
pages again as P1). The incidents themselves are opened by the alerts (`trading_ops.incidents`, hooked into
`alerting.send_alert`); this DAG only watches them.

**Schedule**: `* * * * *`, `max_active_runs=1`, no catch-up: each run looks at the present; a late start costs at
most a minute of the P1 response time (15 min).

**Why a tracker and not an asset event**: an incident opens wherever an alert is sent, mostly inside a failure
callback or in the middle of another DAG's task, none of which can emit an asset event (only a task with the asset
as its outlet can); and the resolution deadline must be watched by something that runs while the incident's own run
is parked on a question. One small task a minute does both; the run id `incident_<id>` makes a second start of the
same incident a skip, so "one run per incident" holds even when two tracker runs overlap with a retry.

## Tasks
- `track_incidents`: in the ops state database (`alerting.state_conn_id`), sends the overdue-resolution alerts
  (once per incident, dedup key `trading-ops/incident/<id>/resolution-overdue`, on its timeline; the incident's
  level is raised) and lists the incidents needing a run.
- `start_incident_response`: one mapped `TriggerDagRunOperator` per listed incident, run id `incident_<id>`, conf
  `{"incident_id": <id>}`; an existing run of that id is skipped. None listed: skipped.

## Idempotency
Re-running a run alerts nothing twice (the overdue alert is marked once delivered) and starts no second run of an
incident (fixed run ids). An undelivered overdue alert is not marked: the next minute sends it again.

## Triage
- `track_incidents` failed: the ops state database is unreachable (the alerts still go out, without incidents) or
  an alert destination failed; the log names it.
- `start_incident_response` failed: `incident_response` is paused, broken or missing; unpause it or read its
  import error. Open incidents stay listed until their run starts.
- See the open incidents: `python -m trading_ops incidents list --open`.

## Recovery
Nothing to undo: fix the cause and the next minute catches up on every open incident.

## Owner
sre-dba (on-call). Code: `trading_ops.incidents` (`tracker`, `tasks`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from trading_ops.dag_defaults import cron, default_args


@dag(
    description="Start an incident_response run per open P1/P2 incident; alert missed resolution deadlines a level up.",
    schedule=cron("* * * * *"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    # The whole run must fit in its minute.
    default_args=default_args(
        retry_delay=timedelta(seconds=10),
        retry_exponential_backoff=False,
        execution_timeout=timedelta(minutes=1),
    ),
    tags=["incidents", "alerting", "frequent"],
    doc_md=__doc__,
)
def incident_tracker():
    @task
    def track_incidents() -> list[dict]:
        from trading_ops.incidents import tasks

        return tasks.track_incidents()

    TriggerDagRunOperator.partial(
        task_id="start_incident_response",
        trigger_dag_id="incident_response",
        logical_date=None,
        skip_when_already_exists=True,
    ).expand_kwargs(track_incidents())


incident_tracker()
