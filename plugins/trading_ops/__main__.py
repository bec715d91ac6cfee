"""Command line of trading-ops, for the hands-on parts of the runbooks.

    python -m trading_ops backups list [--type full|incremental] [--json]
    python -m trading_ops backups show <id|latest>
    python -m trading_ops backups verify <id|latest> [--quick]
    python -m trading_ops backups pin <id> --reason "why"      /  unpin <id>
    python -m trading_ops backups retention [--apply]          (prints the plan; deletes only with --apply)
    python -m trading_ops backups keygen                        (a new age identity for backup encryption)
    python -m trading_ops backups window                        (the point-in-time recovery window)
    python -m trading_ops drills list [--limit N] [--json]      (restore drills, newest first)
    python -m trading_ops incidents list [--open] [--limit N] [--json]   (incidents, newest first)
    python -m trading_ops incidents show <id> [--post-mortem] [--json]  (an incident and its timeline)
    python -m trading_ops wal fetch <%f> <%p>                   (a recovery instance's restore_command)
    python -m trading_ops k8s render [--check] [--output-dir DIR]  (include/k8s/ from the policy's resources)
    python -m trading_ops logs verify <dir> [--repository R]    (the signed log chains; trading_ops/logs/cli.py)
    python -m trading_ops logs extract <archive> [-i identity]  /  logs keygen

The repository and the WAL archive come from the policy (`TRADING_OPS_POLICY`); `--repository` overrides.
Encrypted backups are read with the key in the connection their manifest names (`AIRFLOW_CONN_<ID>`).
"""

from __future__ import annotations

import argparse
import json
import logging
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
    drills = _drills_by_backup()
    if args.json:
        print(
            json.dumps(
                [{**backup.summary(), "last_drill": drills.get(backup.id)} for backup in backups], indent=2, default=str
            )
        )
        return 0
    print(f"{'ID':<18} {'TYPE':<12} {'TIME (UTC)':<20} {'SIZE':>10}  {'VERIFIED':<9} {'LAST DRILL':<38} PINNED")
    for backup in backups:
        verified = {True: "yes", False: "FAILED", None: "never"}[backup.verified]
        print(
            f"{backup.id:<18} {backup.type:<12} {backup.start_time:%Y-%m-%d %H:%M:%S} {_size(backup.size):>10}  "
            f"{verified:<9} {_describe_drill(backup, drills):<38} {'pinned' if backup.pinned else ''}"
        )
    if not backups:
        print(f"(no backups in {_repository(args).root})")
    return 0


def _drills_by_backup() -> dict | None:
    """backup id -> its newest restore drill, from the ops state database; None when that cannot be read."""
    from trading_ops.policy import load_policy
    from trading_ops.restore.drill import drills_by_backup

    try:
        return drills_by_backup(load_policy().alerting.state_conn_id)
    except Exception as exc:  # an unset connection or a server down: the backups are listed all the same
        print(f"(restore drills unknown: the ops state database cannot be read: {exc})", file=sys.stderr)
        return None


def _describe_drill(backup, drills: dict | None) -> str:
    """`2026-12-06 05:12 passed, PITR, RTO 40 s` (or `... FAILED in replay`) for a full backup's newest drill."""
    if backup.type != "full":
        return "-"
    if drills is None:
        return "unknown"
    drill = drills.get(backup.id)
    if drill is None:
        return "never"
    text = f"{drill['finished_at'].astimezone(UTC):%Y-%m-%d %H:%M} "
    if drill["outcome"] == "passed":
        text += f"passed, PITR, RTO {drill['rto_seconds']:.0f} s"
    else:
        text += f"FAILED in {drill['failed_phase']}"
        if drill["last_passed_at"]:
            text += f" (passed {drill['last_passed_at'].astimezone(UTC):%Y-%m-%d})"
    return text


