"""The tasks of the security-check DAGs: one per check of a frequency (from `catalog`), and a summary of the run.

Only `airflow.sdk` and the import-free catalog are imported here; each task imports the check's module when it runs,
so parsing the DAG files stays free of side effects.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from trading_ops.security.catalog import Frequency, SecurityCheck, checks_of


def _run_info():
    from trading_ops.policy import load_policy
    from trading_ops.runtime import run_info

    return run_info(get_current_context(), load_policy())


def check_task(check: SecurityCheck):
    """A task that runs `check`, records and alerts its findings, and returns its summary (XCom)."""

    @task(task_id=check.task_id)
    def run_security_check() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from trading_ops.security.runner import CheckDisabled, run_check

        try:
            return run_check(check.name, _run_info()).summary()
        except CheckDisabled as disabled:
            raise AirflowSkipException(str(disabled)) from None

    return run_security_check()


@task(task_id="summarize_findings", trigger_rule="all_done")
def summarize_findings(summaries: dict) -> dict:
    """Runs after every check, failed or skipped ones too, so the log shows what was found; fails the run if a check
    failed (a check the policy disables is skipped and listed as disabled)."""
    from trading_ops.policy import load_policy
    from trading_ops.security.runner import summarize

    return summarize(summaries, load_policy().security.disabled_checks)


def security_checks(frequency: Frequency):
    """The tasks of the DAG running the checks of `frequency` in parallel, then the summary."""
    return summarize_findings({check.name: check_task(check) for check in checks_of(frequency)})
