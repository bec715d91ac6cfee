"""One run of one log class on one host, in the order that keeps every step safe to interrupt and to repeat:

1. per path of the host: remove what an interrupted run left (`rotate.clean_leftovers`), verify every archive
   against its sidecar (`verify.tampering`) and the directory's signed chain against its archives and the off-host
   head (`chain.verify`), opening the chain if there is none yet, rotate the due active files (`rotate.rotate_path`);
2. archive the rotated files once their writers let go (`rotate.archive_pending`), each recorded in the chain;
3. retention and the size cap (`retention`), each deletion recorded in the chain;
4. the chains' heads stored off the host (the backup repository);
5. alerts for tampering, chain problems, files that need attention and failed steps.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trading_ops.logs import chain as chains
from trading_ops.logs.archives import archive_format
from trading_ops.logs.naming import PathScan, scan_path
from trading_ops.logs.report import ClassReport, LogRotationError, human_size
from trading_ops.logs.retention import apply_retention, plan_retention
from trading_ops.logs.rotate import archive_pending, clean_leftovers, rotate_path
from trading_ops.logs.verify import Digests, archive_problem, tampering
from trading_ops.policy import Policy
from trading_ops.streams import Recipients

log = logging.getLogger(__name__)


def rotate_log_class(
    name: str,
    *,
    now: datetime,
    dry_run: bool,
    recipients: Recipients | None,
    signer: Ed25519PrivateKey,
    heads,
    policy: Policy,
    host: str = "default",
) -> ClassReport:
    """Rotate, archive and prune the paths of one log class on `host`; `now` is the run's time, `signer` the
    chain's private key, `heads` the repository (`backup.Repository`) that keeps the chains' heads off the host.
    Returns the class's report."""
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
    public_key = chains.verify_key(settings.chain.public_key)
    ledger = chains.ChainBook(signer, now)
    report = ClassReport(
        log_class=name, dry_run=dry_run, max_size=log_class.max_size, ledger=None if dry_run else ledger
    )
    paths = [path for path in log_class.paths if path.host == host]
    log.info(
        "%s%s on host %s: %d path(s), run time %s, retention %d days, cap %s",
        "DRY RUN " if dry_run else "",
        name,
        host,
        len(paths),
        now.isoformat(),
        log_class.retention.days,
        human_size(log_class.max_size),
    )

    digests = Digests()  # each archive is read once per run, by the sidecar and the chain checks alike
    trusted_heads: list[tuple[str, chains.Chain]] = []
    for path in paths:
        directory = Path(path.directory)
        if not directory.is_dir():
            log.info("%s does not exist: nothing to rotate there", directory)
            continue
        clean_leftovers(directory, report)
        scan = scan_path(path)
        report.tampered += tampering(scan, archive.suffix, digests)
        head_name = chains.head_object_name(host, name, str(directory))
        with report.step(f"verify the chain of {directory}"):
            chain = ledger.chain(directory, name)
            head = _read_head(heads, head_name)
            if chain.exists or head is not None:  # else: the first run here, which opens the chain
                report.chain_problems += chains.verify(
                    directory, name, public_key, head, pattern=path.pattern, digests=digests
                )
            # A head the chain no longer reaches stays as it is: it is the evidence, until someone resolves it.
            head_reached = head is None or (
                chain.exists and not chains.head_problems(chain.path, chain.entries, head, public_key)
            )
            if not chain.exists:
                _open_chain(chain, path.pattern, host, scan, archive.suffix, head, now, report, digests)
            if head_reached:
                trusted_heads.append((head_name, chain))
        rotate_path(path, scan, now=now, archive=archive, settings=settings, report=report)

    pending = [rotated for path in paths for rotated in scan_path(path).pending(archive.suffix)]
    archive_pending(pending, archive, settings, report)

    plan = plan_retention(
        name,
        log_class,
        [scan_path(path) for path in paths],
        archive_suffix=archive.suffix,
        now=now,
        alert_at_cap_fraction=settings.alert_at_cap_fraction,
    )
    apply_retention(plan, report)

    for head_name, chain in trusted_heads:
        if chain.entries and report.act(
            f"store the head of {chain.path} (entry {chain.entries[-1]['seq']}) off the host"
        ):
            with report.step(f"store the head of {chain.path} in {heads!r}"):
                heads.store_object(head_name, json.dumps(chain.head(), sort_keys=True).encode())

    report.alert_problems(encrypted=log_class.encryption)
    report.log_summary()
    return report


def _read_head(heads, name: str) -> dict | None:
    data = heads.read_object(name)
    return json.loads(data) if data is not None else None


def _open_chain(
    chain: chains.Chain,
    pattern: str,
    host: str,
    scan: PathScan,
    archive_suffix: str,
    head: dict | None,
    now: datetime,
    report: ClassReport,
    digests: Digests,
) -> None:
    """Start the chain of a directory that has none. Its archives are enrolled as they are only when no off-host
    head exists: with one, the chain was removed, and enrolling would launder whatever replaced the archives."""
    enrolled = []
    if head is None:
        enrolled = [
            (rotated.path, digests(rotated.path), rotated.mtime)
            for rotated in sorted(scan.archives(archive_suffix), key=lambda rotated: (rotated.mtime, rotated.path.name))
            if archive_problem(rotated.path, digests) is None
        ]
    what = f"open the chain {chain.path}" + (
        f", enrolling {len(enrolled)} archive(s) already there" if enrolled else ""
    )
    if report.act(what):
        chain.open(host=host, pattern=pattern, at=now, enrolled=enrolled)
