"""Restore benchmark: the db_restore DAG's restore + verify vs a bare `pg_restore` of the same dump, same run.

    python bench/restore.py [--months 12] [--step-minutes 10] [--jobs 2]

Starts its own PostgreSQL cluster, loads demo data, takes a full backup with this project's backup code, then
times (baseline) `pg_restore -d <new db> <plain dump>` and (ours) what the DAG's `restore_database` and
`verify_integrity` tasks do: decrypt/decompress the stored dump, pg_restore --jobs into a staging database, then
row counts against the manifest, amcheck on every btree index, constraints, sequences, archive overlap.
Target: ours within 1.5x the baseline.

PITR (`--pitr`, on by default): after the full backup, orders are written in batches while the cluster archives by
`archive_timeout` alone (no manual switch), then archiving breaks and a disaster deletes rows. Timed: (floor) the
bare physical path with stock PostgreSQL: extract the base backup, replay the same WAL with `cp` as
restore_command; (ours) what db_restore does for `recovery_target=latest`: plan, recovery instance with `wal
fetch`, transfer into staging, verify, swap. Printed: RPO (rows lost of rows committed before the disaster, and
of those committed at least archive_timeout before it) and the RTO split by phase.
Target: RPO 0 for rows committed archive_timeout before the disaster; PITR RTO <= 1.5x (floor + bare pg_restore).

Drill (`--drill`, on by default): what db_restore_drill does (`drill.mark_recovery_target`, then `drill.run_drill`:
checksums, extract, replay to the restore point, transfer into a scratch database on the recovery instance,
verify), phase by phase, against the bare floor of each phase measured in the same run on the same backup, WAL and
restore point with stock tools only:
  fetch     one `cp` per WAL segment the recovery needs, archive -> a scratch directory (restore_command's floor)
  extract   `zstd -d -c <stored base> | tar -x` (no checksum)
  replay    stock PostgreSQL, `cp` as restore_command, `recovery_target_name` = the same point: start to promotion
  transfer  one `pg_dump -Fc -Z0 | pg_restore` pipe of the database into a new database on the same instance
  verify    `count(*)` of every table, then `pg_amcheck --jobs` on every index of the copy (bt_index_check)
The floor runs after the drill, so it reads a warm page cache: a floor, not a fair race.
Target: drill RTO (extract + replay + transfer + verify) <= 1.5x the floor's.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=12, help="months of demo market data")
    parser.add_argument("--step-minutes", type=int, default=10, help="one bar per symbol every N minutes")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs for the DAG side")
    parser.add_argument("--archive-timeout", type=int, default=2, help="the cluster's archive_timeout in seconds")
    parser.add_argument("--no-pitr", dest="pitr", action="store_false", help="skip the point-in-time part")
    parser.add_argument("--no-drill", dest="drill", action="store_false", help="skip the restore drill part")
    parser.add_argument(
        "--only-drill", action="store_true", help="only the restore drill part (after loading and backing up)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    work.chmod(0o755)
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))

    from trading_ops.dev.local_policy import write_local_policy
    from trading_ops.dev.localpg import LocalCluster

    # A short archive_timeout stands in for the policy's 60 s, so the RPO is measured in seconds of bench time.
    cluster = LocalCluster(work / "pg", extra_settings={"archive_timeout": f"{args.archive_timeout}s"})
    os.environ["TRADING_OPS_POLICY"] = str(
        write_local_policy(work / "policy.yaml", work, wal_archive_dir=cluster.wal_archive_dir, airflow_url="")
    )
    cluster.init()
    cluster.start()
    try:
        run(cluster, args)
    finally:
        cluster.stop(mode="immediate")
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run(cluster, args) -> None:
    import psycopg

    from trading_ops import backup as backups
    from trading_ops import pgtools
    from trading_ops.db import libpq_env
    from trading_ops.dev.demo_data import create_schema, load_demo_data
    from trading_ops.policy import load_policy
    from trading_ops.restore import database
    from trading_ops.restore.verification import verify_integrity

    cluster.create_database("trading_db")
    os.environ["AIRFLOW_CONN_TRADING_DB"] = cluster.uri("trading_db")
    with psycopg.connect(cluster.conninfo("trading_db")) as conn:
        create_schema(conn)
        rows = load_demo_data(
            conn, end=datetime(2026, 11, 1, tzinfo=UTC), months=args.months, step=timedelta(minutes=args.step_minutes)
        )
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    print(f"demo database: {rows} market_data rows, {size}")

    repository = backups.repository_from_policy(load_policy())
    backup = backups.take_full_backup(repository, backups.full_backup_id(datetime.now(UTC)), conn_id="trading_db")
    if args.only_drill:
        drill(cluster, args)
        return
    archive = load_policy().maintenance.archive
    # Both sides run the pg_restore the DAG picks for this dump and server.
    pg_restore = database.pg_restore_program(
        "trading_db", pgtools.major_of_tool_version(backup.manifest["tools"]["pg_dump"])
    )

    with backups.readable_dump(backup) as plain_dump:
        cluster.create_database("baseline")
        env = {**os.environ, **libpq_env("trading_db", database="baseline")}
        baseline, _ = _timed(
            lambda: subprocess.run([pg_restore, "--dbname", "baseline", str(plain_dump)], check=True, env=env)
        )

    def ours():
        with backups.readable_dump(backup) as dump:
            database.create_database("trading_db", "staging")
            database.run_pg_restore("trading_db", dump, "staging", program=pg_restore, jobs=args.jobs, clean=False)
        report = verify_integrity(
            "trading_db",
            "staging",
            backup.manifest["row_counts"],
            disjoint=(archive.source_table, archive.archive_table, archive.key_column),
            jobs=args.jobs,
        )
        assert report.ok, report.problems
        return report

    ours_seconds, report = _timed(ours)
    print(f"{'bare pg_restore (baseline)':<44} {baseline:8.2f} s")
    print(
        f"{'db_restore restore + verify (jobs=' + str(args.jobs) + ')':<44} {ours_seconds:8.2f} s   "
        f"({report.tables_checked} tables, {report.indexes_checked} indexes amchecked)"
    )
    ratio = ours_seconds / baseline
    print(f"ratio ours / baseline: {ratio:.2f}x (target <= 1.50x) {'OK' if ratio <= 1.5 else 'MISSED'}")
    database.drop_database("trading_db", "staging")
    if args.drill:
        # Before the PITR part, which ends with a disaster on trading_db.
        drill(cluster, args)
    if args.pitr:
        pitr(cluster, args, baseline)


def _stock_env(instance, database: str) -> dict:
    return {**os.environ, **instance.libpq_env(database)}


def drill(cluster, args) -> None:
    """db_restore_drill's phases vs the bare floor of each, same backup, WAL and restore point (module docstring)."""
    import psycopg

    from trading_ops import backup as backups
    from trading_ops import pgtools
    from trading_ops.backup import wal_sources
    from trading_ops.policy import load_policy
    from trading_ops.restore import drill as drills
    from trading_ops.restore import recovery
    from trading_ops.restore.pitr import bundle_identity

    policy = load_policy()
    drill_id = backups.full_backup_id(datetime.now(UTC))
    target = drills.mark_recovery_target("trading_db", "trading_db", drills.restore_point_name(drill_id, 1), policy)
    result = drills.run_drill(drill_id, target, policy, jobs=args.jobs)
    assert result.outcome == "passed", result.problems

    repository = backups.repository_from_policy(policy)
    base = wal_sources.usable_fulls(repository)[0]
    assert base.id == result.backup_id
    segment_size = base.manifest["wal_segment_size"]
    files = wal_sources.collect(cluster.wal_archive_dir, repository, segment_size)
    chain = wal_sources.chain(files, base.manifest["wal_start_segment"], segment_size, bundle_identity(files, policy))
    needed, missing = drills.needed_segments(chain, target["segment"])
    assert missing is None, missing
    floor: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench-drill-floor-"))
    try:
        fetched = scratch / "wal"
        fetched.mkdir()
        started = time.perf_counter()
        for name in needed:
            subprocess.run(["cp", files[name]["path"], str(fetched / name)], check=True)
        floor["fetch"] = time.perf_counter() - started

        stored = base.path / base.file_entry("base")["path"]
        extracted = scratch / "data"
        extracted.mkdir()
        started = time.perf_counter()
        subprocess.run(
            f"zstd -d -q -c {shlex.quote(str(stored))} | tar -x -f - -C {shlex.quote(str(extracted))}",
            shell=True,
            check=True,
        )
        floor["extract"] = time.perf_counter() - started
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)

    class StockInstance(recovery.RecoveryInstance):
        def restore_command(self) -> str:
            return f"cp {cluster.wal_archive_dir}/%f %p"

    stock = StockInstance(Path(tempfile.gettempdir()) / "bench-drill-floor", base.server_major)
    try:
        stock.prepare(base, files, needed, None, None, target_name=target["name"])
        started = time.perf_counter()
        stock.start()
        stock.wait_until_promoted(timedelta(hours=1), len(needed), target["name"])
        floor["replay"] = time.perf_counter() - started
        assert stock.recovery_point()["stopped_at_restore_point"] == target["name"]

        with psycopg.connect(**stock.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE floor_copy")
        pg_dump = pgtools.client("pg_dump", at_least=base.server_major)
        pg_restore = pgtools.client("pg_restore", at_least=base.server_major)
        started = time.perf_counter()
        dump = subprocess.Popen([pg_dump, "-Fc", "-Z0"], stdout=subprocess.PIPE, env=_stock_env(stock, "trading_db"))
        subprocess.run(
            [pg_restore, "--exit-on-error", "--dbname", "floor_copy"],
            stdin=dump.stdout,
            check=True,
            env=_stock_env(stock, "floor_copy"),
        )
        dump.stdout.close()
        assert dump.wait() == 0
        floor["transfer"] = time.perf_counter() - started

        started = time.perf_counter()
        with psycopg.connect(**stock.conninfo("floor_copy"), autocommit=True) as conn:
            tables = conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables"
            ).fetchall()
            for (table,) in tables:
                conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        pg_amcheck = pgtools.client("pg_amcheck", at_least=base.server_major)
        subprocess.run(
            [pg_amcheck, "--install-missing", "--jobs", str(args.jobs), "--index", "*.*", "floor_copy"],
            check=True,
            env=_stock_env(stock, "floor_copy"),
            stdout=subprocess.DEVNULL,
        )
        floor["verify"] = time.perf_counter() - started
    finally:
        stock.remove()

    rto_phases = ("extract", "replay", "transfer", "verify")
    floor_rto = sum(floor[name] for name in rto_phases)
    sizes = result.sizes
    print(
        f"Restore drill of backup {result.backup_id} to {result.recovery_target}: {len(needed)} WAL segments, "
        f"base {sizes['base_stored_bytes'] / 2**20:.0f} MiB stored / {sizes['base_bytes'] / 2**20:.0f} MiB, "
        f"database {sizes['database_bytes'] / 2**20:.0f} MiB, jobs={args.jobs}"
    )
    print(f"{'phase':<10} {'drill':>9} {'floor':>9} {'ratio':>7}   floor")
    floor_tools = {
        "fetch": "cp per segment",
        "extract": "zstd -d | tar -x",
        "replay": "stock postgres, cp restore_command",
        "transfer": "pg_dump -Fc -Z0 | pg_restore",
        "verify": f"count(*) + pg_amcheck -j {args.jobs}",
    }
    for name in drills.PHASES:
        ours, bare = result.phases[name], floor[name]
        note = " (inside replay)" if name == "fetch" else ""
        print(f"{name:<10} {ours:8.2f}s {bare:8.2f}s {ours / bare:6.2f}x   {floor_tools[name]}{note}")
    ratio = result.rto_seconds / floor_rto
    print(
        f"{'RTO':<10} {result.rto_seconds:8.2f}s {floor_rto:8.2f}s {ratio:6.2f}x   extract + replay + transfer + verify"
        f" (target <= 1.50x) {'OK' if ratio <= 1.5 else 'MISSED'}"
    )


