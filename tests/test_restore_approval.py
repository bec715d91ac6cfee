"""Who may approve a live restore, and what the restore scales back to: the rules on their own (no Airflow run).

The runs themselves (approved, answered by the triggering user, rejected, timed out; a service at 0 scaled back
to 3) are in test_restore_dag.py (dag.test()) and tests/e2e/test_restore_approval_e2e.py (the real scheduler).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy
from trading_ops.restore import approval
from trading_ops.restore.workload import scale_back_target

APPROVERS = ["alice", "bob"]


def test_the_shipped_policy_requires_a_second_persons_approval_within_30_minutes():
    rules = load_policy(DEFAULT_POLICY_PATH).restore.approval
    assert rules.required is True and rules.timeout == timedelta(minutes=30) and rules.approvers


@pytest.mark.parametrize(
    ("approval_settings", "message"),
    [
        ({"required": True, "approvers": [], "timeout": "30m"}, "restore.approval: approvers is empty while required"),
        ({"required": True, "approvers": ["a", "a"], "timeout": "30m"}, "approvers lists a user twice"),
        ({"required": True, "approvers": ["a"], "timeout": "half an hour"}, "restore.approval.timeout"),
        ({"required": True, "approvers": ["a"]}, "restore.approval.timeout is required"),
    ],
)
def test_a_bad_approval_policy_is_one_sentence(approval_settings, message):
    shipped = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    shipped["restore"]["approval"] = approval_settings
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(shipped, "ops_policy.yaml")
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_only_another_approver_may_be_asked():
    assert approval.check_can_ask(APPROVERS, "alice") == ["bob"]
    assert approval.check_can_ask(APPROVERS, "carol") == APPROVERS
    with pytest.raises(approval.ApprovalRefused, match="No one but alice, who triggered this run"):
        approval.check_can_ask(["alice"], "alice")
    with pytest.raises(approval.ApprovalRefused, match="who triggered this live restore is unknown"):
        approval.check_can_ask(APPROVERS, None)


def _user(name: str) -> dict:
    return {"id": name, "name": name}


def test_an_approval_counts_only_from_an_approver_who_did_not_trigger_the_run():
    assert approval.check_answer(["Approve"], _user("bob"), "alice", APPROVERS) == "bob"
    refusals = [
        (["Approve"], _user("alice"), "alice triggered this run and answered its approval"),
        (["Reject"], _user("alice"), "alice triggered this run"),
        (["Reject"], _user("bob"), "bob rejected the live restore"),
        (["Approve"], _user("mallory"), "mallory is not in restore.approval.approvers"),
        (["Approve"], None, "answered by no user"),
    ]
    for chosen, responder, sentence in refusals:
        with pytest.raises(approval.ApprovalRefused) as excinfo:
            approval.check_answer(chosen, responder, "alice", APPROVERS)
        message = str(excinfo.value)
        assert sentence in message and "nothing was changed" in message and "\n" not in message


def test_the_triggering_user_is_recognised_by_name_when_the_auth_manager_ids_are_numbers():
    """The run knows its triggering user by name; an auth manager such as FAB gives answers a numeric id."""
    with pytest.raises(approval.ApprovalRefused, match="alice triggered this run"):
        approval.check_answer(["Approve"], {"id": "7", "name": "alice"}, "alice", ["7", "8"])


@pytest.mark.parametrize(
    ("recorded", "requested", "expected"),
    [(0, None, 3), (2, None, 3), (3, None, 3), (6, None, 6), (0, 0, 0), (6, 1, 1), (0, 5, 5)],
)
def test_scale_back_is_the_count_before_but_never_below_the_minimum_unless_the_form_says(recorded, requested, expected):
    assert scale_back_target(recorded, requested, min_replicas=3) == expected
