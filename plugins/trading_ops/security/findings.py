"""Findings: what a security check reports, how accepted risks waive it, and the history that tells new from old.

A check returns `Finding`s. `record_findings` compares them with the latest earlier run of the same check, stored
in the ops state database (`security.findings_conn_id`, schema `ops`, tables `security_check_runs` and
`security_findings`, created by `trading_ops.opsstate`'s migrations), marks each as new or
persisting, lists the previous findings that are gone as resolved, applies the policy's waivers, and writes the
run, all in one transaction. A finding is identified by its check and subject, so subjects are stable names
("127.0.0.1:5432 certificate expiry"), while message and evidence carry what changes from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import psycopg
from psycopg.types.json import Jsonb

from trading_ops.policy import Severity, Waiver
from trading_ops.runtime import RunInfo
from trading_ops.sqlfiles import load_sql

SEVERITY_ORDER: tuple[Severity, ...] = ("critical", "warning", "info")


class CheckSourceError(RuntimeError):
    """A check could not read what it checks; it has no result, which must never pass for a clean one."""


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    subject: str
    message: str
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AssessedFinding:
    finding: Finding
    status: Literal["new", "persisting"]
    first_seen: datetime
    waiver: Waiver | None = None
    # A waiver that matched but whose date has passed: the finding is reported again, and says why.
    expired_waiver: Waiver | None = None

    @property
    def waived(self) -> bool:
        return self.waiver is not None


@dataclass(frozen=True)
class CheckReport:
    check: str
    run: RunInfo
    findings: list[AssessedFinding]
    resolved: list[dict]
    # Severities the previous run had active (unwaived) findings of: their alerts are open until resolved.
    previously_active: frozenset[Severity]

    def active(self) -> list[AssessedFinding]:
        return [item for item in self.findings if not item.waived]

    def summary(self) -> dict:
        """JSON for the log and XCom: counts and the subjects of each state."""
        active = self.active()
        return {
            "check": self.check,
            "dag_id": self.run.dag_id,
            "run_id": self.run.run_id,
            "checked_at": self.run.as_of.isoformat(),
            "counts": {
                severity: sum(item.finding.severity == severity for item in active) for severity in SEVERITY_ORDER
            },
            "new": [_brief(item) for item in active if item.status == "new"],
            "persisting": [_brief(item) for item in active if item.status == "persisting"],
            "resolved": self.resolved,
            "waived": [
                {**_brief(item), "reason": item.waiver.reason, "expires": item.waiver.expires.isoformat()}
                for item in self.findings
                if item.waived
            ],
            "expired_waivers": [
                {"subject": item.finding.subject, "expired": item.expired_waiver.expires.isoformat()}
                for item in self.findings
                if item.expired_waiver is not None
            ],
        }


def _brief(item: AssessedFinding) -> dict:
    return {"severity": item.finding.severity, "subject": item.finding.subject, "message": item.finding.message}


def most_severe_per_subject(findings: list[Finding]) -> list[Finding]:
    """One finding per subject: when a check sees the same subject twice, the more severe report stands."""
    kept: dict[str, Finding] = {}
    for finding in findings:
        current = kept.get(finding.subject)
        if current is None or SEVERITY_ORDER.index(finding.severity) < SEVERITY_ORDER.index(current.severity):
            kept[finding.subject] = finding
    return list(kept.values())


def match_waiver(finding: Finding, waivers: list[Waiver], today: date) -> tuple[Waiver | None, Waiver | None]:
    """(active waiver, expired waiver) for the finding; a waiver is active before its `expires` date."""
    matching = [w for w in waivers if w.check == finding.check and w.subject == finding.subject]
    active = [w for w in matching if today < w.expires]
    if active:
        return max(active, key=lambda w: w.expires), None
    return None, max(matching, key=lambda w: w.expires, default=None)


def _tables(schema: str) -> dict[str, str | tuple[str, str]]:
    return {
        "schema": schema,
        "runs": (schema, "security_check_runs"),
        "findings": (schema, "security_findings"),
    }


def record_findings(
    conn: psycopg.Connection,
    schema: str,
    check: str,
    run: RunInfo,
    findings: list[Finding],
    waivers: list[Waiver],
    today: date,
) -> CheckReport:
    """Store this run's findings of `check` (replacing an earlier try of the same run) and return the report."""
    tables = _tables(schema)
    keys = {"check": check, "run_id": run.run_id, "checked_at": run.as_of}
    with conn.transaction():
        previous = {
            row[0]: {"severity": row[1], "message": row[2], "first_seen": row[3], "waived": row[4]}
            for row in conn.execute(load_sql("security/select_previous_findings.sql", **tables), keys)
        }
        assessed = []
        for finding in sorted(most_severe_per_subject(findings), key=_sort_key):
            before = previous.get(finding.subject)
            waiver, expired = match_waiver(finding, waivers, today)
            assessed.append(
                AssessedFinding(
                    finding=finding,
                    status="persisting" if before else "new",
                    first_seen=before["first_seen"] if before else run.as_of,
                    waiver=waiver,
                    expired_waiver=expired,
                )
            )
        seen = {item.finding.subject for item in assessed}
        resolved = [
            {"severity": old["severity"], "subject": subject, "message": old["message"]}
            for subject, old in sorted(previous.items())
            if subject not in seen
        ]
        conn.execute(load_sql("security/delete_check_run.sql", **tables), keys)
        conn.execute(
            load_sql("security/insert_check_run.sql", **tables),
            {
                **keys,
                "dag_id": run.dag_id,
                "new_count": sum(item.status == "new" for item in assessed),
                "persisting_count": sum(item.status == "persisting" for item in assessed),
                "resolved_count": len(resolved),
                "waived_count": sum(item.waived for item in assessed),
                "resolved": Jsonb(resolved),
            },
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                load_sql("security/insert_finding.sql", **tables),
                [
                    {
                        **keys,
                        "subject": item.finding.subject,
                        "severity": item.finding.severity,
                        "message": item.finding.message,
                        "evidence": Jsonb(item.finding.evidence),
                        "status": item.status,
                        "first_seen": item.first_seen,
                        "waived": item.waived,
                        "waiver_reason": item.waiver.reason if item.waiver else None,
                        "waiver_expires": item.waiver.expires if item.waiver else None,
                    }
                    for item in assessed
                ],
            )
    return CheckReport(
        check=check,
        run=run,
        findings=assessed,
        resolved=resolved,
        previously_active=frozenset(old["severity"] for old in previous.values() if not old["waived"]),
    )


def _sort_key(finding: Finding) -> tuple[int, str]:
    return SEVERITY_ORDER.index(finding.severity), finding.subject


def recent_check_runs(conn: psycopg.Connection, schema: str, runs_per_check: int) -> dict[str, list[dict]]:
    """check -> its newest `runs_per_check` runs, newest first: run_id, dag_id, checked_at and the counts of new,
    persisting, resolved and waived findings that `record_findings` stored."""
    from psycopg.rows import dict_row

    history: dict[str, list[dict]] = {}
    with conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(
            load_sql("security/select_recent_check_runs.sql", **_tables(schema)), {"runs_per_check": runs_per_check}
        )
        for row in rows:
            history.setdefault(row.pop("check_name"), []).append(row)
    return history


def latest_findings(conn: psycopg.Connection, schema: str) -> dict[str, list[dict]]:
    """check -> the findings of its newest run (subject, severity, message, status, first_seen, waiver)."""
    from psycopg.rows import dict_row

    findings: dict[str, list[dict]] = {}
    with conn.cursor(row_factory=dict_row) as cursor:
        for row in cursor.execute(load_sql("security/select_latest_findings.sql", **_tables(schema))):
            findings.setdefault(row.pop("check_name"), []).append(row)
    return findings
