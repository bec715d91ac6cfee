"""Slack: the message (mrkdwn) of an alert, and its post through the `slackwebhook` connection of its channel."""

from __future__ import annotations

import warnings

from trading_ops.alerting.routing import Alert, format_duration
from trading_ops.policy import Policy

_LEVEL_ICONS = {"P1": ":rotating_light:", "P2": ":warning:", "P3": ":information_source:"}
NOTICE_ICON = ":memo:"


def _level_line(alert: Alert, policy: Policy) -> str:
    level = policy.incident_levels[alert.level]
    return (
        f"*Respond within* {format_duration(level.respond_within)}, "
        f"*resolve within* {format_duration(level.resolve_within)} · "
        f"*escalation:* {' → '.join(level.escalation)} · *procedure:* {level.procedure}"
    )


def _detail_lines(details: dict) -> list[str]:
    lines = []
    for name, value in details.items():
        text = str(value)
        lines.append(f"*{name}:*\n```\n{text}\n```" if "\n" in text else f"*{name}:* {text}")
    return lines


def _heading(alert: Alert, policy: Policy, resolved: bool) -> str:
    level = policy.incident_levels[alert.level]
    if not alert.incident:
        # A notice has no level to respond to, escalate or resolve: saying "P3 minor" would make it one.
        return f"{NOTICE_ICON} *Not an incident* · {alert.summary}"
    if resolved:
        return f":white_check_mark: *RESOLVED {alert.level} {level.name}* · {alert.summary}"
    return f"{_LEVEL_ICONS[alert.level]} *{alert.level} {level.name}* ({level.description}) · {alert.summary}"


def slack_text(alert: Alert, policy: Policy, *, resolved: bool = False, grouped: int = 0) -> str:
    """The Slack message (mrkdwn) of an alert, or of its resolution."""
    lines = [_heading(alert, policy, resolved), f"*Source:* {alert.source}"]
    if not resolved:
        if alert.incident:
            lines.append(_level_line(alert, policy))
        lines.extend(_detail_lines(alert.details))
    if alert.run_url:
        lines.append(f"*Airflow run:* <{alert.run_url}>")
    if grouped:
        lines.append(
            f"_{grouped} identical alert(s) grouped since the last notification "
            f"(window {format_duration(policy.alerting.group_window)})_"
        )
    lines.append(f"_dedup key: {alert.key}_")
    return "\n".join(lines)


def post_to_slack(policy: Policy, channel: str, text: str) -> None:
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    own_conn_id = policy.alerting.slack_channel_conn_ids.get(channel)
    hook = SlackWebhookHook(
        slack_webhook_conn_id=own_conn_id or policy.alerting.slack_conn_id,
        timeout=int(policy.alerting.delivery_timeout.total_seconds()),
    )
    if own_conn_id:
        hook.send(text=text)
        return
    # A legacy or Slack-compatible webhook posts to the `channel` named in the message; the hook warns on every
    # send that a Slack app's webhook ignores it, which is why such channels get their own connection above.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hook.send(text=text, channel=channel)
