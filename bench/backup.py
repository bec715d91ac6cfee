"""Benchmark: this project's full backup against the stock tools, on one database, in one run.

    PYTHONPATH=plugins .venv/bin/python bench/backup.py [MARKET_DATA_ROWS] [--cadence S] [--segments N]
                                                                    (defaults: 2,000,000 rows, 15 s, 16 segments)

Starts its own throwaway PostgreSQL 15 cluster, loads the demo schema with about MARKET_DATA_ROWS bars, then times
- logical:  `pg_dump -Fc` (defaults: gzip level 6 in-process) vs the project's logical snapshot (exported
            snapshot, `pg_dump -Fc -Z0` through multi-threaded zstd, per-table row counts in the same snapshot);
- physical: `pg_basebackup -Ft -z` vs the project's base backup (tar stream through multi-threaded zstd);
both physical runs use `-X none -c fast`, as the project does (WAL comes from the archive). Python modules the
project imports lazily are imported before timing. Targets: logical at
least 3x faster than pg_dump -Fc at no more than 1.25x its size; physical at least 5x faster than
pg_basebackup -z.

Then the object store, on the same database in the same run: moto's S3 server (a process of its own on
127.0.0.1) reached through the repository's real S3 client and an Airflow `aws` connection, as in production:
- full backup (`take_full_backup`: dump + base backup, multipart upload, ETags checked) into a local repository
  and into s3://, alternately, twice each; the best of each is compared. Target: no more than 1.3x the local time;
- off-host RPO: N segments are written and switched while the shipping step (`ship_wal`, db_wal_ship's task)
  runs on a cadence of S seconds; each segment's delay is its record's shipped_at minus its archived_at (the
  archive file's mtime). Production runs the step every minute, so its worst case is modelled as that minute
  plus the longest shipping run measured. Target: within `backup.wal_ship_within`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

RUN_DIR = Path(tempfile.mkdtemp(prefix="trading-ops-bench-", dir="/var/tmp"))
RUN_DIR.chmod(0o755)
os.environ.setdefault("AIRFLOW_HOME", str(RUN_DIR / "airflow-home"))

from trading_ops.backup import Repository, full_backup_id, take_full_backup  # noqa: E402
from trading_ops.backup.full import take_base_backup, take_logical_snapshot  # noqa: E402
from trading_ops.backup.repository import parse_time  # noqa: E402
from trading_ops.backup.wal import switch_and_wait  # noqa: E402
from trading_ops.backup.wal_ship import ship_wal, shipped_names, shipped_record  # noqa: E402
from trading_ops.db import libpq_env  # noqa: E402
from trading_ops.dev.demo_data import DEMO_SYMBOLS, create_schema, load_demo_data  # noqa: E402
from trading_ops.dev.localpg import LocalCluster  # noqa: E402
from trading_ops.pgtools import client  # noqa: E402
from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy  # noqa: E402
from trading_ops.streams import Compression  # noqa: E402

DATABASE = "trading_db"
MONTHS = 12
BUCKET = "bench-backups"
STORE_CONN_ID = "aws_backup"
# What db_wal_ship's schedule (`* * * * *`) adds at worst before a run lists the archive.
PRODUCTION_SHIP_INTERVAL = 60.0


def _timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(size: int) -> str:
    return f"{size / 1024**2:8.1f} MB"


def _moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return server, endpoint
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.2)


def _cpu_seconds(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _object_store_run(cluster, store, endpoint: str, compression: Compression, policy, cadence: float, segments: int):
    import boto3
    import psutil
    import psycopg

    # The store shares this machine's cores with pg_dump, pg_basebackup and zstd; a real one would not.
    store_process = psutil.Process(store.pid)
    store_cpu: list[float] = []

    os.environ[f"AIRFLOW_CONN_{STORE_CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "bench-key-id",
            "password": "bench-secret",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench-key-id",
        aws_secret_access_key="bench-secret",
    ).create_bucket(Bucket=BUCKET)
    local = Repository(RUN_DIR / "repository")
    remote = Repository(f"s3://{BUCKET}/trading-ops", conn_id=STORE_CONN_ID, chunk_size=policy.multipart_chunk)

    timings: dict[str, list[float]] = {"local": [], "s3": []}
    stored = {}
    for round_number in range(2):
        for name, repository in (("local", local), ("s3", remote)):
            backup_id = full_backup_id(datetime(2026, 11, 1 + round_number, 1, tzinfo=UTC))
            cpu_before = _cpu_seconds(store_process)
            elapsed, info = _timed(
                lambda repository=repository, backup_id=backup_id: take_full_backup(
                    repository, backup_id, conn_id="trading_db", compression=compression, key=None
                )
            )
            if name == "s3":
                store_cpu.append(_cpu_seconds(store_process) - cpu_before)
            timings[name].append(elapsed)
            stored[name] = info.size
    best_local, best_s3 = min(timings["local"]), min(timings["s3"])
    print(f"{'full backup':34} {'best':>8} {'runs':>15} {'stored':>11} {'throughput':>12}")
    for name, best in (("local repository", best_local), ("s3:// (moto, multipart)", best_s3)):
        key = "local" if name.startswith("local") else "s3"
        runs = " ".join(f"{t:.2f}s" for t in timings[key])
        print(f"{name:34} {best:7.2f}s {runs:>15} {_mb(stored[key])} {stored[key] / 1024**2 / best:7.1f} MB/s")
    ratio = best_s3 / best_local
    print(f"object store: {ratio:.2f}x the local time (target <= 1.3x) -> {'MET' if ratio <= 1.3 else 'MISSED'}")
    print(
        f"moto's server process used {', '.join(f'{cpu:.2f}' for cpu in store_cpu)} s of CPU during the s3:// runs, "
        f"on the same {os.cpu_count()} cores as the backup"
    )

    archive_dir = cluster.wal_archive_dir
    ship_wal(remote, archive_dir, compression=compression, key=None)  # the backlog of the backups above
    stop = threading.Event()
    ship_runs: list[float] = []
    failures: list[BaseException] = []

    def ship_on_a_cadence() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ship_wal(remote, archive_dir, compression=compression, key=None)
            except Exception as exc:  # reported after the run, which then fails
                failures.append(exc)
                return
            ship_runs.append(time.perf_counter() - started)
            stop.wait(cadence)

    shipper = threading.Thread(target=ship_on_a_cadence, daemon=True)
    switched = []
    with psycopg.connect(cluster.conninfo(DATABASE), autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_wal (id bigint, payload text)")
        shipper.start()
        for _ in range(segments):
            conn.execute("INSERT INTO bench_wal SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            switched.append(switch_and_wait(conn, archive_dir, timedelta(seconds=30)))
            time.sleep(cadence / 4)
    # Let the cadence pick up the last segment, as the schedule would, before stopping it.
    deadline = time.monotonic() + 2 * cadence + 30
    while not failures and switched[-1] not in shipped_names(remote) and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    shipper.join()
    if failures:
        raise failures[0]
    delays = []
    for name in switched:
        record = shipped_record(remote, name)
        delays.append((parse_time(record["shipped_at"]) - parse_time(record["archived_at"])).total_seconds())
    limit = policy.wal_ship_within.total_seconds()
    worst_production = PRODUCTION_SHIP_INTERVAL + max(ship_runs)
    print(
        f"off-host RPO, {len(delays)} segments shipped on a {cadence:.0f} s cadence ({len(ship_runs)} runs, "
        f"longest {max(ship_runs):.2f}s): median {statistics.median(delays):.1f}s, max {max(delays):.1f}s"
    )
    print(
        f"off-host RPO on the production schedule (every {PRODUCTION_SHIP_INTERVAL:.0f} s + the longest run): "
        f"<= {worst_production:.1f}s; backup.wal_ship_within {limit:.0f}s -> "
        f"{'MET' if max(delays) <= limit and worst_production <= limit else 'MISSED'}"
    )


def main(rows: int, cadence: float, segments: int) -> None:
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
        shutil.rmtree(out)
        store, endpoint = _moto_server()
        try:
            _object_store_run(cluster, store, endpoint, compression, shipped, cadence, segments)
        finally:
            store.terminate()
            store.wait(timeout=30)
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(RUN_DIR, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=2_000_000, help="market_data rows to load")
    parser.add_argument("--cadence", type=float, default=15.0, help="seconds between shipping runs")
    parser.add_argument("--segments", type=int, default=16, help="WAL segments switched while shipping")
    arguments = parser.parse_args()
    main(arguments.rows, arguments.cadence, arguments.segments)
