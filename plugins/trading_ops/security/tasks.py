"""The tasks of the security-check DAGs: one per check, and a summary of the run.

Only `airflow.sdk` is imported here; each task imports the check's module when it runs, so parsing the DAG files
stays free of side effects.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

# check -> task id (verb_object), one task per check of the manual.
TASK_IDS = {
    "vulnerability_scan": "scan_vulnerabilities",
    "auth_log_review": "review_auth_logs",
    "failed_login_attempts": "count_failed_logins",
    "dependency_updates": "check_dependency_updates",
    "ssl_cert_check": "check_ssl_certs",
    "firewall_rule_review": "review_firewall_rules",
    "penetration_test": "probe_attack_surface",
    "security_policy_review": "review_security_policy",
    "access_right_audit": "audit_access_rights",
}


def _run_info():
    from trading_ops.dag_defaults import run_time
    from trading_ops.security.findings import RunInfo

    context = get_current_context()
    dag_run = context["dag_run"]
    return RunInfo(dag_id=dag_run.dag_id, run_id=dag_run.run_id, as_of=run_time(context))


def check_task(check: str):
    """A task that runs `check`, records and alerts its findings, and returns its summary (XCom)."""

    @task(task_id=TASK_IDS[check])
    def run_security_check() -> dict:
        from trading_ops.security.runner import run_check

        return run_check(check, _run_info()).summary()

    return run_security_check()


@task(task_id="summarize_findings", trigger_rule="all_done")
def summarize_findings(summaries: dict) -> dict:
    """Runs after every check, failed ones too, so the log shows what was found; fails the run if a check did."""
    from trading_ops.security.runner import summarize

    return summarize(summaries)


def security_checks(*checks: str):
    """The tasks of a DAG running `checks` in parallel, then the summary."""
    return summarize_findings({check: check_task(check) for check in checks})
