"""Command line of trading-ops, for the hands-on parts of the runbooks.

    python -m trading_ops backups list [--type full|incremental] [--json]
    python -m trading_ops backups show <id|latest>
    python -m trading_ops backups verify <id|latest> [--quick]
    python -m trading_ops backups pin <id> --reason "why"      /  unpin <id>
    python -m trading_ops backups retention [--apply]          (prints the plan; deletes only with --apply)
    python -m trading_ops backups keygen                        (a new age identity for backup encryption)

The repository and the WAL archive come from the policy (`TRADING_OPS_POLICY`); `--repository` overrides.
Encrypted backups are read with the key in the connection their manifest names (`AIRFLOW_CONN_<ID>`).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _repository(args):
    from trading_ops.backup import Repository, repository_from_policy

    return Repository(args.repository) if args.repository else repository_from_policy()


def _archive_dir() -> Path:
    from trading_ops.policy import load_policy

    return Path(load_policy().backup.wal_archive_dir)


def backups_list(args) -> int:
    from trading_ops.backup import list_backups

    backups = list_backups(_repository(args), args.type)
    if args.json:
        print(json.dumps([backup.summary() for backup in backups], indent=2))
        return 0
    print(f"{'ID':<18} {'TYPE':<12} {'TIME (UTC)':<20} {'SIZE':>10}  {'VERIFIED':<9} PINNED")
    for backup in backups:
        verified = {True: "yes", False: "FAILED", None: "never"}[backup.verified]
        print(
            f"{backup.id:<18} {backup.type:<12} {backup.start_time:%Y-%m-%d %H:%M:%S} {_size(backup.size):>10}  "
            f"{verified:<9} {'pinned' if backup.pinned else ''}"
        )
    if not backups:
        print(f"(no backups in {_repository(args).root})")
    return 0


def backups_show(args) -> int:
    from trading_ops.backup import resolve_backup

    backup = resolve_backup(_repository(args), args.id)
    print(json.dumps({**backup.summary(), "manifest": backup.manifest}, indent=2))
    return 0


def backups_verify(args) -> int:
    from trading_ops.backup import resolve_backup, verify_backup

    repository = _repository(args)
    backup = resolve_backup(repository, args.id) if args.id != "latest" else _newest_full(repository)
    archive = _archive_dir()
    result = verify_backup(
        repository, backup, deep=not args.quick, wal_archive_dir=archive if archive.exists() else None
    )
    print(f"Backup {result.id} verified: {json.loads((result.path / 'verified.json').read_text())['checks']}")
    return 0


def _newest_full(repository):
    """`verify latest` means the newest full backup, verified or not: it is how a failed one gets rechecked."""
    from trading_ops.backup import BackupNotFound, list_backups

    fulls = list_backups(repository, "full")
    if not fulls:
        raise BackupNotFound(f"There is no full backup in {repository.root}.")
    return fulls[0]


def backups_pin(args) -> int:
    from trading_ops.backup import resolve_backup

    repository = _repository(args)
    backup = resolve_backup(repository, args.id)
    repository.pin(backup, args.reason)
    print(f"Pinned {backup.type} backup {backup.id}: retention keeps it until it is unpinned.")
    return 0


def backups_unpin(args) -> int:
    from trading_ops.backup import resolve_backup

    repository = _repository(args)
    backup = resolve_backup(repository, args.id)
    repository.unpin(backup)
    print(f"Unpinned {backup.type} backup {backup.id}: retention treats it like any other.")
    return 0


def backups_retention(args) -> int:
    from trading_ops.backup.retention import RetentionRules, plan_retention
    from trading_ops.policy import load_policy

    rules = RetentionRules.from_policy(load_policy().backup)
    plan = plan_retention(_repository(args), _archive_dir(), rules, datetime.now(UTC))
    for line in plan.lines():
        print(line if args.apply else f"(dry run) {line}")
    if args.apply:
        from trading_ops.backup.retention import apply_retention

        apply_retention(plan, dry_run=False)
        print(f"Deleted {len(plan.delete)} item(s).")
    elif plan.delete:
        print(f"Nothing deleted; run with --apply to delete these {len(plan.delete)} item(s).")
    return 0


def backups_keygen(args) -> int:
    from trading_ops.backup import EncryptionKey

    secret = EncryptionKey.generate()
    key = EncryptionKey.from_secret(secret)
    print(secret)
    print(
        f"Public key (the key id manifests record): {key.key_id}\n"
        "Store the first line as the password of the connection backup.encryption.key_conn_id names, and keep a "
        "copy offline: without it encrypted backups cannot be restored.",
        file=sys.stderr,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m trading_ops", description=__doc__.split("\n")[0])
    areas = root.add_subparsers(dest="area", required=True)
    backups = areas.add_parser("backups", help="list, verify, pin and prune backups")
    backups.add_argument("--repository", help="a repository path or URL instead of the policy's")
    commands = backups.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="backups, newest first")
    listing.add_argument("--type", choices=("full", "incremental"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=backups_list)

    show = commands.add_parser("show", help="a backup's manifest")
    show.add_argument("id", help="backup id or 'latest' (newest verified full)")
    show.set_defaults(run=backups_show)

    verify = commands.add_parser("verify", help="check a backup and record the result")
    verify.add_argument("id", help="backup id or 'latest' (newest full)")
    verify.add_argument("--quick", action="store_true", help="checksums only, no pg_restore/pg_verifybackup")
    verify.set_defaults(run=backups_verify)

    pin = commands.add_parser("pin", help="keep a backup forever")
    pin.add_argument("id")
    pin.add_argument("--reason", required=True)
    pin.set_defaults(run=backups_pin)

    unpin = commands.add_parser("unpin", help="let retention delete a backup again")
    unpin.add_argument("id")
    unpin.set_defaults(run=backups_unpin)

    retention = commands.add_parser("retention", help="print (or --apply) the retention plan")
    retention.add_argument("--apply", action="store_true")
    retention.set_defaults(run=backups_retention)

    keygen = commands.add_parser("keygen", help="a new age identity for encrypting backups")
    keygen.set_defaults(run=backups_keygen)
    return root


def main(argv: list[str] | None = None) -> int:
    from trading_ops.backup import BackupError, BackupKeyError
    from trading_ops.errors import UserError

    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (UserError, BackupError, BackupKeyError) as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
