"""Alert routing. Until the routing layer lands (issue: Alerting), a task failure is logged loudly."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def notify_task_failure(context) -> None:
    from trading_ops.policy import load_policy

    ti = context["ti"]
    level = load_policy().level_for_dag(ti.dag_id)
    log.error(
        "ALERT %s: task %s.%s failed (run %s, try %s): %s",
        level,
        ti.dag_id,
        ti.task_id,
        ti.run_id,
        ti.try_number,
        context.get("exception"),
    )
