"""auth_log_review and failed_login_attempts on real log formats: sshd/sudo samples and the test cluster's own log."""

from __future__ import annotations

import gzip
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from trading_ops.policy import load_policy
from trading_ops.security.authlogs import auth_log_review, failed_login_attempts, parse_postgres_log, parse_syslog
from trading_ops.security.findings import CheckSourceError

DATA = Path(__file__).parent / "data" / "security"
SEOUL = ZoneInfo("Asia/Seoul")
# The daily run of 2 November 2026, 02:00 in Seoul: it reviews 1 November 02:00 to 2 November 02:00.
AS_OF = datetime(2026, 11, 2, 2, 0, tzinfo=SEOUL)


@pytest.fixture
def sample_logs(make_policy):
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
        }
    )
    return load_policy()


def by_subject(findings):
    return {f.subject: f for f in findings}


def test_traditional_syslog_lines_get_the_right_year_and_zone():
    events = parse_syslog((DATA / "auth-traditional.log").read_text().splitlines(), SEOUL, AS_OF)
    assert [(e.time.isoformat(), e.outcome, e.user) for e in events] == [
        ("2026-11-01T10:15:09+09:00", "accepted", "devops-lead"),
        ("2026-11-01T10:20:44+09:00", "failed", "admin"),
        ("2026-11-01T10:21:17+09:00", "sudo", "devops-lead"),
        ("2025-12-31T23:59:01+09:00", "accepted", "dev-team"),  # not in the future: last year
    ]
    assert events[0].methods == ("publickey", "keyboard-interactive/pam")


def test_postgres_lines_with_debians_prefix_and_zone_abbreviations():
    events = parse_postgres_log((DATA / "postgresql-debian-prefix.log").read_text().splitlines(), SEOUL)
    assert [(e.time.isoformat(), e.outcome, e.user, e.source, e.methods) for e in events] == [
        ("2026-11-01T05:10:00.113000+00:00", "accepted", "trading_app", "10.20.0.40", ("scram-sha-256",)),
        ("2026-11-01T14:10:00.211000+09:00", "failed", "postgres", "203.0.113.10", ("password",)),
    ]


def test_auth_log_review_reports_the_policys_violations(sample_logs):
    findings = by_subject(auth_log_review(sample_logs, AS_OF))
    severities = {subject: f.severity for subject, f in findings.items() if f.severity != "info"}
    assert severities == {
        "ssh root login from 198.51.100.23": "critical",
        "ssh login without public key + 2FA: root from 198.51.100.23": "critical",
        "ssh login without public key + 2FA: deploy from 10.20.0.50": "warning",
        "ssh login by unlisted user deploy": "warning",
        "sudo by deploy": "critical",
        "sudo denied for dev-team": "warning",
        "postgresql trust login report from 10.20.0.99": "warning",
        "postgresql md5 login trading_readonly from 10.20.0.41": "warning",
    }
    info = sorted(subject for subject, f in findings.items() if f.severity == "info")
    assert info == [
        "postgresql login postgres from local",
        "postgresql login report from 10.20.0.99",
        "postgresql login trading_app from 10.20.0.40",
        "postgresql login trading_readonly from 10.20.0.41",
        "ssh login deploy from 10.20.0.50",
        "ssh login dev-team from 10.20.0.31",
        "ssh login devops-lead from 10.20.0.15",
        "ssh login root from 198.51.100.23",
    ]
    assert findings["postgresql login trading_app from 10.20.0.40"].evidence["count"] == 2
    assert findings["sudo by deploy"].evidence["commands"] == ["/usr/bin/docker compose pull"]
    # Outside the window: the root login of 30 October and the one at exactly 02:00 on 2 November.
    assert "ssh root login from 198.51.100.99" not in findings and "ssh root login from 198.51.100.77" not in findings
    # devops-lead's sudo is allowed (admin role), and both team members used public key + TOTP.
    assert not any("devops-lead" in subject and f.severity != "info" for subject, f in findings.items())


def test_failed_login_attempts_applies_the_thresholds_and_finds_brute_force(sample_logs):
    findings = by_subject(failed_login_attempts(sample_logs, AS_OF))
    assert {subject: f.severity for subject, f in findings.items()} == {
        "ssh brute force from 203.0.113.7": "critical",
        "ssh failures from 203.0.113.7": "warning",
        "ssh failures for user root": "warning",
        "postgresql brute force from 203.0.113.9": "critical",
    }
    brute = findings["ssh brute force from 203.0.113.7"]
    assert brute.evidence["users"] == {"root": 6, "admin": 1, "oracle": 1, "test": 1, "ubuntu": 1, "guest": 1}
    assert brute.evidence["count"] == 11
    assert findings["postgresql brute force from 203.0.113.9"].evidence["users"]["postgres"] == 2


