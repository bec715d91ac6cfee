"""The restore's request: the trigger form's values, checked; the first bad one refuses the run in one sentence."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from trading_ops.errors import UserError

DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


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

    @classmethod
    def from_params(cls, params: dict, backup_id_pattern: re.Pattern) -> RestoreRequest:
        """Check the trigger form's values; the first problem stops the run with one sentence."""
        backup_id = str(params.get("backup_id") or "")
        if backup_id != "latest" and not backup_id_pattern.fullmatch(backup_id):
            raise RestoreRefused(
                f"backup_id {backup_id!r} is neither 'latest' nor a backup id like those `backups list` shows."
            )
        target = str(params.get("target_database") or "")
        if not DATABASE_NAME.fullmatch(target):
            raise RestoreRefused(f"target_database {target!r} is not a plain lower-case PostgreSQL database name.")
        mode = params.get("restore_mode")
        if mode not in ("swap", "in_place"):
            raise RestoreRefused(f"restore_mode {mode!r} must be 'swap' or 'in_place'.")
        jobs = int(params.get("jobs") or 1)
        if not 1 <= jobs <= 16:
            raise RestoreRefused(f"jobs {jobs} must be between 1 and 16.")
        replicas = params.get("replicas")
        if replicas is not None and int(replicas) < 0:
            raise RestoreRefused(f"replicas {replicas} must not be negative.")
        request = cls(
            backup_id=backup_id,
            target_database=target,
            restore_mode=mode,
            jobs=jobs,
            scale_workload=bool(params.get("scale_workload", True)),
            replicas=None if replicas is None else int(replicas),
            dry_run=bool(params.get("dry_run", True)),
            confirm=str(params.get("confirm") or ""),
        )
        if not request.dry_run and request.confirm != target:
            raise RestoreRefused(
                f"confirm must equal the target database name {target!r} for a real restore "
                f"(got {request.confirm!r}); set dry_run to preview instead."
            )
        return request

    def to_dict(self) -> dict:
        return asdict(self)
