"""PagerDuty: the Events API v2 event of an alert, sent with the provider's hook to the endpoint the connection names.

`PagerdutyEventsHook` always posts to https://events.pagerduty.com and ignores the connection's host, which
rules out PagerDuty's EU service region (events.eu.pagerduty.com) and any relay. This hook takes the host (and
port) from the connection, and a CA file from its extra `ca_bundle` for a relay with a private certificate;
everything else (event shape, validation) is the provider's and the `pagerduty` client's.

The client retries a 503 six times and a 429 without end, with waits that double from 3 s: long enough to eat a
system_health run's timeout on one alert. Here each request gives up after `alerting.delivery_timeout` and is
retried at most `alerting.delivery_retries` times, waiting `alerting.delivery_retry_wait`, doubled each time.
"""

from __future__ import annotations

import ssl
from typing import Any

import pagerduty
from airflow.providers.pagerduty.hooks.pagerduty_events import PagerdutyEventsHook, prepare_event_data

from trading_ops.alerting.routing import LEVEL_TO_SEVERITY, Alert, format_duration
from trading_ops.policy import Policy


def pagerduty_event(alert: Alert, policy: Policy, service: str, action: str = "trigger") -> dict:
    """Keyword arguments of the hook's `send_event` for this alert."""
    level = policy.incident_levels[alert.level]
    custom_details = {
        "incident_level": f"{alert.level} {level.name} ({level.description})",
        "respond_within": format_duration(level.respond_within),
        "resolve_within": format_duration(level.resolve_within),
        "escalation": level.escalation,
        "procedure": level.procedure,
        **{name: str(value) for name, value in alert.details.items()},
    }
    return {
        "summary": f"[{alert.level}] {alert.summary}"[:1024],
        "severity": LEVEL_TO_SEVERITY[alert.level],
        "source": alert.source,
        "action": action,
        "dedup_key": alert.key,
        "custom_details": custom_details,
        "group": service,
        "component": "trading-ops",
        "class_type": level.name,
        "links": [{"href": alert.run_url, "text": "Airflow run"}] if alert.run_url else None,
    }


def post_to_pagerduty(policy: Policy, event: dict) -> None:
    alerting = policy.alerting
    hook = RegionalPagerdutyEventsHook(
        alerting.pagerduty_conn_id,
        timeout=alerting.delivery_timeout.total_seconds(),
        retries=alerting.delivery_retries,
        retry_wait=alerting.delivery_retry_wait.total_seconds(),
    )
    hook.send_event(**event)


def events_base_url(host: str | None, port: int | None) -> str | None:
    """`https://host[:port]` from the connection, or None for the client's default (PagerDuty's US region)."""
    if not host:
        return None
    base = host if "://" in host else f"https://{host}"
    return f"{base.rstrip('/')}:{port}" if port else base.rstrip("/")


class RegionalPagerdutyEventsHook(PagerdutyEventsHook):
    def __init__(
        self,
        pagerduty_events_conn_id: str,
        timeout: float | None = None,
        retries: int | None = None,
        retry_wait: float | None = None,
    ) -> None:
        conn = self.get_connection(pagerduty_events_conn_id)
        # The key handed over directly: the provider would read the connection a second time for it.
        super().__init__(integration_key=conn.password)
        self.base_url = events_base_url(conn.host, conn.port)
        self.ca_bundle = (conn.extra_dejson or {}).get("ca_bundle")
        self.timeout = timeout
        self.retries = retries
        self.retry_wait = retry_wait

    def events_client(self) -> pagerduty.EventsApiV2Client:
        tls = {"verify": ssl.create_default_context(cafile=self.ca_bundle)} if self.ca_bundle else {}
        client = pagerduty.EventsApiV2Client(self.integration_key, base_url=self.base_url, **tls)
        if self.timeout:
            client.timeout = self.timeout
        if self.retries is not None:
            client.max_network_attempts = client.max_http_attempts = self.retries
            # Every status the client retries (5xx; 429, otherwise without limit) at most `retries` times.
            client.retry = {status: self.retries for status in (*client.retry, 429)}
        if self.retry_wait is not None:
            # The client multiplies its timer by sleep_timer_base before each wait.
            client.sleep_timer = self.retry_wait / client.sleep_timer_base
        return client

    def send_event(
        self,
        summary: str,
        severity: str,
        source: str = "airflow",
        action: str = "trigger",
        dedup_key: str | None = None,
        custom_details: Any | None = None,
        group: str | None = None,
        component: str | None = None,
        class_type: str | None = None,
        images: list[Any] | None = None,
        links: list[Any] | None = None,
    ) -> str:
        """Send a trigger, acknowledge or resolve event; returns the dedup key PagerDuty answered with."""
        data = prepare_event_data(
            summary=summary,
            severity=severity,
            source=source,
            custom_details=custom_details,
            component=component,
            group=group,
            class_type=class_type,
            action=action,
            dedup_key=dedup_key,
            images=images,
            links=links,
        )
        return self.events_client().send_event(**data)
