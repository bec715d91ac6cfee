"""The tasks of the db_restore_drill DAG.

The drill's id is the run's time (`20261206T050000Z`), so a retried task records over its own drill. The restore
point's name carries the try number too: a retried mark makes a new point, never a second one of the same name
(recovery stops at the first point of a name, which would be the older one).
"""

from __future__ import annotations

import logging

from trading_ops.policy import load_policy

log = logging.getLogger(__name__)


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def drill_id() -> str:
    """The run's time, as backup ids are written."""
    from trading_ops.backup.repository import full_backup_id
    from trading_ops.runtime import run_time

    return full_backup_id(run_time(_context()))


def mark_recovery_target() -> dict:
    from trading_ops.db import libpq_env
    from trading_ops.restore import drill

    policy = load_policy()
    conn_id = policy.restore.conn_id
    name = drill.restore_point_name(drill_id(), _context()["ti"].try_number)
    return drill.mark_recovery_target(conn_id, libpq_env(conn_id)["PGDATABASE"], name, policy)


def restore_drill(target: dict) -> dict:
    """Recover, transfer, verify, record; a failed drill is recorded, then fails the task (the DAG's level, P2)."""
    from trading_ops.restore import drill

    policy = load_policy()
    result = drill.run_drill(drill_id(), target, policy)
    drill.record_drill(policy.alerting.state_conn_id, result)
    if result.outcome != "passed":
        raise drill.DrillFailed(
            f"Restore drill {result.drill_id} of backup {result.backup_id or '(none)'} failed in phase "
            f"{result.failed_phase}: {result.problems[0]}"
        )
    return result.to_dict()


def check_drill_health() -> str | None:
    """Alerts (the DAG's level) when this run's drill (its record, there whatever the drill task did) took longer
    than `restore.drill.rto_budget`. No drill passed within `restore.drill.max_age` is system_health's alert."""
    from trading_ops.alerting import Alert, send_alert
    from trading_ops.restore import drill

    policy = load_policy()
    finding = drill.rto_finding(policy, drill.get_drill(policy.alerting.state_conn_id, drill_id()))
    if finding is None:
        log.info("This drill did not pass over the RTO budget")
        return None
    send_alert(
        Alert(
            severity=policy.level_for_dag(drill.SOURCE),
            source=drill.SOURCE,
            summary=finding,
            dedup_key=f"trading-ops/{drill.SOURCE}/rto",
        )
    )
    return finding
