"""Benchmark: the manual's daily maintenance SQL against the db_maintenance DAG's tasks, same data, same run.

    python bench/maintenance.py              # 5,000,000 market_data rows
    python bench/maintenance.py --rows 1000000

    python bench/maintenance.py --rows 1000000 --repeat 3   # best of 3 runs of each contender

Starts its own throwaway PostgreSQL 15 cluster (trading_ops.dev.localpg.LocalCluster, WAL archiving on as in
production), loads `rows` bars of demo market data over the 12 months before END, and runs three scenarios, each on
two identical copies of the database: the manual's SQL on one, the DAG's task functions on the other, while a
writer thread inserts fresh bars one at a time and records each insert's latency.

- unpartitioned: the manual's schema as it is; the cutoff falls mid-month.
- partitioned, cutoff on a month boundary: both tables converted to monthly partitions
  (trading_ops.maintenance.conversion); the run is on the 1st, so every expired month moves whole.
- partitioned, cutoff mid-month: the same layout; half a month straddles the cutoff and moves row by row.

The manual, as written in the operations manual, run statement by statement (autocommit, like psql):
`REINDEX DATABASE <db>; ANALYZE VERBOSE; INSERT INTO market_data_archive SELECT * FROM market_data WHERE timestamp <
cutoff; DELETE FROM market_data WHERE timestamp < cutoff;` with the DAG's cutoff bound in place of
`NOW() - INTERVAL '3 months'` (the same stable value, so both move the same rows). On the partitioned layout the
archive's partitions for those months are made beforehand (untimed), or the manual's INSERT could not run.

The DAG: create_partitions, archive_market_data, analyze_tables, reindex_indexes with the shipped policy, except
reindex mode `all` (a freshly loaded database has no bloat, and the point is the writer's latency while every index
is rebuilt). Printed: archive time, WAL written by the archive step (pg_current_wal_lsn difference), the worst
concurrent insert over the whole maintenance, and the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT)]

from tests.support.insert_probe import InsertProbe  # noqa: E402 (needs the checkout on sys.path)

END = datetime(2026, 11, 16, tzinfo=UTC)
SYMBOLS = 10


class Steps:
    """When each step of a maintenance run ran, to tell which one the worst concurrent insert overlapped."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    @contextmanager
    def step(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spans.append((name, started, time.perf_counter()))

    def during(self, moment: float) -> str:
        return next((name for name, start, end in self.spans if start <= moment <= end), "between steps")


def wal_position(conn: psycopg.Connection) -> int:
    from trading_ops.pgtools import parse_lsn

    (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return parse_lsn(lsn)


def maintenance_config():
    from trading_ops.policy import DEFAULT_POLICY_PATH, load_policy

    cfg = load_policy(DEFAULT_POLICY_PATH).maintenance
    return cfg.model_copy(update={"reindex": cfg.reindex.model_copy(update={"mode": "all"})})


def run_manual(conninfo: str, dbname: str, cutoff: datetime, steps: Steps) -> dict:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        started = time.perf_counter()
        with steps.step("REINDEX DATABASE"):
            conn.execute(sql.SQL("REINDEX DATABASE {}").format(sql.Identifier(dbname)))
        with steps.step("ANALYZE VERBOSE"):
            conn.execute("ANALYZE VERBOSE")
        wal_start, archive_started = wal_position(conn), time.perf_counter()
        with steps.step("INSERT INTO market_data_archive"):
            moved = conn.execute(
                'INSERT INTO market_data_archive SELECT * FROM market_data WHERE "timestamp" < %s', (cutoff,)
            ).rowcount
        with steps.step("DELETE FROM market_data"):
            conn.execute('DELETE FROM market_data WHERE "timestamp" < %s', (cutoff,))
        archive_seconds = time.perf_counter() - archive_started
        wal = wal_position(conn) - wal_start
        return {"rows": moved, "archive_s": archive_seconds, "wal": wal, "total_s": time.perf_counter() - started}


def run_dag(uri: str, moment: datetime, steps: Steps) -> dict:
    from trading_ops.maintenance.analyze import analyze_tables
    from trading_ops.maintenance.archive import archive_old_rows
    from trading_ops.maintenance.partitions import create_future_partitions
    from trading_ops.maintenance.reindex import reindex_indexes
    from trading_ops.maintenance.session import maintenance_session

    os.environ["AIRFLOW_CONN_TRADING_DB"] = uri
    cfg = maintenance_config()
    with maintenance_session(cfg) as conn:
        started = time.perf_counter()
        with steps.step("create_partitions"):
            create_future_partitions(conn, cfg, moment)
        wal_start, archive_started = wal_position(conn), time.perf_counter()
        with steps.step("archive_market_data"):
            summary = archive_old_rows(conn, cfg, moment)
        archive_seconds = time.perf_counter() - archive_started
        wal = wal_position(conn) - wal_start
        with steps.step("analyze_tables"):
            analyze_tables(conn, cfg)
        with steps.step("reindex_indexes"):
            reindex_indexes(conn, cfg)
        return {
            "rows": summary["rows_moved"] + summary["partition_rows_estimate"],
            "partitions": summary["partitions_moved"],
            "archive_s": archive_seconds,
            "wal": wal,
            "total_s": time.perf_counter() - started,
        }


def copy_database(cluster, template: str, name: str) -> str:
    cluster.drop_database(name)
    cluster.create_database(name, template=template)
    with psycopg.connect(cluster.conninfo(name), autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # both contenders start right after a checkpoint: the same full-page writes
    return name


def with_probe(conninfo: str, action, *args):
    probe, steps = InsertProbe(conninfo, END + timedelta(days=1)), Steps()
    probe.start()
    try:
        result = action(*args, steps)
    finally:
        probe.stop()
    return result | {
        "worst_ms": probe.worst_ms,
        "worst_during": steps.during(probe.worst_started),
        "inserts": len(probe.ids),
    }


def make_archive_partitions(cluster, dbname: str, cutoff: datetime) -> None:
    """The manual's INSERT needs the partitioned archive to have a partition for every month it writes."""
    from trading_ops.maintenance.partitions import ensure_partitions, months_from
    from trading_ops.maintenance.session import maintenance_session

    os.environ["AIRFLOW_CONN_TRADING_DB"] = cluster.uri(dbname)
    cfg = maintenance_config()
    with maintenance_session(cfg) as conn:
        (oldest,) = conn.execute('SELECT min("timestamp") FROM market_data').fetchone()
        ensure_partitions(
            conn, cfg, "public", "market_data_archive", months_from(oldest, cutoff - timedelta(microseconds=1))
        )


def prepare(cluster, rows: int) -> None:
    from trading_ops.dev.demo_data import create_schema, load_demo_data
    from trading_ops.maintenance.conversion import convert_to_partitioned
    from trading_ops.maintenance.partitions import add_months, month_start
    from trading_ops.maintenance.session import maintenance_session

    cluster.create_database("base")
    step = timedelta(seconds=round(365 * 86400 * SYMBOLS / rows))
    started = time.perf_counter()
    with psycopg.connect(cluster.conninfo("base")) as conn:
        create_schema(conn)
        loaded = load_demo_data(conn, end=END, step=step, order_step=timedelta(days=1))
    with psycopg.connect(cluster.conninfo("base"), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(
        f"loaded {loaded:,} market_data rows (one bar per symbol every {step}) in {time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    copy_database(cluster, "base", "base_partitioned")
    os.environ["AIRFLOW_CONN_TRADING_DB"] = cluster.uri("base_partitioned")
    cfg = maintenance_config()
    with maintenance_session(cfg) as conn:
        through = add_months(month_start(END), cfg.archive.premake_partitions)
        convert_to_partitioned(conn, cfg, "market_data", through=through)
        convert_to_partitioned(conn, cfg, "market_data_archive")
        conn.execute("VACUUM ANALYZE")
    print(f"converted a copy to monthly partitions in {time.perf_counter() - started:.0f} s")


def scenario(cluster, name: str, template: str, moment: datetime, repeat: int) -> dict:
    """Run the manual and the DAG `repeat` times each, alternately, on fresh copies: the archive time and WAL of the
    fastest run of each count (the machine is shared; noise only ever adds time), the worst insert of all runs."""
    from trading_ops.maintenance.archive import archive_cutoff

    cutoff = archive_cutoff(moment, maintenance_config().archive.retention_months)
    runs = {"manual": [], "dag": []}
    for _ in range(repeat):
        manual_db = copy_database(cluster, template, "manual")
        if template == "base_partitioned":
            make_archive_partitions(cluster, manual_db, cutoff)
        conninfo = cluster.conninfo(manual_db)
        runs["manual"].append(with_probe(conninfo, run_manual, conninfo, manual_db, cutoff))
        dag_db = copy_database(cluster, template, "dag")
        runs["dag"].append(with_probe(cluster.conninfo(dag_db), run_dag, cluster.uri(dag_db), moment))
    result = {"name": name, "cutoff": cutoff}
    for contender, measured in runs.items():
        best = min(measured, key=lambda run: run["archive_s"])
        worst = max(measured, key=lambda run: run["worst_ms"])
        result[contender] = best | {
            "worst_ms": worst["worst_ms"],
            "worst_during": worst["worst_during"],
            "inserts": sum(run["inserts"] for run in measured),
        }
    return result


def report(rows: int, repeat: int, results: list[dict]) -> None:
    print()
    print(
        f"db_maintenance benchmark, {rows:,} market_data rows, PostgreSQL 15, one cluster, same run, "
        f"best of {repeat} run(s) per contender"
    )
    header = (
        f"{'scenario':<40} {'rows archived':>13} {'archive s':>19} {'speedup':>8} {'archive WAL MB':>21} "
        f"{'WAL ratio':>9} {'worst insert ms':>19} {'total s':>15}"
    )
    print(header)
    print(
        f"{'':<40} {'':>13} {'manual / DAG':>19} {'':>8} {'manual / DAG':>21} {'':>9} {'manual / DAG':>19} "
        f"{'manual / DAG':>15}"
    )
    for result in results:
        manual, dag = result["manual"], result["dag"]
        print(
            f"{result['name']:<40} {manual['rows']:>13,} "
            f"{manual['archive_s']:>9.3f} / {dag['archive_s']:<7.3f} {manual['archive_s'] / dag['archive_s']:>7.1f}x "
            f"{manual['wal'] / 2**20:>10.1f} / {dag['wal'] / 2**20:<8.2f} {100 * dag['wal'] / manual['wal']:>8.2f}% "
            f"{manual['worst_ms']:>9.0f} / {dag['worst_ms']:<7.0f} {manual['total_s']:>6.1f} / {dag['total_s']:<6.1f}"
        )
    print()
    for result in results:
        dag = result["dag"]
        print(
            f"{result['name']}: cutoff {result['cutoff']:%Y-%m-%d %H:%M} UTC, DAG moved {dag['partitions']} partitions "
            f"whole; concurrent inserts {dag['inserts']:,} during the DAG runs (worst during "
            f"{dag['worst_during']}), {result['manual']['inserts']:,} during the manual's (worst during "
            f"{result['manual']['worst_during']})"
        )
    unpartitioned, boundary, _ = results
    checks = [
        (
            "partitioned archive >= 50x faster than the manual's SQL (cutoff on a month boundary)",
            boundary["manual"]["archive_s"] / boundary["dag"]["archive_s"] >= 50,
        ),
        ("partitioned archive WAL < 1% of the manual's", boundary["dag"]["wal"] < 0.01 * boundary["manual"]["wal"]),
        (
            "unpartitioned archive no slower than the manual's SQL",
            unpartitioned["dag"]["archive_s"] <= unpartitioned["manual"]["archive_s"],
        ),
        ("worst concurrent insert < 200 ms throughout every DAG run", all(r["dag"]["worst_ms"] < 200 for r in results)),
    ]
    print()
    for text, met in checks:
        print(f"target {'met' if met else 'MISSED'}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="market_data rows to load (default 5,000,000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender per scenario (best one counts)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trading-ops-bench-"))
    work.chmod(0o755)  # the postgres OS user runs the cluster in here
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow-home"))
    # The tasks' progress lines and ANALYZE VERBOSE would bury the results.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    logging.basicConfig(level=logging.WARNING)
    from trading_ops.dev.localpg import LocalCluster

    cluster = LocalCluster(work / "pg")
    cluster.init()
    cluster.start()
    try:
        prepare(cluster, args.rows)
        month_start = datetime(2026, 11, 1, tzinfo=UTC)
        results = [
            scenario(cluster, "unpartitioned", "base", END, args.repeat),
            scenario(cluster, "partitioned, cutoff on a month boundary", "base_partitioned", month_start, args.repeat),
            scenario(cluster, "partitioned, cutoff mid-month", "base_partitioned", END, args.repeat),
        ]
        report(args.rows, args.repeat, results)
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
