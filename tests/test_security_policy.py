"""The security section of the policy: the manual's numbers, and mistakes caught in one sentence."""

from __future__ import annotations

from datetime import date

import pytest
import yaml

from trading_ops.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy


def test_shipped_security_policy():
    security = load_policy(DEFAULT_POLICY_PATH).security
    assert (security.tls.warning_days, security.tls.critical_days, security.tls.min_version) == (30, 7, "TLSv1.2")
    assert security.policy_review.postgres_settings == {
        "ssl": "on",
        "password_encryption": "scram-sha-256",
        "log_connections": "on",
    }
    assert {e.role: e.users for e in security.access_control.ssh_access} == {
        "admin": ["devops-lead"],
        "developer": ["dev-team"],
    }
    assert security.ssh_second_factor_methods == ["keyboard-interactive"]
    assert security.requirement_files == ["requirements.txt"]
    assert (security.findings_conn_id, security.findings_schema) == ("ops_state", "ops")
    assert security.waivers == [] and security.disabled_checks == {}
    assert all(target.host != "127.0.0.1" for target in security.penetration_test.targets)


@pytest.fixture
def shipped() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def test_a_waiver_reads_its_expiry_as_a_date(shipped):
    shipped["security"]["waivers"] = [
        {"check": "ssl_cert_check", "subject": "legacy:443 protocol", "reason": "CHG-7", "expires": date(2027, 3, 31)}
    ]
    assert parse_policy(shipped).security.waivers[0].expires == date(2027, 3, 31)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s.update(waivers=[{"check": "c", "subject": "s", "reason": "r", "expires": "next spring"}]),
            "security.waivers.0.expires: Input should be a valid date",
        ),
        (
            lambda s: s.update(waivers=[{"check": "c", "subject": "s", "reason": "", "expires": "2027-01-01"}]),
            "security.waivers.0.reason: String should have at least 1 character",
        ),
        (lambda s: s["tls"].update(critical_days=40), "security.tls: critical_days must not be above warning_days"),
        (
            lambda s: s["failed_logins"]["per_user"].update(critical=2),
            "security.failed_logins.per_user: critical must not be below warning",
        ),
        (lambda s: s["firewall"].update(format="pf"), "security.firewall.format"),
        (
            lambda s: s.update(disabled_checks={"port_scan": "no scanner here"}),
            "security: disabled_checks names port_scan, which is not one of the checks",
        ),
        (
            lambda s: s.update(disabled_checks={"ssl_cert_check": ""}),
            "security.disabled_checks.ssl_cert_check: String should have at least 1 character",
        ),
    ],
)
def test_security_policy_mistakes_are_one_sentence(shipped, change, message):
    change(shipped["security"])
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(shipped, "ops_policy.yaml")
    assert message in str(excinfo.value)
