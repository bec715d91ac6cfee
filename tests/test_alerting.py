"""Alert routing through the real Slack webhook hook and PagerDuty Events hook, to fakes on 127.0.0.1.

Every test asserts the exact requests the fakes received; the grouping window lives in the real test PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.pagerduty import ROUTING_KEY
from trading_ops.alerting import Alert, Route, resolve_alert, send_alert
from trading_ops.alerting.pagerduty_events import events_base_url

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
RUN_URL = "http://127.0.0.1:8080/dags/db_restore/runs/manual__2026-11-20T03%3A00%3A00%2B00%3A00"

P1_TEXT = """\
:rotating_light: *P1 critical* (complete service outage) · db_restore: restored database failed verification
*Source:* db_restore.verify_restore
*Respond within* 15m, *resolve within* 2h · *escalation:* devops_lead → system_architect → cto · \
*procedure:* convene emergency team
*mismatched tables:* orders
*Airflow run:* <http://127.0.0.1:8080/dags/db_restore/runs/manual__2026-11-20T03%3A00%3A00%2B00%3A00>
_dedup key: trading-ops/db_restore/verify_restore_"""

P1_EVENT = {
    "routing_key": ROUTING_KEY,
    "event_action": "trigger",
    "dedup_key": "trading-ops/db_restore/verify_restore",
    "payload": {
        "summary": "[P1] db_restore: restored database failed verification",
        "severity": "critical",
        "source": "db_restore.verify_restore",
        "component": "trading-ops",
        "group": "trading-team",
        "class": "critical",
        "custom_details": {
            "incident_level": "P1 critical (complete service outage)",
            "respond_within": "15m",
            "resolve_within": "2h",
            "escalation": ["devops_lead", "system_architect", "cto"],
            "procedure": "convene emergency team",
            "mismatched tables": "orders",
        },
    },
    "links": [{"href": RUN_URL, "text": "Airflow run"}],
}


def p1_alert(**changes) -> Alert:
    fields = {
        "severity": "P1",
        "source": "db_restore.verify_restore",
        "summary": "db_restore: restored database failed verification",
        "details": {"mismatched tables": "orders"},
        "dedup_key": "trading-ops/db_restore/verify_restore",
        "run_url": RUN_URL,
        "raised_at": T0,
    }
    return Alert(**{**fields, **changes})


@pytest.fixture
def routed(alert_fakes, fresh_db):
    """Fakes behind the alert connections, and a fresh trading_db holding the grouping window."""
    return alert_fakes


def test_p1_goes_to_the_critical_channel_and_pages_pagerduty(routed):
    slack, pagerduty = routed

    delivery = send_alert(p1_alert())

    assert delivery.sent == ["slack:#alerts-critical", "pagerduty:trading-team"] and not delivery.failed
    assert [(r.method, r.path) for r in slack.requests] == [("POST", "/services/T0TRADING/B0ALERTS/fake-webhook-token")]
    assert slack.messages() == [{"text": P1_TEXT, "channel": "#alerts-critical"}]
    assert [(r.method, r.path) for r in pagerduty.requests] == [("POST", "/v2/enqueue")]
    assert pagerduty.events() == [P1_EVENT]
    assert pagerduty.incidents == {"trading-ops/db_restore/verify_restore": "triggered"}
    print("\nSample Slack body:\n" + json.dumps(slack.messages()[0], indent=2, ensure_ascii=False))
    print("Sample PagerDuty event:\n" + json.dumps(pagerduty.events()[0], indent=2, ensure_ascii=False))


@pytest.mark.parametrize(
    ("severity", "channel", "heading"),
    [
        ("P2", "#alerts-warning", ":warning: *P2 major* (major feature failure)"),
        ("warning", "#alerts-warning", ":warning: *P2 major* (major feature failure)"),
        ("P3", "#alerts-info", ":information_source: *P3 minor* (partial feature failure)"),
        ("info", "#alerts-info", ":information_source: *P3 minor* (partial feature failure)"),
    ],
)
def test_lower_levels_go_to_their_channel_only(routed, severity, channel, heading):
    slack, pagerduty = routed
    send_alert(
        Alert(severity, "db_backup_full.verify_backup", "db_backup_full: backup checksum mismatch", raised_at=T0)
    )
    assert [message["channel"] for message in slack.messages()] == [channel]
    text = slack.messages()[0]["text"]
    assert text.startswith(f"{heading} · db_backup_full: backup checksum mismatch\n")
    escalation = {"#alerts-warning": "devops_engineer → team_lead", "#alerts-info": "on_call_engineer"}[channel]
    assert f"*escalation:* {escalation}" in text
    assert pagerduty.requests == []


def test_a_rule_route_overrides_the_level_route(routed):
    slack, pagerduty = routed
    send_alert(p1_alert(route=Route(("#dba", "#alerts-critical"))))
    assert [message["channel"] for message in slack.messages()] == ["#dba", "#alerts-critical"]
    assert pagerduty.requests == []


def test_identical_alerts_inside_the_window_are_grouped_then_counted(routed, ops_conn):
    slack, pagerduty = routed

    first = send_alert(p1_alert(raised_at=T0))
    repeats = [send_alert(p1_alert(raised_at=T0 + timedelta(minutes=minutes))) for minutes in (5, 10, 29)]
    different = send_alert(p1_alert(summary="db_restore: swap failed", raised_at=T0 + timedelta(minutes=10)))
    after_window = send_alert(p1_alert(raised_at=T0 + timedelta(minutes=30)))

    assert first.sent and not first.grouped
    assert all(repeat.grouped and not repeat.sent for repeat in repeats)
    assert different.sent, "another summary is another alert"
    assert after_window.sent
    texts = [message["text"] for message in slack.messages()]
    assert len(texts) == 3
    assert texts[0] == P1_TEXT
    assert texts[2] == P1_TEXT.replace(
        "\n_dedup key:", "\n_3 identical alert(s) grouped since the last notification (window 30m)_\n_dedup key:"
    )
    # PagerDuty got the same three; the repeat and the other summary update the one incident of the dedup key.
    assert [event["dedup_key"] for event in pagerduty.events()] == ["trading-ops/db_restore/verify_restore"] * 3
    assert pagerduty.incidents == {"trading-ops/db_restore/verify_restore": "triggered"}
    row = ops_conn.execute(
        "SELECT last_sent_at, grouped_since_sent FROM ops.alert_groups WHERE summary = %s", (p1_alert().summary,)
    ).fetchone()
    assert row == (T0 + timedelta(minutes=30), 0)


def test_resolve_closes_the_incident_and_reopens_the_window(routed):
    slack, pagerduty = routed
    send_alert(p1_alert())

    delivery = resolve_alert(p1_alert(raised_at=T0 + timedelta(minutes=3)))
    again = send_alert(p1_alert(raised_at=T0 + timedelta(minutes=4)))

    assert delivery.sent == ["slack:#alerts-critical", "pagerduty:trading-team"]
    assert slack.messages()[1] == {
        "channel": "#alerts-critical",
        "text": (
            ":white_check_mark: *RESOLVED P1 critical* · db_restore: restored database failed verification\n"
            "*Source:* db_restore.verify_restore\n"
            f"*Airflow run:* <{RUN_URL}>\n"
            "_dedup key: trading-ops/db_restore/verify_restore_"
        ),
    }
    resolve = pagerduty.events()[1]
    assert (resolve["event_action"], resolve["dedup_key"], resolve["routing_key"]) == (
        "resolve",
        "trading-ops/db_restore/verify_restore",
        ROUTING_KEY,
    )
    assert again.sent, "after a resolve the same alert is news again, not grouped"
    assert [event["event_action"] for event in pagerduty.events()] == ["trigger", "resolve", "trigger"]
    assert pagerduty.incidents == {"trading-ops/db_restore/verify_restore": "triggered"}


def test_an_unreachable_state_database_does_not_stop_the_alert(alert_fakes, pg_cluster, monkeypatch, caplog):
    slack, pagerduty = alert_fakes
    from trading_ops.dev.localpg import free_port

    monkeypatch.setenv("AIRFLOW_CONN_OPS_STATE", f"postgresql://postgres:x@127.0.0.1:{free_port()}/trading_ops")

    with caplog.at_level(logging.ERROR, logger="trading_ops.alerting"):
        first = send_alert(p1_alert())
        second = send_alert(p1_alert())

    assert first.sent == second.sent == ["slack:#alerts-critical", "pagerduty:trading-team"]
    assert [message["text"] for message in slack.messages()] == [P1_TEXT, P1_TEXT]
    assert "Alert grouping state in 'ops_state' is unavailable; delivering P1 alert" in caplog.text


def test_a_failed_delivery_is_logged_loudly_and_does_not_raise(routed, caplog):
    slack, pagerduty = routed
    slack.failure = (500, "internal_error")

    with caplog.at_level(logging.ERROR, logger="trading_ops.alerting"):
        delivery = send_alert(p1_alert())

    assert delivery.failed == ["slack:#alerts-critical"]
    assert delivery.sent == ["pagerduty:trading-team"], "one destination failing does not stop the others"
    failure = next(record for record in caplog.records if "ALERT DELIVERY FAILED" in record.getMessage())
    assert failure.levelno == logging.ERROR and failure.exc_info
    assert failure.getMessage() == (
        f"ALERT DELIVERY FAILED to slack:#alerts-critical; the undelivered P1 alert follows:\n{P1_TEXT}"
    )


def test_an_undelivered_alert_does_not_open_the_grouping_window(routed, ops_conn):
    slack, pagerduty = routed
    warning = p1_alert(severity="P2", dedup_key="trading-ops/db_backup_full/verify_backup")
    slack.failure = (500, "internal_error")
    assert send_alert(warning).failed == ["slack:#alerts-warning"]

    slack.failure = None
    retried = send_alert(p1_alert(severity="P2", dedup_key=warning.dedup_key, raised_at=T0 + timedelta(minutes=2)))

    assert retried.sent == ["slack:#alerts-warning"] and not retried.grouped
    assert len(slack.requests) == 2 and slack.messages()[0] == slack.messages()[1], "no grouped count: none was"
    assert ops_conn.execute(
        "SELECT last_sent_at, sent FROM ops.alert_groups WHERE dedup_key = %s", (warning.dedup_key,)
    ).fetchone() == (T0 + timedelta(minutes=2), True)
    # Delivered now, so the next identical alert inside the window is grouped again.
    assert send_alert(p1_alert(severity="P2", dedup_key=warning.dedup_key, raised_at=T0 + timedelta(minutes=3))).grouped


def test_a_page_that_failed_is_sent_again_even_though_slack_got_it(routed):
    slack, pagerduty = routed
    pagerduty.fail_with = 400
    first = send_alert(p1_alert())
    pagerduty.fail_with = None
    second = send_alert(p1_alert(raised_at=T0 + timedelta(minutes=2)))

    assert (first.sent, first.failed) == (["slack:#alerts-critical"], ["pagerduty:trading-team"])
    assert second.sent == ["slack:#alerts-critical", "pagerduty:trading-team"]
    assert pagerduty.incidents == {"trading-ops/db_restore/verify_restore": "triggered"}


def test_grouped_occurrences_before_a_failed_notification_are_reported_by_the_next_one(routed):
    slack, _ = routed
    send_alert(p1_alert(route=Route(("#alerts-critical",))))
    send_alert(p1_alert(route=Route(("#alerts-critical",)), raised_at=T0 + timedelta(minutes=10)))  # grouped
    slack.failure = (500, "internal_error")
    send_alert(p1_alert(route=Route(("#alerts-critical",)), raised_at=T0 + timedelta(minutes=40)))  # fails
    slack.failure = None
    send_alert(p1_alert(route=Route(("#alerts-critical",)), raised_at=T0 + timedelta(minutes=41)))

    assert len(slack.requests) == 3, "the one after the failure is sent, not grouped"
    assert "_1 identical alert(s) grouped since the last notification (window 30m)_" in slack.messages()[-1]["text"]


def test_a_missing_connection_is_a_failed_delivery_not_an_exception(fresh_db, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_ALERTS", raising=False)
    with caplog.at_level(logging.ERROR, logger="trading_ops.alerting"):
        delivery = send_alert(p1_alert(route=Route(("#alerts-info",))))
    assert delivery.failed == ["slack:#alerts-info"] and delivery.sent == []
    assert "slack_alerts" in caplog.text


def test_a_channel_with_its_own_webhook_connection_gets_no_channel_field(routed, make_policy, monkeypatch):
    slack, _ = routed
    make_policy({"alerting.slack_channel_conn_ids": {"#alerts-critical": "slack_critical"}})
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_CRITICAL", slack.connection_json())
    send_alert(p1_alert())
    assert slack.messages() == [{"text": P1_TEXT}]


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, None),
        ("events.eu.pagerduty.com", None, "https://events.eu.pagerduty.com"),
        ("https://events.eu.pagerduty.com/", None, "https://events.eu.pagerduty.com"),
        ("127.0.0.1", 8443, "https://127.0.0.1:8443"),
    ],
)
def test_pagerduty_endpoint_comes_from_the_connection_host(host, port, expected):
    assert events_base_url(host, port) == expected


def test_pagerduty_hook_rejects_a_plain_http_endpoint(monkeypatch):
    """The client refuses to send an integration key over plain http, so a relay must speak TLS."""
    import pagerduty

    from trading_ops.alerting.pagerduty_events import RegionalPagerdutyEventsHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_PD_PLAIN",
        json.dumps({"conn_type": "pagerduty_events", "host": "http://127.0.0.1", "port": 9, "password": "k"}),
    )
    with pytest.raises(pagerduty.UrlError, match=r"^API base URL must use scheme https://$"):
        RegionalPagerdutyEventsHook("pd_plain").events_client()


def test_pagerduty_hook_reads_its_connection_once(pagerduty_fake, monkeypatch):
    from airflow.providers.common.compat.sdk import BaseHook

    from trading_ops.alerting.pagerduty_events import RegionalPagerdutyEventsHook

    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_EVENTS", pagerduty_fake.connection_json())
    fetched = []
    real_get_connection = BaseHook.get_connection.__func__

    def counting_get_connection(cls, conn_id):
        fetched.append(conn_id)
        return real_get_connection(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(counting_get_connection))
    hook = RegionalPagerdutyEventsHook("pagerduty_events")

    assert fetched == ["pagerduty_events"]
    assert (hook.integration_key, hook.base_url) == (ROUTING_KEY, f"https://127.0.0.1:{pagerduty_fake.port}")


def test_a_missing_integration_key_is_refused_by_the_provider(monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowException

    from trading_ops.alerting.pagerduty_events import RegionalPagerdutyEventsHook

    monkeypatch.setenv("AIRFLOW_CONN_PD_NO_KEY", json.dumps({"conn_type": "pagerduty_events", "host": "127.0.0.1"}))
    with pytest.raises(AirflowException, match="No valid integration key"):
        RegionalPagerdutyEventsHook("pd_no_key")


def test_an_unknown_severity_stops_the_caller_with_one_sentence():
    with pytest.raises(
        ValueError, match=r"^Alert severity 'high' is not one of P1, P2, P3, critical, warning, info\.$"
    ):
        Alert("high", "db_backup_full.verify_backup", "backup checksum mismatch")


@pytest.mark.parametrize("status", [503, 429])
def test_a_failing_pagerduty_is_retried_a_bounded_number_of_times(alert_fakes, make_policy, status):
    """The client alone retries a 503 six times and a 429 forever: that would eat system_health's timeout."""
    slack, pagerduty = alert_fakes
    make_policy({"alerting.delivery_retries": 2, "alerting.delivery_retry_wait": "0s"})
    pagerduty.fail_with = status

    delivery = send_alert(p1_alert())

    assert delivery.failed == ["pagerduty:trading-team"] and delivery.sent == ["slack:#alerts-critical"]
    assert len(pagerduty.paths("POST")) == 3, "the first attempt and 2 retries"


def test_the_shipped_pagerduty_retries_fit_inside_system_health_s_timeout(dagbag):
    from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

    alerting = load_policy(DEFAULT_POLICY_PATH).alerting
    waits = sum((alerting.delivery_retry_wait * 2**n for n in range(alerting.delivery_retries)), timedelta())
    worst = (alerting.delivery_retries + 1) * alerting.delivery_timeout + waits
    timeout = dagbag.dags["system_health"].default_args["execution_timeout"]
    assert worst < timeout / 3, (worst, timeout)
