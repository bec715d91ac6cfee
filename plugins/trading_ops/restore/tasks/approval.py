"""The db_restore DAG's approval task: a Human-in-the-loop `ApprovalOperator` asking a second person (policy
`restore.approval`) before anything is scaled. What it decides is in `restore.approval`; this module reads the run's
context for it. The DAG file imports this class while parsing, so everything else is imported when it runs.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator

log = logging.getLogger(__name__)


class ApproveLiveRestore(ApprovalOperator):
    """Waits for a second person's approval of the live restore planned by task `plan_task_id`; any outcome but
    an approval by an approver who did not trigger the run fails with `approval.ApprovalRefused` (a `UserError`).

    Subject, body, assigned users and timeout come from the plan and the policy when it runs (parsing reads no
    file). With `restore.approval.required` false it returns at once, saying so."""

    def __init__(self, *, plan_task_id: str, **kwargs) -> None:
        # The human wait is bounded by response_timeout (the policy's restore.approval.timeout, set when it runs).
        # Given at construction, execution_timeout would be taken for it (HITLOperator's backward compatibility),
        # so it is set afterwards: it bounds only the work before the wait and after the answer.
        super().__init__(subject="Approve a live restore", execution_timeout=None, **kwargs)
        self.execution_timeout = timedelta(minutes=10)
        self.plan_task_id = plan_task_id

    def execute(self, context):
        from trading_ops.policy import load_policy
        from trading_ops.restore import approval

        policy = load_policy()
        rules = policy.restore.approval
        if not rules.required:
            log.warning("restore.approval.required is false: this live restore goes on without a second person")
            return {"approved_by": None, "required": False}
        plan = context["ti"].xcom_pull(task_ids=self.plan_task_id)
        triggering_user = context["dag_run"].triggering_user_name
        others = approval.check_can_ask(rules.approvers, triggering_user)
        self.subject = approval.subject(plan)
        self.body = approval.body(plan, approval.plan_text(plan, policy), triggering_user, others, rules.timeout)
        self.assigned_users = approval.assigned_users(rules.approvers)
        self.response_timeout = rules.timeout
        log.info("Asking %s to approve within %s (Browse -> Required Actions)", ", ".join(others), rules.timeout)
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        from trading_ops.policy import load_policy
        from trading_ops.restore import approval

        rules = load_policy().restore.approval
        if event.get("error_type") == "timeout":
            raise approval.timed_out(rules.timeout)
        if "error" in event:
            self.process_trigger_event_error(event)
        self.validate_chosen_options(event["chosen_options"])
        approver = approval.check_answer(
            event["chosen_options"],
            event["responded_by_user"],
            context["dag_run"].triggering_user_name,
            rules.approvers,
        )
        log.info("Approved by %s at %s: the restore goes on", approver, event["responded_at"])
        return {"approved_by": approver, "required": True, "responded_at": event["responded_at"].isoformat()}
