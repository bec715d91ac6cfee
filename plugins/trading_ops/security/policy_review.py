"""security_policy_review: PostgreSQL, sshd and Airflow settings against the security policy.

- PostgreSQL (`postgres_conn_id`, read as a superuser): each of `postgres_settings` (ssl, password_encryption,
  log_connections) must have its value (warning, critical for `ssl`); `pg_hba_file_rules` must have no `trust`
  for hosts (critical; warning for loopback addresses, whose local users could pose as anyone), no cleartext
  `password` (warning), no `md5` (info: scram-sha-256 is the policy), and no line the server could not parse;
  `archive_timeout` set and no longer than `backup.rpo.archive_timeout`, which gives the RPO target (warning).
- sshd (the output of `sshd_command`: `sshd -T`, or the config file): PasswordAuthentication no (critical),
  PermitRootLogin no (critical for yes, warning for key-only), and every AuthenticationMethods list pairing
  publickey with a second factor (warning).
- Airflow (the configuration the task runs with): the simple auth manager must not make everybody admin
  (critical), `[api] secret_key` and `[api_auth] jwt_secret` must be long and not a known placeholder (critical),
  `[api] expose_config` off (warning), a `[core] fernet_key` set so connection passwords are encrypted (warning).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from trading_ops.db import connection
from trading_ops.policy import Policy
from trading_ops.security.authlogs import pairs_key_and_second_factor
from trading_ops.security.findings import CheckSourceError, Finding
from trading_ops.security.sources import run_command
from trading_ops.sqlfiles import load_sql

CHECK = "security_policy_review"
_SSHD_DEFAULTS = {
    "passwordauthentication": "yes",
    "permitrootlogin": "prohibit-password",
    "authenticationmethods": "any",
}
_CRITICAL_SETTINGS = {"ssl"}


def review_postgres(conn, policy: Policy) -> list[Finding]:
    required = policy.security.policy_review.postgres_settings
    actual = dict(conn.execute(load_sql("security/select_settings.sql"), {"names": list(required)}).fetchall())
    unknown = sorted(set(required) - set(actual))
    if unknown:
        raise CheckSourceError(f"PostgreSQL has no setting {', '.join(unknown)} (policy_review.postgres_settings).")
    findings = [
        Finding(
            CHECK,
            "critical" if name in _CRITICAL_SETTINGS else "warning",
            f"postgresql setting {name}",
            f"PostgreSQL runs with {name} = {actual[name]}; the policy requires {value}",
            {"setting": name, "actual": actual[name], "required": value},
        )
        for name, value in required.items()
        if actual[name] != value
    ]
    findings += _review_archive_timeout(conn, policy)
    for line, kind, databases, users, address, _netmask, method, error in conn.execute(
        load_sql("security/select_hba_rules.sql")
    ):
        rule = " ".join(str(part) for part in (kind, ",".join(databases or []), ",".join(users or []), address) if part)
        evidence = {"line": line, "rule": rule, "method": method}
        if error:
            findings.append(
                Finding(CHECK, "warning", f"pg_hba error line {line}", f"pg_hba.conf line {line}: {error}", evidence)
            )
        elif kind == "local":
            continue
        elif method == "trust":
            loopback = _is_loopback(address)
            findings.append(
                Finding(
                    CHECK,
                    "warning" if loopback else "critical",
                    f"pg_hba trust {rule}",
                    f"pg_hba.conf line {line} lets {rule} in without a password"
                    + (" (loopback: any local user can pose as any role)" if loopback else ""),
                    evidence,
                )
            )
        elif method == "password":
            findings.append(
                Finding(
                    CHECK,
                    "warning",
                    f"pg_hba password {rule}",
                    f"pg_hba.conf line {line} accepts cleartext passwords for {rule}",
                    evidence,
                )
            )
        elif method == "md5":
            findings.append(
                Finding(
                    CHECK,
                    "info",
                    f"pg_hba md5 {rule}",
                    f"pg_hba.conf line {line} allows md5 for {rule}; the policy is scram-sha-256",
                    evidence,
                )
            )
    return findings


def _review_archive_timeout(conn, policy: Policy) -> list[Finding]:
    """archive_timeout bounds how long committed work can stay out of the WAL archive: the RPO needs it set, and no
    longer than the policy's `backup.rpo.archive_timeout`."""
    rpo = policy.backup.rpo
    rows = dict(conn.execute(load_sql("security/select_settings.sql"), {"names": ["archive_timeout"]}).fetchall())
    seconds = int(rows["archive_timeout"])  # pg_settings gives it in seconds
    limit = rpo.archive_timeout.total_seconds()
    if 0 < seconds <= limit:
        return []
    shown = (
        "0 (off: on a quiet server committed work may stay out of the archive for hours)"
        if not seconds
        else f"{seconds}s"
    )
    return [
        Finding(
            CHECK,
            "warning",
            "postgresql archive_timeout",
            f"PostgreSQL runs with archive_timeout = {shown}; the RPO target of {rpo.target} needs at most "
            f"{limit:.0f}s (policy backup.rpo.archive_timeout)",
            {"setting": "archive_timeout", "actual_seconds": seconds, "required_max_seconds": limit},
        )
    ]


