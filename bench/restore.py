"""Restore benchmark: the db_restore DAG's restore + verify vs a bare `pg_restore` of the same dump, same run.

    python bench/restore.py [--months 12] [--step-minutes 10] [--jobs 2]

Starts its own PostgreSQL cluster, loads demo data, takes a full backup with this project's backup code, then
times (baseline) `pg_restore -d <new db> <plain dump>` and (ours) what the DAG's `restore_database` and
`verify_integrity` tasks do: decrypt/decompress the stored dump, pg_restore --jobs into a staging database, then
row counts against the manifest, amcheck on every btree index, constraints, sequences, archive overlap.
Target: ours within 1.5x the baseline.
"""

from __future__ import annotations

import argparse
import os
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
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    work.chmod(0o755)
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))

    from trading_ops.dev.local_policy import write_local_policy
    from trading_ops.dev.localpg import LocalCluster

    cluster = LocalCluster(work / "pg")
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


if __name__ == "__main__":
    main()