def drills_list(args) -> int:
    from trading_ops.policy import load_policy
    from trading_ops.restore.drill import PHASES, list_drills

    drills = list_drills(load_policy().alerting.state_conn_id, args.limit)
    if args.json:
        print(json.dumps(drills, indent=2, default=str))
        return 0
    print(f"{'DRILL':<18} {'BACKUP':<18} {'FINISHED (UTC)':<17} {'OUTCOME':<8} {'RTO':>8}  PHASES (s) / PROBLEM")
    for drill in drills:
        rto = f"{drill['rto_seconds']:.1f} s" if drill["rto_seconds"] is not None else "-"
        phases = " ".join(f"{name} {drill['phases'][name]}" for name in PHASES if name in drill["phases"])
        detail = phases if drill["outcome"] == "passed" else f"{drill['failed_phase']}: {drill['problems'][0]}"
        print(
            f"{drill['drill_id']:<18} {drill['backup_id'] or '-':<18} "
            f"{drill['finished_at'].astimezone(UTC):%Y-%m-%d %H:%M}  {drill['outcome']:<8} {rto:>8}  {detail}"
        )
        print(f"{'':<18} target {drill['recovery_target']}; sizes {drill['sizes']}")
    if not drills:
        print("(no restore drill recorded yet: db_restore_drill runs on Sundays)")
    return 0


def _when(moment) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}"


def _incident_state(incident: dict) -> str:
    if incident["resolved_at"]:
        return "resolved"
    if incident["condition_resolved_at"]:
        return "cleared"
    return "acked" if incident["acknowledged_at"] else "OPEN"


def incidents_list(args) -> int:
    from trading_ops.incidents.store import list_incidents
    from trading_ops.policy import load_policy

    incidents = list_incidents(load_policy(), open_only=args.open, limit=args.limit)
    if args.json:
        print(json.dumps(incidents, indent=2, default=str))
        return 0
    print(f"{'ID':>5} {'LVL':<3} {'STATE':<8} {'OPENED (UTC)':<16} {'ACK BY':<14} {'RESOLVED':<16} SUMMARY")
    for incident in incidents:
        print(
            f"{incident['incident_id']:>5} {incident['level']:<3} {_incident_state(incident):<8} "
            f"{_when(incident['opened_at']):<16} {incident['acknowledged_by'] or '-':<14} "
            f"{_when(incident['resolved_at']):<16} {incident['summary']}"
        )
    if not incidents:
        print("(no open incidents)" if args.open else "(no incidents recorded)")
    return 0


def incidents_show(args) -> int:
    from trading_ops.errors import UserError
    from trading_ops.incidents.store import show_incident
    from trading_ops.policy import load_policy

    found = show_incident(load_policy(), args.id)
    if found is None:
        raise UserError(f"Incident {args.id} does not exist in the ops state database.")
    incident, events = found
    if args.post_mortem:
        print(incident["post_mortem"] or f"(incident {args.id} has no post-mortem draft yet)")
        return 0
    if args.json:
        print(json.dumps({**incident, "timeline": events}, indent=2, default=str))
        return 0
    for key, value in incident.items():
        if key != "post_mortem" and value is not None:
            print(f"{key:<30} {value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value}")
    print(f"{'post_mortem':<30} {'yes (--post-mortem)' if incident['post_mortem'] else 'no'}")
    print("\nTIMELINE")
    for event in events:
        actor = f" [{event['actor']}]" if event["actor"] else ""
        print(f"{event['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} {event['kind']:<20}{actor} {event['message']}")
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
    from trading_ops.backup.retention import RetentionRules, newest_drilled_backup, plan_retention
    from trading_ops.policy import load_policy

    policy = load_policy()
    rules = RetentionRules.from_policy(policy.backup)
    plan = plan_retention(
        _repository(args), _archive_dir(), rules, datetime.now(UTC), last_drilled=newest_drilled_backup(policy)
    )
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


def backups_window(args) -> int:
    from trading_ops.policy import load_policy
    from trading_ops.restore.pitr import recoverable_window

    print(recoverable_window(_repository(args), _archive_dir(), load_policy()).sentence())
    return 0


