"""Running a security check: call it, record its findings against the last run, alert by severity, summarise.

`run_check(name, run)` is what a check task does and what tests call. Alerts go through `trading_ops.alerting`, one
per check and severity, under the dedup key `security:<check>:<severity>` and with a link to the check's task in
Airflow. Critical and warning findings alert on every run until fixed or waived, info findings only when something
new appears. When a severity that had active findings in the previous run has none left (fixed or waived), its
alert is resolved under the same dedup key, which closes the PagerDuty incident a critical finding opened.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from trading_ops.alerting import Alert, resolve_alert, send_alert
from trading_ops.policy import Policy, load_policy
from trading_ops.security.catalog import CHECKS
from trading_ops.security.findings import SEVERITY_ORDER, CheckReport, Finding, RunInfo, record_findings

log = logging.getLogger(__name__)


class CheckDisabled(Exception):
    """The policy disables this check here (`security.disabled_checks`); the message says what it needs."""


def check_function(name: str) -> Callable[[Policy, datetime], list[Finding]]:
    if name not in CHECKS:
        raise ValueError(f"Unknown security check {name!r}; the checks are {', '.join(CHECKS)}.")
    module, function = CHECKS[name].function.split(":")
    return getattr(importlib.import_module(f"trading_ops.security.{module}"), function)


def run_check(name: str, run: RunInfo) -> CheckReport:
    from trading_ops.opsstate import connection

    policy = load_policy()
    security = policy.security
    if name in security.disabled_checks:
        raise CheckDisabled(
            f"{name} is disabled by the policy (security.disabled_checks): {security.disabled_checks[name]}."
        )
    log.info("Running %s for %s / %s as of %s", name, run.dag_id, run.run_id, run.as_of.isoformat())
    findings = check_function(name)(policy, run.as_of)
    today = run.as_of.astimezone(ZoneInfo(policy.timezone)).date()
    with connection(security.findings_conn_id) as conn:
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


def alert_report(report: CheckReport, *, dedup_prefix: str = "security") -> None:
    """One alert per severity of the report's active findings, resolved once none are left; other wings recording
    findings (capacity) pass their own `dedup_prefix`, so their incidents are theirs."""
    source = f"{report.run.dag_id}.{report.check}"
    active = report.active()
    for severity in SEVERITY_ORDER:
        items = [item for item in active if item.finding.severity == severity]
        gone = [item["subject"] for item in report.resolved if item["severity"] == severity]
        if not items:
            if severity in report.previously_active:
                waived = [item.finding.subject for item in report.findings if item.finding.severity == severity]
                resolve_alert(
                    Alert(
                        severity=severity,
                        source=source,
                        summary=f"{report.check}: no {severity} findings left",
                        details=_listed({"run_id": report.run.run_id, "resolved": gone, "waived": waived}),
                        dedup_key=f"{dedup_prefix}:{report.check}:{severity}",
                        run_url=report.run.run_url,
                    )
                )
            continue
        new = [item.finding.subject for item in items if item.status == "new"]
        if severity == "info" and not new:
            continue
        send_alert(
            Alert(
                severity=severity,
                source=source,
                summary=f"{report.check}: {len(items)} {severity} finding(s), {len(new)} new",
                details=_listed(
                    {
                        "run_id": report.run.run_id,
                        "new": new,
                        "persisting": [item.finding.subject for item in items if item.status == "persisting"],
                        "resolved": gone,
                        "waiver_expired": [item.finding.subject for item in items if item.expired_waiver is not None],
                        "messages": [item.finding.message for item in items[:10]],
                    }
                ),
                dedup_key=f"{dedup_prefix}:{report.check}:{severity}",
                run_url=report.run.run_url,
            )
        )


def _listed(details: dict[str, str | list[str]]) -> dict[str, str]:
    """Alert details as text: a list becomes one line per entry (a block in Slack); empty lists are left out."""
    return {name: "\n".join(value) if isinstance(value, list) else value for name, value in details.items() if value}


def summarize(summaries: dict[str, dict | None], disabled: dict[str, str]) -> dict:
    """One run's summaries of its checks, as a table in the log and a dict for XCom. A check without a summary
    is either disabled by the policy (`disabled`: check -> what it needs) or failed, which makes this raise after
    logging the others."""
    lines = [f"{'check':<24} {'critical':>8} {'warning':>8} {'info':>6} {'new':>5} {'resolved':>8} {'waived':>6}"]
    totals = dict.fromkeys((*SEVERITY_ORDER, "new", "resolved", "waived"), 0)
    for name, summary in summaries.items():
        if summary is None:
            state = f"disabled: {disabled[name]}" if name in disabled else "did not finish: see its task log"
            lines.append(f"{name:<24} {state}")
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
    missing = [name for name, summary in summaries.items() if summary is None and name not in disabled]
    if missing:
        raise RuntimeError(
            f"Security checks {', '.join(missing)} did not finish, so this run's findings are incomplete."
        )
    return {
        "totals": totals,
        "checks": {name: summary for name, summary in summaries.items() if summary is not None},
        "disabled": {name: disabled[name] for name in summaries if name in disabled},
    }