def pitr(cluster, args, bare_pg_restore: float) -> None:
    import psycopg

    from trading_ops import backup as backups
    from trading_ops.backup import wal_sources
    from trading_ops.policy import load_policy
    from trading_ops.restore import database, pitr, recovery
    from trading_ops.restore.request import RestoreRequest
    from trading_ops.restore.verification import verify_integrity

    policy = load_policy()
    batches, rows_per_batch = 10, 500
    committed = []  # (commit time, rows)
    with psycopg.connect(cluster.conninfo("trading_db"), autocommit=True) as conn:
        for _ in range(batches):
            conn.execute(
                "INSERT INTO orders (symbol, side, quantity, price, created_at) "
                "SELECT symbol, 'buy', 1, 99.25, now() FROM instruments, generate_series(1, %s) LIMIT %s",
                (rows_per_batch, rows_per_batch),
            )
            committed.append((time.monotonic(), rows_per_batch))
            time.sleep(0.5)
        # Let archive_timeout archive the last batch, as it would before a disaster in production.
        time.sleep(args.archive_timeout + 1.5)
        original = conn.execute("SHOW archive_command").fetchone()[0]
        conn.execute("ALTER SYSTEM SET archive_command = '/bin/false'")
        conn.execute("SELECT pg_reload_conf()")
        disaster = time.monotonic()
        conn.execute("DELETE FROM orders WHERE price = 99.25")
    old_enough = sum(rows for at, rows in committed if disaster - at >= args.archive_timeout)
    written = sum(rows for _, rows in committed)

    # (floor) stock PostgreSQL: extract the same base backup and replay the same archived WAL with cp.
    repository = backups.repository_from_policy(policy)
    base = wal_sources.usable_fulls(repository)[0]

    class StockInstance(recovery.RecoveryInstance):
        def restore_command(self) -> str:
            return f"cp {cluster.wal_archive_dir}/%f %p"

    floor_instance = StockInstance(Path(tempfile.gettempdir()) / "bench-floor", base.server_major)
    files = wal_sources.collect(cluster.wal_archive_dir, repository, base.manifest["wal_segment_size"])
    started = time.perf_counter()
    # Its restore_command is cp from the archive: the index it is given is not read.
    floor_instance.prepare(base, files, [], None, None)
    floor_instance.start()
    floor_instance.wait_until_promoted(timedelta(hours=1), 0, "the end of the WAL")
    floor = time.perf_counter() - started
    floor_instance.remove()

    # (ours) db_restore with recovery_target=latest, phase by phase.
    phases: dict[str, float] = {}
    started = time.perf_counter()
    request = RestoreRequest.from_params(
        {
            "backup_id": "latest",
            "target_database": "trading_db",
            "restore_mode": "swap",
            "jobs": args.jobs,
            "dry_run": True,
            "recovery_target": "latest",
        }
    )
    plan = pitr.make_recovery_plan(request, policy, datetime.now(UTC))
    phases["plan"] = time.perf_counter() - started
    restored = pitr.restore_to_staging(plan)
    timings = restored["timings"]
    phases |= {
        name: timings[f"{name}_seconds"] for name in ("switch", "extract", "replay", "transfer", "count", "teardown")
    }
    checked = time.perf_counter()
    archive = policy.maintenance.archive
    report = verify_integrity(
        "trading_db",
        restored["database"],
        restored["row_counts"],
        disjoint=(archive.source_table, archive.archive_table, archive.key_column),
        jobs=args.jobs,
    )
    problems = report.problems + recovery.recovery_point_problems(plan["recovery"], restored["recovery_point"])
    assert not problems, problems
    phases["verify"] = time.perf_counter() - checked
    swapped = time.perf_counter()
    database.swap_databases(
        "trading_db", "trading_db", restored["database"], plan["retired_database"], timedelta(seconds=30)
    )
    phases["swap"] = time.perf_counter() - swapped
    ours = time.perf_counter() - started
    phases["other"] = ours - sum(phases.values())
    with psycopg.connect(cluster.conninfo("trading_db")) as conn:
        back = conn.execute("SELECT count(*) FROM orders WHERE price = 99.25").fetchone()[0]
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET archive_command = '{original.replace(chr(39), chr(39) * 2)}'")
        conn.execute("SELECT pg_reload_conf()")

    point = restored["recovery_point"]
    print(
        f"PITR latest: {point['segments_fetched']} WAL segments fetched ({point['fetch_seconds']:.2f} s in wal fetch), "
        f"archive_timeout {args.archive_timeout} s"
    )
    print(
        f"RPO: {written - back} of {written} rows committed before the disaster lost; "
        f"{max(0, old_enough - back)} of {old_enough} committed at least archive_timeout before it "
        f"(target 0) {'OK' if back >= old_enough else 'MISSED'}"
    )
    print(f"{'physical floor (extract + replay, stock)':<44} {floor:8.2f} s")
    print(f"{'bare pg_restore of the same data':<44} {bare_pg_restore:8.2f} s")
    print(f"{'db_restore recovery_target=latest':<44} {ours:8.2f} s")
    print(
        "RTO by phase: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())
        + f" (fetch {point['fetch_seconds']:.2f} s of replay)"
    )
    limit = floor + bare_pg_restore
    ratio = ours / limit
    print(
        f"ratio PITR / (floor + bare pg_restore): {ratio:.2f}x (target <= 1.50x) {'OK' if ratio <= 1.5 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
