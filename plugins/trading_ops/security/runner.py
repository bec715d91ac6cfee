"""Running a security check: call it, record its findings against the last run, alert by severity, summarise.

`run_check(name, run)` is what a check task does and what tests call. Alerts go through
`trading_ops.alerting.send_alert`, one per check and severity with active (unwaived) findings, carrying which are
new and which persist: critical and warning findings alert on every run until fixed or waived, info findings only
when something new appears; findings that went away are announced once, as info.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from trading_ops.alerting import Alert, send_alert
from trading_ops.policy import Policy, load_policy
from trading_ops.security.findings import SEVERITY_ORDER, CheckReport, Finding, RunInfo, record_findings

log = logging.getLogger(__name__)

# check name -> "module:function"; imported only when the check runs, so DAG parsing stays light.
CHECKS: dict[str, str] = {
    "vulnerability_scan": "trading_ops.security.vulnerabilities:vulnerability_scan",
    "auth_log_review": "trading_ops.security.authlogs:auth_log_review",
    "failed_login_attempts": "trading_ops.security.authlogs:failed_login_attempts",
    "dependency_updates": "trading_ops.security.dependencies:dependency_updates",
    "ssl_cert_check": "trading_ops.security.tls:ssl_cert_check",
    "firewall_rule_review": "trading_ops.security.firewall:firewall_rule_review",
    "penetration_test": "trading_ops.security.pentest:penetration_test",
    "security_policy_review": "trading_ops.security.policy_review:security_policy_review",
    "access_right_audit": "trading_ops.security.access:access_right_audit",
}


def check_function(name: str) -> Callable[[Policy, datetime], list[Finding]]:
    if name not in CHECKS:
        raise ValueError(f"Unknown security check {name!r}; the checks are {', '.join(CHECKS)}.")
    module, function = CHECKS[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_check(name: str, run: RunInfo) -> CheckReport:
    from trading_ops.db import connection
    from trading_ops.security.findings import ensure_findings_store

    policy = load_policy()
    security = policy.security
    log.info("Running %s for %s / %s as of %s", name, run.dag_id, run.run_id, run.as_of.isoformat())
    findings = check_function(name)(policy, run.as_of)
    today = run.as_of.astimezone(ZoneInfo(policy.timezone)).date()
    with connection(security.findings_conn_id) as conn:
        ensure_findings_store(conn, security.findings_schema)
        report = record_findings(conn, security.findings_schema, name, run, findings, security.waivers, today)
    for item in report.findings:
        waived = f" [waived until {item.waiver.expires}: {item.waiver.reason}]" if item.waiver else ""
        expired = f" [waiver expired {item.expired_waiver.expires}]" if item.expired_waiver else ""
        log.info(
            "%-8s %-10s %s: %s%s%s",
            item.finding.severity,
            item.status,
            item.finding.subject,
            item.finding.message,
            waived,
            expired,
        )
    for resolved in report.resolved:
        log.info("resolved            %s (was %s)", resolved["subject"], resolved["severity"])
    alert_report(report)
    summary = report.summary()
    log.info("Summary of %s: %s", name, json.dumps(summary["counts"]))
    return report


def alert_report(report: CheckReport) -> None:
    source = f"{report.run.dag_id}.{report.check}"
    active = report.active()
    for severity in SEVERITY_ORDER:
        items = [item for item in active if item.finding.severity == severity]
        new = [item.finding.subject for item in items if item.status == "new"]
        if not items or (severity == "info" and not new):
            continue
        send_alert(
            Alert(
                severity=severity,
                source=source,
                summary=f"{report.check}: {len(items)} {severity} finding(s), {len(new)} new",
                details={
                    "run_id": report.run.run_id,
                    "new": new,
                    "persisting": [item.finding.subject for item in items if item.status == "persisting"],
                    "waiver_expired": [item.finding.subject for item in items if item.expired_waiver is not None],
                    "messages": [item.finding.message for item in items[:10]],
                },
                dedup_key=f"security:{report.check}:{severity}",
            )
        )
    if report.resolved:
        send_alert(
            Alert(
                severity="info",
                source=source,
                summary=f"{report.check}: {len(report.resolved)} finding(s) resolved",
                details={"run_id": report.run.run_id, "resolved": [item["subject"] for item in report.resolved]},
                dedup_key=f"security:{report.check}:resolved",
            )
        )


def summarize(summaries: dict[str, dict | None]) -> dict:
    """One run's summaries of its checks, as a table in the log and a dict for XCom; a check without a summary
    (it failed) makes this raise after logging the others."""
    lines = [f"{'check':<24} {'critical':>8} {'warning':>8} {'info':>6} {'new':>5} {'resolved':>8} {'waived':>6}"]
    totals = dict.fromkeys((*SEVERITY_ORDER, "new", "resolved", "waived"), 0)
    for name, summary in summaries.items():
        if summary is None:
            lines.append(f"{name:<24} did not finish: see its task log")
            continue
        row = {
            **summary["counts"],
            "new": len(summary["new"]),
            "resolved": len(summary["resolved"]),
            "waived": len(summary["waived"]),
        }
        for key, value in row.items():
            totals[key] += value
        lines.append(
            f"{name:<24} {row['critical']:>8} {row['warning']:>8} {row['info']:>6} {row['new']:>5} "
            f"{row['resolved']:>8} {row['waived']:>6}"
        )
    log.info("Security findings of this run:\n%s", "\n".join(lines))
    for name, summary in summaries.items():
        for item in (summary or {}).get("new", []):
            log.info("new %-8s %s / %s: %s", item["severity"], name, item["subject"], item["message"])
    missing = [name for name, summary in summaries.items() if summary is None]
    if missing:
        raise RuntimeError(
            f"Security checks {', '.join(missing)} did not finish, so this run's findings are incomplete."
        )
    return {"totals": totals, "checks": summaries}
