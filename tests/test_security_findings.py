"""The findings history on the real PostgreSQL: new/persisting/resolved across runs, reruns, waivers, alerts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from trading_ops.opsstate import migrate
from trading_ops.policy import Waiver
from trading_ops.security import runner
from trading_ops.security.findings import Finding, RunInfo, match_waiver, record_findings

DATA = Path(__file__).parent / "data" / "security"
T0 = datetime(2026, 11, 1, 17, 0, tzinfo=UTC)


def finding(subject: str, severity: str = "warning", message: str = "", check: str = "ssl_cert_check") -> Finding:
    return Finding(check, severity, subject, message or f"{subject} is wrong", {"detail": subject})


def run_info(dag_id: str, run_id: str, as_of: datetime) -> RunInfo:
    return RunInfo(dag_id, run_id, as_of, f"http://127.0.0.1:8080/dags/{dag_id}/runs/{run_id}/tasks/check")


def run(number: int, days: int = 0) -> RunInfo:
    return run_info("security_checks_weekly", f"scheduled__run{number}", T0 + timedelta(days=days))


@pytest.fixture
def store(pg_conn):
    migrate(pg_conn)
    migrate(pg_conn)  # a second DAG run creating it again changes nothing
    return pg_conn


def record(conn, run_info, findings, waivers=(), today=date(2026, 11, 2)):
    return record_findings(conn, "ops", "ssl_cert_check", run_info, list(findings), list(waivers), today)


def test_runs_report_new_then_persisting_and_resolved(store):
    first = record(store, run(1), [finding("a:443 certificate expiry"), finding("b:443 hostname", "critical")])
    assert {item.finding.subject: item.status for item in first.findings} == {
        "b:443 hostname": "new",
        "a:443 certificate expiry": "new",
    }
    assert first.findings[0].finding.severity == "critical", "most severe first"

    second = record(
        store,
        run(2, days=7),
        [finding("a:443 certificate expiry", message="expires in 23 days"), finding("c:5432 tls", "critical")],
    )
    statuses = {item.finding.subject: item.status for item in second.findings}
    assert statuses == {"a:443 certificate expiry": "persisting", "c:5432 tls": "new"}
    persisting = next(item for item in second.findings if item.status == "persisting")
    assert persisting.first_seen == T0, "first_seen carries over from the run that first saw it"
    assert second.resolved == [
        {"severity": "critical", "subject": "b:443 hostname", "message": "b:443 hostname is wrong"}
    ]

    summary = second.summary()
    assert summary["counts"] == {"critical": 1, "warning": 1, "info": 0}
    assert [item["subject"] for item in summary["new"]] == ["c:5432 tls"]
    assert [item["subject"] for item in summary["resolved"]] == ["b:443 hostname"]

    rows = store.execute(
        "SELECT run_id, new_count, persisting_count, resolved_count FROM ops.security_check_runs ORDER BY checked_at"
    ).fetchall()
    assert rows == [("scheduled__run1", 2, 0, 0), ("scheduled__run2", 1, 1, 1)]
    stored = store.execute(
        "SELECT subject, severity, status, evidence FROM ops.security_findings WHERE run_id = 'scheduled__run2' "
        "ORDER BY subject"
    ).fetchall()
    assert stored == [
        ("a:443 certificate expiry", "warning", "persisting", {"detail": "a:443 certificate expiry"}),
        ("c:5432 tls", "critical", "new", {"detail": "c:5432 tls"}),
    ]


def test_a_retry_replaces_its_earlier_try_and_compares_with_the_run_before(store):
    record(store, run(1), [finding("a:443 certificate expiry")])
    record(store, run(2, days=7), [finding("a:443 certificate expiry"), finding("b:443 hostname")])
    retry = record(store, run(2, days=7), [finding("b:443 hostname")])
    assert {item.finding.subject: item.status for item in retry.findings} == {"b:443 hostname": "new"}
    assert [item["subject"] for item in retry.resolved] == ["a:443 certificate expiry"]
    count = store.execute("SELECT count(*) FROM ops.security_findings WHERE run_id = 'scheduled__run2'").fetchone()
    assert count == (1,)
    # Rerunning the first run later still compares with nothing before it.
    again = record(store, run(1), [finding("a:443 certificate expiry")])
    assert [item.status for item in again.findings] == ["new"] and again.resolved == []


def test_a_subject_reported_twice_keeps_the_more_severe(store):
    report = record(store, run(1), [finding("x", "info"), finding("x", "critical"), finding("x", "warning")])
    assert [(item.finding.subject, item.finding.severity) for item in report.findings] == [("x", "critical")]


def test_waivers_silence_until_their_expiry_date_then_report_again(store):
    waiver = Waiver(
        check="ssl_cert_check", subject="legacy:443 protocol", reason="vendor box (CHG-7)", expires="2026-12-01"
    )
    other_check = Waiver(check="firewall_rule_review", subject="legacy:443 protocol", reason="x", expires="2027-01-01")
    findings = [finding("legacy:443 protocol"), finding("b:443 hostname", "critical")]

    waived = record(store, run(1), findings, [waiver, other_check], today=date(2026, 11, 30))
    by_subject = {item.finding.subject: item for item in waived.findings}
    assert by_subject["legacy:443 protocol"].waived
    assert not by_subject["b:443 hostname"].waived
    assert [item.finding.subject for item in waived.active()] == ["b:443 hostname"]
    summary = waived.summary()
    assert summary["waived"][0]["reason"] == "vendor box (CHG-7)" and summary["waived"][0]["expires"] == "2026-12-01"
    assert summary["counts"]["warning"] == 0
    row = store.execute(
        "SELECT waived, waiver_reason, waiver_expires FROM ops.security_findings WHERE subject = 'legacy:443 protocol'"
    ).fetchone()
    assert row == (True, "vendor box (CHG-7)", date(2026, 12, 1))

    expired = record(store, run(2, days=30), findings, [waiver], today=date(2026, 12, 1))
    item = next(i for i in expired.findings if i.finding.subject == "legacy:443 protocol")
    assert not item.waived and item.expired_waiver == waiver
    assert expired.summary()["expired_waivers"] == [{"subject": "legacy:443 protocol", "expired": "2026-12-01"}]
    assert expired.summary()["counts"]["warning"] == 1


def test_the_latest_of_several_matching_waivers_wins():
    old = Waiver(check="c", subject="s", reason="old", expires="2026-01-01")
    new = Waiver(check="c", subject="s", reason="renewed", expires="2027-01-01")
    assert match_waiver(Finding("c", "info", "s", "m"), [old, new], date(2026, 6, 1)) == (new, None)
    assert match_waiver(Finding("c", "info", "s", "m"), [old, new], date(2027, 1, 1)) == (None, new)
    assert match_waiver(Finding("c", "info", "other", "m"), [old, new], date(2026, 6, 1)) == (None, None)


# 02:00 on 2 November in Seoul: the daily window holds the sample logs' failures.
DAILY_AS_OF = datetime(2026, 11, 2, 2, 0, tzinfo=UTC) - timedelta(hours=9)
CRITICAL_KEY = "security:failed_login_attempts:critical"
WARNING_KEY = "security:failed_login_attempts:warning"


@pytest.fixture
def failed_logins_policy(fresh_db, make_policy):
    """The sample logs, and a waiver for the postgres brute force; `waive(subject)` adds one more waiver."""
    waivers = [
        {
            "check": "failed_login_attempts",
            "subject": "postgresql brute force from 203.0.113.9",
            "reason": "scanner of the yearly external audit (SEC-12)",
            "expires": "2026-11-15",
        }
    ]

    def use(*more_waived: str):
        make_policy(
            {
                "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
                "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
                "security.waivers": waivers
                + [
                    {"check": "failed_login_attempts", "subject": subject, "reason": "SEC-13", "expires": "2026-12-01"}
                    for subject in more_waived
                ],
            }
        )

    use()
    return use


def daily_check(number: int, as_of: datetime):
    return runner.run_check("failed_login_attempts", run_info("security_checks_daily", f"run-{number}", as_of))


def slack_by_channel(slack) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for message in slack.messages():
        texts.setdefault(message["channel"], []).append(message["text"])
    return texts


def test_findings_alert_by_severity_until_they_clear_then_resolve_their_incident(failed_logins_policy, alert_fakes):
    slack, pagerduty = alert_fakes
    report = daily_check(1, DAILY_AS_OF)
    summary = report.summary()
    assert summary["counts"] == {"critical": 1, "warning": 2, "info": 0}, summary
    assert [item["subject"] for item in summary["waived"]] == ["postgresql brute force from 203.0.113.9"]

    channels = slack_by_channel(slack)
    assert set(channels) == {"#alerts-critical", "#alerts-warning"}
    (critical,) = channels["#alerts-critical"]
    assert critical.startswith(
        ":rotating_light: *P1 critical* (complete service outage) · failed_login_attempts: 1 critical finding(s), 1 new"
    )
    assert "*Source:* security_checks_daily.failed_login_attempts" in critical
    assert "*new:* ssh brute force from 203.0.113.7\n" in critical
    assert f"*Airflow run:* <{report.run.run_url}>" in critical
    (warning,) = channels["#alerts-warning"]
    assert "*new:*\n```\nssh failures for user root\nssh failures from 203.0.113.7\n```" in warning
    assert "['" not in critical + warning, "lists are written as lines, not Python reprs"
    (trigger,) = pagerduty.events()
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", CRITICAL_KEY)
    assert trigger["links"] == [{"href": report.run.run_url, "text": "Airflow run"}]
    assert pagerduty.incidents == {CRITICAL_KEY: "triggered"}

    # Two hours later the window still holds the same failures: they persist, and alert again until fixed.
    slack.reset()
    pagerduty.reset()
    persisting = daily_check(2, DAILY_AS_OF + timedelta(hours=2))
    assert all(item.status == "persisting" for item in persisting.findings)
    assert {channel: len(texts) for channel, texts in slack_by_channel(slack).items()} == {
        "#alerts-critical": 1,
        "#alerts-warning": 1,
    }
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [("trigger", CRITICAL_KEY)]

    # Two days later the window holds no failures: each severity's alert is resolved under its own dedup key.
    slack.reset()
    cleared = daily_check(3, DAILY_AS_OF + timedelta(days=2))
    assert cleared.findings == [] and len(cleared.resolved) == len(persisting.findings)
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", CRITICAL_KEY),
        ("resolve", CRITICAL_KEY),
    ]
    assert pagerduty.incidents == {CRITICAL_KEY: "resolved"}
    resolve = pagerduty.events()[-1]
    assert resolve["links"] == [{"href": cleared.run.run_url, "text": "Airflow run"}]
    channels = slack_by_channel(slack)
    assert set(channels) == {"#alerts-critical", "#alerts-warning"}
    assert channels["#alerts-critical"][0].startswith(
        ":white_check_mark: *RESOLVED P1 critical* · failed_login_attempts: no critical findings left"
    )
    assert f"_dedup key: {WARNING_KEY}_" in channels["#alerts-warning"][0]

    # Nothing was open any more: a clean run after a clean run resolves nothing again.
    slack.reset()
    pagerduty.reset()
    daily_check(4, DAILY_AS_OF + timedelta(days=3))
    assert slack.requests == [] and pagerduty.requests == []


def test_waiving_the_last_critical_finding_resolves_its_incident(failed_logins_policy, alert_fakes):
    slack, pagerduty = alert_fakes
    daily_check(1, DAILY_AS_OF)
    assert pagerduty.incidents == {CRITICAL_KEY: "triggered"}

    failed_logins_policy("ssh brute force from 203.0.113.7")
    waived = daily_check(2, DAILY_AS_OF + timedelta(hours=2))
    assert waived.summary()["counts"] == {"critical": 0, "warning": 2, "info": 0}
    assert [(event["event_action"], event["dedup_key"]) for event in pagerduty.events()] == [
        ("trigger", CRITICAL_KEY),
        ("resolve", CRITICAL_KEY),
    ]
    assert pagerduty.incidents == {CRITICAL_KEY: "resolved"}
    assert pagerduty.events()[-1]["payload"]["custom_details"]["waived"] == (
        "postgresql brute force from 203.0.113.9\nssh brute force from 203.0.113.7"
    )
    assert slack_by_channel(slack)["#alerts-warning"][-1].startswith(":warning: *P2 major*"), "warnings still alert"


def test_summarize_tables_the_checks_and_fails_when_one_did_not_finish(caplog):
    summary = {
        "counts": {"critical": 1, "warning": 2, "info": 3},
        "new": [{"severity": "critical", "subject": "s", "message": "m"}],
        "persisting": [],
        "resolved": [{"severity": "info", "subject": "r", "message": "gone"}],
        "waived": [],
    }
    caplog.set_level("INFO")
    result = runner.summarize({"ssl_cert_check": summary, "dependency_updates": summary}, {})
    assert result["totals"] == {"critical": 2, "warning": 4, "info": 6, "new": 2, "resolved": 2, "waived": 0}
    assert "ssl_cert_check" in caplog.text and "new critical ssl_cert_check / s: m" in caplog.text
    with pytest.raises(RuntimeError, match=r"^Security checks firewall_rule_review did not finish"):
        runner.summarize({"ssl_cert_check": summary, "firewall_rule_review": None}, {})
    assert "did not finish: see its task log" in caplog.text


def test_a_check_the_policy_disables_is_listed_not_failed(caplog, make_policy):
    make_policy({"security.disabled_checks": {"firewall_rule_review": "it needs nft run as root"}})
    with pytest.raises(
        runner.CheckDisabled,
        match=r"^firewall_rule_review is disabled by the policy \(security.disabled_checks\): it needs nft run as "
        r"root\.$",
    ):
        runner.run_check("firewall_rule_review", run(1))
    caplog.set_level("INFO")
    summary = {"counts": {"critical": 0, "warning": 1, "info": 0}, "new": [], "resolved": [], "waived": []}
    disabled = {"firewall_rule_review": "it needs nft run as root"}
    result = runner.summarize({"ssl_cert_check": summary, "firewall_rule_review": None}, disabled)
    assert result["disabled"] == disabled and list(result["checks"]) == ["ssl_cert_check"]
    assert "firewall_rule_review     disabled: it needs nft run as root" in caplog.text
    with pytest.raises(RuntimeError, match=r"^Security checks ssl_cert_check did not finish"):
        runner.summarize({"ssl_cert_check": None, "firewall_rule_review": None}, disabled)


def test_an_unknown_check_name_is_one_sentence():
    with pytest.raises(ValueError, match=r"^Unknown security check 'port_scan'; the checks are vulnerability_scan, "):
        runner.check_function("port_scan")
