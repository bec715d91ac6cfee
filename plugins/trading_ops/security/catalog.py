"""The manual's security checks, named once: which DAG runs each, its task id, and the function that does it.

This table is the only place that says which DAG runs which check: the DAG files build their tasks from it while
parsing (when no policy may be read), the runner finds each check's function here, and the policy validates the
names in `security.disabled_checks` against it. Only the standard library is imported, so parsing a DAG stays
light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Frequency = Literal["daily", "weekly", "monthly"]


@dataclass(frozen=True)
class SecurityCheck:
    name: str
    frequency: Frequency
    task_id: str
    # "module:function" in trading_ops.security, imported only when the check runs.
    function: str


CHECKS: dict[str, SecurityCheck] = {
    check.name: check
    for check in (
        SecurityCheck("vulnerability_scan", "daily", "scan_vulnerabilities", "vulnerabilities:vulnerability_scan"),
        SecurityCheck("auth_log_review", "daily", "review_auth_logs", "authlogs:auth_log_review"),
        SecurityCheck("failed_login_attempts", "daily", "count_failed_logins", "authlogs:failed_login_attempts"),
        SecurityCheck("dependency_updates", "weekly", "check_dependency_updates", "dependencies:dependency_updates"),
        SecurityCheck("ssl_cert_check", "weekly", "check_ssl_certs", "tls:ssl_cert_check"),
        SecurityCheck("firewall_rule_review", "weekly", "review_firewall_rules", "firewall:firewall_rule_review"),
        SecurityCheck("penetration_test", "monthly", "probe_attack_surface", "pentest:penetration_test"),
        SecurityCheck(
            "security_policy_review", "monthly", "review_security_policy", "policy_review:security_policy_review"
        ),
        SecurityCheck("access_right_audit", "monthly", "audit_access_rights", "access:access_right_audit"),
    )
}


def checks_of(frequency: Frequency) -> list[SecurityCheck]:
    return [check for check in CHECKS.values() if check.frequency == frequency]
