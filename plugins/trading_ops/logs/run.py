"""One run of one log class, in the order that keeps every step safe to interrupt and to repeat:

1. per path: remove what an interrupted run left (`rotate.clean_leftovers`), verify every archive against its
   sidecar (`verify.tampering`), rotate the due active files (`rotate.rotate_path`);
2. archive the rotated files once their writers let go (`rotate.archive_pending`);
3. retention and the size cap (`retention`);
4. alerts for tampering, files that need attention and failed steps.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from trading_ops.logs.archives import archive_format
from trading_ops.logs.naming import scan_path
from trading_ops.logs.report import ClassReport, LogRotationError, human_size
from trading_ops.logs.retention import apply_retention, plan_retention
from trading_ops.logs.rotate import archive_pending, clean_leftovers, rotate_path
from trading_ops.logs.verify import tampering
from trading_ops.policy import Policy
from trading_ops.streams import Recipients

log = logging.getLogger(__name__)


def rotate_log_class(
    name: str, *, now: datetime, dry_run: bool, recipients: Recipients | None, policy: Policy
) -> ClassReport:
    """Rotate, archive and prune one log class; `now` is the run's time. Returns the class's report."""
    settings = policy.logs
    if name not in settings.classes:
        raise LogRotationError(f"Log class {name!r} is not in the policy (known: {', '.join(settings.classes)}).")
    log_class = settings.classes[name]
    if log_class.encryption and not recipients:
        raise LogRotationError(
            f"Log class {name} is encrypted but no age recipient was given "
            f"(connection {settings.encryption_key_conn_id})."
        )
    archive = archive_format(log_class, settings, recipients)
    report = ClassReport(log_class=name, dry_run=dry_run, max_size=log_class.max_size)
    log.info(
        "%s%s: %d path(s), run time %s, retention %d days, cap %s",
        "DRY RUN " if dry_run else "",
        name,
        len(log_class.paths),
        now.isoformat(),
        log_class.retention.days,
        human_size(log_class.max_size),
    )

    for path in log_class.paths:
        directory = Path(path.directory)
        if not directory.is_dir():
            log.info("%s does not exist: nothing to rotate there", directory)
            continue
        clean_leftovers(directory, report)
        scan = scan_path(path)
        report.tampered += tampering(scan, archive.suffix)
        rotate_path(path, scan, now=now, archive=archive, settings=settings, report=report)

    pending = [rotated for path in log_class.paths for rotated in scan_path(path).pending(archive.suffix)]
    archive_pending(pending, archive, settings, report)

    plan = plan_retention(
        name,
        log_class,
        [scan_path(path) for path in log_class.paths],
        archive_suffix=archive.suffix,
        now=now,
        alert_at_cap_fraction=settings.alert_at_cap_fraction,
    )
    apply_retention(plan, report)

    report.alert_problems(encrypted=log_class.encryption)
    report.log_summary()
    return report