def test_failed_login_thresholds_come_from_the_policy(make_policy):
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
            "security.failed_logins.per_source": {"warning": 2, "critical": 6},
            "security.failed_logins.brute_force_users_per_source": 20,
        }
    )
    findings = by_subject(failed_login_attempts(load_policy(), AS_OF))
    assert findings["ssh failures from 203.0.113.7"].severity == "critical"
    assert findings["postgresql failures from 203.0.113.9"].severity == "critical"
    assert not any("brute force" in subject for subject in findings)


def test_rotated_and_compressed_logs_are_read_too(tmp_path, make_policy):
    lines = (DATA / "auth.log").read_text().splitlines(keepends=True)
    (tmp_path / "auth.log").write_text("".join(lines[:20]))
    with gzip.open(tmp_path / "auth.log.1.gz", "wt") as rotated:
        rotated.write("".join(lines[20:]))
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(tmp_path / "auth.log"), str(tmp_path / "auth.log.*.gz")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
        }
    )
    assert "ssh brute force from 203.0.113.7" in by_subject(failed_login_attempts(load_policy(), AS_OF))


def test_a_missing_log_fails_the_check_instead_of_reporting_nothing(make_policy, tmp_path):
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(DATA / "auth.log")],
            "security.auth_logs.postgres_paths": [str(tmp_path / "postgresql-*.log")],
        }
    )
    with pytest.raises(
        CheckSourceError, match=r"^Cannot read the PostgreSQL log: no file matches .*postgresql-\*\.log\.$"
    ):
        failed_login_attempts(load_policy(), AS_OF)
    with pytest.raises(CheckSourceError):
        auth_log_review(load_policy(), AS_OF)


def test_the_real_postgres_log_shows_logins_and_failures(pg_cluster, make_policy):
    """The shared test cluster logs connections (log_connections = on): log in, fail, and read it back."""
    role = f"sec_audit_{secrets.token_hex(3)}"
    with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'right-password'").format(sql.Identifier(role)))
    try:
        psycopg.connect(
            f"host=127.0.0.1 port={pg_cluster.port} user={role} password=right-password dbname=postgres"
        ).close()
        for _ in range(5):
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(f"host=127.0.0.1 port={pg_cluster.port} user={role} password=wrong dbname=postgres")
        time.sleep(0.2)  # the server writes its log asynchronously
        make_policy(
            {
                "security.auth_logs.ssh_paths": [str(DATA / "auth-traditional.log")],
                "security.auth_logs.postgres_paths": [str(pg_cluster.log_file)],
                "security.failed_logins.window": "1h",
            }
        )
        as_of = datetime.now(UTC) + timedelta(seconds=1)
        failures = by_subject(failed_login_attempts(load_policy(), as_of))
        mine = failures[f"postgresql failures for user {role}"]
        assert (mine.severity, mine.evidence["count"], mine.evidence["sources"]) == ("warning", 5, {"127.0.0.1": 5})
        review = by_subject(auth_log_review(load_policy(), as_of))
        login = review[f"postgresql login {role} from 127.0.0.1"]
        assert login.evidence["methods"] == ["scram-sha-256"] and login.evidence["count"] == 1
    finally:
        with psycopg.connect(pg_cluster.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("authentication_methods", "login_methods", "two_factor"),
    [
        ("publickey,keyboard-interactive:pam", ("publickey", "keyboard-interactive/pam"), True),
        ("keyboard-interactive,publickey", ("keyboard-interactive", "publickey"), True),
        ("publickey", ("publickey",), False),
        ("password,keyboard-interactive:pam", ("password", "keyboard-interactive/pam"), False),
        ("publickey,password", ("publickey", "password"), False),
    ],
)
def test_the_sshd_review_and_the_log_review_agree_on_public_key_plus_second_factor(
    tmp_path, make_policy, authentication_methods, login_methods, two_factor
):
    """One rule, two notations: sshd's AuthenticationMethods (`method:submethod`) and its log (`method/submethod`)."""
    from trading_ops.security.policy_review import review_sshd

    steps = [("Partial", method) for method in login_methods[:-1]] + [("Accepted", login_methods[-1])]
    (tmp_path / "auth.log").write_text(
        "".join(
            f"2026-11-01T10:00:0{n}+09:00 db1 sshd[4242]: {result} {method} for devops-lead from 10.20.0.5 port 51514 "
            "ssh2\n"
            for n, (result, method) in enumerate(steps)
        )
    )
    make_policy(
        {
            "security.auth_logs.ssh_paths": [str(tmp_path / "auth.log")],
            "security.auth_logs.postgres_paths": [str(DATA / "postgresql.log")],
        }
    )
    policy = load_policy()
    config = f"PasswordAuthentication no\nPermitRootLogin no\nAuthenticationMethods {authentication_methods}\n"
    config_weak = "sshd AuthenticationMethods" in {f.subject for f in review_sshd(config, policy)}
    login_weak = "ssh login without public key + 2FA: devops-lead from 10.20.0.5" in by_subject(
        auth_log_review(policy, AS_OF)
    )
    assert (config_weak, login_weak) == (not two_factor, not two_factor)
