"""Benchmark: this project's full backup against the stock tools, on one database, in one run.

    PYTHONPATH=plugins .venv/bin/python bench/backup.py [MARKET_DATA_ROWS]     (default 2,000,000 rows)

Starts its own throwaway PostgreSQL 15 cluster, loads the demo schema with about MARKET_DATA_ROWS bars, then times
- logical:  `pg_dump -Fc` (defaults: gzip level 6 in-process) vs the project's logical snapshot (exported
            snapshot, `pg_dump -Fc -Z0` through multi-threaded zstd, per-table row counts in the same snapshot);
- physical: `pg_basebackup -Ft -z` vs the project's base backup (tar stream through multi-threaded zstd);
both physical runs use `-X none -c fast`, as the project does (WAL comes from the archive). Python modules the
project imports lazily are imported before timing. Targets: logical at
least 3x faster than pg_dump -Fc at no more than 1.25x its size; physical at least 5x faster than
pg_basebackup -z.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

RUN_DIR = Path(tempfile.mkdtemp(prefix="trading-ops-bench-", dir="/var/tmp"))
RUN_DIR.chmod(0o755)
os.environ.setdefault("AIRFLOW_HOME", str(RUN_DIR / "airflow-home"))

from trading_ops.backup.full import take_base_backup, take_logical_snapshot  # noqa: E402
from trading_ops.db import libpq_env  # noqa: E402
from trading_ops.dev.demo_data import DEMO_SYMBOLS, create_schema, load_demo_data  # noqa: E402
from trading_ops.dev.localpg import LocalCluster  # noqa: E402
from trading_ops.pgtools import client  # noqa: E402
from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy  # noqa: E402
from trading_ops.streams import Compression  # noqa: E402

DATABASE = "trading_db"
MONTHS = 12


def _timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(size: int) -> str:
    return f"{size / 1024**2:8.1f} MB"


def main(rows: int) -> None:
    import psycopg

    cluster = LocalCluster(RUN_DIR / "pg")
    cluster.init()
    cluster.start()
    try:
        cluster.create_database(DATABASE)
        step = timedelta(seconds=MONTHS * 30.44 * 86400 * len(DEMO_SYMBOLS) / rows)
        with psycopg.connect(cluster.conninfo(DATABASE)) as conn:
            create_schema(conn)
            loaded = load_demo_data(conn, end=datetime(2026, 11, 1, tzinfo=UTC), months=MONTHS, step=step)
            conn.execute("CHECKPOINT")
            db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        os.environ["AIRFLOW_CONN_TRADING_DB"] = cluster.uri(DATABASE)
        env = {**os.environ, **libpq_env()}
        # Import what the project's code imports lazily (the Postgres provider, zstandard): a worker has paid that
        # once already, and it is not part of taking a backup.
        import airflow.providers.postgres.hooks.postgres  # noqa: F401
        import zstandard  # noqa: F401

        out = RUN_DIR / "out"
        shipped = load_policy(DEFAULT_POLICY_PATH).backup
        compression = Compression(shipped.compression, shipped.compression_level)
        print(
            f"database: {loaded:,} market_data rows, {db_size / 1024**2:.0f} MB; {os.cpu_count()} cores; "
            f"compression {compression.algorithm} level {compression.level} (shipped policy)"
        )

        stock_dump = out / "stock.dump"
        out.mkdir()
        t_dump, _ = _timed(
            lambda: subprocess.run([client("pg_dump"), "-Fc", "-f", str(stock_dump)], env=env, check=True)
        )
        ours_logical = out / "logical"
        ours_logical.mkdir()
        t_logical, snapshot = _timed(
            lambda: take_logical_snapshot(ours_logical, conn_id="trading_db", compression=compression, key=None)
        )
        stock_base = out / "stock-base"
        t_base, _ = _timed(
            lambda: subprocess.run(
                [client("pg_basebackup"), "-D", str(stock_base), "-Ft", "-z", "-X", "none", "-c", "fast"],
                env=env,
                check=True,
                capture_output=True,
            )
        )
        # What the PostgreSQL tools cost with no compression at all: the floor any compressed backup stands on.
        t_dump_floor, _ = _timed(
            lambda: subprocess.run([client("pg_dump"), "-Fc", "-Z0"], env=env, check=True, stdout=subprocess.DEVNULL)
        )
        t_base_floor, _ = _timed(
            lambda: subprocess.run(
                [client("pg_basebackup"), "-D", "-", "-Ft", "-X", "none", "-c", "fast"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ours_physical = out / "physical"
        ours_physical.mkdir()
        t_physical, base = _timed(
            lambda: take_base_backup(
                ours_physical,
                conn_id="trading_db",
                server_major=snapshot.server_major,
                label="bench",
                compression=compression,
                key=None,
            )
        )

        dump_size, logical_size = _size(stock_dump), snapshot.file.size
        base_size, physical_size = _size(stock_base), base.file.size
        print(f"{'':34} {'time':>8} {'size':>11}")
        print(f"{'pg_dump -Fc (default)':34} {t_dump:7.2f}s {_mb(dump_size)}")
        print(f"{'project logical snapshot':34} {t_logical:7.2f}s {_mb(logical_size)}")
        print(f"{'pg_dump -Fc -Z0 > /dev/null (floor)':34} {t_dump_floor:7.2f}s")
        print(f"{'pg_basebackup -Ft -z':34} {t_base:7.2f}s {_mb(base_size)}")
        print(f"{'project physical base backup':34} {t_physical:7.2f}s {_mb(physical_size)}")
        print(f"{'pg_basebackup -Ft > /dev/null (floor)':34} {t_base_floor:7.2f}s")
        speed_logical, ratio_size = t_dump / t_logical, logical_size / dump_size
        speed_physical = t_base / t_physical
        print(
            f"logical:  {speed_logical:.2f}x faster than pg_dump -Fc (target >= 3x), "
            f"{ratio_size:.2f}x its size (target <= 1.25x) -> "
            f"{'MET' if speed_logical >= 3 and ratio_size <= 1.25 else 'MISSED'}"
        )
        print(
            f"physical: {speed_physical:.2f}x faster than pg_basebackup -z (target >= 5x), "
            f"{physical_size / base_size:.2f}x its size -> {'MET' if speed_physical >= 5 else 'MISSED'}"
        )
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(RUN_DIR, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
