"""Sending and resolving an alert: grouped or not, then to every destination of its route; never raises."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from trading_ops.alerting import grouping
from trading_ops.alerting.routing import Alert, Delivery, format_duration, route_for
from trading_ops.alerting.slack_messages import post_to_slack, slack_text
from trading_ops.policy import Policy, load_policy

log = logging.getLogger(__name__)


def _deliver(alert: Alert, policy: Policy, *, resolved: bool, grouped: int = 0) -> Delivery:
    from airflow.sdk._shared.secrets_masker import redact

    delivery = Delivery()
    route = route_for(alert, policy)
    text = redact(slack_text(alert, policy, resolved=resolved, grouped=grouped))
    attempts = [(f"slack:{channel}", post_to_slack, (policy, channel, text)) for channel in route.slack_channels]
    if route.pagerduty_service:
        # The provider's PagerDuty hook is imported only when an alert pages.
        from trading_ops.alerting.pagerduty_events import pagerduty_event, post_to_pagerduty

        event = redact(pagerduty_event(alert, policy, route.pagerduty_service, "resolve" if resolved else "trigger"))
        attempts.append((f"pagerduty:{route.pagerduty_service}", post_to_pagerduty, (policy, event)))
    for destination, post, args in attempts:
        try:
            post(*args)
            delivery.sent.append(destination)
        except Exception:
            delivery.failed.append(destination)
            log.exception(
                "ALERT DELIVERY FAILED to %s; the undelivered %s alert follows:\n%s", destination, alert.level, text
            )
    log.info(
        "%s %s alert %r (dedup key %s): sent to %s%s",
        "Resolved" if resolved else "Raised",
        alert.level,
        alert.summary,
        alert.key,
        ", ".join(delivery.sent) or "nowhere",
        f"; FAILED for {', '.join(delivery.failed)}" if delivery.failed else "",
    )
    return delivery


def send_alert(alert: Alert) -> Delivery:
    """Record its incident (`trading_ops.incidents`), then route the alert to its Slack channels (and PagerDuty for
    a paging level), unless grouped; never raises."""
    from trading_ops.incidents.store import record_alert

    policy = load_policy()
    at = alert.raised_at or datetime.now(UTC)
    # Before grouping: a repeat Slack does not hear about still joins the incident's timeline.
    record_alert(alert, policy, at)
    sent, grouped, recorded = grouping.record_occurrence(alert, policy, at)
    if not sent:
        log.warning(
            "%s alert %r from %s grouped: an identical one was sent less than %s ago",
            alert.level,
            alert.summary,
            alert.source,
            format_duration(policy.alerting.group_window),
        )
        return Delivery(grouped=True)
    delivery = _deliver(alert, policy, resolved=False, grouped=grouped)
    if recorded and not delivery.complete:
        grouping.undo_occurrence(alert, policy)
    return delivery


def resolve_alert(alert: Alert) -> Delivery:
    """Tell the alert's incident and route that the condition cleared: a Slack note and a PagerDuty `resolve`;
    never raises."""
    from trading_ops.incidents.store import record_resolution

    policy = load_policy()
    record_resolution(alert, policy, alert.raised_at or datetime.now(UTC))
    grouping.forget_occurrences(alert, policy)
    return _deliver(alert, policy, resolved=True)
