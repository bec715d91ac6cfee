"""The restore's request: the trigger form's values, checked; the first bad one refuses the run in one sentence."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime

from trading_ops.backup.repository import FULL_BACKUP_CHOICE_PATTERN
from trading_ops.errors import UserError

# The trigger form's limits; dags/db_restore.py builds its Params from these, so the form and the checks agree.
BACKUP_CHOICE_PATTERN = FULL_BACKUP_CHOICE_PATTERN
DATABASE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
RESTORE_MODES = ("swap", "in_place")
MIN_JOBS, MAX_JOBS = 1, 16
# backup: the full backup's dump; latest: its base backup + every archived WAL segment; time: up to target_time.
RECOVERY_TARGETS = ("backup", "latest", "time")

BACKUP_CHOICE = re.compile(BACKUP_CHOICE_PATTERN)
DATABASE_NAME = re.compile(DATABASE_NAME_PATTERN)


class RestoreRefused(UserError):
    """A problem the user can fix, found before anything was changed; the message is one sentence."""


@dataclass(frozen=True)
class RestoreRequest:
    backup_id: str
    target_database: str
    restore_mode: str
    jobs: int
    scale_workload: bool
    replicas: int | None
    dry_run: bool
    confirm: str
    recovery_target: str = "backup"
    # ISO 8601 with a zone, only with recovery_target "time".
    target_time: str | None = None

    @property
    def target_moment(self) -> datetime | None:
        return datetime.fromisoformat(self.target_time) if self.target_time else None

    @classmethod
    def from_params(cls, params: dict) -> RestoreRequest:
        """Check the trigger form's values; the first problem stops the run with one sentence."""
        backup_id = str(params.get("backup_id") or "")
        if not BACKUP_CHOICE.fullmatch(backup_id):
            raise RestoreRefused(
                f"backup_id {backup_id!r} is neither 'latest' nor a backup id like those `backups list` shows."
            )
        target = str(params.get("target_database") or "")
        if not DATABASE_NAME.fullmatch(target):
            raise RestoreRefused(f"target_database {target!r} is not a plain lower-case PostgreSQL database name.")
        mode = params.get("restore_mode")
        if mode not in RESTORE_MODES:
            raise RestoreRefused(f"restore_mode {mode!r} must be 'swap' or 'in_place'.")
        jobs = int(params.get("jobs") or 1)
        if not MIN_JOBS <= jobs <= MAX_JOBS:
            raise RestoreRefused(f"jobs {jobs} must be between {MIN_JOBS} and {MAX_JOBS}.")
        replicas = params.get("replicas")
        if replicas is not None and int(replicas) < 0:
            raise RestoreRefused(f"replicas {replicas} must not be negative.")
        recovery_target = params.get("recovery_target") or "backup"
        if recovery_target not in RECOVERY_TARGETS:
            raise RestoreRefused(f"recovery_target {recovery_target!r} must be 'backup', 'latest' or 'time'.")
        target_time = _target_time(params.get("target_time"), recovery_target)
        if recovery_target != "backup" and mode != "swap":
            raise RestoreRefused(
                f"recovery_target {recovery_target} restores into a new database and swaps it in: "
                "use restore_mode swap."
            )
        request = cls(
            backup_id=backup_id,
            target_database=target,
            restore_mode=mode,
            jobs=jobs,
            scale_workload=bool(params.get("scale_workload", True)),
            replicas=None if replicas is None else int(replicas),
            dry_run=bool(params.get("dry_run", True)),
            confirm=str(params.get("confirm") or ""),
            recovery_target=recovery_target,
            target_time=target_time,
        )
        if not request.dry_run and request.confirm != target:
            raise RestoreRefused(
                f"confirm must equal the target database name {target!r} for a real restore "
                f"(got {request.confirm!r}); set dry_run to preview instead."
            )
        return request

    def to_dict(self) -> dict:
        return asdict(self)


def _target_time(value, recovery_target: str) -> str | None:
    if recovery_target != "time":
        if value:
            raise RestoreRefused(
                f"target_time is only for recovery_target time (recovery_target is {recovery_target})."
            )
        return None
    if not value:
        raise RestoreRefused("recovery_target time needs a target_time, e.g. 2026-11-07T14:30:00+00:00.")
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise RestoreRefused(f"target_time {value!r} is not an ISO 8601 time like 2026-11-07T14:30:00+00:00.") from None
    if moment.tzinfo is None:
        raise RestoreRefused(f"target_time {value!r} has no time zone: add one, e.g. +00:00 or Z.")
    return moment.isoformat()
