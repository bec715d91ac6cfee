"""The incident_response DAG's human steps: Human-in-the-loop operators (Browse -> Required Actions) reading the run's
context for `incidents.response`, which decides. The DAG file imports these classes while parsing, so everything
else is imported when they run.

Airflow keeps one question per task instance, and a question asked again keeps its first subject and assigned
users: an escalation is therefore a task of its own (`acknowledge_<n>`, one per step of the longest chain), while the
repeated status report is one task asking again (same owner) until the triggering condition has cleared.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

log = logging.getLogger(__name__)

ACKNOWLEDGE, REPORT, CONFIRM = "Acknowledge", "Submit report", "Confirm recovery"


def _now() -> datetime:
    # The moment a person answered or a wait ran out: the event itself, not a cutoff.
    return datetime.now(UTC)


def _utc(moment) -> datetime:
    return datetime.fromtimestamp(moment.timestamp(), UTC)


def _users(ids: list[str]) -> list[dict]:
    return [{"id": user, "name": user} for user in ids]


def _responder(event: dict) -> str | None:
    user = event.get("responded_by_user")
    return (user.get("id") or user.get("name")) if user else None


class _IncidentQuestion(HITLOperator):
    def __init__(self, **kwargs) -> None:
        # The DAG's own params (the incident id, read from the run's conf) are not part of the question's form.
        if "form" in kwargs:
            kwargs.pop("params", None)
            kwargs["params"] = kwargs.pop("form")
        # The human wait is bounded by response_timeout, set when the task runs; given at construction,
        # execution_timeout would be taken for it (HITLOperator's backward compatibility), so it is set afterwards.
        super().__init__(execution_timeout=None, **kwargs)
        self.execution_timeout = timedelta(minutes=10)

    @staticmethod
    def incident_id(context) -> int:
        return int(context["dag_run"].conf["incident_id"])


class AcknowledgeIncident(_IncidentQuestion):
    """Step `position` of the escalation chain: asks its role's users to acknowledge within the level's response
    time; a timeout lets the next step escalate. Skipped once acknowledged or past the chain."""

    def __init__(self, *, position: int, **kwargs) -> None:
        super().__init__(subject="Acknowledge the incident", options=[ACKNOWLEDGE], **kwargs)
        self.position = position

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        policy = load_policy()
        incident_id = self.incident_id(context)
        ti = context["ti"]
        current = response.ask(policy, incident_id, self.position, ti.run_id, ti.task_id, _now())
        if current is None:
            raise AirflowSkipException(
                f"Step {self.position + 1}: nothing to ask (acknowledged, resolved or past the chain)"
            )
        incident = response.load(policy, incident_id)
        level = policy.incident_levels[incident["opened_level"]]
        self.subject = f"Acknowledge {incident['level']} incident #{incident_id}: {incident['summary']}"[:250]
        self.body = response.acknowledge_body(policy, incident, current)
        self.assigned_users = _users(current.users)
        self.response_timeout = current.timeout
        log.info("Asking %s to acknowledge (%s: %s)", current.who, level.name, level.procedure)
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        policy = load_policy()
        incident_id = self.incident_id(context)
        if event.get("error_type") == "timeout":
            response.not_acknowledged(policy, incident_id, self.position, _now())
            return {"acknowledged_by": None}
        if "error" in event:
            self.process_trigger_event_error(event)
        self.validate_chosen_options(event["chosen_options"])
        user = _responder(event)
        incident = response.acknowledge(policy, incident_id, user, _utc(event["responded_at"]))
        return {"acknowledged_by": incident["acknowledged_by"], "at": incident["acknowledged_at"].isoformat()}


class StatusReports(_IncidentQuestion):
    """The status report form (impact, current action, next update), asked of the owner again after every report
    and every missed one until the triggering condition has cleared; a missed report is a Slack reminder."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            subject="Status report",
            options=[REPORT],
            form={
                "impact": Param("", type="string", title="Impact", description="Who and what is affected now."),
                "current_action": Param("", type="string", title="Current action", description="What is being done."),
                "next_update_minutes": Param(
                    None,
                    type=["null", "integer"],
                    minimum=1,
                    title="Next update in (minutes)",
                    description="Empty: the policy's incidents.status_report_every.",
                ),
            },
            **kwargs,
        )

    def execute(self, context):
        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        policy = load_policy()
        incident_id = self.incident_id(context)
        incident = response.load(policy, incident_id)
        if incident["condition_resolved_at"] is not None or incident["resolved_at"] is not None:
            log.info("The triggering condition of incident #%s has cleared: no more status reports", incident_id)
            return {"condition_resolved_at": (incident["condition_resolved_at"] or incident["resolved_at"]).isoformat()}
        self.subject = f"Status report: {incident['level']} incident #{incident_id}: {incident['summary']}"[:250]
        self.body = response.status_body(policy, incident)
        self.assigned_users = _users(response.responders(policy, incident))
        self.response_timeout = response.next_report_timeout(policy, response.last_report(policy, incident_id))
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        policy = load_policy()
        incident_id = self.incident_id(context)
        if event.get("error_type") == "timeout":
            waited = response.next_report_timeout(policy, response.last_report(policy, incident_id))
            response.status_overdue(policy, incident_id, _now(), waited)
        else:
            if "error" in event:
                self.process_trigger_event_error(event)
            self.validate_chosen_options(event["chosen_options"])
            report = event["params_input"] or {}
            response.status_report(policy, incident_id, report, _responder(event), _utc(event["responded_at"]))
        # Asks again (the same question, its answer cleared) unless the condition has cleared meanwhile.
        return self.execute(context)


class ConfirmRecovery(_IncidentQuestion):
    """Offered once the triggering condition has cleared: confirming closes the incident (resolution time against
    its deadline), saying what resolved it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            subject="Confirm recovery",
            options=[CONFIRM],
            form={
                "what_resolved_it": Param(
                    "", type="string", title="What resolved it", description="The fix, for the post-mortem."
                ),
            },
            **kwargs,
        )

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        policy = load_policy()
        incident_id = self.incident_id(context)
        incident = response.load(policy, incident_id)
        if incident["resolved_at"] is not None:
            raise AirflowSkipException(f"Incident #{incident_id} was resolved by {incident['resolved_by']}")
        self.subject = f"Confirm recovery: {incident['level']} incident #{incident_id}: {incident['summary']}"[:250]
        self.body = response.confirm_body(policy, incident)
        self.assigned_users = _users(response.responders(policy, incident))
        self.response_timeout = None
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        from trading_ops.incidents import response
        from trading_ops.policy import load_policy

        if "error" in event:
            self.process_trigger_event_error(event)
        self.validate_chosen_options(event["chosen_options"])
        note = (event["params_input"] or {}).get("what_resolved_it") or ""
        incident = response.close(
            load_policy(), self.incident_id(context), _responder(event), note, _utc(event["responded_at"])
        )
        return {"resolved_by": incident["resolved_by"], "resolved_at": incident["resolved_at"].isoformat()}