def _is_loopback(address: str | None) -> bool:
    if address in ("localhost", "samehost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except (TypeError, ValueError):
        return False


def parse_sshd_config(text: str) -> dict[str, str]:
    """Keyword -> value as sshd applies it: keywords are case-insensitive, the first value wins, Match blocks
    (conditional overrides) end the global section. `sshd -T` output is read the same way."""
    settings: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, _, value = line.replace("=", " ", 1).partition(" ")
        keyword = keyword.lower()
        if keyword == "match":
            break
        settings.setdefault(keyword, value.strip())
    return settings


def review_sshd(text: str, policy: Policy) -> list[Finding]:
    settings = {**_SSHD_DEFAULTS, **parse_sshd_config(text)}
    findings = []
    if settings["passwordauthentication"].lower() != "no":
        findings.append(
            Finding(
                CHECK,
                "critical",
                "sshd PasswordAuthentication",
                "sshd accepts password logins (PasswordAuthentication is not no); the policy requires public keys",
                {"passwordauthentication": settings["passwordauthentication"]},
            )
        )
    root = settings["permitrootlogin"].lower()
    if root != "no":
        findings.append(
            Finding(
                CHECK,
                "critical" if root == "yes" else "warning",
                "sshd PermitRootLogin",
                f"sshd lets root log in (PermitRootLogin {root}); admins log in as themselves and use sudo",
                {"permitrootlogin": root},
            )
        )
    second_factors = set(policy.security.ssh_second_factor_methods)
    method_lists = settings["authenticationmethods"].split()
    if not method_lists or not all(
        pairs_key_and_second_factor(methods.split(","), second_factors) for methods in method_lists
    ):
        findings.append(
            Finding(
                CHECK,
                "warning",
                "sshd AuthenticationMethods",
                f"sshd AuthenticationMethods is {settings['authenticationmethods']!r}; every list must pair publickey "
                f"with a second factor ({', '.join(sorted(second_factors))})",
                {"authenticationmethods": settings["authenticationmethods"]},
            )
        )
    return findings


def review_airflow(policy: Policy) -> list[Finding]:
    from airflow.configuration import conf

    config = policy.security.policy_review
    findings = []
    auth_manager = conf.get("core", "auth_manager")
    if auth_manager.endswith("SimpleAuthManager") and conf.getboolean("core", "simple_auth_manager_all_admins"):
        findings.append(
            Finding(
                CHECK,
                "critical",
                "airflow simple_auth_manager_all_admins",
                "Airflow's simple auth manager makes every visitor an admin ([core] simple_auth_manager_all_admins)",
                {"auth_manager": auth_manager},
            )
        )
    secrets = [("api", "secret_key")]
    if not conf.get("api_auth", "jwt_private_key_path", fallback=None):
        secrets.append(("api_auth", "jwt_secret"))
    for section, key in secrets:
        value = conf.get(section, key, fallback="") or ""
        if value in config.airflow_weak_secrets or len(value) < config.airflow_min_secret_length:
            findings.append(
                Finding(
                    CHECK,
                    "critical",
                    f"airflow {section}.{key}",
                    f"Airflow's [{section}] {key} is a placeholder or shorter than "
                    f"{config.airflow_min_secret_length} characters: sessions or tokens can be forged",
                    {"length": len(value)},
                )
            )
    if conf.get("api", "expose_config", fallback="False").lower() in ("true", "non-sensitive-only"):
        findings.append(
            Finding(
                CHECK,
                "warning",
                "airflow api.expose_config",
                "Airflow shows its configuration in the UI and API ([api] expose_config)",
                {},
            )
        )
    if not conf.get("core", "fernet_key", fallback=""):
        findings.append(
            Finding(
                CHECK,
                "warning",
                "airflow core.fernet_key",
                "Airflow has no [core] fernet_key: connection passwords and variables are stored unencrypted",
                {},
            )
        )
    return findings


def security_policy_review(policy: Policy, as_of: datetime) -> list[Finding]:
    config = policy.security.policy_review
    with connection(policy.security.postgres_conn_id, autocommit=True) as conn:
        findings = review_postgres(conn, policy)
    sshd = run_command(config.sshd_command, config.sshd_command_timeout, "the sshd configuration")
    return findings + review_sshd(sshd, policy) + review_airflow(policy)
