"""The tasks both backup DAGs end with: retention, then the freshness check.

Only `airflow.sdk` is imported here; each task imports the backup code when it runs, so parsing stays free of
side effects.
"""

from __future__ import annotations

from airflow.sdk import TriggerRule, get_current_context, task


@task
def apply_retention() -> dict:
    from trading_ops.backup import tasks

    context = get_current_context()
    return tasks.retention(tasks.run_moment(context), dry_run=context["params"]["dry_run"])


# Runs even when the backup failed: a stale repository is what the alert is for.
@task(trigger_rule=TriggerRule.ALL_DONE)
def check_backup_freshness() -> list[str]:
    from trading_ops.backup import tasks

    context = get_current_context()
    ti = context["ti"]
    return tasks.freshness(tasks.run_moment(context), ti.dag_id, ti.task_id)
