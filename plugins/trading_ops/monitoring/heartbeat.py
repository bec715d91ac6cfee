"""The dead man's switch: system_health's last task pings a heartbeat URL, so that a stopped scheduler,
dag-processor or worker, which alerts nothing from inside Airflow, pages from outside it.

The Airflow HTTP connection `monitoring.heartbeat_conn_id` holds the whole ping URL (a healthchecks.io check's
`https://hc-ping.com/<uuid>`, a PagerDuty or Opsgenie heartbeat URL) and any credentials or headers it needs. The
service alerts when no ping arrived within its period (5 minutes, system_health's schedule) plus its grace period;
a run that fails before the end does not ping.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from trading_ops.monitoring.collect import MonitoringError

log = logging.getLogger(__name__)


def ping(conn_id: str, run_id: str, timeout: timedelta) -> int:
    """POST a short JSON naming the run to the heartbeat URL (healthchecks.io keeps a ping's body as its log);
    returns the HTTP status (2xx), raises otherwise."""
    import requests

    from trading_ops.http_connections import http_session

    session, url = http_session(conn_id)
    with session:
        try:
            response = session.post(
                url, json={"dag_id": "system_health", "run_id": run_id}, timeout=timeout.total_seconds()
            )
        except requests.RequestException as exc:
            # Not the exception's text: it quotes the URL, whose path is the check's secret (hc-ping.com/<uuid>).
            raise MonitoringError(f"The heartbeat ({conn_id}) did not answer: {type(exc).__name__}") from None
    if not response.ok:
        raise MonitoringError(f"The heartbeat ({conn_id}) answered HTTP {response.status_code}: {response.text[:200]}")
    log.info("Heartbeat %s pinged for %s (HTTP %s)", conn_id, run_id, response.status_code)
    return response.status_code
