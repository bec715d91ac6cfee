"""Retention and the size cap of a class: which archives go, and which alerts say the class is (nearly) full.

Archives whose mtime (the time of their newest line) is older than the class's retention, counted from the run's
time (never the clock), are deleted. Then, while the class (active + rotated + archives + sidecars) is over
`max_size`, the oldest archives go first. Active files and rotated files not archived yet are never deleted. For a
class with `retention_wins_over_cap`, archives younger than the retention are never deleted for size: a critical
alert says the cap is exceeded instead. A class over `alert_at_cap_fraction` of its cap raises a warning.

Every deletion is recorded in the class's signed chain (`chain`) before the archive goes, so deleting by retention
verifies clean while any other deletion does not.

`plan_retention` decides from what the directories hold now, without changing anything; `apply_retention` carries
the plan out through the class's report (so a dry run lists it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from trading_ops.logs.naming import PathScan, RotatedFile, scan_path
from trading_ops.logs.report import ClassReport, human_size
from trading_ops.policy import LogClass, Policy


@dataclass(frozen=True)
class Deletion:
    archive: RotatedFile
    freed: int  # the archive and its sidecar
    reason: str


@dataclass(frozen=True)
class PlannedAlert:
    severity: str
    summary: str
    kind: str


@dataclass
class RetentionPlan:
    deletions: list[Deletion] = field(default_factory=list)
    alerts: list[PlannedAlert] = field(default_factory=list)
    total_bytes: int = 0  # what the class holds once the deletions are done


def footprint(rotated: RotatedFile) -> int:
    sidecar = rotated.sidecar
    return rotated.size + (sidecar.stat().st_size if sidecar.exists() else 0)


def plan_retention(
    name: str,
    log_class: LogClass,
    scans: list[PathScan],
    *,
    archive_suffix: str,
    now: datetime,
    alert_at_cap_fraction: float,
) -> RetentionPlan:
    plan = RetentionPlan()
    kept_bytes = sum(path.stat().st_size for scan in scans for path in scan.active)
    kept_bytes += sum(rotated.size for scan in scans for rotated in scan.pending(archive_suffix))
    archives = sorted(
        (rotated for scan in scans for rotated in scan.archives(archive_suffix)),
        key=lambda rotated: (rotated.mtime, rotated.path.name),
    )
    cutoff = (now - log_class.retention).timestamp()
    expired = [rotated for rotated in archives if rotated.mtime < cutoff]
    remaining = [rotated for rotated in archives if rotated.mtime >= cutoff]
    reason = f"older than the retention of {log_class.retention.days} days"
    plan.deletions += [Deletion(rotated, footprint(rotated), reason) for rotated in expired]

    total = kept_bytes + sum(footprint(rotated) for rotated in remaining)
    cap = log_class.max_size
    if total > cap and log_class.retention_wins_over_cap:
        plan.alerts.append(
            PlannedAlert(
                "critical",
                f"{name} holds {human_size(total)}, over its cap of {human_size(cap)}, and every archive is younger "
                f"than its retention of {log_class.retention.days} days, which wins over the cap: add space or "
                f"raise logs.classes.{name}.max_size",
                "over_cap",
            )
        )
    elif total > cap:
        for rotated in remaining:
            if total <= cap:
                break
            freed = footprint(rotated)
            total -= freed
            plan.deletions.append(Deletion(rotated, freed, f"the class is over its cap of {human_size(cap)}"))
        if total > cap:
            plan.alerts.append(
                PlannedAlert(
                    "critical",
                    f"{name} holds {human_size(total)} in files that may not be deleted, over its cap of "
                    f"{human_size(cap)}",
                    "over_cap",
                )
            )
    if cap >= total > alert_at_cap_fraction * cap:
        plan.alerts.append(
            PlannedAlert("warning", f"{name} is at {total / cap:.0%} of its cap of {human_size(cap)}", "near_cap")
        )
    plan.total_bytes = total
    return plan


def class_usage(name: str, policy: Policy, host: str, now: datetime) -> RetentionPlan:
    """The plan the next rotation of class `name` on `host` would make from what its directories hold now (read
    only; the Ops page shows its size against the cap, `total_bytes` being what the run reports as the class's size).
    """
    from trading_ops.logs.archives import stored_suffix

    log_class = policy.logs.classes[name]
    return plan_retention(
        name,
        log_class,
        [scan_path(path) for path in log_class.paths if path.host == host],
        archive_suffix=stored_suffix(log_class, policy.logs),
        now=now,
        alert_at_cap_fraction=policy.logs.alert_at_cap_fraction,
    )


def apply_retention(plan: RetentionPlan, report: ClassReport) -> None:
    deletions = plan.deletions
    if not report.dry_run and deletions:
        failures = len(report.failures)
        with report.step("record the deletions in the chain"):
            report.record_deletions([(deletion.archive.path, deletion.reason) for deletion in deletions])
        if len(report.failures) > failures:
            deletions = []  # never delete what the chain does not record as deleted; the retry does
    for deletion in deletions:
        archive = deletion.archive
        with report.step(f"delete {archive.path}"):
            if report.act(f"delete {archive.path} ({human_size(deletion.freed)}): {deletion.reason}"):
                archive.path.unlink()
                archive.sidecar.unlink(missing_ok=True)
            report.archives_deleted += 1
            report.bytes_deleted += deletion.freed
    for alert in plan.alerts:
        report.alert(alert.severity, alert.summary, alert.kind)
    report.total_bytes = plan.total_bytes
