"""The grouping window of Slack notifications, in `ops.alert_groups` of the ops state database
(`alerting.state_conn_id`, see `trading_ops.opsstate`).

PagerDuty deduplicates on the dedup key; Slack has no such thing, so identical alerts (same dedup key, level, source
and summary) inside `alerting.group_window` are counted, not re-sent. The state database may be the very reason of
the alert: when it is unreachable, every function here logs it and answers so that the alert still goes out.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from trading_ops.alerting.routing import Alert, format_duration
from trading_ops.policy import Policy

log = logging.getLogger(__name__)


def _group_key(alert: Alert) -> str:
    return hashlib.sha256("\x1f".join((alert.key, alert.level, alert.source, alert.summary)).encode()).hexdigest()


def record_occurrence(alert: Alert, policy: Policy, at: datetime) -> tuple[bool, int, bool]:
    """(send?, occurrences grouped into the previous notification, recorded?). Unreachable state: send, ungrouped."""
    from trading_ops.opsstate import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            sent, grouped = conn.execute(
                load_sql("alerting/record_alert_occurrence.sql"),
                {
                    "group_key": _group_key(alert),
                    "dedup_key": alert.key,
                    "level": alert.level,
                    "source": alert.source,
                    "summary": alert.summary,
                    "at": at,
                    "window": policy.alerting.group_window,
                },
            ).fetchone()
            conn.commit()
            return sent, grouped, True
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; delivering %s alert %r ungrouped",
            policy.alerting.state_conn_id,
            alert.level,
            alert.summary,
        )
        return True, 0, False


def undo_occurrence(alert: Alert, policy: Policy) -> None:
    """The notification just recorded did not reach every destination: the next identical alert goes out."""
    from trading_ops.opsstate import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            conn.execute(load_sql("alerting/undo_alert_occurrence.sql"), {"group_key": _group_key(alert)})
            conn.commit()
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; an identical alert within %s may be grouped into the "
            "undelivered %r",
            policy.alerting.state_conn_id,
            format_duration(policy.alerting.group_window),
            alert.summary,
        )


def forget_occurrences(alert: Alert, policy: Policy) -> None:
    """A resolved condition ends its grouping: the next occurrence is news."""
    from trading_ops.opsstate import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id) as conn:
            conn.execute(load_sql("alerting/delete_alert_groups.sql"), {"dedup_key": alert.key})
            conn.commit()
    except Exception:
        log.exception(
            "Alert grouping state in %r is unavailable; resolving %r anyway", policy.alerting.state_conn_id, alert.key
        )


def is_open(alert: Alert, policy: Policy) -> bool:
    """Whether an alert with this dedup key was raised and not resolved: one indexed lookup."""
    from trading_ops.opsstate import connection
    from trading_ops.sqlfiles import load_sql

    try:
        with connection(policy.alerting.state_conn_id, autocommit=True) as conn:
            return conn.execute(load_sql("alerting/select_open_alert.sql"), {"dedup_key": alert.key}).fetchone()[0]
    except Exception:
        log.warning(
            "Alert grouping state in %r is unavailable; %r is not resolved even if it was open",
            policy.alerting.state_conn_id,
            alert.summary,
            exc_info=True,
        )
        return False
