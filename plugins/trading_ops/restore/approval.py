"""A second person's approval of a live restore: who may answer, what they are shown, and what an answer means.

A live restore (dry_run false) replaces the production database, so one person with the form must not be able to
do it alone (policy `restore.approval`). The run asks the users of `restore.approval.approvers` (Airflow user ids)
in the UI's Required Actions, showing the plan, and waits at most `restore.approval.timeout`. Only an approval by
an approver who is not the user who triggered the run lets it go on. An answer by the triggering user (approve or
reject), a rejection, an answer by someone outside the list, or no answer in time each end the run before
anything is scaled or restored: `ApprovalRefused`, a `UserError` (no retry, a notice, no page).

The triggering user is the run's `triggering_user_name` (the user who pressed Trigger or called the REST API); a
run whose triggering user is unknown cannot have a second person, so it is refused before asking.
"""

from __future__ import annotations

from datetime import timedelta

from trading_ops.errors import UserError

APPROVE, REJECT = "Approve", "Reject"


class ApprovalRefused(UserError):
    """The live restore was not approved by a second person; nothing was changed. The message is one sentence."""


def assigned_users(approvers: list[str]) -> list[dict]:
    """The HITL task's `assigned_users`: the approvers, so the API refuses anyone else (403)."""
    return [{"id": approver, "name": approver} for approver in approvers]


def check_can_ask(approvers: list[str], triggering_user: str | None) -> list[str]:
    """The approvers who may approve this run (all but the triggering user); refuses a run nobody else can approve."""
    if not triggering_user:
        raise ApprovalRefused(
            "The user who triggered this live restore is unknown (e.g. `airflow dags trigger` on a worker), so no "
            "second person can be told apart: trigger it from the UI or the REST API; nothing was changed."
        )
    others = [approver for approver in approvers if approver != triggering_user]
    if not others:
        raise ApprovalRefused(
            f"No one but {triggering_user}, who triggered this run, is in restore.approval.approvers: a live "
            "restore needs a second person's approval; nothing was changed."
        )
    return others


def check_answer(chosen_options: list[str], responder: dict | None, triggering_user: str, approvers: list[str]) -> str:
    """The approving user's id, or `ApprovalRefused` saying why the answer does not let the restore go on."""
    if responder is None:
        raise ApprovalRefused("The approval was answered by no user (a default answer); nothing was changed.")
    who = responder.get("name") or responder["id"]
    if triggering_user in (responder["id"], responder.get("name")):
        raise ApprovalRefused(
            f"{who} triggered this run and answered its approval: a live restore needs a second person "
            "(restore.approval.approvers); nothing was changed, trigger it again and ask someone else to approve."
        )
    if responder["id"] not in approvers:
        raise ApprovalRefused(
            f"{who} is not in restore.approval.approvers and may not approve a live restore; nothing was changed."
        )
    if chosen_options != [APPROVE]:
        raise ApprovalRefused(f"{who} rejected the live restore: nothing was changed and nothing was scaled.")
    return responder["id"]


def timed_out(timeout: timedelta) -> ApprovalRefused:
    return ApprovalRefused(
        f"No approver answered within restore.approval.timeout ({timeout}): the live restore was not approved; "
        "nothing was changed and nothing was scaled."
    )


def plan_text(plan: dict, policy) -> str:
    """The plan as validate_request printed it, with its workload lines."""
    from trading_ops import kube
    from trading_ops.restore import workload

    if plan.get("recovery"):
        from trading_ops.restore.pitr import describe_recovery_plan

        text = describe_recovery_plan(plan)
    else:
        from trading_ops.restore.plan import describe_plan

        text = describe_plan(plan, kube.Workload.from_policy(policy))
    if plan.get("workload"):
        text += "\n" + "\n".join(workload.plan_lines(plan, policy))
    return text


def subject(plan: dict) -> str:
    request = plan["request"]
    return f"Approve a live restore of {request['target_database']} from backup {plan['backup']['id']}"


def body(plan: dict, plan_text: str, triggering_user: str, approvers: list[str], timeout: timedelta) -> str:
    """What the approver reads (markdown): the essentials first, then the whole plan as validate printed it."""
    request = plan["request"]
    target = request["target_database"]
    recovery = plan.get("recovery")
    if recovery is None:
        goal = "the full backup's dump (as it was when the backup was taken)"
    elif recovery["target"] == "latest":
        goal = "latest: the base backup and every archived WAL segment"
    else:
        goal = f"time: the base backup and WAL up to {recovery['target_time']}"
    if request["restore_mode"] == "swap":
        replaced = (
            f"`{target}` is swapped out: renamed to `{plan['retired_database']}` (kept for rollback) and the "
            f"verified copy `{plan['staging_database']}` takes its name"
        )
    else:
        replaced = f"`{target}` is overwritten in place (`pg_restore --clean` in one transaction)"
    return "\n".join(
        [
            f"**{triggering_user}** asks to replace the production database **{target}**.",
            "",
            f"- **Backup:** {plan['backup']['id']} (taken {plan['backup']['taken_at']})",
            f"- **Recovery target:** {goal}",
            f"- **Mode:** {request['restore_mode']}",
            f"- **What will be replaced:** {replaced}",
            f"- **Workload:** {'scaled to 0 during the restore' if request['scale_workload'] else 'not scaled'}",
            "",
            f"Approve only if you are not {triggering_user}: their own answer fails the run. Approvers: "
            f"{', '.join(approvers)}. Without an answer in {timeout} the run ends with nothing changed; "
            "**Reject** ends it the same way.",
            "",
            "```",
            plan_text,
            "```",
        ]
    )