def wal_fetch(args) -> int:
    from trading_ops.wal_fetch import main as fetch_main

    return fetch_main([args.name, args.destination])


def k8s_render(args) -> int:
    from trading_ops.capacity.manifests import K8S_DIR, render, stale
    from trading_ops.policy import load_policy

    directory = Path(args.output_dir) if args.output_dir else K8S_DIR
    if args.check:
        differing = stale(load_policy(), directory)
        for name in differing:
            print(f"{directory / name} differs from the policy; run `python -m trading_ops k8s render`.")
        return 1 if differing else 0
    for path in render(load_policy(), directory):
        print(f"Wrote {path}")
    return 0


def parser(with_logs: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `with_logs=False` leaves out the logs commands, which import Airflow (about 3 s):
    `wal fetch` runs once per WAL segment of a recovery and must stay light."""
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

    window = commands.add_parser("window", help="the recoverable window of a point-in-time restore")
    window.set_defaults(run=backups_window)

    drills = areas.add_parser("drills", help="restore drills (db_restore_drill)")
    drill_commands = drills.add_subparsers(dest="command", required=True)
    drill_listing = drill_commands.add_parser("list", help="restore drills, newest first")
    drill_listing.add_argument("--limit", type=int, default=20)
    drill_listing.add_argument("--json", action="store_true")
    drill_listing.set_defaults(run=drills_list)

    incidents = areas.add_parser("incidents", help="incidents and their timelines (trading_ops.incidents)")
    incident_commands = incidents.add_subparsers(dest="command", required=True)
    incident_listing = incident_commands.add_parser("list", help="incidents, newest first")
    incident_listing.add_argument("--open", action="store_true", help="only those not resolved")
    incident_listing.add_argument("--limit", type=int, default=50)
    incident_listing.add_argument("--json", action="store_true")
    incident_listing.set_defaults(run=incidents_list)
    incident_show = incident_commands.add_parser("show", help="an incident, its deadlines and its timeline")
    incident_show.add_argument("id", type=int)
    incident_show.add_argument("--post-mortem", action="store_true", help="print its post-mortem draft (markdown)")
    incident_show.add_argument("--json", action="store_true")
    incident_show.set_defaults(run=incidents_show)

    wal = areas.add_parser("wal", help="WAL for a recovery instance")
    wal_commands = wal.add_subparsers(dest="command", required=True)
    fetch = wal_commands.add_parser("fetch", help="restore_command: put WAL file NAME at DESTINATION")
    fetch.add_argument("name", help="%%f: the WAL file PostgreSQL asks for")
    fetch.add_argument("destination", help="%%p: where to put it")
    fetch.set_defaults(run=wal_fetch)
    k8s = areas.add_parser("k8s", help="the Kubernetes manifests the policy's resources section asks for")
    k8s_commands = k8s.add_subparsers(dest="command", required=True)
    k8s_render_cmd = k8s_commands.add_parser("render", help="write the HPA and the resources patch (include/k8s/)")
    k8s_render_cmd.add_argument("--output-dir", help="another directory than include/k8s/")
    k8s_render_cmd.add_argument("--check", action="store_true", help="exit 1 if the files differ from the policy")
    k8s_render_cmd.set_defaults(run=k8s_render)
    if with_logs:
        from trading_ops.logs.cli import add_logs_commands

        add_logs_commands(areas)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Runs once per WAL segment in a recovery: importing the project's errors or the logs CLI would import Airflow.
    light = argv[:1] == ["wal"]
    args = parser(with_logs=not light).parse_args(argv)
    if light:
        return args.run(args)
    from trading_ops.backup import BackupError, BackupKeyError
    from trading_ops.errors import UserError

    # Airflow logs to stdout; here stdout is the command's output (tables, JSON), so log lines go to stderr.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    try:
        return args.run(args)
    except (UserError, BackupError, BackupKeyError) as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
