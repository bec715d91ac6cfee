"""
# incident_response

The on-call procedure of the manual's section 4 for one P1 or P2 incident: one run per incident (run id
`incident_<id>`, conf `{"incident_id": <id>}`), started by `incident_tracker` within a minute of the alert that
opened it. Its human steps are questions in **Browse -> Required Actions**, addressed to the Airflow users that
`incidents.roles` maps the level's escalation roles to. P3 incidents have no run: they are recorded and resolved
with their alert.

| level | respond within | resolve within | escalation | procedure |
|---|---|---|---|---|
| P1 critical (complete service outage) | 15m | 2h | devops_lead → system_architect → cto | convene emergency team |
| P2 major (major feature failure) | 30m | 4h | devops_engineer → team_lead | assign owner |

(The numbers are the policy's `incident_levels`; the Slack messages and the questions quote the policy in force.)

## The on-call procedure
1. **Detect, judge severity** (automatic): the alert (a rule firing, a DAG failure at its level, a security
   finding) opened the incident at its level; repeats of the same dedup key join it. Slack (and for P1 PagerDuty)
   got the alert; the run posts who is asked to acknowledge, with the link to the question.
2. **Acknowledge** (`acknowledge_1`): the first role of the chain is asked; acknowledging within the response time
   makes you the **owner** (P1: convene the emergency team; P2: you are the assigned owner). No answer in time:
   `acknowledge_2` escalates to the next role (a Slack message naming them and, for P1, a PagerDuty page of its
   own) and waits again; after the last role, the whole chain is asked until one acknowledges. Who and when is
   recorded against the response deadline. Steps not needed are skipped.
3. **Status reports** (`report_status`): a form (impact, current action, next update in minutes) for the owner,
   asked again after each report and each missed update (a Slack reminder) until the triggering condition has
   cleared (the rule resolved, the failed task succeeded again, the finding is gone). Each report goes to Slack.
4. **Root-cause analysis and fix**: yours, outside Airflow; write what you learn into the status reports.
5. **Recovery confirmed** (`confirm_recovery`): offered once the condition has cleared. Confirm the service works
   and say what resolved it: the incident closes, its resolution time measured against the deadline.
6. **Post-mortem** (`write_post_mortem`): a markdown draft from the timeline (times against the deadlines, who
   acknowledged, what resolved it, open questions), stored with the incident, linked from Slack; review it with
   the team and fill in the analysis.

A missed resolution deadline is alerted one level up by `incident_tracker` (a P2 past 4 h pages as P1) whatever
step this run is at.

## Tasks
- `start_response`: binds the run to its incident (a second run for the same incident fails here at once) and
  puts the start on the timeline.
- `acknowledge_1` … `acknowledge_5`: one question per escalation step (Airflow keeps one question, with its
  assigned users, per task; a chain may have at most 4 roles, the fifth step asks all of them).
- `report_status`, `confirm_recovery`, `write_post_mortem`: as above.

## Idempotency
Every record is keyed (an acknowledgement counts once, an escalation is recorded once per step, a report once per
answer), so a retried task or a repeated answer changes nothing. The run never opens or closes an incident twice.

## Triage
- The timeline: `python -m trading_ops incidents show <id>`; all incidents: `python -m trading_ops incidents list`.
- A question answered with 403: you are not among its assigned users (`incidents.roles`); ask the people named.
- `start_response` failed with "handled by run ...": the incident already has its run; look there.
- The condition cleared but `report_status` still asks: submit a report (or wait for its due time), then the
  recovery confirmation is offered. A condition that fires again before the confirmation rejoins the incident.

## Recovery
A failed task is retried; clear it to ask again (the records are idempotent). To close an incident whose run is
gone, trigger `incident_response` with a new run id only after marking the old run failed.

## Owner
sre-dba (on-call). Code: `trading_ops.incidents` (`response`, `operators`, `postmortem`, `tasks`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

from trading_ops.dag_defaults import default_args
from trading_ops.incidents.operators import AcknowledgeIncident, ConfirmRecovery, StatusReports
from trading_ops.policy import MAX_ESCALATION_ROLES


@dag(
    description="On-call procedure of one P1/P2 incident: acknowledge, escalate, report, confirm, post-mortem.",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    # One run per incident, and incidents overlap.
    max_active_runs=16,
    # Its tasks are questions and small records: a retry (a DB blip, or an answer lost in Airflow 3.3.2's resume
    # race, after which the question is asked again) must come within seconds, not after minutes of backoff.
    default_args=default_args(retry_delay=timedelta(seconds=10), retry_exponential_backoff=False),
    params={"incident_id": Param(type="integer", minimum=1, title="Incident id", description="From the tracker.")},
    tags=["incidents", "alerting"],
    doc_md=__doc__,
)
def incident_response():
    @task
    def start_response() -> dict:
        from trading_ops.incidents import tasks

        return tasks.start_response()

    @task(trigger_rule="none_failed")
    def write_post_mortem() -> str:
        from trading_ops.incidents import tasks

        return tasks.write_post_mortem()

    steps = [
        AcknowledgeIncident(task_id=f"acknowledge_{number}", position=number - 1, trigger_rule="none_failed")
        for number in range(1, MAX_ESCALATION_ROLES + 2)
    ]
    previous = start_response()
    for step in steps:
        previous >> step
        previous = step
    reports = StatusReports(task_id="report_status", trigger_rule="none_failed")
    confirm = ConfirmRecovery(task_id="confirm_recovery", trigger_rule="none_failed")
    previous >> reports >> confirm >> write_post_mortem()


incident_response()
