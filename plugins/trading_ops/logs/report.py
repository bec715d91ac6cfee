"""What a run of one class records and says: its actions (the plan, in a dry run), numbers, problems and alerts.

Every change goes through `ClassReport.act`, which logs it and says whether to carry it out: in a dry run each one
is listed ("DRY RUN, would: ...") and none is done, alerts included (listed, not sent). A failed step is recorded
and the run goes on with the next file; the task fails at the end (`RotationIncomplete`) so Airflow retries.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from trading_ops.alerting import Alert, send_alert
from trading_ops.errors import UserError

log = logging.getLogger(__name__)

ACTIONS_IN_XCOM = 100
PROBLEMS_IN_ALERT = 20


class LogRotationError(UserError):
    """A setup problem of a log class the user must fix: one sentence saying what and where."""


class RotationIncomplete(RuntimeError):
    """Some steps of a class failed (the others completed); a retry takes them up again."""


def human_size(number: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(number) < 1024 or unit == "GB":
            return f"{number:.1f} {unit}" if unit != "B" else f"{number} B"
        number /= 1024
    raise AssertionError("unreachable")


@dataclass
class ClassReport:
    log_class: str
    dry_run: bool
    max_size: int
    files_rotated: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    archives_deleted: int = 0
    bytes_deleted: int = 0
    total_bytes: int = 0
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tampered: list[str] = field(default_factory=list)
    chain_problems: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    # Where archives written and deleted are recorded (chain.ChainBook); None only in a dry run.
    ledger: object = field(default=None, repr=False)

    def act(self, action: str) -> bool:
        """Record and log an action; True when it should be carried out (not a dry run)."""
        self.actions.append(action)
        log.info("%s%s", "DRY RUN, would: " if self.dry_run else "", action)
        return not self.dry_run

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    @contextmanager
    def step(self, what: str) -> Generator[None]:
        """Run one file's step; a failure is recorded and the run goes on with the next file."""
        try:
            yield
        except Exception as exc:  # each file is independent: one failure must not stop the others
            self.failures.append(f"{what}: {exc}")
            log.exception("Step failed: %s", what)

    def alert(self, severity: str, summary: str, kind: str, details: dict | None = None) -> None:
        """Record an alert of this class and send it (a dry run lists it instead)."""
        self.alerts.append({"severity": severity, "summary": summary, **(details or {})})
        if self.act(f"alert {severity}: {summary}"):
            send_alert(
                Alert(
                    severity=severity,
                    source=f"log_rotation.{self.log_class}",
                    summary=summary,
                    details=details or {},
                    dedup_key=f"log_rotation:{self.log_class}:{kind}",
                )
            )

    def record_archive(self, archive: Path, size: int, sha256: str, lines_to: float) -> None:
        """Append a new archive to its directory's chain, as soon as it is in place."""
        if self.ledger is not None:
            self.ledger.record_archive(archive, size, sha256, lines_to)

    def record_deletions(self, deletions: list[tuple[Path, str]]) -> None:
        """Append (archive, reason) deletions to the chains before the archives go (a stop in between is finished
        by the next run's retention)."""
        if self.ledger is not None and deletions:
            self.ledger.record_deletions(deletions)

    def alert_problems(self, *, encrypted: bool) -> None:
        """One alert per kind of problem the run found; tampering is critical for an encrypted (audit) class."""
        name = self.log_class
        if self.chain_problems:
            self.alert(
                "critical" if encrypted else "warning",
                f"{name}: the signed chain of archives shows {len(self.chain_problems)} problem(s)",
                "chain",
                {"problems": "; ".join(self.chain_problems[:PROBLEMS_IN_ALERT])},
            )
        if self.tampered:
            self.alert(
                "critical" if encrypted else "warning",
                f"{name}: {len(self.tampered)} archive(s) fail their integrity check",
                "tampered",
                {"archives": "; ".join(self.tampered[:PROBLEMS_IN_ALERT])},
            )
        if self.warnings:
            self.alert(
                "warning",
                f"{name}: {len(self.warnings)} file(s) need attention",
                "warnings",
                {"problems": "; ".join(self.warnings[:PROBLEMS_IN_ALERT])},
            )
        if self.failures:
            self.alert(
                "warning",
                f"{name}: {len(self.failures)} step(s) failed",
                "failed",
                {"failures": "; ".join(self.failures[:PROBLEMS_IN_ALERT])},
            )

    def archived(self, source_name: str, final_name: str, before: int, after: int) -> None:
        self.bytes_before += before
        self.bytes_after += after
        log.info(
            "archived %s -> %s: %s -> %s (%.1fx)",
            source_name,
            final_name,
            human_size(before),
            human_size(after),
            before / after if after else 0,
        )

    @property
    def space_freed(self) -> int:
        return self.bytes_before - self.bytes_after + self.bytes_deleted

    def summary(self) -> dict:
        return {
            "log_class": self.log_class,
            "dry_run": self.dry_run,
            "files_rotated": self.files_rotated,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "archives_deleted": self.archives_deleted,
            "bytes_deleted": self.bytes_deleted,
            "space_freed": self.space_freed,
            "total_bytes": self.total_bytes,
            "max_size": self.max_size,
            "cap_fraction": round(self.total_bytes / self.max_size, 4),
            "warnings": self.warnings,
            "tampered": self.tampered,
            "chain_problems": self.chain_problems,
            "failures": self.failures,
            "alerts": self.alerts,
            "actions_total": len(self.actions),
            "actions": self.actions[:ACTIONS_IN_XCOM],
        }

    def log_summary(self) -> None:
        log.info(
            "%s%s summary: %d file(s) rotated, %s -> %s, %d archive(s) deleted (%s), space freed %s, class now %s "
            "of %s (%.0f%%)",
            "DRY RUN (nothing changed) " if self.dry_run else "",
            self.log_class,
            self.files_rotated,
            human_size(self.bytes_before),
            human_size(self.bytes_after),
            self.archives_deleted,
            human_size(self.bytes_deleted),
            human_size(self.space_freed),
            human_size(self.total_bytes),
            human_size(self.max_size),
            100 * self.total_bytes / self.max_size,
        )
