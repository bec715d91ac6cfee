"""The tasks of the security-check DAGs: one per check, and a summary of the run.

Only `airflow.sdk` is imported here; each task imports the check's module when it runs, so parsing the DAG files
stays free of side effects.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task


def _run_info():
    from trading_ops.security.findings import RunInfo

    context = get_current_context()
    dag_run = context["dag_run"]
    # A manual run triggered with logical_date null has none: its time is run_after.
    as_of = context.get("logical_date") or dag_run.run_after
    return RunInfo(dag_id=dag_run.dag_id, run_id=dag_run.run_id, as_of=as_of)


def check_task(check: str, task_id: str):
    """A task that runs `check` and returns its summary (XCom)."""

    @task(task_id=task_id)
    def run_security_check() -> dict:
        from trading_ops.security.runner import run_check

        return run_check(check, _run_info()).summary()

    return run_security_check()


def summary_task(results: dict):
    """Runs after every check, even failed ones, so the run's log shows what was found; it fails if one did."""

    @task(task_id="summarize_findings", trigger_rule="all_done")
    def summarize_findings(summaries: dict) -> dict:
        from trading_ops.security.runner import summarize

        return summarize(summaries)

    return summarize_findings(results)
